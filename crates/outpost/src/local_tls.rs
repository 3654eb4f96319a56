//! The local certificate authority of `outpost up`: a fresh CA and a certificate for the demo
//! tenant's names (demo.localhost, localhost, 127.0.0.1), written under ~/.outpost/tls (keys
//! 0600), so `curl --cacert ~/.outpost/tls/ca.pem https://demo.localhost:8443/` verifies for real.
//! Made anew at each start: nothing to trust beyond the run.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};

/// Files of the local CA and the demo certificate.
#[derive(Debug, Clone)]
pub struct LocalTls {
    /// The CA certificate (give it to curl with --cacert).
    pub ca: PathBuf,
    /// The demo tenant's certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// Make the CA and a certificate for `names` in `dir`.
pub fn make(dir: &Path, names: &[String]) -> Result<LocalTls, String> {
    let err = |e: rcgen::Error| format!("local CA: {e}");
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "Outpost local CA (outpost up)");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().map_err(err)?;
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;

    let dns: Vec<String> = names
        .iter()
        .filter(|n| n.parse::<std::net::IpAddr>().is_err() && n.as_str() != "*")
        .cloned()
        .collect();
    let mut leaf = CertificateParams::new(dns).map_err(err)?;
    for n in names {
        if let Ok(ip) = n.parse::<std::net::IpAddr>() {
            leaf.subject_alt_names.push(SanType::IpAddress(ip));
        }
    }
    leaf.distinguished_name.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().map_err(err)?;
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).map_err(err)?;

    let files = LocalTls {
        ca: dir.join("ca.pem"),
        cert: dir.join("demo.pem"),
        key: dir.join("demo.key"),
    };
    let write = |p: &Path, text: &str, private: bool| -> Result<(), String> {
        if private {
            crate::ctl::write_private(p, text)
        } else {
            std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))
        }
    };
    write(&files.ca, &ca_cert.pem(), false)?;
    // The chain: leaf then CA.
    write(
        &files.cert,
        &format!("{}{}", leaf_cert.pem(), ca_cert.pem()),
        false,
    )?;
    write(&files.key, &leaf_key.serialize_pem(), true)?;
    Ok(files)
}

/// Where `outpost up` keeps them.
pub fn default_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h).join(".outpost").join("tls"),
        _ => std::env::temp_dir().join("outpost-tls"),
    }
}
