//! weft's configuration store: an etcd-like revisioned key-value store with watches.
//!
//! Where it sits: the controller writes its *inputs* (Kubernetes objects and weft kinds it
//! has seen) and the *derived* network objects it computes into this store, in guarded
//! transactions; the agents and the API server watch it (list, then watch from the list's
//! revision) to learn what to program and to serve. Everything goes through the
//! dyn-compatible [`ConfigStore`] trait so the controller can hold `Arc<dyn ConfigStore>` and
//! a later etcd backend can slot in.
//!
//! Model (etcd's, simplified):
//! * every transaction that changes something gets the next [`Revision`] (1, 2, 3...);
//!   every key records the revision that created it and the one that last modified it;
//! * a [`Txn`] is guards ([`Compare`]) plus ops ([`Op`]), applied atomically and durably,
//!   or not at all ([`StoreError::Conflict`]);
//! * every change is appended to a change log that [`ConfigStore::watch`] replays before
//!   streaming live changes; [`ConfigStore::compact`] trims it.
//!
//! Prefixes (in [`ConfigStore::list`] and [`ConfigStore::watch`]) are plain string
//! prefixes: `"a"` matches `"ab/x"` too, so callers end directory-like prefixes with `/`.
//!
//! Backends: [`RedbStore`] (embedded, one fsynced redb file; production, one controller),
//! [`EtcdStore`] (an etcd v3 cluster; several controller replicas, HA) and [`MemoryStore`]
//! (other crates' unit tests). [`open_url`] picks one from configuration; [`copy_all`]
//! copies one store into another (`weft store migrate`).

mod apply;
mod election;
mod error;
mod etcd_server;
mod etcd_store;
mod memory;
mod migrate;
mod redb_store;
mod types;
mod url;
mod watch;

use futures::future::BoxFuture;

pub use election::{DEFAULT_LEADER_TTL, Leadership};
pub use error::StoreError;
pub use etcd_server::EtcdServer;
pub use etcd_store::{DEFAULT_PREFIX, EtcdConfig, EtcdStore};
pub use memory::MemoryStore;
pub use migrate::{CopyError, CopyReport, copy_all};
pub use redb_store::RedbStore;
pub use types::{Compare, EventKind, KeyValue, Op, Revision, StoreOptions, Txn, WatchEvent};
pub use url::{DEFAULT_FILE_NAME, open_url};

/// A watch: events in revision order (ops of one transaction in op order), replayed then
/// live. It ends after yielding an error ([`StoreError::Compacted`] if it fell behind a
/// compaction while lagging, [`StoreError::Closed`] when the store shuts down); it never
/// skips or repeats an event.
pub type WatchStream = futures::stream::BoxStream<'static, Result<WatchEvent, StoreError>>;

/// The store interface every weft component talks to.
///
/// dyn-compatible so the controller can hold `Arc<dyn ConfigStore>` and a later etcd
/// backend can slot in. Backends that do blocking I/O need a Tokio runtime.
pub trait ConfigStore: Send + Sync + 'static {
    /// The current value of `key`, or `None` if absent.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>>;

    /// All keys with this prefix, sorted by key, plus the store revision the snapshot is at
    /// (watch from that revision to follow changes without a gap).
    ///
    /// The prefix is a plain string prefix: end it with `/` to list one "directory".
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<(Vec<KeyValue>, Revision), StoreError>>;

    /// Atomic: all compares checked and all ops applied in ONE durable transaction, or nothing.
    ///
    /// Returns the new revision (all ops of one txn share it). A txn with no ops returns the
    /// current revision and writes nothing; so does a txn whose ops change nothing (only
    /// deletes of absent keys), like etcd: revisions only count real changes.
    /// Deleting an absent key is not an error and produces no event. Durable (fsynced) before
    /// it returns: an acknowledged write survives SIGKILL. A failed guard gives
    /// [`StoreError::Conflict`] with nothing written.
    fn commit(&self, txn: Txn) -> BoxFuture<'_, Result<Revision, StoreError>>;

    /// The revision of the last committed transaction (0 for an empty store).
    fn revision(&self) -> BoxFuture<'_, Result<Revision, StoreError>>;

    /// Every event for keys under `prefix` with revision > `after`, in revision order (ops
    /// within a txn in op order), first replayed from the change log, then live, with no gap
    /// and no duplicate between the two phases.
    ///
    /// `after` older than the compaction point gives `Err(Compacted)` immediately, as the
    /// call's result: re-list and watch from the list's revision. `after` may be in the
    /// future (events start after it). The prefix is a plain string prefix (end it with `/`).
    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        after: Revision,
    ) -> BoxFuture<'a, Result<WatchStream, StoreError>>;

    /// Drops change-log entries with revision <= `up_to` (like etcd compaction), so the log
    /// does not grow forever. `up_to` beyond the current revision is clamped to it; compacting
    /// below the current compaction point does nothing. Current values are never affected.
    fn compact(&self, up_to: Revision) -> BoxFuture<'_, Result<(), StoreError>>;
}
