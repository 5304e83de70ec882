#![doc = include_str!("../README.md")]

use std::sync::Arc;

use hyper_rustls::ConfigBuilderExt as _;

/// The TLS settings of an outgoing HTTPS client: rustls on ring, trusting the system's
/// certificate authorities; without any, an empty trust store (HTTPS then fails at the
/// handshake while plain HTTP still works).
///
/// # Errors
/// When rustls refuses the protocol versions (it does not with the ring provider).
pub fn client_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    Ok(match builder.with_native_roots() {
        Ok(builder) => builder.with_no_client_auth(),
        Err(_) => rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    })
}

#[cfg(test)]
mod tests {
    use super::client_config;

    #[test]
    fn the_client_settings_offer_tls_1_2_and_1_3_on_ring() {
        let config = client_config().expect("TLS settings");
        let versions: Vec<_> = config
            .crypto_provider()
            .cipher_suites
            .iter()
            .map(|suite| suite.version().version)
            .collect();
        assert!(versions.contains(&rustls::ProtocolVersion::TLSv1_2));
        assert!(versions.contains(&rustls::ProtocolVersion::TLSv1_3));
        assert!(
            !config.client_auth_cert_resolver.has_certs(),
            "no client certificate"
        );
    }
}
