//! Transaction semantics shared by every backend, so the backends only differ in how they
//! read and write a key: guards first, then ops in order, events in op order.

use std::collections::BTreeMap;

use crate::{Compare, EventKind, Op, Revision, StoreError, Txn, WatchEvent};

/// The create/mod revisions of a stored key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyMeta {
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

/// The key access a backend gives [`apply_txn`] inside its (uncommitted) write transaction.
pub(crate) trait ApplyTarget {
    /// Revisions of `key`, or `None` if absent.
    fn meta(&mut self, key: &str) -> Result<Option<KeyMeta>, StoreError>;
    /// Stores `key` with these revisions and value.
    fn put(&mut self, key: &str, meta: KeyMeta, value: &[u8]) -> Result<(), StoreError>;
    /// Removes `key`; returns whether it existed.
    fn remove(&mut self, key: &str) -> Result<bool, StoreError>;
}

/// An [`ApplyTarget`] that stages one transaction's writes over a read-only view of the
/// current keys (`current` gives a key's revisions), for backends that write the net changes
/// afterwards (memory: into its map; etcd: as one etcd txn); a failure leaves nothing to undo.
pub(crate) struct Staging<F> {
    current: F,
    /// Staged changes by key: `Some` = put, `None` = delete.
    pub changes: BTreeMap<String, Option<(KeyMeta, Vec<u8>)>>,
}

impl<F: Fn(&str) -> Option<KeyMeta>> Staging<F> {
    pub fn new(current: F) -> Self {
        Self {
            current,
            changes: BTreeMap::new(),
        }
    }
}

impl<F: Fn(&str) -> Option<KeyMeta>> ApplyTarget for Staging<F> {
    fn meta(&mut self, key: &str) -> Result<Option<KeyMeta>, StoreError> {
        Ok(match self.changes.get(key) {
            Some(staged) => staged.as_ref().map(|(m, _)| *m),
            None => (self.current)(key),
        })
    }

    fn put(&mut self, key: &str, meta: KeyMeta, value: &[u8]) -> Result<(), StoreError> {
        self.changes.insert(key.to_owned(), Some((meta, value.to_vec())));
        Ok(())
    }

    fn remove(&mut self, key: &str) -> Result<bool, StoreError> {
        let existed = self.meta(key)?.is_some();
        if existed {
            self.changes.insert(key.to_owned(), None);
        }
        Ok(existed)
    }
}

/// Checks `txn`'s guards then applies its ops under `new_revision`, returning the events in
/// op order (empty when nothing changed: the caller must then write nothing and keep the
/// revision).
///
/// On `Err` (a failed guard or a backend failure) the caller must abort its write
/// transaction; guards are all checked before the first op, so a conflict has touched nothing.
pub(crate) fn apply_txn(
    target: &mut impl ApplyTarget,
    txn: Txn,
    new_revision: Revision,
) -> Result<Vec<WatchEvent>, StoreError> {
    for compare in &txn.compares {
        match compare {
            Compare::ModRevision { key, revision } => {
                let actual = target.meta(key)?.map_or(0, |m| m.mod_revision);
                if actual != *revision {
                    return Err(StoreError::Conflict {
                        key: key.clone(),
                        expected: *revision,
                        actual,
                    });
                }
            }
        }
    }
    let mut events = Vec::with_capacity(txn.ops.len());
    for op in txn.ops {
        match op {
            Op::Put { key, value } => {
                let create_revision = target.meta(&key)?.map_or(new_revision, |m| m.create_revision);
                let meta = KeyMeta {
                    create_revision,
                    mod_revision: new_revision,
                };
                target.put(&key, meta, &value)?;
                events.push(WatchEvent {
                    revision: new_revision,
                    kind: EventKind::Put,
                    key,
                    value: Some(value),
                });
            }
            Op::Delete { key } => {
                if target.remove(&key)? {
                    events.push(WatchEvent {
                        revision: new_revision,
                        kind: EventKind::Delete,
                        key,
                        value: None,
                    });
                }
            }
        }
    }
    Ok(events)
}
