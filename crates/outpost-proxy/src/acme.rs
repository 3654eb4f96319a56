//! ACME (RFC 8555) certificates for tenants with `tls.acme = true`, from the server in
//! `[node.acme]` (instant-acme; tested against pebble). The edge answers the challenge itself:
//! - HTTP-01 (the default): while an order is pending, `GET /.well-known/acme-challenge/TOKEN`
//!   on the HTTP listener returns the key authorization, for any Host, before tenant admission
//!   (RFC 8555 §8.3);
//! - TLS-ALPN-01 (`challenge = "tls-alpn-01"`, RFC 8737): while an order is pending, a TLS
//!   connection that offers ALPN `acme-tls/1` for the name gets a self-signed certificate
//!   carrying the key authorization's digest in its critical acmeIdentifier extension, and is
//!   closed after the handshake (`tls.rs` picks the certificate, `lib.rs` closes).
//!
//! A certificate is ordered when its file is missing or has lived `renew_at` (2/3) of its
//! lifetime. The new key and chain are written next to the old ones and renamed into place (both
//! mode 0600); the TLS listener's reload serves them within 2 s. A failed order (the CA refuses,
//! times out or is down) is retried with doubling backoff, and the old certificate keeps serving
//! until a new one is installed. The account's credentials live in `state_dir/account.json`
//! (0600) and are reused.

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use outpost_config::{AcmeChallenge, AcmeConfig};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The ALPN protocol of TLS-ALPN-01 validation connections (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Pending challenges (HTTP-01: token → key authorization; TLS-ALPN-01: name → validation
/// certificate) and order counters.
#[derive(Default)]
pub struct Challenges {
    map: RwLock<HashMap<String, String>>,
    any: AtomicBool,
    alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    any_alpn: AtomicBool,
    /// Certificates issued.
    pub issued: AtomicU64,
    /// Orders that failed.
    pub failed: AtomicU64,
}

/// The path prefix of HTTP-01 challenges.
pub const PREFIX: &str = "/.well-known/acme-challenge/";

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenges")
            .field("issued", &self.issued)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Challenges {
    /// The key authorization for `path`, when it is a pending challenge's.
    pub fn answer(&self, path: &str) -> Option<String> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        let token = path.strip_prefix(PREFIX)?;
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }

    /// The TLS-ALPN-01 validation certificate for `name`, when an order waits on it.
    pub fn alpn_cert(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        if !self.any_alpn.load(Ordering::Relaxed) {
            return None;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.alpn
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name)
            .cloned()
    }

    fn insert_alpn(&self, name: String, cert: Arc<CertifiedKey>) {
        let mut m = self.alpn.write().unwrap_or_else(|p| p.into_inner());
        m.insert(name.to_ascii_lowercase(), cert);
        self.any_alpn.store(true, Ordering::Relaxed);
    }

    fn remove_alpn(&self, names: &[String]) {
        let mut m = self.alpn.write().unwrap_or_else(|p| p.into_inner());
        for n in names {
            m.remove(&n.to_ascii_lowercase());
        }
        self.any_alpn.store(!m.is_empty(), Ordering::Relaxed);
    }

    fn insert(&self, token: String, key_auth: String) {
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        m.insert(token, key_auth);
        self.any.store(true, Ordering::Relaxed);
    }

    fn remove(&self, tokens: &[String]) {
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        for t in tokens {
            m.remove(t);
        }
        self.any.store(!m.is_empty(), Ordering::Relaxed);
    }
}

/// What the manager needs from the node each round: the tenants with ACME certificates.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    /// Hostnames (no wildcards: HTTP-01 cannot prove them).
    pub names: Vec<String>,
    /// Where the chain goes.
    pub cert: PathBuf,
    /// Where the key goes.
    pub key: PathBuf,
}

/// An ACME problem, for logs.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The ACME server or the protocol.
    #[error("acme: {0}")]
    Acme(#[from] instant_acme::Error),
    /// Files.
    #[error("acme {path}: {source}")]
    Io {
        /// Which file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Anything else.
    #[error("acme: {0}")]
    Other(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AcmeError + '_ {
    move |source| AcmeError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Whether the certificate at `cert` should be (re)ordered now: missing, unreadable, or past
/// `renew_at` of its lifetime.
pub fn due(cert: &Path, renew_at: f64, now: SystemTime) -> bool {
    let Ok(pem) = std::fs::read_to_string(cert) else {
        return true;
    };
    let Some((from, to)) = validity(&pem) else {
        return true;
    };
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let renew = from as f64 + (to - from) as f64 * renew_at;
    now as f64 >= renew
}

/// notBefore and notAfter (UNIX seconds) of the first certificate of a PEM chain.
pub fn validity(pem: &str) -> Option<(i64, i64)> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()?;
    der_validity(&der)
}

/// One DER element: (tag, contents, rest).
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    let (len, head) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let body = b.get(head..head.checked_add(len)?)?;
    Some((tag, body, &b[head + len..]))
}

/// X.509: Certificate ::= SEQUENCE { tbs SEQUENCE { [0] version?, serial, sigAlg, issuer,
/// validity SEQUENCE { notBefore, notAfter }, ... }, ... } (RFC 5280 §4.1).
fn der_validity(der: &[u8]) -> Option<(i64, i64)> {
    let (_, cert, _) = tlv(der)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    let (tag, _, r) = tlv(rest)?;
    if tag == 0xa0 {
        rest = r; // explicit version
    }
    let (_, _, r) = tlv(rest)?; // serial
    let (_, _, r) = tlv(r)?; // signature algorithm
    let (_, _, r) = tlv(r)?; // issuer
    let (_, validity, _) = tlv(r)?;
    let (t1, nb, r) = tlv(validity)?;
    let (t2, na, _) = tlv(r)?;
    Some((asn1_time(t1, nb)?, asn1_time(t2, na)?))
}

/// UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ) to UNIX seconds.
fn asn1_time(tag: u8, b: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(b).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let y: i64 = s.get(0..2)?.parse().ok()?;
            (if y >= 50 { 1900 + y } else { 2000 + y }, s.get(2..)?)
        }
        0x18 => (s.get(0..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    let n = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (mo, d, h, mi, se) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    Some(days_from_civil(year, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Write `text` to `path` through a temporary file and a rename; `private`: mode 0600.
fn write_atomic(path: &Path, text: &str, private: bool) -> Result<(), AcmeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

async fn account(cfg: &AcmeConfig) -> Result<Account, AcmeError> {
    let builder = || {
        if cfg.ca_file.is_empty() {
            Account::builder()
        } else {
            Account::builder_with_root(&cfg.ca_file)
        }
    };
    let creds_path = Path::new(&cfg.state_dir).join("account.json");
    if let Ok(text) = std::fs::read_to_string(&creds_path) {
        if let Ok(creds) = serde_json::from_str::<AccountCredentials>(&text) {
            return Ok(builder()?.from_credentials(creds).await?);
        }
    }
    let contact: Vec<&str> = cfg.contact.iter().map(String::as_str).collect();
    let (account, creds) = builder()?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            cfg.directory.clone(),
            None,
        )
        .await?;
    let text = serde_json::to_string(&creds).map_err(|e| AcmeError::Other(e.to_string()))?;
    write_atomic(&creds_path, &text, true)?;
    Ok(account)
}

/// The TLS-ALPN-01 validation certificate for `name` (RFC 8737 §3): self-signed, the name as
/// its only SAN, the SHA-256 of the key authorization in a critical acmeIdentifier extension.
fn alpn_certificate(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, AcmeError> {
    let other = |e: &dyn std::fmt::Display| AcmeError::Other(e.to_string());
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| other(&e))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let key = rcgen::KeyPair::generate().map_err(|e| other(&e))?;
    let cert = params.self_signed(&key).map_err(|e| other(&e))?;
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signer = rustls::crypto::ring::sign::any_supported_type(&der).map_err(|e| other(&e))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

/// Order a certificate for `w` and install it.
pub async fn issue(cfg: &AcmeConfig, w: &Wanted, challenges: &Challenges) -> Result<(), AcmeError> {
    let account = account(cfg).await?;
    let ids: Vec<Identifier> = w.names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let mut order = account.new_order(&NewOrder::new(&ids)).await?;
    let mut tokens = Vec::new();
    let mut names = Vec::new();
    let result = async {
        let mut authzs = order.authorizations();
        while let Some(a) = authzs.next().await {
            let mut a = a?;
            match a.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                s => return Err(AcmeError::Other(format!("authorization is {s:?}"))),
            }
            match cfg.challenge {
                AcmeChallenge::Http01 => {
                    let mut ch = a.challenge(ChallengeType::Http01).ok_or_else(|| {
                        AcmeError::Other("the CA offers no http-01 challenge".into())
                    })?;
                    challenges.insert(
                        ch.token.clone(),
                        ch.key_authorization().as_str().to_string(),
                    );
                    tokens.push(ch.token.clone());
                    ch.set_ready().await?;
                }
                AcmeChallenge::TlsAlpn01 => {
                    let mut ch = a.challenge(ChallengeType::TlsAlpn01).ok_or_else(|| {
                        AcmeError::Other("the CA offers no tls-alpn-01 challenge".into())
                    })?;
                    let instant_acme::Identifier::Dns(name) = ch.identifier().identifier else {
                        return Err(AcmeError::Other("tls-alpn-01 for a non-DNS name".into()));
                    };
                    let name = name.clone();
                    let cert = alpn_certificate(&name, ch.key_authorization().digest().as_ref())?;
                    challenges.insert_alpn(name.clone(), cert);
                    names.push(name);
                    ch.set_ready().await?;
                }
            }
        }
        let retry = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .timeout(Duration::from_secs(60));
        match order.poll_ready(&retry).await? {
            OrderStatus::Ready => {}
            s => return Err(AcmeError::Other(format!("order is {s:?}, not ready"))),
        }
        let mut params = rcgen::CertificateParams::new(w.names.clone())
            .map_err(|e| AcmeError::Other(e.to_string()))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let key = rcgen::KeyPair::generate().map_err(|e| AcmeError::Other(e.to_string()))?;
        let csr = params
            .serialize_request(&key)
            .map_err(|e| AcmeError::Other(e.to_string()))?;
        order.finalize_csr(csr.der()).await?;
        let chain = order.poll_certificate(&retry).await?;
        // Key first, then the chain: the listener's reload only takes a pair that matches.
        write_atomic(&w.key, &key.serialize_pem(), true)?;
        write_atomic(&w.cert, &chain, true)?;
        Ok(())
    }
    .await;
    challenges.remove(&tokens);
    challenges.remove_alpn(&names);
    result
}

/// The manager loop: every second, order what is due (per tenant, with backoff), until
/// `wanted` returns `None` (the node is gone).
pub async fn run(
    cfg: AcmeConfig,
    challenges: std::sync::Arc<Challenges>,
    wanted: impl Fn() -> Option<Vec<Wanted>>,
) {
    // Per certificate file: when to try next, and the current backoff.
    let mut backoff: HashMap<PathBuf, (std::time::Instant, Duration)> = HashMap::new();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(list) = wanted() else { return };
        for w in list {
            if w.names.is_empty() || !due(&w.cert, cfg.renew_at, SystemTime::now()) {
                continue;
            }
            if let Some((next, _)) = backoff.get(&w.cert) {
                if std::time::Instant::now() < *next {
                    continue;
                }
            }
            match tokio::time::timeout(Duration::from_secs(120), issue(&cfg, &w, &challenges)).await
            {
                Ok(Ok(())) => {
                    challenges.issued.fetch_add(1, Ordering::Relaxed);
                    backoff.remove(&w.cert);
                    tracing::info!(names = ?w.names, cert = %w.cert.display(), "ACME certificate installed");
                }
                outcome => {
                    challenges.failed.fetch_add(1, Ordering::Relaxed);
                    let error = match outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_string(),
                    };
                    let delay = backoff
                        .get(&w.cert)
                        .map_or(cfg.min_backoff.0, |(_, d)| (*d * 2).min(cfg.max_backoff.0));
                    backoff.insert(w.cert.clone(), (std::time::Instant::now() + delay, delay));
                    tracing::warn!(names = ?w.names, %error, retry_in = ?delay, "ACME order failed; the current certificate stays");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn validity_is_read_from_the_certificate() {
        let mut p = rcgen::CertificateParams::new(vec!["a.test".to_string()]).unwrap();
        p.not_before = rcgen::date_time_ymd(2026, 1, 1);
        p.not_after = rcgen::date_time_ymd(2026, 4, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let (from, to) = validity(&cert.pem()).unwrap();
        assert_eq!(from, 1_767_225_600); // 2026-01-01T00:00:00Z
        assert_eq!(to - from, 90 * 86_400);
        let day = |d: i64| UNIX_EPOCH + Duration::from_secs((from + d * 86_400) as u64);
        assert!(!due_pem(&cert.pem(), day(59)));
        assert!(due_pem(&cert.pem(), day(61)));
        // GeneralizedTime (after 2049).
        let mut p = rcgen::CertificateParams::new(vec!["a.test".to_string()]).unwrap();
        p.not_after = rcgen::date_time_ymd(2060, 1, 1);
        let c = p.self_signed(&key).unwrap();
        assert_eq!(validity(&c.pem()).unwrap().1, 2_840_140_800);
        assert!(validity("garbage").is_none());
    }

    fn due_pem(pem: &str, now: SystemTime) -> bool {
        let d = outpost_testkit::ScratchDir::for_thread("outpost-acme-due").unwrap();
        let file = d.join("cert.pem");
        std::fs::write(&file, pem).unwrap();
        due(&file, 2.0 / 3.0, now)
    }

    #[test]
    fn challenges_answer_only_their_tokens() {
        let c = Challenges::default();
        assert_eq!(c.answer("/.well-known/acme-challenge/t1"), None);
        c.insert("t1".into(), "t1.thumb".into());
        assert_eq!(
            c.answer("/.well-known/acme-challenge/t1").as_deref(),
            Some("t1.thumb")
        );
        assert_eq!(c.answer("/.well-known/acme-challenge/t2"), None);
        assert_eq!(c.answer("/t1"), None);
        c.remove(&["t1".into()]);
        assert_eq!(c.answer("/.well-known/acme-challenge/t1"), None);
    }

    #[test]
    fn der_parsing_never_panics_on_junk() {
        for n in 0..200u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ n).collect();
            let _ = der_validity(&junk);
        }
    }
}
