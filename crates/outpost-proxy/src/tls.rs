//! The HTTPS listener: rustls (ring provider) with TLS 1.3 and 1.2 (rustls offers only AEAD
//! suites with forward secrecy), ALPN `h2` and `http/1.1`, session resumption by tickets (keys
//! rotated) and a server-side session cache, and certificates chosen by SNI from the tenants'
//! `[tenant.tls]` files (a `*.example.com` certificate covers one label), with a default
//! certificate for unknown names. Certificate files are checked every 2 s and the SNI table is
//! rebuilt when a file or the config snapshot's TLS settings change, so a renewed certificate
//! is served without a restart; a file that no longer loads keeps its last good certificate.
//!
//! Which tenant the SNI named travels with each request ([`TlsInfo`]): a request whose Host
//! belongs to another tenant gets 421 (RFC 9110 §15.5.20), so one tenant's certificate never
//! fronts another tenant's content.

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// What the TLS layer tells the request path.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// The SNI host name, lower case, if the client sent one.
    pub sni: Option<Arc<str>>,
    /// With 0-RTT on: true while the connection's handshake is incomplete (`crate::early`).
    pub early: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl TlsInfo {
    /// Whether a request read now arrived as TLS early data (before the handshake completed).
    pub fn in_early_data(&self) -> bool {
        self.early
            .as_ref()
            .is_some_and(|f| f.load(std::sync::atomic::Ordering::Acquire))
    }
}

/// One certificate source: files (or the PEM text itself) and the names it covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Source {
    cert: PathBuf,
    key: PathBuf,
    pem: Option<Arc<(String, String)>>,
}

#[derive(Default)]
struct Table {
    /// Exact names and `*.suffix` wildcards → key.
    names: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
    /// What the table was built from (sources with their names, default source) and the files'
    /// modification times.
    built_from: Vec<(Source, Vec<String>)>,
    default_source: Option<Source>,
    mtimes: Vec<Option<SystemTime>>,
    /// Last good keys per source (kept when a file stops loading).
    loaded: HashMap<Source, Arc<CertifiedKey>>,
}

/// The SNI → certificate table, swapped whole on change.
pub struct CertStore {
    table: ArcSwap<Table>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.table.load();
        f.debug_struct("CertStore")
            .field("names", &t.names.len())
            .field("default", &t.default.is_some())
            .finish()
    }
}

/// A certificate problem (names the file).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct CertError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Check an uploaded chain and key (PEM text): both parse and the key matches the leaf.
pub fn check_pem(cert_pem: &str, key_pem: &str) -> Result<(), CertError> {
    let provider = rustls::crypto::ring::default_provider();
    let src = Source {
        cert: PathBuf::from("cert_pem"),
        key: PathBuf::from("key_pem"),
        pem: Some(Arc::new((cert_pem.to_string(), key_pem.to_string()))),
    };
    load_key(&provider, &src).map(|_| ())
}

fn load_key(provider: &CryptoProvider, src: &Source) -> Result<Arc<CertifiedKey>, CertError> {
    let err = |p: &Path, m: String| CertError {
        path: p.display().to_string(),
        message: m,
    };
    let (certs, key) = match &src.pem {
        Some(pem) => {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(pem.0.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| err(&src.cert, e.to_string()))?;
            let key = PrivateKeyDer::from_pem_slice(pem.1.as_bytes())
                .map_err(|e| err(&src.key, e.to_string()))?;
            (certs, key)
        }
        None => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&src.cert)
                .map_err(|e| err(&src.cert, e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| err(&src.cert, e.to_string()))?;
            let key =
                PrivateKeyDer::from_pem_file(&src.key).map_err(|e| err(&src.key, e.to_string()))?;
            (certs, key)
        }
    };
    if certs.is_empty() {
        return Err(err(&src.cert, "no CERTIFICATE in it".into()));
    }
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| err(&src.key, e.to_string()))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| {
        err(
            &src.key,
            format!("does not match {}: {e}", src.cert.display()),
        )
    })?;
    Ok(Arc::new(ck))
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// A tenant's certificate files and the names they serve.
#[derive(Debug, Clone, PartialEq)]
pub struct CertSource {
    /// Chain (PEM).
    pub cert: PathBuf,
    /// Key (PEM).
    pub key: PathBuf,
    /// Hostnames (lower case; `*.x` wildcards as given).
    pub names: Vec<String>,
    /// Issued by ACME: the files may not exist yet (not an error).
    pub acme: bool,
    /// The PEM text itself (chain, key), when uploaded through the control plane.
    pub pem: Option<Arc<(String, String)>>,
}

/// Certificate files: per tenant with TLS, and the default (cert, key).
pub type TlsSources = (Vec<CertSource>, Option<(PathBuf, PathBuf)>);

/// Sources from a config: tenant certificates with their hostnames, and the default.
pub fn sources(cfg: &outpost_config::Config) -> TlsSources {
    let tenants = cfg
        .tenants
        .iter()
        .filter_map(|t| {
            let tls = t.tls.as_ref()?;
            let names = t
                .hostnames
                .iter()
                .filter(|h| h.as_str() != "*")
                .map(|h| h.to_ascii_lowercase())
                .collect();
            let pem = (!tls.cert_pem.is_empty())
                .then(|| Arc::new((tls.cert_pem.clone(), tls.key_pem.clone())));
            Some(CertSource {
                cert: PathBuf::from(if pem.is_some() {
                    "(uploaded)"
                } else {
                    &tls.cert
                }),
                key: PathBuf::from(if pem.is_some() {
                    "(uploaded)"
                } else {
                    &tls.key
                }),
                names,
                acme: tls.acme && pem.is_none(),
                pem,
            })
        })
        .collect();
    let default = (!cfg.node.tls_default_cert.is_empty()).then(|| {
        (
            PathBuf::from(&cfg.node.tls_default_cert),
            PathBuf::from(&cfg.node.tls_default_key),
        )
    });
    (tenants, default)
}

impl CertStore {
    /// Load every certificate of `cfg`; any that fails to load is an error naming its file.
    pub fn new(cfg: &outpost_config::Config) -> Result<Arc<Self>, CertError> {
        let store = Arc::new(Self {
            table: ArcSwap::from_pointee(Table::default()),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        });
        let (tenants, default) = sources(cfg);
        store.rebuild(&tenants, default.as_ref(), true)?;
        Ok(store)
    }

    /// Rebuild when the sources or any file's modification time changed. With `strict`, a
    /// source that does not load is an error; otherwise its last good key stays (and a warning
    /// is logged). Returns whether the table changed.
    pub fn rebuild(
        &self,
        tenants: &[CertSource],
        default: Option<&(PathBuf, PathBuf)>,
        strict: bool,
    ) -> Result<bool, CertError> {
        let old = self.table.load_full();
        let built_from: Vec<(Source, Vec<String>)> = tenants
            .iter()
            .map(|t| {
                (
                    Source {
                        cert: t.cert.clone(),
                        key: t.key.clone(),
                        pem: t.pem.clone(),
                    },
                    t.names.clone(),
                )
            })
            .collect();
        let not_yet: Vec<Source> = tenants
            .iter()
            .filter(|t| t.acme && !t.cert.exists())
            .map(|t| Source {
                cert: t.cert.clone(),
                key: t.key.clone(),
                pem: None,
            })
            .collect();
        let default_source = default.map(|(c, k)| Source {
            cert: c.clone(),
            key: k.clone(),
            pem: None,
        });
        let files: Vec<&Path> = built_from
            .iter()
            .map(|(s, _)| s)
            .chain(default_source.iter())
            .filter(|s| s.pem.is_none())
            .flat_map(|s| [s.cert.as_path(), s.key.as_path()])
            .collect();
        let mtimes: Vec<Option<SystemTime>> = files.iter().map(|p| mtime(p)).collect();
        if !strict
            && old.built_from == built_from
            && old.default_source == default_source
            && old.mtimes == mtimes
        {
            return Ok(false);
        }
        let mut loaded = HashMap::new();
        let mut get = |src: &Source| -> Result<Option<Arc<CertifiedKey>>, CertError> {
            if not_yet.contains(src) {
                // An ACME certificate not issued yet: nothing to serve for it, no error.
                return Ok(None);
            }
            match load_key(&self.provider, src) {
                Ok(k) => {
                    loaded.insert(src.clone(), k.clone());
                    Ok(Some(k))
                }
                Err(e) if strict => Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "certificate not reloaded; the last good one stays");
                    let kept = old.loaded.get(src).cloned();
                    if let Some(k) = &kept {
                        loaded.insert(src.clone(), k.clone());
                    }
                    Ok(kept)
                }
            }
        };
        let mut names = HashMap::new();
        for (src, hosts) in &built_from {
            if let Some(k) = get(src)? {
                for h in hosts {
                    names.insert(h.clone(), k.clone());
                }
            }
        }
        let default_key = match &default_source {
            Some(s) => get(s)?,
            None => None,
        };
        self.table.store(Arc::new(Table {
            names,
            default: default_key,
            built_from,
            default_source,
            mtimes,
            loaded,
        }));
        tracing::info!("TLS certificates loaded");
        Ok(true)
    }

    /// The key for an SNI name: exact, then a wildcard one label up, then the default.
    pub fn lookup(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let t = self.table.load();
        if let Some(name) = sni {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if let Some(k) = t.names.get(&name) {
                return Some(k.clone());
            }
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(k) = t.names.get(&format!("*.{parent}")) {
                    return Some(k.clone());
                }
            }
        }
        t.default.clone()
    }

    /// The rustls server config: TLS 1.3 and 1.2, ALPN h2 + http/1.1, tickets and a session
    /// cache, certificates from this store. `early_data` > 0 turns on 0-RTT (`crate::early`):
    /// rustls then resumes only from its single-use session cache (no tickets, which could be
    /// replayed across connections) and may send the answer as 0.5-RTT data.
    ///
    /// With `acme` (TLS-ALPN-01, RFC 8737), `acme-tls/1` is offered too: a connection that
    /// asks for it gets the pending validation certificate for its SNI name (and is closed
    /// after the handshake by the listener).
    pub fn server_config(
        self: &Arc<Self>,
        early_data: u32,
        acme: Option<Arc<crate::acme::Challenges>>,
    ) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        let with_acme = acme.is_some();
        let mut cfg = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone(), acme)));
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        if with_acme {
            cfg.alpn_protocols.push(crate::acme::ACME_TLS_ALPN.to_vec());
        }
        // Ticket keys rotate every 6 hours (rustls' ring ticketer); a stateful cache as well
        // for clients that do not use tickets (TLS 1.2 session IDs).
        cfg.session_storage = ServerSessionMemoryCache::new(16_384);
        if early_data == 0 {
            cfg.ticketer = rustls::crypto::ring::Ticketer::new()?;
        } else {
            cfg.max_early_data_size = early_data;
            cfg.send_half_rtt_data = true;
        }
        Ok(Arc::new(cfg))
    }
}

#[derive(Debug)]
struct Resolver(Arc<CertStore>, Option<Arc<crate::acme::Challenges>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(acme) = &self.1 {
            // RFC 8737 §3: a validation connection offers acme-tls/1; it gets the validation
            // certificate or nothing, never the tenant's.
            if hello
                .alpn()
                .is_some_and(|mut protos| protos.any(|p| p == crate::acme::ACME_TLS_ALPN))
            {
                return acme.alpn_cert(hello.server_name()?);
            }
        }
        self.0.lookup(hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Duration;

    fn write_cert(dir: &Path, name: &str, hosts: &[&str]) -> (PathBuf, PathBuf) {
        let ck = rcgen::generate_simple_self_signed(
            hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let c = dir.join(format!("{name}.pem"));
        let k = dir.join(format!("{name}.key"));
        std::fs::write(&c, ck.cert.pem()).unwrap();
        std::fs::write(&k, ck.key_pair.serialize_pem()).unwrap();
        (c, k)
    }

    fn src(cert: PathBuf, key: PathBuf, name: &str) -> CertSource {
        CertSource {
            cert,
            key,
            names: vec![name.into()],
            acme: false,
            pem: None,
        }
    }

    fn dir() -> outpost_testkit::ScratchDir {
        outpost_testkit::ScratchDir::for_thread("outpost-tls-unit").unwrap()
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_default() {
        let d = dir();
        let (ac, ak) = write_cert(&d, "a", &["a.test"]);
        let (wc, wk) = write_cert(&d, "w", &["*.shop.test"]);
        let (dc, dk) = write_cert(&d, "d", &["default.test"]);
        let store = Arc::new(CertStore {
            table: ArcSwap::from_pointee(Table::default()),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        });
        store
            .rebuild(
                &[src(ac, ak, "a.test"), src(wc, wk, "*.shop.test")],
                Some(&(dc, dk)),
                true,
            )
            .unwrap();
        let a = store.lookup(Some("A.test.")).unwrap();
        let w = store.lookup(Some("www.shop.test")).unwrap();
        let def = store.lookup(Some("other.test")).unwrap();
        assert!(!Arc::ptr_eq(&a, &w) && !Arc::ptr_eq(&a, &def) && !Arc::ptr_eq(&w, &def));
        // A wildcard covers one label only.
        assert!(Arc::ptr_eq(
            &store.lookup(Some("a.b.shop.test")).unwrap(),
            &def
        ));
        assert!(Arc::ptr_eq(&store.lookup(None).unwrap(), &def));
    }

    #[test]
    fn uploaded_pem_is_checked_and_served() {
        let a = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.test".to_string()]).unwrap();
        assert!(check_pem(&a.cert.pem(), &a.key_pair.serialize_pem()).is_ok());
        let e = check_pem(&a.cert.pem(), &b.key_pair.serialize_pem()).unwrap_err();
        assert_eq!(e.path, "key_pem", "{e}");
        let e = check_pem("junk", &a.key_pair.serialize_pem()).unwrap_err();
        assert_eq!(e.path, "cert_pem", "{e}");
        let store = Arc::new(CertStore {
            table: ArcSwap::from_pointee(Table::default()),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        });
        let src = CertSource {
            cert: PathBuf::from("(uploaded)"),
            key: PathBuf::from("(uploaded)"),
            names: vec!["a.test".into()],
            acme: false,
            pem: Some(Arc::new((a.cert.pem(), a.key_pair.serialize_pem()))),
        };
        assert!(store
            .rebuild(std::slice::from_ref(&src), None, true)
            .unwrap());
        assert!(store.lookup(Some("a.test")).is_some());
        assert!(
            !store.rebuild(&[src], None, false).unwrap(),
            "same text: no rebuild"
        );
    }

    #[test]
    fn a_broken_file_keeps_the_last_good_certificate_and_a_new_one_is_picked_up() {
        let d = dir();
        let (c, k) = write_cert(&d, "a", &["a.test"]);
        let store = Arc::new(CertStore {
            table: ArcSwap::from_pointee(Table::default()),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        });
        let src = vec![src(c.clone(), k.clone(), "a.test")];
        assert!(store.rebuild(&src, None, true).unwrap());
        let first = store.lookup(Some("a.test")).unwrap();
        assert!(
            !store.rebuild(&src, None, false).unwrap(),
            "nothing changed"
        );
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&c, "not a certificate").unwrap();
        assert!(store.rebuild(&src, None, false).unwrap());
        assert!(Arc::ptr_eq(&store.lookup(Some("a.test")).unwrap(), &first));
        std::thread::sleep(Duration::from_millis(20));
        write_cert(&d, "a", &["a.test"]);
        assert!(store.rebuild(&src, None, false).unwrap());
        assert!(!Arc::ptr_eq(&store.lookup(Some("a.test")).unwrap(), &first));
        // Strict loading names the file.
        std::fs::write(&k, "junk").unwrap();
        let e = store.rebuild(&src, None, true).unwrap_err();
        assert!(e.path.ends_with("a.key"), "{e}");
    }
}
