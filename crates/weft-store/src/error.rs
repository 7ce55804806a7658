//! The one error type of the store, shared by every backend so callers can match on
//! "conflict, retry" vs. "watch too old, re-list" vs. "broken" without knowing the backend.

use crate::Revision;

/// Everything a [`ConfigStore`](crate::ConfigStore) operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A [`Compare`](crate::Compare) guard failed: the key's mod revision was not the expected
    /// one. Nothing of the transaction was written; re-read and retry.
    #[error("conflict on key {key:?}: expected mod_revision {expected}, found {actual} (nothing written)")]
    Conflict {
        /// The key whose guard failed.
        key: String,
        /// The mod revision the caller required (0 = "absent").
        expected: Revision,
        /// The key's actual mod revision (0 = absent).
        actual: Revision,
    },
    /// A watch asked for events after a revision that the change log no longer holds; the
    /// caller must re-list (which gives a fresh revision) and watch from there.
    #[error("revision {requested} is compacted: the change log only holds revisions after {compacted}")]
    Compacted {
        /// The revision the watch resumed after.
        requested: Revision,
        /// The compaction point: log entries with revision <= this are gone.
        compacted: Revision,
    },
    /// The backend failed (I/O, corruption, lost worker thread...); the message says what was
    /// being done when it failed.
    #[error("store backend error: {0}")]
    Backend(String),
    /// The store was shut down (dropped, or its runtime is stopping).
    #[error("store is closed")]
    Closed,
}

impl StoreError {
    /// A [`StoreError::Backend`] built from what was being done and the underlying error.
    pub(crate) fn backend(context: impl std::fmt::Display, err: impl std::fmt::Display) -> Self {
        StoreError::Backend(format!("{context}: {err}"))
    }
}
