//! etcd v3 backend: the same [`ConfigStore`] semantics as the embedded store, kept in an etcd
//! cluster so several controller replicas can share one state (HA).
//!
//! Where it sits: [`open_url`](crate::open_url) returns it for `etcd://host:port[,host:port…][/prefix]`;
//! the controller and its leader election ([`EtcdStore::client`]) then talk to etcd through it.
//!
//! # Layout and why weft keeps its own revision
//! Everything lives under one key prefix (`weft/` by default, or the URL's path), so several
//! weft clusters (or tests) can share one etcd:
//! * `<prefix>meta/rev`: the weft revision (decimal), bumped by every weft transaction;
//! * `<prefix>meta/compacted`: the weft compaction point;
//! * `<prefix>log/<revision, 20 digits>`: the events of one weft transaction, in op order;
//! * `<prefix>kv/<key>`: a weft key; the value is `create_revision` and `mod_revision`
//!   (8 bytes big-endian each) followed by the value bytes.
//!
//! weft keeps its own revision counter and change log instead of reusing etcd's revisions
//! because the [`ConfigStore`] contract cannot be met with etcd's natively:
//! * etcd revisions are global to the etcd cluster: anything else writing to it (another weft
//!   prefix, the leader-election key, a lease) bumps them, so weft revisions would not be
//!   contiguous and a watch could not tell "nothing happened" from "missed something";
//! * an etcd txn may not touch the same key twice, but weft txns may (`put a, delete a`)
//!   and their watchers must see every op in order;
//! * etcd compaction is cluster-wide and operator-controlled (`--auto-compaction-*`): weft's
//!   compaction must only trim weft's own log.
//!
//! # Commit
//! Optimistic and serialized by `meta/rev`: read `meta/rev` and the touched keys at one etcd
//! revision, evaluate the guards and ops locally with the shared semantics
//! ([`apply_txn`]), then write the new revision, the log entry and the net key changes in ONE
//! etcd txn guarded by "`meta/rev` unchanged". Another writer in between makes the guard fail
//! and the commit retries from the read, so weft guards hold exactly as in the embedded store
//! even with several writers (controller replicas). etcd's raft makes the write durable
//! (replicated and fsynced) before it answers.
//!
//! # Watch
//! One background task per store follows the etcd watch of `<prefix>log/` and fans the
//! decoded transactions out through the shared watch machinery ([`crate::watch`]), which
//! replays from the log and repairs gaps from it. If the etcd watch breaks (connection lost,
//! etcd history compacted) the task re-reads the weft log after its cursor and re-watches, so
//! a weft watch never skips or repeats an event.
//!
//! # Limits
//! One weft transaction is one etcd txn: etcd's `--max-txn-ops` (default 128) and
//! `--max-request-bytes` (default 1.5 MiB) bound its size; run etcd with larger limits
//! (e.g. `--max-txn-ops=10000 --max-request-bytes=33554432`) for big controller batches.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, TxnOp,
    TxnOpResponse, WatchOptions,
};
use futures::future::BoxFuture;
use tokio::sync::OnceCell;

use crate::apply::{KeyMeta, Staging, apply_txn};
use crate::watch::{self, Batch, Feed, LogReader};
use crate::{
    ConfigStore, EventKind, KeyValue, Revision, StoreError, StoreOptions, Txn, WatchEvent, WatchStream,
};

/// The key prefix used when the URL names none.
pub const DEFAULT_PREFIX: &str = "weft/";

/// How many keys one etcd read asks for (keeps responses under gRPC's message limit).
const PAGE: i64 = 500;
/// How many gets one snapshot-read txn carries (below etcd's default `--max-txn-ops`).
const GETS_PER_TXN: usize = 100;
/// Commit attempts before giving up when other writers keep winning the race.
const MAX_ATTEMPTS: usize = 1000;
/// How long a dropped store's watch task keeps draining events it already committed.
const DRAIN_ON_DROP: Duration = Duration::from_secs(5);

/// Where to find etcd and which part of its key space is weft's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs (`http://host:port`), tried in turn by the client.
    pub endpoints: Vec<String>,
    /// Key prefix of this weft cluster; ends with `/`.
    pub prefix: String,
}

impl EtcdConfig {
    /// Parses `etcd://host:port[,host:port…][/prefix]` (the prefix defaults to
    /// [`DEFAULT_PREFIX`]).
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let rest = url.strip_prefix("etcd://").ok_or_else(|| {
            StoreError::Backend(format!(
                "store URL {url:?}: expected etcd://host:port[,host:port…][/prefix]"
            ))
        })?;
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut endpoints = Vec::new();
        for host in hosts.split(',') {
            let host = host.trim();
            if host.is_empty() {
                continue;
            }
            let valid = host
                .rsplit_once(':')
                .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(StoreError::Backend(format!(
                    "store URL {url:?}: endpoint {host:?} must be host:port (e.g. 127.0.0.1:2379)"
                )));
            }
            endpoints.push(format!("http://{host}"));
        }
        if endpoints.is_empty() {
            return Err(StoreError::Backend(format!(
                "store URL {url:?}: no etcd endpoint (expected etcd://host:port[,host:port…][/prefix])"
            )));
        }
        let path = path.trim_matches('/');
        let prefix = if path.is_empty() {
            DEFAULT_PREFIX.to_owned()
        } else {
            format!("{path}/")
        };
        Ok(Self { endpoints, prefix })
    }
}

/// The weft head as read from etcd.
#[derive(Debug, Default, Clone, Copy)]
struct Head {
    /// The weft revision.
    revision: Revision,
    /// etcd mod revision of `meta/rev` (0 = absent): the commit guard.
    rev_mod: i64,
    /// The weft compaction point.
    compacted: Revision,
    /// etcd mod revision of `meta/compacted` (0 = absent): the compaction guard.
    compacted_mod: i64,
    /// The etcd revision this was read at.
    at: i64,
}

/// Connection and key layout, shared by the store, its watch task and its watchers.
struct Inner {
    config: EtcdConfig,
    client: OnceCell<Client>,
    rev_key: String,
    compacted_key: String,
    log_prefix: String,
    kv_prefix: String,
}

/// [`ConfigStore`] on etcd v3 (tested against etcd 3.4). See the module docs for the layout.
///
/// Connects lazily (on first use), so [`open_url`](crate::open_url) stays synchronous; a
/// Tokio runtime is needed from the first call on.
pub struct EtcdStore {
    inner: Arc<Inner>,
    feed: Feed,
    /// The watch task, started by the first watch.
    pump: OnceCell<()>,
    /// Tells the watch task to stop once it has fanned out this revision.
    shutdown: tokio::sync::watch::Sender<Option<Revision>>,
    /// Highest revision this handle committed or read (what the watch task drains on drop).
    seen: AtomicU64,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        let _ = self.shutdown.send(Some(self.seen.load(Ordering::SeqCst)));
    }
}

fn etcd_err(context: &str, err: etcd_client::Error) -> StoreError {
    let text = err.to_string();
    let hint = if text.contains("too many operations") || text.contains("request is too large") {
        " (one weft transaction is one etcd txn: raise etcd's --max-txn-ops / --max-request-bytes)"
    } else {
        ""
    };
    StoreError::Backend(format!("etcd {context}: {text}{hint}"))
}

fn parse_revision(key: &str, bytes: &[u8]) -> Result<Revision, StoreError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            StoreError::Backend(format!(
                "etcd key {key:?}: expected a decimal revision, got {bytes:?}"
            ))
        })
}

/// A decimal revision counter (`meta/rev`, `meta/compacted`) and its etcd mod revision from
/// a get's response; `(0, 0)` when the key is absent.
fn counter(key: &str, op: Option<TxnOpResponse>) -> Result<(Revision, i64), StoreError> {
    match op {
        Some(TxnOpResponse::Get(get)) => match get.kvs().first() {
            Some(kv) => Ok((parse_revision(key, kv.value())?, kv.mod_revision())),
            None => Ok((0, 0)),
        },
        _ => Ok((0, 0)),
    }
}

fn log_key(prefix: &str, revision: Revision) -> String {
    format!("{prefix}{revision:020}")
}

/// Encodes a stored weft value: create and mod revision, then the bytes.
fn encode_value(meta: KeyMeta, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&meta.create_revision.to_be_bytes());
    out.extend_from_slice(&meta.mod_revision.to_be_bytes());
    out.extend_from_slice(value);
    out
}

fn decode_value(key: &str, bytes: &[u8]) -> Result<(KeyMeta, Vec<u8>), StoreError> {
    let corrupt = || {
        StoreError::Backend(format!(
            "etcd key {key:?}: value shorter than its 16-byte revision header"
        ))
    };
    let create = bytes.get(..8).ok_or_else(corrupt)?;
    let modr = bytes.get(8..16).ok_or_else(corrupt)?;
    let meta = KeyMeta {
        create_revision: u64::from_be_bytes(create.try_into().map_err(|_| corrupt())?),
        mod_revision: u64::from_be_bytes(modr.try_into().map_err(|_| corrupt())?),
    };
    Ok((meta, bytes[16..].to_vec()))
}

/// Encodes the events of one transaction for its log entry.
fn encode_events(events: &[WatchEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(events.len() as u32).to_be_bytes());
    for event in events {
        out.push(match event.kind {
            EventKind::Put => 1,
            EventKind::Delete => 2,
        });
        out.extend_from_slice(&(event.key.len() as u32).to_be_bytes());
        out.extend_from_slice(event.key.as_bytes());
        let value = event.value.as_deref().unwrap_or_default();
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// Reads log entries back; `entry` names the log key in errors.
fn decode_events(entry: &str, revision: Revision, bytes: &[u8]) -> Result<Vec<WatchEvent>, StoreError> {
    let corrupt = |what: &str| StoreError::Backend(format!("etcd log entry {entry:?}: corrupt ({what})"));
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], StoreError> {
        let slice = bytes.get(at..at + n).ok_or_else(|| corrupt("truncated"))?;
        at += n;
        Ok(slice)
    };
    let u32_of = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let count = u32_of(take(4)?);
    let mut events = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let kind = match take(1)?[0] {
            1 => EventKind::Put,
            2 => EventKind::Delete,
            _ => return Err(corrupt("unknown event kind")),
        };
        let key_len = u32_of(take(4)?);
        let key = String::from_utf8(take(key_len)?.to_vec()).map_err(|_| corrupt("key is not UTF-8"))?;
        let value_len = u32_of(take(4)?);
        let value = take(value_len)?.to_vec();
        events.push(WatchEvent {
            revision,
            kind,
            key,
            value: (kind == EventKind::Put).then_some(value),
        });
    }
    Ok(events)
}

impl Inner {
    fn new(config: EtcdConfig) -> Self {
        let p = &config.prefix;
        Self {
            rev_key: format!("{p}meta/rev"),
            compacted_key: format!("{p}meta/compacted"),
            log_prefix: format!("{p}log/"),
            kv_prefix: format!("{p}kv/"),
            client: OnceCell::new(),
            config,
        }
    }

    async fn client(&self) -> Result<Client, StoreError> {
        let client = self
            .client
            .get_or_try_init(|| async {
                let options = ConnectOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
                Client::connect(&self.config.endpoints, Some(options))
                    .await
                    .map_err(|e| etcd_err(&format!("connect to {:?}", self.config.endpoints), e))
            })
            .await?;
        Ok(client.clone())
    }

    /// Reads the weft head (revision, compaction point and their etcd mod revisions) in one
    /// etcd read.
    async fn head(&self, client: &mut Client) -> Result<Head, StoreError> {
        let txn = etcd_client::Txn::new().and_then(vec![
            TxnOp::get(self.rev_key.as_str(), None),
            TxnOp::get(self.compacted_key.as_str(), None),
        ]);
        let resp = client.txn(txn).await.map_err(|e| etcd_err("read revision", e))?;
        let at = resp.header().map_or(0, |h| h.revision());
        let mut ops = resp.op_responses().into_iter();
        let (revision, rev_mod) = counter(&self.rev_key, ops.next())?;
        let (compacted, compacted_mod) = counter(&self.compacted_key, ops.next())?;
        Ok(Head {
            revision,
            rev_mod,
            compacted,
            compacted_mod,
            at,
        })
    }

    /// All etcd key-values in `[from, end)` at etcd revision `at`, paged.
    async fn range_at(
        &self,
        client: &mut Client,
        from: Vec<u8>,
        end: Vec<u8>,
        at: i64,
    ) -> Result<Vec<etcd_client::KeyValue>, StoreError> {
        let mut out = Vec::new();
        let mut start = from;
        loop {
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_revision(at)
                .with_limit(PAGE);
            let resp = client
                .get(start.clone(), Some(options))
                .await
                .map_err(|e| etcd_err("range read", e))?;
            let more = resp.more();
            let kvs = resp.kvs();
            if let Some(last) = kvs.last() {
                start = last.key().to_vec();
                start.push(0);
            }
            out.extend_from_slice(kvs);
            if !more || kvs.is_empty() {
                return Ok(out);
            }
        }
    }

    /// Log events after `after` for keys under `prefix`, the weft revision of the snapshot
    /// and the etcd revision it was read at.
    async fn read_log(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<(Vec<WatchEvent>, Revision, i64), StoreError> {
        let mut client = self.client().await?;
        let Head {
            revision,
            compacted,
            at,
            ..
        } = self.head(&mut client).await?;
        if after < compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted,
            });
        }
        let from = log_key(&self.log_prefix, after.saturating_add(1)).into_bytes();
        let end = prefix_end(self.log_prefix.as_bytes());
        let mut events = Vec::new();
        for kv in self.range_at(&mut client, from, end, at).await? {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let rev = parse_revision(&key, &kv.key()[self.log_prefix.len()..])?;
            events.extend(
                decode_events(&key, rev, kv.value())?
                    .into_iter()
                    .filter(|e| e.key.starts_with(prefix)),
            );
        }
        Ok((events, revision, at))
    }
}

/// The smallest key after every key starting with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A store's log as seen by its watchers (weak: dropping the store closes them).
struct EtcdLog(Weak<Inner>);

impl LogReader for EtcdLog {
    async fn read_since(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<(Vec<WatchEvent>, Revision), StoreError> {
        let inner = self.0.upgrade().ok_or(StoreError::Closed)?;
        let (events, revision, _) = inner.read_log(prefix, after).await?;
        Ok((events, revision))
    }
}

impl EtcdStore {
    /// A store on the etcd cluster named by `url` (`etcd://host:port[,host:port…][/prefix]`).
    /// Does not connect yet.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Ok(Self::with_config(
            EtcdConfig::parse(url)?,
            StoreOptions::default(),
        ))
    }

    /// A store from an explicit configuration and options.
    pub fn with_config(config: EtcdConfig, options: StoreOptions) -> Self {
        Self {
            inner: Arc::new(Inner::new(config)),
            feed: watch::feed(options.watch_buffer),
            pump: OnceCell::new(),
            shutdown: tokio::sync::watch::channel(None).0,
            seen: AtomicU64::new(0),
        }
    }

    /// The configuration this store was opened with.
    pub fn config(&self) -> &EtcdConfig {
        &self.inner.config
    }

    /// The connected etcd client (connecting on first use), for what needs etcd itself beyond
    /// the key-value contract: the controllers' leader election (leases).
    pub async fn client(&self) -> Result<Client, StoreError> {
        self.inner.client().await
    }

    /// Another handle on the same connection and prefix (without its own watch task), for
    /// background work such as the leader election.
    pub(crate) fn clone_handle(&self) -> EtcdStore {
        Self {
            inner: Arc::clone(&self.inner),
            feed: watch::feed(16),
            pump: OnceCell::new(),
            shutdown: tokio::sync::watch::channel(None).0,
            seen: AtomicU64::new(0),
        }
    }

    fn saw(&self, revision: Revision) {
        self.seen.fetch_max(revision, Ordering::SeqCst);
    }

    /// Starts the watch task once: reads the head, then follows the log from there.
    async fn ensure_pump(&self) -> Result<(), StoreError> {
        self.pump
            .get_or_try_init(|| async {
                let mut client = self.inner.client().await?;
                let head = self.inner.head(&mut client).await?;
                let pump = Pump {
                    inner: Arc::clone(&self.inner),
                    feed: self.feed.clone(),
                    shutdown: self.shutdown.subscribe(),
                    cursor: head.revision,
                    watch_from: head.at + 1,
                };
                tokio::spawn(pump.run());
                Ok(())
            })
            .await
            .map(|_| ())
    }

    async fn commit_once(&self, client: &mut Client, txn: &Txn) -> Result<Option<Revision>, StoreError> {
        let inner = &self.inner;
        let keys: BTreeSet<&str> = txn
            .compares
            .iter()
            .map(|c| match c {
                crate::Compare::ModRevision { key, .. } => key.as_str(),
            })
            .chain(txn.ops.iter().map(|op| op.key()))
            .collect();
        // One snapshot without an extra round trip: the first etcd read carries `meta/rev`
        // along with the first keys; the rest (big weft txns) read at its etcd revision.
        let keys: Vec<&str> = keys.into_iter().collect();
        let mut chunks: Vec<&[&str]> = keys.chunks(GETS_PER_TXN).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let mut current = BTreeMap::new();
        let mut snapshot: Option<(Revision, i64, i64)> = None; // (revision, rev_mod, at)
        for chunk in chunks {
            let mut gets = Vec::with_capacity(chunk.len() + 1);
            if snapshot.is_none() {
                gets.push(TxnOp::get(inner.rev_key.as_str(), None));
            }
            let at = snapshot.map(|(_, _, at)| GetOptions::new().with_revision(at));
            gets.extend(
                chunk
                    .iter()
                    .map(|k| TxnOp::get(format!("{}{k}", inner.kv_prefix), at.clone())),
            );
            let resp = client
                .txn(etcd_client::Txn::new().and_then(gets))
                .await
                .map_err(|e| etcd_err("read keys for a commit", e))?;
            let mut ops = resp.op_responses().into_iter();
            if snapshot.is_none() {
                let (revision, rev_mod) = counter(&inner.rev_key, ops.next())?;
                snapshot = Some((revision, rev_mod, resp.header().map_or(0, |h| h.revision())));
            }
            for (key, op) in chunk.iter().zip(ops) {
                if let TxnOpResponse::Get(get) = op
                    && let Some(kv) = get.kvs().first()
                {
                    let (meta, _) = decode_value(key, kv.value())?;
                    current.insert((*key).to_owned(), meta);
                }
            }
        }
        let (revision, rev_mod, _) = snapshot.unwrap_or_default();
        let mut staging = Staging::new(|key: &str| current.get(key).copied());
        let new_revision = revision + 1;
        let events = apply_txn(&mut staging, txn.clone(), new_revision)?;
        if events.is_empty() {
            self.saw(revision);
            return Ok(Some(revision));
        }
        let mut ops = vec![
            TxnOp::put(inner.rev_key.as_str(), new_revision.to_string(), None),
            TxnOp::put(
                log_key(&inner.log_prefix, new_revision),
                encode_events(&events),
                None,
            ),
        ];
        for (key, change) in staging.changes {
            let etcd_key = format!("{}{key}", inner.kv_prefix);
            ops.push(match change {
                Some((meta, value)) => TxnOp::put(etcd_key, encode_value(meta, &value), None),
                None => TxnOp::delete(etcd_key, None),
            });
        }
        let guarded = etcd_client::Txn::new()
            .when(vec![EtcdCompare::mod_revision(
                inner.rev_key.as_str(),
                CompareOp::Equal,
                rev_mod,
            )])
            .and_then(ops);
        let resp = client.txn(guarded).await.map_err(|e| etcd_err("commit", e))?;
        if resp.succeeded() {
            self.saw(new_revision);
            Ok(Some(new_revision))
        } else {
            Ok(None) // another writer committed meanwhile: retry from the read
        }
    }
}

/// The background task fanning the log out to this store's watchers.
struct Pump {
    inner: Arc<Inner>,
    feed: Feed,
    shutdown: tokio::sync::watch::Receiver<Option<Revision>>,
    /// Every revision <= cursor has been sent.
    cursor: Revision,
    /// The etcd revision to (re)start the etcd watch at.
    watch_from: i64,
}

impl Pump {
    async fn run(mut self) {
        let mut drain_deadline = None;
        loop {
            match self.follow(&mut drain_deadline).await {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(error = %err, cursor = self.cursor, "etcd store watch interrupted; resyncing from the log");
                }
            }
            if self.should_stop(&mut drain_deadline) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            // Resync: send what the log holds after the cursor, then watch after that read.
            match self.inner.read_log("", self.cursor).await {
                Ok((events, revision, at)) => {
                    self.send_events(events);
                    self.cursor = self.cursor.max(revision);
                    self.watch_from = at + 1;
                }
                Err(StoreError::Compacted { compacted, .. }) => {
                    // Watchers behind this see the jump and fail with Compacted themselves.
                    self.cursor = compacted;
                }
                Err(err) => tracing::warn!(error = %err, "etcd store resync failed; retrying"),
            }
        }
    }

    /// True when the store was dropped and everything it committed has been sent (or the
    /// drain timed out).
    fn should_stop(&self, deadline: &mut Option<tokio::time::Instant>) -> bool {
        match *self.shutdown.borrow() {
            None => false,
            Some(target) => {
                let deadline = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + DRAIN_ON_DROP);
                self.cursor >= target || tokio::time::Instant::now() >= deadline
            }
        }
    }

    fn send_events(&mut self, events: Vec<WatchEvent>) {
        let mut batch: Option<Batch> = None;
        for event in events {
            if event.revision <= self.cursor {
                continue;
            }
            match &mut batch {
                Some(b) if b.revision == event.revision => b.events.push(event),
                _ => {
                    if let Some(done) = batch.take() {
                        self.cursor = done.revision;
                        let _ = self.feed.send(Arc::new(done));
                    }
                    batch = Some(Batch {
                        revision: event.revision,
                        events: vec![event],
                    });
                }
            }
        }
        if let Some(done) = batch {
            self.cursor = done.revision;
            let _ = self.feed.send(Arc::new(done));
        }
    }

    /// Follows the etcd watch until it breaks (`Err`) or the store is gone and drained (`Ok`).
    async fn follow(&mut self, drain_deadline: &mut Option<tokio::time::Instant>) -> Result<(), StoreError> {
        if self.should_stop(drain_deadline) {
            return Ok(());
        }
        let mut client = self.inner.client().await?;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.watch_from);
        let mut stream = client
            .watch(self.inner.log_prefix.as_str(), Some(options))
            .await
            .map_err(|e| etcd_err("watch the log", e))?;
        loop {
            let message = tokio::select! {
                m = stream.message() => m,
                _ = self.shutdown.changed() => {
                    if self.should_stop(drain_deadline) {
                        return Ok(());
                    }
                    continue;
                }
                _ = tokio::time::sleep(Duration::from_millis(200)), if drain_deadline.is_some() => {
                    if self.should_stop(drain_deadline) {
                        return Ok(());
                    }
                    continue;
                }
            };
            let resp = match message {
                Ok(Some(resp)) => resp,
                Ok(None) => return Err(StoreError::Backend("etcd watch stream ended".into())),
                Err(e) => return Err(etcd_err("watch the log", e)),
            };
            if resp.canceled() || resp.compact_revision() > 0 {
                return Err(StoreError::Backend(format!(
                    "etcd watch canceled ({}; etcd compacted at {})",
                    resp.cancel_reason(),
                    resp.compact_revision()
                )));
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                self.watch_from = kv.mod_revision() + 1;
                if event.event_type() != etcd_client::EventType::Put {
                    continue; // log entries are deleted by compaction only
                }
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let revision = parse_revision(&key, &kv.key()[self.inner.log_prefix.len()..])?;
                if revision <= self.cursor {
                    continue;
                }
                let events = decode_events(&key, revision, kv.value())?;
                self.cursor = revision;
                let _ = self.feed.send(Arc::new(Batch { revision, events }));
            }
            if self.should_stop(drain_deadline) {
                return Ok(());
            }
        }
    }
}

impl ConfigStore for EtcdStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>> {
        Box::pin(async move {
            let mut client = self.inner.client().await?;
            let resp = client
                .get(format!("{}{key}", self.inner.kv_prefix), None)
                .await
                .map_err(|e| etcd_err(&format!("get {key:?}"), e))?;
            match resp.kvs().first() {
                None => Ok(None),
                Some(kv) => {
                    let (meta, value) = decode_value(key, kv.value())?;
                    Ok(Some(KeyValue {
                        key: key.to_owned(),
                        value,
                        create_revision: meta.create_revision,
                        mod_revision: meta.mod_revision,
                    }))
                }
            }
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<(Vec<KeyValue>, Revision), StoreError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let mut client = inner.client().await?;
            let Head { revision, at, .. } = inner.head(&mut client).await?;
            let from = format!("{}{prefix}", inner.kv_prefix).into_bytes();
            let end = prefix_end(&from);
            let mut out = Vec::new();
            for kv in inner.range_at(&mut client, from, end, at).await? {
                let key = String::from_utf8(kv.key()[inner.kv_prefix.len()..].to_vec()).map_err(|_| {
                    StoreError::Backend(format!(
                        "etcd key {:?}: not UTF-8",
                        String::from_utf8_lossy(kv.key())
                    ))
                })?;
                let (meta, value) = decode_value(&key, kv.value())?;
                out.push(KeyValue {
                    key,
                    value,
                    create_revision: meta.create_revision,
                    mod_revision: meta.mod_revision,
                });
            }
            self.saw(revision);
            Ok((out, revision))
        })
    }

    fn commit(&self, txn: Txn) -> BoxFuture<'_, Result<Revision, StoreError>> {
        Box::pin(async move {
            let mut client = self.inner.client().await?;
            for _ in 0..MAX_ATTEMPTS {
                if let Some(revision) = self.commit_once(&mut client, &txn).await? {
                    return Ok(revision);
                }
                tokio::task::yield_now().await;
            }
            Err(StoreError::Backend(format!(
                "etcd commit: lost the race to other writers {MAX_ATTEMPTS} times in a row"
            )))
        })
    }

    fn revision(&self) -> BoxFuture<'_, Result<Revision, StoreError>> {
        Box::pin(async move {
            let mut client = self.inner.client().await?;
            let revision = self.inner.head(&mut client).await?.revision;
            self.saw(revision);
            Ok(revision)
        })
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        after: Revision,
    ) -> BoxFuture<'a, Result<WatchStream, StoreError>> {
        Box::pin(async move {
            self.ensure_pump().await?;
            watch::start(EtcdLog(Arc::downgrade(&self.inner)), &self.feed, prefix, after).await
        })
    }

    fn compact(&self, up_to: Revision) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let mut client = inner.client().await?;
            for _ in 0..MAX_ATTEMPTS {
                let head = inner.head(&mut client).await?;
                let target = up_to.min(head.revision);
                if target <= head.compacted {
                    return Ok(());
                }
                let txn = etcd_client::Txn::new()
                    .when(vec![
                        EtcdCompare::mod_revision(inner.rev_key.as_str(), CompareOp::Equal, head.rev_mod),
                        EtcdCompare::mod_revision(
                            inner.compacted_key.as_str(),
                            CompareOp::Equal,
                            head.compacted_mod,
                        ),
                    ])
                    .and_then(vec![
                        TxnOp::put(inner.compacted_key.as_str(), target.to_string(), None),
                        TxnOp::delete(
                            log_key(&inner.log_prefix, 0),
                            Some(DeleteOptions::new().with_range(log_key(&inner.log_prefix, target + 1))),
                        ),
                    ]);
                let resp = client.txn(txn).await.map_err(|e| etcd_err("compact", e))?;
                if resp.succeeded() {
                    return Ok(());
                }
            }
            Err(StoreError::Backend(
                "etcd compact: lost the race to writers too often".into(),
            ))
        })
    }
}
