#![allow(clippy::unwrap_used)]

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, PublicKeyData};

use super::*;

fn pin_of_key(key: &KeyPair) -> SpkiPin {
    Sha256::digest(key.subject_public_key_info()).into()
}

fn self_signed() -> (CertificateDer<'static>, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
    (cert.der().clone(), key)
}

fn host() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

fn verify(v: &dyn ServerCertVerifier, leaf: &CertificateDer<'_>, chain: &[CertificateDer<'_>]) -> bool {
    v.verify_server_cert(leaf, chain, &host(), &[], UnixTime::now()).is_ok()
}

#[test]
fn pins_read_as_base64_or_hex_and_nothing_else() {
    let pin = [0xab; 32];
    let b64 = base64::engine::general_purpose::STANDARD.encode(pin);
    assert_eq!(parse_spki_pin(&b64), Some(pin));
    assert_eq!(parse_spki_pin(&format!(" {b64}\n")), Some(pin), "surrounding blanks");
    assert_eq!(parse_spki_pin(&"ab".repeat(32)), Some(pin));
    assert_eq!(parse_spki_pin(&vec!["AB"; 32].join(":")), Some(pin));
    assert_eq!(parse_spki_pin(&base64::engine::general_purpose::STANDARD.encode([1u8; 31])), None, "31 bytes");
    assert_eq!(parse_spki_pin("not a pin"), None);
    assert_eq!(parse_spki_pin(""), None);
}

#[test]
fn the_pin_is_the_hash_of_the_public_key_and_survives_a_renewal() {
    let (cert, key) = self_signed();
    assert_eq!(spki_pin_of(&cert), Some(pin_of_key(&key)));
    let renewed = CertificateParams::new(vec!["localhost".to_owned(), "relay.example".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    assert_ne!(renewed.der(), &cert, "another certificate");
    assert_eq!(spki_pin_of(renewed.der()), Some(pin_of_key(&key)), "the same key, the same pin");
    assert_eq!(spki_pin_of(&CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00])), None);
}

#[test]
fn a_key_pin_accepts_the_pinned_key_or_its_backup_and_nothing_else() {
    let (cert, key) = self_signed();
    let (other, _) = self_signed();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let backup = [7u8; 32];
    let pinned = KeyPinned { pins: vec![backup, pin_of_key(&key)], provider: provider.clone() };
    assert!(verify(&pinned, &cert, &[]), "the current key");
    assert!(!verify(&pinned, &other, &[]), "another key");
    let only_backup = KeyPinned { pins: vec![backup], provider };
    assert!(!verify(&only_backup, &cert, &[]));
    assert!(matches!(tls_config(&Trust::PinnedKeys { pins: vec![] }), Err(ClientError::BadCertificate)));
}

/// A CA and a leaf it signed for `localhost`; the leaf's chain as a server presents it.
fn ca_and_leaf() -> (CertifiedIssuer<'static, KeyPair>, CertificateDer<'static>, KeyPair) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&leaf_key, &ca).unwrap();
    (ca, leaf.der().clone(), leaf_key)
}

#[test]
fn pins_on_a_validated_chain_are_checked_in_addition_to_it() {
    let (ca, leaf, leaf_key) = ca_and_leaf();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let chain = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
    let intermediates = [ca.der().clone()];
    assert!(verify(chain.as_ref(), &leaf, &intermediates), "the chain alone validates");
    let unpinned = with_pins(chain.clone(), &[]);
    assert!(verify(unpinned.as_ref(), &leaf, &intermediates), "no pins: the chain decides");
    let leaf_pinned = with_pins(chain.clone(), &[[9; 32], pin_of_key(&leaf_key)]);
    assert!(verify(leaf_pinned.as_ref(), &leaf, &intermediates), "the leaf's key is pinned");
    let ca_pinned = with_pins(chain.clone(), &[spki_pin_of(ca.der()).unwrap()]);
    assert!(verify(ca_pinned.as_ref(), &leaf, &intermediates), "the CA's key is pinned");
    let elsewhere = with_pins(chain.clone(), &[[9; 32]]);
    assert!(!verify(elsewhere.as_ref(), &leaf, &intermediates), "a valid chain without a pinned key is refused");
    // A pinned key does not stand in for the chain.
    let (stranger, stranger_key) = self_signed();
    let stranger_pinned = with_pins(chain, &[pin_of_key(&stranger_key)]);
    assert!(!verify(stranger_pinned.as_ref(), &stranger, &[]), "pinned, but not from a trusted CA");
}

#[test]
fn its_own_ca_is_trusted_beside_the_platform_and_bad_pem_is_refused() {
    let (ca, leaf, _) = ca_and_leaf();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = verifier(&Trust::SystemPlus { ca_pem: ca.pem().into_bytes(), pins: vec![] }, provider).unwrap();
    assert!(verify(verifier.as_ref(), &leaf, &[ca.der().clone()]), "a chain to IT's CA");
    let (stranger, _) = self_signed();
    assert!(!verify(verifier.as_ref(), &stranger, &[]), "a self-signed stranger");
    let garbage = Trust::SystemPlus { ca_pem: b"-----BEGIN CERTIFICATE-----\nAAAA\n".to_vec(), pins: vec![] };
    assert!(matches!(tls_config(&garbage), Err(ClientError::BadCertificate)));
}
