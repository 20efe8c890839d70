//! End-to-end: misbehaving peers are closed one by one, with a reason, while devices sync on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use liaison_core::model::*;
use liaison_core::sync::wire::Message;
use liaison_core::{DocumentId, Role};
use liaison_e2e::*;
use tokio_tungstenite::tungstenite::Message as Ws;

use liaison_e2e::raw::{Socket, connect as raw, join_frame as join};

/// Reads until the relay closes; returns its close code and reason.
async fn closed_with(ws: &mut Socket) -> (u16, String) {
    let r = tokio::time::timeout(WAIT, async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Ws::Close(Some(f))) => return (u16::from(f.code), f.reason.to_string()),
                Ok(Ws::Close(None)) | Err(_) => return (0, String::new()),
                Ok(_) => {}
            }
        }
        (0, String::new())
    })
    .await;
    r.expect("the relay closed the connection")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_misbehaving_connection_is_closed_with_a_reason_while_devices_sync_on() {
    let data = tempfile::tempdir().unwrap();
    setup_tenant(data.path(), "pharma-a", "onc-east", &[("sato", "msl"), ("suzuki", "msl"), ("mallory", "msl")]);
    let (_, sato_t) = issue(data.path(), "pharma-a", "sato", "sato-phone", &[]);
    let (_, suzuki_t) = issue(data.path(), "pharma-a", "suzuki", "suzuki-phone", &[]);
    let (_, bad) = issue(data.path(), "pharma-a", "mallory", "mallory-laptop", &[]);
    let config = data.path().join("relay.toml");
    std::fs::write(
        &config,
        "[limits]\nmax_frame_bytes = 65536\nmessages_per_second = 20\nmessage_burst = 50\nhandshake_timeout_secs = 1\n",
    )
    .unwrap();
    let relay = Relay::start(data.path(), &["--config", config.to_str().unwrap()]).unwrap();
    let sato = Device::new(&relay, "pharma-a", "sato", "sato-phone", &sato_t, Role::Msl);
    let suzuki = Device::new(&relay, "pharma-a", "suzuki", "suzuki-phone", &suzuki_t, Role::Msl);
    let kol = DocumentId::from_bytes([9; 16]);
    let plan = sato.store.create("onc-east", &EngagementPlan::new(&kol, "plan")).unwrap();
    sato.created(plan);
    suzuki.client().find(plan);

    let mut edits = 0;
    let mut edit = |label: &str| {
        edits += 1;
        let t = format!("[{label}]");
        sato.store
            .update(&plan, move |p: &mut EngagementPlan| {
                let end = p.notes.as_str().len();
                p.notes.splice(end, 0, &t)
            })
            .unwrap();
        sato.client().local_change(plan);
    };

    // Malformed CBOR.
    let mut ws = raw(&relay, &bad).await;
    ws.send(Ws::Binary(vec![0xff, 0x13, 0x37].into())).await.unwrap();
    assert_eq!(closed_with(&mut ws).await, (1002, "malformed frame".into()));
    edit("after garbage");

    // A frame over the limit.
    let mut ws = raw(&relay, &bad).await;
    ws.send(Ws::Binary(join("mallory-laptop").into())).await.unwrap();
    let _ = ws.send(Ws::Binary(vec![0u8; 100_000].into())).await;
    assert_eq!(closed_with(&mut ws).await, (1009, "frame too large".into()));
    edit("after oversize");

    // A flood of frames.
    let mut ws = raw(&relay, &bad).await;
    ws.send(Ws::Binary(join("mallory-laptop").into())).await.unwrap();
    let noise = Message::Unknown { type_name: "noise".into() }.encode();
    for _ in 0..500 {
        if ws.send(Ws::Binary(noise.clone().into())).await.is_err() {
            break;
        }
    }
    assert_eq!(closed_with(&mut ws).await, (4029, "message rate exceeded".into()));
    edit("after flood");

    // A handshake that never completes.
    let mut ws = raw(&relay, &bad).await;
    let started = std::time::Instant::now();
    assert_eq!(closed_with(&mut ws).await, (1002, "handshake timeout".into()));
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
    edit("after silence");

    // The honest devices synced through all of it.
    let expected = "[after garbage][after oversize][after flood][after silence]";
    sato.synced().await;
    suzuki
        .until_store("every edit arrives", |s| {
            s.get::<EngagementPlan>(&plan).is_ok_and(|p| p.notes.as_str() == expected)
        })
        .await;
    assert_eq!(edits, 4);

    // The relay counted each close by its reason.
    let metrics = relay.get_text("/metrics");
    for reason in ["malformed frame", "frame too large", "handshake timeout"] {
        assert!(
            metrics.contains(&format!("liaison_connections_closed_total{{reason=\"{reason}\"}} 1")),
            "{reason} missing from:\n{metrics}"
        );
    }
    assert!(metrics.contains("liaison_storage_flush_seconds_count"));
}
