//! Every shared text field, not only a plan's notes: UTF-16 splices that merge per character
//! with a colleague's, cursors that follow their character, clear errors for a wrong field, an
//! unknown topic and a submitted record.
#![allow(clippy::unwrap_used)]

mod common;

use common::{open, send};
use futures::executor::block_on;
use liaison_core::model::{Channel, KolProfile, MedicalInsight, Topic};
use liaison_ffi::{LiaisonError, SharedTextField};

#[test]
fn colleagues_splice_an_interaction_summary_and_a_topic_discussion_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (open(&dir, "alice"), open(&dir, "bob"));
    let kol = block_on(alice.create_kol(KolProfile::new("Dr. A", "Osaka"))).unwrap();
    let mut visit = common::new_interaction(kol, 1_700_000_000_000, Channel::InPerson);
    visit.summary = autosurgeon::Text::with_value("Met 🧪 lab");
    visit.topics.push(Topic { id: "t1".into(), title: "Dosing".into(), discussion: "Q2".into() });
    let id = block_on(alice.create_interaction(visit)).unwrap();
    send(&alice, &bob, &id);

    // UTF-16 indexes: the test tube is two code units, so "lab" starts at 7.
    block_on(alice.splice_text(id.clone(), SharedTextField::InteractionSummary, 7, 0, "the ".into())).unwrap();
    block_on(bob.splice_text(id.clone(), SharedTextField::InteractionSummary, 10, 0, " team".into())).unwrap();
    let topic = SharedTextField::TopicDiscussion { topic_id: "t1".into() };
    let cursor = block_on(alice.text_cursor(id.clone(), topic.clone(), 1)).unwrap();
    block_on(bob.splice_text(id.clone(), topic.clone(), 0, 0, "Asked about ".into())).unwrap();
    send(&alice, &bob, &id);
    send(&bob, &alice, &id);

    for store in [&alice, &bob] {
        let read = block_on(store.get_interaction(id.clone())).unwrap().interaction;
        assert_eq!(read.summary.as_str(), "Met 🧪 the lab team");
        assert_eq!(read.topics[0].discussion.as_str(), "Asked about Q2");
    }
    assert_eq!(
        block_on(alice.text_cursor_position(id.clone(), topic, cursor)).unwrap(),
        13,
        "the cursor stayed before the 2"
    );
}

#[test]
fn an_insight_text_is_spliced_and_wrong_fields_unknown_topics_and_locks_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let alice = open(&dir, "alice");
    let kol = block_on(alice.create_kol(KolProfile::new("Dr. A", "Osaka"))).unwrap();
    let insight = block_on(alice.create_insight(MedicalInsight::new("Unmet need", &[kol.parse().unwrap()]))).unwrap();
    block_on(alice.splice_text(insight.clone(), SharedTextField::InsightText, 0, 0, "An ".into())).unwrap();
    assert_eq!(block_on(alice.get_insight(insight.clone())).unwrap().insight.text.as_str(), "An Unmet need");

    let err = block_on(alice.splice_text(insight.clone(), SharedTextField::PlanNotes, 0, 0, "x".into())).unwrap_err();
    assert!(matches!(err, LiaisonError::WrongKind(_)), "{err}");
    let err = block_on(alice.text_cursor(insight.clone(), SharedTextField::RequestAnswer, 0)).unwrap_err();
    assert!(matches!(err, LiaisonError::WrongKind(_)), "{err}");
    let visit = block_on(alice.create_interaction(common::new_interaction(kol, 1, Channel::Phone))).unwrap();
    let missing = SharedTextField::TopicDiscussion { topic_id: "nope".into() };
    let err = block_on(alice.splice_text(visit.clone(), missing, 0, 0, "x".into())).unwrap_err();
    assert!(matches!(err, LiaisonError::NotFound(_)), "{err}");
    let err =
        block_on(alice.splice_text(insight.clone(), SharedTextField::InsightText, 99, 0, "x".into())).unwrap_err();
    assert!(matches!(err, LiaisonError::InvalidInput(_)), "{err}");

    block_on(alice.submit(visit.clone())).unwrap();
    let err = block_on(alice.splice_text(visit, SharedTextField::InteractionSummary, 0, 0, "x".into())).unwrap_err();
    assert!(matches!(err, LiaisonError::Locked(_)), "{err}");
}
