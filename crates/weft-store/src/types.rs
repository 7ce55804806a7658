//! The data the store speaks: stored key-values, transactions (guards + ops) and watch events.

use serde::{Deserialize, Serialize};

/// A store revision: a counter bumped by one for every transaction that changes something.
///
/// 0 means "nothing yet"; the first commit is revision 1. All ops of one transaction share
/// the transaction's revision.
pub type Revision = u64;

/// One stored key with its value and the revisions that created and last modified it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key (weft uses `/`-separated paths, e.g. `derived/vn/default/blue`).
    pub key: String,
    /// The opaque value bytes (weft stores JSON).
    pub value: Vec<u8>,
    /// Revision of the transaction that created the key (kept across updates, reset when
    /// the key is deleted and put again).
    pub create_revision: Revision,
    /// Revision of the transaction that last put the key: what a [`Compare`] guard checks.
    pub mod_revision: Revision,
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create or overwrite `key` with `value`.
    Put {
        /// Key to write.
        key: String,
        /// New value.
        value: Vec<u8>,
    },
    /// Remove `key`; removing an absent key is not an error and produces no event.
    Delete {
        /// Key to remove.
        key: String,
    },
}

impl Op {
    /// The key this op writes.
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// Guard evaluated atomically with the ops; mod_revision 0 means "key must be absent".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's current mod revision must equal `revision` (0 = the key must be absent).
    ModRevision {
        /// Key to check.
        key: String,
        /// Required mod revision (0 = absent).
        revision: Revision,
    },
}

/// An atomic transaction: if every compare holds, every op is applied under one new revision;
/// otherwise nothing is written and the commit fails with
/// [`StoreError::Conflict`](crate::StoreError::Conflict).
///
/// Built with the builder helpers because callers assemble large transactions:
///
/// ```
/// use weft_store::Txn;
/// let txn = Txn::new()
///     .guard("inputs/ns/default", 7)      // optimistic concurrency on what we read
///     .guard_absent("derived/project/default")
///     .put("derived/project/default", b"{}".to_vec())
///     .delete("derived/stale");
/// assert_eq!(txn.ops.len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Guards, all checked before any op is applied.
    pub compares: Vec<Compare>,
    /// Writes, applied in order (their watch events keep this order).
    pub ops: Vec<Op>,
}

impl Txn {
    /// An empty transaction (committing it writes nothing and returns the current revision).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put of `key` = `value`.
    #[must_use]
    pub fn put(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Adds a delete of `key`.
    #[must_use]
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    /// Adds a guard: `key`'s mod revision must be `revision` (0 = absent).
    #[must_use]
    pub fn guard(mut self, key: impl Into<String>, revision: Revision) -> Self {
        self.compares.push(Compare::ModRevision {
            key: key.into(),
            revision,
        });
        self
    }

    /// Adds a guard that `key` must be absent (same as `guard(key, 0)`).
    #[must_use]
    pub fn guard_absent(self, key: impl Into<String>) -> Self {
        self.guard(key, 0)
    }

    /// Appends a put without consuming the builder (for loops).
    pub fn push_put(&mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Appends a delete without consuming the builder (for loops).
    pub fn push_delete(&mut self, key: impl Into<String>) -> &mut Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    /// Appends a guard without consuming the builder (for loops).
    pub fn push_guard(&mut self, key: impl Into<String>, revision: Revision) -> &mut Self {
        self.compares.push(Compare::ModRevision {
            key: key.into(),
            revision,
        });
        self
    }

    /// True when the transaction has no ops (committing it only checks the guards).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// What happened to a key in a [`WatchEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// The key was created or overwritten.
    Put,
    /// The key was removed.
    Delete,
}

/// One change seen by a watcher: a put or a delete of one key at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// Revision of the transaction that made the change.
    pub revision: Revision,
    /// Put or delete.
    pub kind: EventKind,
    /// The key changed.
    pub key: String,
    /// The new value for a put; `None` for a delete.
    pub value: Option<Vec<u8>>,
}

/// Tuning shared by the backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// How many committed transactions the live watch fan-out buffers per watcher before a
    /// slow watcher "lags"; a lagging watcher then re-reads the missed revisions from the
    /// change log (no event is lost), so this only trades memory for log re-reads.
    pub watch_buffer: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { watch_buffer: 1024 }
    }
}

impl StoreOptions {
    /// Sets [`StoreOptions::watch_buffer`] (clamped to at least 1).
    #[must_use]
    pub fn watch_buffer(mut self, transactions: usize) -> Self {
        self.watch_buffer = transactions;
        self
    }
}
