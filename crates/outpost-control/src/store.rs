//! The control plane's durable state, in SQLite ([`Store`]): API keys (hashed), tenants, config
//! versions, the sequenced log with its outbox flag, purges, node acknowledgements and
//! idempotency records. One write is one transaction ([`Store::tx`]): the state change, its log
//! entry (unpublished) and the idempotency record commit together, so a crash after the commit
//! republishes the entry on restart and a retried request is answered from its record.
//!
//! The schema carries its version in `PRAGMA user_version`; [`MIGRATIONS`] brings any older file
//! up to date on open, and a file from a newer Outpost is refused with a clear error.

use crate::log::{Ack, Entry, Op, Rollup};
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// A storage failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("control store: {0}")]
pub struct StoreError(pub String);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError(e.to_string())
    }
}

/// Schema migrations, in order: migration `i` takes a file from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: keys, tenants, versions, the log (with its outbox flag), purges, acks, nodes.
    "CREATE TABLE keys (id TEXT PRIMARY KEY, tenant TEXT, hash BLOB NOT NULL, created_ms INTEGER NOT NULL);
     CREATE TABLE tenants (name TEXT PRIMARY KEY, doc TEXT NOT NULL, updated_ms INTEGER NOT NULL);
     CREATE TABLE versions (version INTEGER PRIMARY KEY, created_ms INTEGER NOT NULL, reason TEXT NOT NULL, tenants TEXT NOT NULL);
     CREATE TABLE log (seq INTEGER PRIMARY KEY AUTOINCREMENT, entry TEXT NOT NULL, published INTEGER NOT NULL DEFAULT 0);
     CREATE TABLE purges (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, tenant TEXT, request TEXT NOT NULL, issued_ms INTEGER NOT NULL);
     CREATE TABLE acks (seq INTEGER NOT NULL, node TEXT NOT NULL, at_ms INTEGER NOT NULL, error TEXT, PRIMARY KEY (seq, node));
     CREATE TABLE nodes (name TEXT PRIMARY KEY, applied INTEGER NOT NULL, seen_ms INTEGER NOT NULL);",
    // 2: idempotency records of writes, by key and Idempotency-Key.
    "CREATE TABLE idempotency (key_id TEXT NOT NULL, idem TEXT NOT NULL, request TEXT NOT NULL,
        status INTEGER NOT NULL, body TEXT NOT NULL, created_ms INTEGER NOT NULL, PRIMARY KEY (key_id, idem));",
    // 3: warm jobs, and progress details on acknowledgements.
    "CREATE TABLE warms (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, tenant TEXT, request TEXT NOT NULL, issued_ms INTEGER NOT NULL);
     ALTER TABLE acks ADD COLUMN detail TEXT;",
    // 4: analytics rollups nodes send with their heartbeats.
    "CREATE TABLE rollups (at_ms INTEGER NOT NULL, node TEXT NOT NULL, tenant TEXT NOT NULL, body TEXT NOT NULL);
     CREATE INDEX rollups_by_time ON rollups (at_ms, tenant);",
    // 5: canary rollouts of config versions.
    "CREATE TABLE rollouts (version INTEGER PRIMARY KEY, canary TEXT NOT NULL, previous INTEGER NOT NULL,
        state TEXT NOT NULL, started_ms INTEGER NOT NULL, decided_ms INTEGER, reason TEXT);",
];

/// A canary rollout of a config version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rollout {
    /// The version rolled out.
    pub version: u64,
    /// The canary PoP.
    pub canary: String,
    /// The version every other node keeps meanwhile (and the canary returns to on regression).
    pub previous: u64,
    /// `canary`, `promoted`, `rolled_back` or `superseded`.
    pub state: String,
    /// When the canary got it.
    pub started_ms: u64,
    /// When it was promoted or rolled back.
    pub decided_ms: Option<u64>,
    /// Why.
    pub reason: Option<String>,
}

/// The schema version this build writes.
pub fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Who an API key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Key id (the public part of the key; rate limits and idempotency records go by it).
    pub key_id: String,
    /// The tenant it acts for; none: the admin.
    pub tenant: Option<String>,
}

/// A recorded answer to an idempotent write.
#[derive(Debug, Clone)]
pub struct IdemRecord {
    /// Method and path of the request that made it.
    pub request: String,
    /// Status code.
    pub status: u16,
    /// JSON body.
    pub body: String,
}

/// A node as the control plane last heard of it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeState {
    /// Node name.
    pub name: String,
    /// Log position it has applied.
    pub applied: u64,
    /// Last heard from (ms since the epoch).
    pub seen_ms: u64,
}

/// A purge as recorded.
#[derive(Debug, Clone)]
pub struct PurgeRecord {
    /// Id.
    pub id: String,
    /// Log sequence.
    pub seq: u64,
    /// Tenant, when one was named.
    pub tenant: Option<String>,
    /// The request as accepted (JSON).
    pub request: serde_json::Value,
    /// Accepted at (ms).
    pub issued_ms: u64,
}

/// The control store.
pub struct Store {
    conn: Mutex<Connection>,
}

/// One transaction on the store.
pub struct Tx<'a> {
    tx: rusqlite::Transaction<'a>,
}

fn hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// Equal in time independent of where the bytes differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `n` random bytes as lower-case hex.
pub fn random_hex(n: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Split `opk_<id>.<secret>` into its id.
fn key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("opk_")?;
    let (id, secret) = rest.split_once('.')?;
    (!id.is_empty() && !secret.is_empty()).then_some(id)
}

impl Store {
    /// Open (or create) the store at `path`, migrating an older schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// A store in memory (tests).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        // WAL with synchronous=NORMAL: a committed write survives the process being killed.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn, MIGRATIONS)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` in one transaction, committed when it returns `Ok`.
    pub fn tx<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<R, E>,
    ) -> Result<R, E> {
        let mut conn = self.lock();
        let tx = conn
            .transaction()
            .map_err(|e| E::from(StoreError::from(e)))?;
        let t = Tx { tx };
        let r = f(&t)?;
        t.tx.commit().map_err(|e| E::from(StoreError::from(e)))?;
        Ok(r)
    }

    /// The schema version of the open file.
    pub fn version(&self) -> Result<i64, StoreError> {
        Ok(self
            .lock()
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }
}

/// Bring `conn` to `migrations.len()`, refusing a newer file.
pub fn migrate(conn: &mut Connection, migrations: &[&str]) -> Result<(), StoreError> {
    let have: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let want = migrations.len() as i64;
    if have > want {
        return Err(StoreError(format!(
            "the control database has schema version {have}; this outpost knows up to {want} (use a newer outpost)"
        )));
    }
    for (i, sql) in migrations.iter().enumerate().skip(have as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

impl Tx<'_> {
    // ----- keys -----

    /// Create a key for `tenant` (none: an admin key); returns the key, shown once.
    pub fn create_key(&self, tenant: Option<&str>, now_ms: u64) -> Result<String, StoreError> {
        let id = random_hex(6);
        let key = format!("opk_{id}.{}", random_hex(24));
        self.tx.execute(
            "INSERT INTO keys (id, tenant, hash, created_ms) VALUES (?1, ?2, ?3, ?4)",
            params![id, tenant, hash(&key), now_ms as i64],
        )?;
        Ok(key)
    }

    /// Register a given admin key (from config or the environment) unless it is known.
    pub fn ensure_admin_key(&self, key: &str, now_ms: u64) -> Result<(), StoreError> {
        let id = key_id(key).ok_or_else(|| {
            StoreError("an admin key must look like opk_<id>.<secret>".to_string())
        })?;
        self.tx.execute(
            "INSERT OR REPLACE INTO keys (id, tenant, hash, created_ms) VALUES (?1, NULL, ?2, ?3)",
            params![id, hash(key), now_ms as i64],
        )?;
        Ok(())
    }

    /// Whether any admin key exists.
    pub fn has_admin_key(&self) -> Result<bool, StoreError> {
        Ok(self
            .tx
            .query_row("SELECT COUNT(*) FROM keys WHERE tenant IS NULL", [], |r| {
                r.get::<_, i64>(0)
            })?
            > 0)
    }

    /// Who `key` belongs to (none: unknown). The stored hash is compared in constant time.
    pub fn principal(&self, key: &str) -> Result<Option<Principal>, StoreError> {
        let Some(id) = key_id(key) else {
            return Ok(None);
        };
        let row: Option<(Option<String>, Vec<u8>)> = self
            .tx
            .query_row(
                "SELECT tenant, hash FROM keys WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.and_then(|(tenant, stored)| {
            constant_time_eq(&stored, &hash(key)).then(|| Principal {
                key_id: id.to_string(),
                tenant,
            })
        }))
    }

    /// Remove a tenant's keys.
    pub fn delete_keys_of(&self, tenant: &str) -> Result<(), StoreError> {
        self.tx
            .execute("DELETE FROM keys WHERE tenant = ?1", params![tenant])?;
        Ok(())
    }

    // ----- tenants and versions -----

    /// Every tenant document, by name.
    pub fn tenants(&self) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let mut st = self
            .tx
            .prepare("SELECT name, doc FROM tenants ORDER BY name")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, doc) = row?;
            out.push((name, serde_json::from_str(&doc)?));
        }
        Ok(out)
    }

    /// One tenant's document.
    pub fn tenant(&self, name: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let doc: Option<String> = self
            .tx
            .query_row(
                "SELECT doc FROM tenants WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?;
        Ok(match doc {
            Some(d) => Some(serde_json::from_str(&d)?),
            None => None,
        })
    }

    /// Create or replace a tenant's document.
    pub fn put_tenant(
        &self,
        name: &str,
        doc: &serde_json::Value,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT OR REPLACE INTO tenants (name, doc, updated_ms) VALUES (?1, ?2, ?3)",
            params![name, doc.to_string(), now_ms as i64],
        )?;
        Ok(())
    }

    /// Remove a tenant; whether it existed.
    pub fn delete_tenant(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .tx
            .execute("DELETE FROM tenants WHERE name = ?1", params![name])?
            > 0)
    }

    /// Replace every tenant (a rollback).
    pub fn replace_tenants(
        &self,
        docs: &[serde_json::Value],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.tx.execute("DELETE FROM tenants", [])?;
        for d in docs {
            let name = d.get("name").and_then(|n| n.as_str()).unwrap_or_default();
            self.put_tenant(name, d, now_ms)?;
        }
        Ok(())
    }

    /// Record the current tenants as a new config version and append its log entry; returns
    /// the entry.
    pub fn new_version(&self, reason: &str, now_ms: u64) -> Result<Entry, StoreError> {
        self.new_version_to(reason, now_ms, &[])
    }

    /// Like [`Tx::new_version`], applied only by the boxes of the PoPs `only` (a canary; empty:
    /// everywhere).
    pub fn new_version_to(
        &self,
        reason: &str,
        now_ms: u64,
        only: &[String],
    ) -> Result<Entry, StoreError> {
        let tenants: Vec<serde_json::Value> = self.tenants()?.into_iter().map(|(_, d)| d).collect();
        let version: i64 = self.tx.query_row(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM versions",
            [],
            |r| r.get(0),
        )?;
        self.tx.execute(
            "INSERT INTO versions (version, created_ms, reason, tenants) VALUES (?1, ?2, ?3, ?4)",
            params![
                version,
                now_ms as i64,
                reason,
                serde_json::to_string(&tenants)?
            ],
        )?;
        self.append(
            Op::Config {
                version: version as u64,
                tenants,
                only: only.to_vec(),
            },
            now_ms,
        )
    }

    // ----- rollouts -----

    /// The latest version every node has (one not held back by a rollout that was not
    /// promoted); 0 when none.
    pub fn stable_version(&self) -> Result<u64, StoreError> {
        Ok(self.tx.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM versions
             WHERE version NOT IN (SELECT version FROM rollouts WHERE state != 'promoted')",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// Start a canary rollout of `version` (earlier canaries still watched are superseded).
    pub fn start_rollout(
        &self,
        version: u64,
        canary: &str,
        previous: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.supersede_canaries(&format!("superseded by version {version}"), now_ms)?;
        self.tx.execute(
            "INSERT INTO rollouts (version, canary, previous, state, started_ms) VALUES (?1, ?2, ?3, 'canary', ?4)",
            params![version as i64, canary, previous as i64, now_ms as i64],
        )?;
        Ok(())
    }

    /// End every rollout still in its canary phase (a newer version or a manual rollback).
    pub fn supersede_canaries(&self, reason: &str, now_ms: u64) -> Result<(), StoreError> {
        self.tx.execute(
            "UPDATE rollouts SET state = 'superseded', decided_ms = ?1, reason = ?2 WHERE state = 'canary'",
            params![now_ms as i64, reason],
        )?;
        Ok(())
    }

    /// Record the decision on a rollout.
    pub fn decide_rollout(
        &self,
        version: u64,
        state: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.tx.execute(
            "UPDATE rollouts SET state = ?1, reason = ?2, decided_ms = ?3 WHERE version = ?4",
            params![state, reason, now_ms as i64, version as i64],
        )?;
        Ok(())
    }

    /// Rollouts in `state` (or all), newest first.
    pub fn rollouts(&self, state: Option<&str>) -> Result<Vec<Rollout>, StoreError> {
        let mut st = self.tx.prepare(
            "SELECT version, canary, previous, state, started_ms, decided_ms, reason FROM rollouts
             WHERE (?1 IS NULL OR state = ?1) ORDER BY version DESC",
        )?;
        let rows = st.query_map(params![state], |r| {
            Ok(Rollout {
                version: r.get::<_, i64>(0)? as u64,
                canary: r.get(1)?,
                previous: r.get::<_, i64>(2)? as u64,
                state: r.get(3)?,
                started_ms: r.get::<_, i64>(4)? as u64,
                decided_ms: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
                reason: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Config versions, newest first: (version, created_ms, reason, tenant count).
    pub fn versions(&self) -> Result<Vec<(u64, u64, String, usize)>, StoreError> {
        let mut st = self.tx.prepare(
            "SELECT version, created_ms, reason, tenants FROM versions ORDER BY version DESC",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (v, at, reason, tenants) = row?;
            let n = serde_json::from_str::<Vec<serde_json::Value>>(&tenants)?.len();
            out.push((v as u64, at as u64, reason, n));
        }
        Ok(out)
    }

    /// One version's tenants and reason.
    pub fn version(&self, v: u64) -> Result<Option<(String, Vec<serde_json::Value>)>, StoreError> {
        let row: Option<(String, String)> = self
            .tx
            .query_row(
                "SELECT reason, tenants FROM versions WHERE version = ?1",
                params![v as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(match row {
            Some((reason, t)) => Some((reason, serde_json::from_str(&t)?)),
            None => None,
        })
    }

    // ----- the log -----

    /// Append `op` to the log (unpublished); returns the entry with its sequence.
    pub fn append(&self, op: Op, now_ms: u64) -> Result<Entry, StoreError> {
        self.tx
            .execute("INSERT INTO log (entry, published) VALUES ('', 0)", [])?;
        let seq = self.tx.last_insert_rowid() as u64;
        let entry = Entry {
            seq,
            issued_ms: now_ms,
            op,
        };
        self.tx.execute(
            "UPDATE log SET entry = ?1 WHERE seq = ?2",
            params![serde_json::to_string(&entry)?, seq as i64],
        )?;
        Ok(entry)
    }

    /// Entries not yet handed to the bus, in order.
    pub fn unpublished(&self) -> Result<Vec<Entry>, StoreError> {
        let mut st = self
            .tx
            .prepare("SELECT entry FROM log WHERE published = 0 ORDER BY seq")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(serde_json::from_str(&row?)?);
        }
        Ok(out)
    }

    /// The bus holds `seq`.
    pub fn mark_published(&self, seq: u64) -> Result<(), StoreError> {
        self.tx.execute(
            "UPDATE log SET published = 1 WHERE seq = ?1",
            params![seq as i64],
        )?;
        Ok(())
    }

    /// The last sequence in the log.
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        Ok(self
            .tx
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM log", [], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    // ----- purges and acks -----

    /// Record an accepted purge.
    pub fn insert_purge(&self, p: &PurgeRecord) -> Result<(), StoreError> {
        self.insert_job("purges", p)
    }

    /// Record an accepted warm job.
    pub fn insert_warm(&self, p: &PurgeRecord) -> Result<(), StoreError> {
        self.insert_job("warms", p)
    }

    /// A purge by id.
    pub fn purge(&self, id: &str) -> Result<Option<PurgeRecord>, StoreError> {
        self.job("purges", id)
    }

    /// A warm job by id.
    pub fn warm(&self, id: &str) -> Result<Option<PurgeRecord>, StoreError> {
        self.job("warms", id)
    }

    /// `table` is one of the job tables (`purges`, `warms`), never client input.
    fn insert_job(&self, table: &str, p: &PurgeRecord) -> Result<(), StoreError> {
        self.tx.execute(
            &format!("INSERT INTO {table} (id, seq, tenant, request, issued_ms) VALUES (?1, ?2, ?3, ?4, ?5)"),
            params![
                p.id,
                p.seq as i64,
                p.tenant,
                p.request.to_string(),
                p.issued_ms as i64
            ],
        )?;
        Ok(())
    }

    fn job(&self, table: &str, id: &str) -> Result<Option<PurgeRecord>, StoreError> {
        let row: Option<(String, i64, Option<String>, String, i64)> = self
            .tx
            .query_row(
                &format!("SELECT id, seq, tenant, request, issued_ms FROM {table} WHERE id = ?1"),
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        Ok(match row {
            Some((id, seq, tenant, request, issued)) => Some(PurgeRecord {
                id,
                seq: seq as u64,
                tenant,
                request: serde_json::from_str(&request)?,
                issued_ms: issued as u64,
            }),
            None => None,
        })
    }

    /// Record a node's acknowledgement (an entry's, or a heartbeat with `seq == 0`).
    pub fn record_ack(&self, ack: &Ack, now_ms: u64) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT INTO nodes (name, applied, seen_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET applied = MAX(applied, excluded.applied), seen_ms = excluded.seen_ms",
            params![ack.node, ack.applied as i64, now_ms as i64],
        )?;
        for r in &ack.rollups {
            self.tx.execute(
                "INSERT INTO rollups (at_ms, node, tenant, body) VALUES (?1, ?2, ?3, ?4)",
                params![now_ms as i64, ack.node, r.tenant, serde_json::to_string(r)?],
            )?;
        }
        if ack.seq > 0 {
            // The first report of an entry keeps its time; a progress report replaces the detail
            // (and its time).
            self.tx.execute(
                "INSERT INTO acks (seq, node, at_ms, error, detail) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(seq, node) DO UPDATE SET
                   at_ms = CASE WHEN excluded.detail IS NULL THEN acks.at_ms ELSE excluded.at_ms END,
                   detail = COALESCE(excluded.detail, acks.detail)",
                params![
                    ack.seq as i64,
                    ack.node,
                    ack.at_ms as i64,
                    ack.error,
                    ack.detail.as_ref().map(|d| d.to_string())
                ],
            )?;
        }
        Ok(())
    }

    /// Every node heard from.
    pub fn nodes(&self) -> Result<Vec<NodeState>, StoreError> {
        let mut st = self
            .tx
            .prepare("SELECT name, applied, seen_ms FROM nodes ORDER BY name")?;
        let rows = st.query_map([], |r| {
            Ok(NodeState {
                name: r.get(0)?,
                applied: r.get::<_, i64>(1)? as u64,
                seen_ms: r.get::<_, i64>(2)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The acknowledgements of `seq`: (node, at_ms, error).
    pub fn acks_of(&self, seq: u64) -> Result<Vec<(String, u64, Option<String>)>, StoreError> {
        Ok(self
            .acks_with_detail(seq)?
            .into_iter()
            .map(|(n, at, e, _)| (n, at, e))
            .collect())
    }

    /// The acknowledgements of `seq` with their latest progress detail.
    #[allow(clippy::type_complexity)]
    pub fn acks_with_detail(
        &self,
        seq: u64,
    ) -> Result<Vec<(String, u64, Option<String>, Option<serde_json::Value>)>, StoreError> {
        let mut st = self
            .tx
            .prepare("SELECT node, at_ms, error, detail FROM acks WHERE seq = ?1 ORDER BY node")?;
        let rows = st.query_map(params![seq as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (n, at, e, d) = row?;
            out.push((n, at, e, d.and_then(|d| serde_json::from_str(&d).ok())));
        }
        Ok(out)
    }

    // ----- analytics -----

    /// Rollups received since `from_ms` (of `tenant`, or every tenant): (at_ms, node, rollup).
    pub fn rollups_since(
        &self,
        tenant: Option<&str>,
        from_ms: u64,
    ) -> Result<Vec<(u64, String, Rollup)>, StoreError> {
        let mut st = self.tx.prepare(
            "SELECT at_ms, node, body FROM rollups WHERE at_ms >= ?1 AND (?2 IS NULL OR tenant = ?2) ORDER BY at_ms",
        )?;
        let rows = st.query_map(params![from_ms as i64, tenant], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (at, node, body) = row?;
            out.push((at, node, serde_json::from_str(&body)?));
        }
        Ok(out)
    }

    /// Drop rollups older than `before_ms`.
    pub fn prune_rollups(&self, before_ms: u64) -> Result<usize, StoreError> {
        Ok(self.tx.execute(
            "DELETE FROM rollups WHERE at_ms < ?1",
            params![before_ms as i64],
        )?)
    }

    // ----- idempotency -----

    /// The recorded answer for (`key_id`, `idem`).
    pub fn idem(&self, key_id: &str, idem: &str) -> Result<Option<IdemRecord>, StoreError> {
        Ok(self
            .tx
            .query_row(
                "SELECT request, status, body FROM idempotency WHERE key_id = ?1 AND idem = ?2",
                params![key_id, idem],
                |r| {
                    Ok(IdemRecord {
                        request: r.get(0)?,
                        status: r.get::<_, i64>(1)? as u16,
                        body: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    /// Record the answer for (`key_id`, `idem`).
    pub fn put_idem(
        &self,
        key_id: &str,
        idem: &str,
        rec: &IdemRecord,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT INTO idempotency (key_id, idem, request, status, body, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![key_id, idem, rec.request, rec.status as i64, rec.body, now_ms as i64],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::log::PurgeOp;

    #[test]
    fn keys_are_stored_hashed_and_checked() {
        let s = Store::in_memory().unwrap();
        let key = s.tx(|t| t.create_key(Some("shop"), 1)).unwrap();
        let p = s.tx(|t| t.principal(&key)).unwrap().unwrap();
        assert_eq!(p.tenant.as_deref(), Some("shop"));
        // A wrong secret with the right id, garbage, and the stored hash itself are refused.
        let (id, _) = key.split_once('.').unwrap();
        assert!(s
            .tx(|t| t.principal(&format!("{id}.nope")))
            .unwrap()
            .is_none());
        assert!(s.tx(|t| t.principal("Bearer x")).unwrap().is_none());
        let stored: Vec<u8> = s
            .lock()
            .query_row("SELECT hash FROM keys", [], |r| r.get(0))
            .unwrap();
        assert_ne!(stored, key.as_bytes(), "never stored in clear");
    }

    #[test]
    fn the_log_is_sequenced_and_the_outbox_drains() {
        let s = Store::in_memory().unwrap();
        let e1 = s
            .tx(|t| {
                t.put_tenant("a", &serde_json::json!({"name": "a"}), 1)?;
                t.new_version("create a", 1)
            })
            .unwrap();
        let e2 = s
            .tx(|t| {
                t.append(
                    Op::Purge(PurgeOp {
                        id: "pg_x".into(),
                        purge: outpost_proxy::admin::PurgeRequest {
                            everything: true,
                            tenant: Some("a".into()),
                            ..Default::default()
                        },
                    }),
                    2,
                )
            })
            .unwrap();
        assert_eq!((e1.seq, e2.seq), (1, 2));
        assert_eq!(s.tx(|t| t.unpublished()).unwrap().len(), 2);
        s.tx(|t| t.mark_published(1)).unwrap();
        let left = s.tx(|t| t.unpublished()).unwrap();
        assert_eq!(left, vec![e2]);
        assert!(matches!(e1.op, Op::Config { version: 1, .. }));
    }

    #[test]
    fn a_failed_transaction_leaves_nothing() {
        let s = Store::in_memory().unwrap();
        let r: Result<(), StoreError> = s.tx(|t| {
            t.put_tenant("a", &serde_json::json!({"name": "a"}), 1)?;
            t.new_version("x", 1)?;
            Err(StoreError("validation failed".into()))
        });
        assert!(r.is_err());
        assert!(s.tx(|t| t.tenants()).unwrap().is_empty());
        assert_eq!(s.tx(|t| t.last_seq()).unwrap(), 0);
    }

    #[test]
    fn an_old_file_is_migrated_and_a_newer_one_refused() {
        let dir = std::env::temp_dir().join(format!("outpost-ctl-{}", random_hex(6)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.db");
        {
            // A file written by the first schema, with data in it.
            let mut c = Connection::open(&path).unwrap();
            migrate(&mut c, &MIGRATIONS[..1]).unwrap();
            c.execute(
                "INSERT INTO tenants (name, doc, updated_ms) VALUES ('old', '{\"name\":\"old\"}', 1)",
                [],
            )
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.version().unwrap(), schema_version());
        assert_eq!(s.tx(|t| t.tenants()).unwrap()[0].0, "old");
        // The migration's table works.
        s.tx(|t| {
            t.put_idem(
                "k",
                "i",
                &IdemRecord {
                    request: "POST /x".into(),
                    status: 202,
                    body: "{}".into(),
                },
                1,
            )
        })
        .unwrap();
        drop(s);
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", schema_version() + 1)
                .unwrap();
        }
        let err = Store::open(&path).err().unwrap();
        assert!(err.0.contains("newer outpost"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
