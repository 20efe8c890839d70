//! Which relay certificates a device trusts: the platform's verifier (Android's TrustManager,
//! Apple's Security.framework, the system roots elsewhere: an enterprise CA that MDM installed
//! is trusted as the OS trusts it), optionally IT's own CA, and public-key pins on top.
//!
//! A pin is the SHA-256 of a certificate's SubjectPublicKeyInfo (its public key, DER), as HPKP
//! wrote them. It survives a renewal that keeps the key, so unlike a certificate fingerprint
//! it does not break every 90 days; a backup pin (a key kept offline for the next rotation)
//! lets IT rotate keys without a broken app. With the system roots, pins are checked *in
//! addition* to chain validation: any certificate in the validated chain must carry a pinned
//! key. With [`Trust::PinnedKeys`] (a self-signed relay, the relay's development certificate)
//! there is no chain: the leaf's key must be pinned, and the handshake signature is verified
//! with that key, so only its private key's holder passes.

use std::sync::Arc;

use base64::Engine as _;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use super::ClientError;

/// The SHA-256 of a SubjectPublicKeyInfo (DER): one public-key pin.
pub type SpkiPin = [u8; 32];

/// Which server certificates a device trusts.
#[derive(Clone, Debug)]
pub enum Trust {
    /// The platform's verifier and roots; if `pins` is not empty, the validated chain must also
    /// hold a certificate whose public key is pinned.
    System {
        /// Public-key pins (current key and backups); empty: no pinning.
        pins: Vec<SpkiPin>,
    },
    /// The platform's verifier, or else IT's private certificate authority (PEM): a chain to
    /// either is accepted; pins as with `System`.
    SystemPlus {
        /// One or more PEM certificates; at least one must parse.
        ca_pem: Vec<u8>,
        /// Public-key pins (current key and backups); empty: no pinning.
        pins: Vec<SpkiPin>,
    },
    /// No certificate authority: the leaf certificate's public key must be one of `pins`
    /// (a self-signed relay, such as its development certificate). Host name and validity
    /// dates are not checked; the handshake signature is.
    PinnedKeys {
        /// At least one pin.
        pins: Vec<SpkiPin>,
    },
}

/// The rustls configuration for a trust choice.
pub fn tls_config(trust: &Trust) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|_| ClientError::BadCertificate)?;
    let verifier = verifier(trust, provider)?;
    Ok(builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth())
}

fn verifier(trust: &Trust, provider: Arc<CryptoProvider>) -> Result<Arc<dyn ServerCertVerifier>, ClientError> {
    Ok(match trust {
        Trust::PinnedKeys { pins } if pins.is_empty() => return Err(ClientError::BadCertificate),
        Trust::PinnedKeys { pins } => Arc::new(KeyPinned { pins: pins.clone(), provider }),
        Trust::System { pins } => with_pins(platform(&provider)?, pins),
        Trust::SystemPlus { ca_pem, pins } => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca_pem).flatten() {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(ClientError::BadCertificate);
            }
            let private = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|_| ClientError::BadCertificate)?;
            // Where the platform has no roots to offer (a bare container), IT's CA alone.
            let either: Arc<dyn ServerCertVerifier> = match platform(&provider) {
                Ok(platform) => Arc::new(Either { first: platform, second: private }),
                Err(_) => private,
            };
            with_pins(either, pins)
        }
    })
}

fn platform(provider: &Arc<CryptoProvider>) -> Result<Arc<dyn ServerCertVerifier>, ClientError> {
    rustls_platform_verifier::Verifier::new(provider.clone())
        .map(|v| Arc::new(v) as Arc<dyn ServerCertVerifier>)
        .map_err(|e| {
            tracing::warn!(error = %e, "the platform's certificate verifier is unavailable");
            ClientError::BadCertificate
        })
}

fn with_pins(inner: Arc<dyn ServerCertVerifier>, pins: &[SpkiPin]) -> Arc<dyn ServerCertVerifier> {
    if pins.is_empty() { inner } else { Arc::new(ChainPinned { inner, pins: pins.to_vec() }) }
}

/// The public-key pin of a certificate (DER), leaf or CA; `None` if it does not parse.
pub fn spki_pin_of(cert: &CertificateDer<'_>) -> Option<SpkiPin> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    Some(Sha256::digest(parsed.subject_public_key_info().as_ref()).into())
}

/// Reads a pin: base64 of 32 bytes (as the relay prints it, and as HPKP's `pin-sha256`), or
/// 64 hex digits (colons allowed).
pub fn parse_spki_pin(s: &str) -> Option<SpkiPin> {
    let s = s.trim();
    if let Some(hex) = parse_fingerprint(s) {
        return Some(hex);
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    bytes.try_into().ok()
}

/// Parses 32 bytes of hex as the relay prints a certificate fingerprint (`AB:CD:...`) or plain.
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let hex: Vec<u8> = s.bytes().filter(|b| *b != b':').collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *o = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

fn untrusted() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

/// Accepts the leaf whose public key is pinned; signatures are still verified.
#[derive(Debug)]
struct KeyPinned {
    pins: Vec<SpkiPin>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for KeyPinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match spki_pin_of(end_entity) {
            Some(pin) if self.pins.contains(&pin) => Ok(ServerCertVerified::assertion()),
            _ => Err(untrusted()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Chain validation by `inner`, then a pinned key somewhere in the presented chain.
#[derive(Debug)]
struct ChainPinned {
    inner: Arc<dyn ServerCertVerifier>,
    pins: Vec<SpkiPin>,
}

impl ServerCertVerifier for ChainPinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        let pinned = std::iter::once(end_entity)
            .chain(intermediates)
            .filter_map(spki_pin_of)
            .any(|pin| self.pins.contains(&pin));
        if pinned { Ok(verified) } else { Err(untrusted()) }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
}

/// The platform's verifier, else IT's CA.
#[derive(Debug)]
struct Either {
    first: Arc<dyn ServerCertVerifier>,
    second: Arc<dyn ServerCertVerifier>,
}

impl ServerCertVerifier for Either {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.first.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Ok(v) => Ok(v),
            // IT's CA is held to the same rules (host name, dates) by the webpki verifier.
            Err(first) => {
                self.second.verify_server_cert(end_entity, intermediates, server_name, ocsp, now).map_err(|_| first)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.second.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.second.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.second.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests;
