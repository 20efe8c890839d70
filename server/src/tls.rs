//! TLS: a development certificate made on first start (kept in the data directory), or PEM files
//! from the operator, reloaded on SIGHUP.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot write the development certificate: {0}")]
    Write(#[source] std::io::Error),
    #[error("cannot read {what}: {source}")]
    Read { what: &'static str, source: std::io::Error },
    #[error("cannot make a development certificate")]
    Generate,
    #[error("{0} holds no PEM certificate")]
    NoCertificate(PathBuf),
}

/// Paths of the development certificate and key in a data directory, created if missing.
pub fn dev_certificate(data_dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert = data_dir.join("dev-cert.pem");
    let key = data_dir.join("dev-key.pem");
    if cert.is_file() && key.is_file() {
        return Ok((cert, key));
    }
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let made = rcgen::generate_simple_self_signed(names).map_err(|_| TlsError::Generate)?;
    std::fs::create_dir_all(data_dir).map_err(TlsError::Write)?;
    write_private(&key, made.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert, made.cert.pem()).map_err(TlsError::Write)?;
    Ok((cert, key))
}

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    #[cfg(unix)]
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(TlsError::Write)?
    };
    #[cfg(not(unix))]
    let mut f = std::fs::File::create(path).map_err(TlsError::Write)?;
    f.write_all(bytes).map_err(TlsError::Write)
}

/// SHA-256 of the first certificate in a PEM file (DER), as colon-separated hex: what a client
/// pins, and what the relay prints at start.
pub fn fingerprint(cert_pem: &Path) -> Result<String, TlsError> {
    let pem = std::fs::read(cert_pem).map_err(|source| TlsError::Read { what: "the certificate", source })?;
    let der = first_der(&pem).ok_or_else(|| TlsError::NoCertificate(cert_pem.to_owned()))?;
    Ok(Sha256::digest(der).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":"))
}

/// The public-key pin of the first certificate in a PEM file: base64 of the SHA-256 of its
/// SubjectPublicKeyInfo (DER), as HPKP wrote pins. It survives a renewal that keeps the key
/// (a SIGHUP reload of a renewed certificate), unlike the certificate's fingerprint.
pub fn spki_pin(cert_pem: &Path) -> Result<String, TlsError> {
    use base64::Engine as _;
    let pem = std::fs::read(cert_pem).map_err(|source| TlsError::Read { what: "the certificate", source })?;
    let der = first_der(&pem).ok_or_else(|| TlsError::NoCertificate(cert_pem.to_owned()))?;
    let der = rustls::pki_types::CertificateDer::from(der);
    let cert = webpki::EndEntityCert::try_from(&der).map_err(|_| TlsError::NoCertificate(cert_pem.to_owned()))?;
    let spki = cert.subject_public_key_info();
    Ok(base64::engine::general_purpose::STANDARD.encode(Sha256::digest(spki.as_ref())))
}

fn first_der(pem: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let text = std::str::from_utf8(pem).ok()?;
    let start = text.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = text[start..].find("-----END CERTIFICATE-----")? + start;
    let b64: String = text[start..end].chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dev_certificate_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = dev_certificate(dir.path()).unwrap();
        let first = fingerprint(&cert).unwrap();
        assert_eq!(first.len(), 32 * 3 - 1);
        let (cert2, _) = dev_certificate(dir.path()).unwrap();
        assert_eq!(fingerprint(&cert2).unwrap(), first, "restarts keep the same certificate");
        let pin = spki_pin(&cert).unwrap();
        assert_eq!(pin.len(), 44, "base64 of 32 bytes: {pin}");
        assert_ne!(
            pin,
            spki_pin(&dev_certificate(&dir.path().join("other")).unwrap().0).unwrap(),
            "a new key, a new pin"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(key).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
