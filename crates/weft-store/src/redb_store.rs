//! The embedded, durable backend: one redb file, ACID transactions, fsync on every commit.
//!
//! Tables:
//! * `objects`: key → (create_revision, mod_revision, value), the current state;
//! * `changelog`: (revision, seq-within-txn) → (kind, key, value), what watchers replay;
//! * `meta`: `revision` (last committed) and `compacted` (log entries <= this are gone).
//!
//! The revision counters live in the file and are updated in the same redb transaction as
//! the data, so after a crash (even SIGKILL mid-commit) the reopened store is at exactly the
//! last durable commit. redb calls block, so every one runs on Tokio's blocking pool.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use futures::future::BoxFuture;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use crate::apply::{ApplyTarget, KeyMeta, apply_txn};
use crate::watch::{self, Batch, Feed, LogReader};
use crate::{
    ConfigStore, EventKind, KeyValue, Revision, StoreError, StoreOptions, Txn, WatchEvent, WatchStream,
};

/// key → (create_revision, mod_revision, value)
const OBJECTS: TableDefinition<&str, (u64, u64, &[u8])> = TableDefinition::new("objects");
/// Change log row: (kind, key, value; `None` for a delete).
type LogEntry = (u8, &'static str, Option<&'static [u8]>);
/// (revision, seq within txn) → [`LogEntry`]
/// Page cache of the embedded database.
const REDB_CACHE_BYTES: usize = 16 * 1024 * 1024;

const CHANGELOG: TableDefinition<(u64, u32), LogEntry> = TableDefinition::new("changelog");
/// counter name → value
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";

const KIND_PUT: u8 = 0;
const KIND_DELETE: u8 = 1;

/// [`ConfigStore`] on one redb file: every commit is one fsynced redb transaction that
/// updates the objects, appends to the change log and bumps the revision together.
///
/// Needs a Tokio runtime (the redb calls run on its blocking pool). Dropping the store closes
/// the file and ends open watch streams with [`StoreError::Closed`]. Dropping a `commit`
/// future does not cancel the commit once started.
#[derive(Debug)]
pub struct RedbStore {
    inner: Arc<Inner>,
    feed: Feed,
}

/// What the blocking workers share.
#[derive(Debug)]
struct Inner {
    db: Database,
    path: PathBuf,
    /// Serializes commits and compactions, and keeps the live feed in revision order
    /// (the batch is sent before the lock is released).
    writer: Mutex<()>,
}

impl RedbStore {
    /// Opens (creating if missing) the store file at `path` with default [`StoreOptions`].
    ///
    /// A file left by a killed process is recovered by redb to its last durable commit.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, StoreOptions::default())
    }

    /// Opens (creating if missing) the store file at `path` with explicit [`StoreOptions`].
    pub fn open_with(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let shown = path.display();
        // A config store's working set is small; redb's default page cache (up to 1 GiB)
        // would make the controller's memory grow with the file instead of the data.
        let db = redb::Builder::new()
            .set_cache_size(REDB_CACHE_BYTES)
            .create(path)
            .map_err(|e| StoreError::backend(format!("open {shown}"), e))?;
        let inner = Inner {
            db,
            path: path.to_owned(),
            writer: Mutex::new(()),
        };
        let (revision, compacted) = inner.init()?;
        tracing::info!(path = %shown, revision, compacted, "opened redb config store");
        Ok(Self {
            inner: Arc::new(inner),
            feed: watch::feed(options.watch_buffer),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on the blocking pool with the shared state.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static {
        blocking(Arc::clone(&self.inner), f)
    }
}

/// Runs `f(inner)` on Tokio's blocking pool, mapping a lost worker to an error.
async fn blocking<T: Send + 'static>(
    inner: Arc<Inner>,
    f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(move || f(&inner)).await {
        Ok(result) => result,
        Err(err) if err.is_cancelled() => Err(StoreError::Closed),
        Err(err) => Err(StoreError::Backend(format!("store worker panicked: {err}"))),
    }
}

/// Error mapper: `what` failed on the store file.
fn ctx<E: std::fmt::Display>(inner: &Inner, what: &'static str) -> impl FnOnce(E) -> StoreError {
    move |err| StoreError::backend(format_args!("{what} ({})", inner.path.display()), err)
}

fn read_counter(
    table: &impl ReadableTable<&'static str, u64>,
    name: &str,
    inner: &Inner,
) -> Result<u64, StoreError> {
    Ok(table
        .get(name)
        .map_err(ctx(inner, "read meta counter"))?
        .map_or(0, |g| g.value()))
}

fn decode_kind(kind: u8, revision: Revision, inner: &Inner) -> Result<EventKind, StoreError> {
    match kind {
        KIND_PUT => Ok(EventKind::Put),
        KIND_DELETE => Ok(EventKind::Delete),
        other => Err(StoreError::Backend(format!(
            "corrupt change log entry at revision {revision} in {}: unknown kind {other}",
            inner.path.display()
        ))),
    }
}

/// The objects table of a write transaction, as [`apply_txn`] sees it.
struct Objects<'t> {
    table: redb::Table<'t, &'static str, (u64, u64, &'static [u8])>,
    inner: &'t Inner,
}

impl ApplyTarget for Objects<'_> {
    fn meta(&mut self, key: &str) -> Result<Option<KeyMeta>, StoreError> {
        let found = self.table.get(key).map_err(ctx(self.inner, "read object"))?;
        Ok(found.map(|g| {
            let (create_revision, mod_revision, _) = g.value();
            KeyMeta {
                create_revision,
                mod_revision,
            }
        }))
    }

    fn put(&mut self, key: &str, meta: KeyMeta, value: &[u8]) -> Result<(), StoreError> {
        self.table
            .insert(key, (meta.create_revision, meta.mod_revision, value))
            .map_err(ctx(self.inner, "write object"))?;
        Ok(())
    }

    fn remove(&mut self, key: &str) -> Result<bool, StoreError> {
        let removed = self.table.remove(key).map_err(ctx(self.inner, "delete object"))?;
        Ok(removed.is_some())
    }
}

/// What a write transaction body decided.
enum Outcome {
    /// Nothing changed: abort, the revision stays.
    Unchanged(Revision),
    /// Commit: new revision and its events.
    Changed(Revision, Vec<WatchEvent>),
}

impl Inner {
    /// Creates missing tables and checks the counters against the log; returns
    /// (revision, compacted).
    fn init(&self) -> Result<(Revision, Revision), StoreError> {
        let wtx = self
            .db
            .begin_write()
            .map_err(ctx(self, "begin init transaction"))?;
        let counters = (|| {
            wtx.open_table(OBJECTS).map_err(ctx(self, "open objects table"))?;
            let log = wtx
                .open_table(CHANGELOG)
                .map_err(ctx(self, "open changelog table"))?;
            let meta = wtx.open_table(META).map_err(ctx(self, "open meta table"))?;
            let revision = read_counter(&meta, META_REVISION, self)?;
            let compacted = read_counter(&meta, META_COMPACTED, self)?;
            let last_logged = log
                .last()
                .map_err(ctx(self, "read changelog"))?
                .map(|(k, _)| k.value().0);
            if compacted > revision || last_logged.is_some_and(|r| r > revision) {
                return Err(StoreError::Backend(format!(
                    "inconsistent store {}: revision {revision}, compacted {compacted}, last logged {last_logged:?}",
                    self.path.display()
                )));
            }
            Ok((revision, compacted))
        })()?;
        wtx.commit().map_err(ctx(self, "commit init transaction"))?;
        Ok(counters)
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let rtx = self.db.begin_read().map_err(ctx(self, "begin read"))?;
        let objects = rtx.open_table(OBJECTS).map_err(ctx(self, "open objects table"))?;
        let found = objects.get(key).map_err(ctx(self, "read object"))?;
        Ok(found.map(|g| {
            let (create_revision, mod_revision, value) = g.value();
            KeyValue {
                key: key.to_owned(),
                value: value.to_vec(),
                create_revision,
                mod_revision,
            }
        }))
    }

    fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let rtx = self.db.begin_read().map_err(ctx(self, "begin read"))?;
        let meta = rtx.open_table(META).map_err(ctx(self, "open meta table"))?;
        let revision = read_counter(&meta, META_REVISION, self)?;
        let objects = rtx.open_table(OBJECTS).map_err(ctx(self, "open objects table"))?;
        let mut out = Vec::new();
        for entry in objects.range(prefix..).map_err(ctx(self, "scan objects"))? {
            let (key, value) = entry.map_err(ctx(self, "scan objects"))?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            let (create_revision, mod_revision, value) = value.value();
            out.push(KeyValue {
                key: key.to_owned(),
                value: value.to_vec(),
                create_revision,
                mod_revision,
            });
        }
        Ok((out, revision))
    }

    fn revision(&self) -> Result<Revision, StoreError> {
        let rtx = self.db.begin_read().map_err(ctx(self, "begin read"))?;
        let meta = rtx.open_table(META).map_err(ctx(self, "open meta table"))?;
        read_counter(&meta, META_REVISION, self)
    }

    fn read_since(&self, prefix: &str, after: Revision) -> Result<(Vec<WatchEvent>, Revision), StoreError> {
        let rtx = self.db.begin_read().map_err(ctx(self, "begin read"))?;
        let meta = rtx.open_table(META).map_err(ctx(self, "open meta table"))?;
        let revision = read_counter(&meta, META_REVISION, self)?;
        let compacted = read_counter(&meta, META_COMPACTED, self)?;
        if after < compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted,
            });
        }
        let log = rtx
            .open_table(CHANGELOG)
            .map_err(ctx(self, "open changelog table"))?;
        let mut out = Vec::new();
        let range = (Bound::Excluded((after, u32::MAX)), Bound::Unbounded);
        for entry in log.range(range).map_err(ctx(self, "scan changelog"))? {
            let (k, v) = entry.map_err(ctx(self, "scan changelog"))?;
            let (rev, _seq) = k.value();
            let (kind, key, value) = v.value();
            if key.starts_with(prefix) {
                out.push(WatchEvent {
                    revision: rev,
                    kind: decode_kind(kind, rev, self)?,
                    key: key.to_owned(),
                    value: value.map(<[u8]>::to_vec),
                });
            }
        }
        Ok((out, revision))
    }

    /// Commits `txn` durably and fans its events out; serialized by the writer lock.
    fn commit(&self, txn: Txn, feed: &Feed) -> Result<Revision, StoreError> {
        // A poisoned lock guards no data (the state is in redb), so keep going.
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let wtx = self.db.begin_write().map_err(ctx(self, "begin write"))?;
        match self.commit_body(&wtx, txn) {
            Ok(Outcome::Changed(revision, events)) => {
                // Default durability is Immediate: fsynced when commit() returns.
                wtx.commit().map_err(ctx(self, "commit"))?;
                tracing::trace!(revision, events = events.len(), "committed");
                let _ = feed.send(Arc::new(Batch { revision, events }));
                Ok(revision)
            }
            Ok(Outcome::Unchanged(revision)) => {
                self.abort(wtx);
                Ok(revision)
            }
            Err(err) => {
                self.abort(wtx);
                Err(err)
            }
        }
    }

    fn abort(&self, wtx: WriteTransaction) {
        if let Err(err) = wtx.abort() {
            tracing::warn!(path = %self.path.display(), %err, "aborting a store write transaction failed");
        }
    }

    fn commit_body(&self, wtx: &WriteTransaction, txn: Txn) -> Result<Outcome, StoreError> {
        let mut meta = wtx.open_table(META).map_err(ctx(self, "open meta table"))?;
        let current = read_counter(&meta, META_REVISION, self)?;
        let new_revision = current + 1;
        let table = wtx.open_table(OBJECTS).map_err(ctx(self, "open objects table"))?;
        let events = apply_txn(&mut Objects { table, inner: self }, txn, new_revision)?;
        if events.is_empty() {
            return Ok(Outcome::Unchanged(current));
        }
        let mut log = wtx
            .open_table(CHANGELOG)
            .map_err(ctx(self, "open changelog table"))?;
        for (seq, event) in events.iter().enumerate() {
            let seq = u32::try_from(seq).map_err(|_| {
                StoreError::Backend(format!("transaction too large: more than {} ops", u32::MAX))
            })?;
            let kind = match event.kind {
                EventKind::Put => KIND_PUT,
                EventKind::Delete => KIND_DELETE,
            };
            log.insert(
                (new_revision, seq),
                (kind, event.key.as_str(), event.value.as_deref()),
            )
            .map_err(ctx(self, "append changelog"))?;
        }
        meta.insert(META_REVISION, new_revision)
            .map_err(ctx(self, "write revision"))?;
        Ok(Outcome::Changed(new_revision, events))
    }

    fn compact(&self, up_to: Revision) -> Result<(), StoreError> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let wtx = self.db.begin_write().map_err(ctx(self, "begin write"))?;
        let compacted = (|| {
            let mut meta = wtx.open_table(META).map_err(ctx(self, "open meta table"))?;
            let revision = read_counter(&meta, META_REVISION, self)?;
            let compacted = read_counter(&meta, META_COMPACTED, self)?;
            let target = up_to.min(revision);
            if target <= compacted {
                return Ok(None);
            }
            let mut log = wtx
                .open_table(CHANGELOG)
                .map_err(ctx(self, "open changelog table"))?;
            log.retain_in((0u64, 0u32)..=(target, u32::MAX), |_, _| false)
                .map_err(ctx(self, "compact changelog"))?;
            meta.insert(META_COMPACTED, target)
                .map_err(ctx(self, "write compaction point"))?;
            Ok(Some(target))
        })();
        match compacted {
            Ok(Some(target)) => {
                wtx.commit().map_err(ctx(self, "commit compaction"))?;
                tracing::info!(path = %self.path.display(), compacted = target, "compacted change log");
                Ok(())
            }
            Ok(None) => {
                self.abort(wtx);
                Ok(())
            }
            Err(err) => {
                self.abort(wtx);
                Err(err)
            }
        }
    }
}

/// The redb change log as seen by watchers (weak: dropping the store closes the file).
struct RedbLog(Weak<Inner>);

impl LogReader for RedbLog {
    async fn read_since(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<(Vec<WatchEvent>, Revision), StoreError> {
        let inner = self.0.upgrade().ok_or(StoreError::Closed)?;
        let prefix = prefix.to_owned();
        blocking(inner, move |inner| inner.read_since(&prefix, after)).await
    }
}

impl ConfigStore for RedbStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>> {
        let key = key.to_owned();
        Box::pin(self.run(move |inner| inner.get(&key)))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<(Vec<KeyValue>, Revision), StoreError>> {
        let prefix = prefix.to_owned();
        Box::pin(self.run(move |inner| inner.list(&prefix)))
    }

    fn commit(&self, txn: Txn) -> BoxFuture<'_, Result<Revision, StoreError>> {
        let feed = self.feed.clone();
        Box::pin(self.run(move |inner| inner.commit(txn, &feed)))
    }

    fn revision(&self) -> BoxFuture<'_, Result<Revision, StoreError>> {
        Box::pin(self.run(|inner| inner.revision()))
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        after: Revision,
    ) -> BoxFuture<'a, Result<WatchStream, StoreError>> {
        let log = RedbLog(Arc::downgrade(&self.inner));
        Box::pin(watch::start(log, &self.feed, prefix, after))
    }

    fn compact(&self, up_to: Revision) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.run(move |inner| inner.compact(up_to)))
    }
}
