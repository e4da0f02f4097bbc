//! SIP over TLS (RFC 3261 §26.2, port 5061): the server side, with rustls.
//!
//! The certificate and key come from `sip.tls_certificate` / `sip.tls_private_key` (PEM). Without
//! them a self-signed pair is generated at start, so the demo and tests run with TLS on; the log
//! says so, since phones will not trust it.

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

pub struct TlsSetup {
    pub acceptor: TlsAcceptor,
    /// True when no certificate was configured and one was generated.
    pub self_signed: bool,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn server(
    certificate: Option<&Path>,
    private_key: Option<&Path>,
    names: &[String],
) -> anyhow::Result<TlsSetup> {
    let (chain, key, self_signed) = match (certificate, private_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("reading {}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("parsing {}", cert.display()))?;
            if chain.is_empty() {
                anyhow::bail!("{}: no certificate in the file", cert.display());
            }
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("reading the private key {}", key.display()))?;
            (chain, key, false)
        }
        (None, None) => {
            let generated = rcgen::generate_simple_self_signed(names.to_vec())
                .context("generating a self-signed certificate")?;
            let key = PrivateKeyDer::try_from(generated.key_pair.serialize_der())
                .map_err(|e| anyhow::anyhow!("generated key: {e}"))?;
            (vec![generated.cert.der().clone()], key, true)
        }
        _ => anyhow::bail!("sip.tls_certificate and sip.tls_private_key go together"),
    };
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("certificate and key do not match")?;
    Ok(TlsSetup {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        self_signed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pair_and_files_both_load() {
        let setup = server(None, None, &["localhost".into()]).unwrap();
        assert!(setup.self_signed);
        let dir = std::env::temp_dir().join(format!("tandem-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["sip.example".into()]).unwrap();
        std::fs::write(dir.join("cert.pem"), generated.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), generated.key_pair.serialize_pem()).unwrap();
        let setup = server(Some(&dir.join("cert.pem")), Some(&dir.join("key.pem")), &[]).unwrap();
        assert!(!setup.self_signed);
        assert!(server(Some(&dir.join("key.pem")), Some(&dir.join("key.pem")), &[]).is_err());
        assert!(server(Some(&dir.join("cert.pem")), None, &[]).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
