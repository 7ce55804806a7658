//! In-memory backend with the same semantics as the redb one, for other crates' unit tests
//! (nothing survives the process).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use futures::future::BoxFuture;

use crate::apply::{KeyMeta, Staging, apply_txn};
use crate::watch::{self, Batch, Feed, LogReader};
use crate::{ConfigStore, KeyValue, Revision, StoreError, StoreOptions, Txn, WatchEvent, WatchStream};

/// In-memory [`ConfigStore`]: same revisions, guards, change log, compaction and watch
/// semantics as [`RedbStore`](crate::RedbStore), but nothing is persisted.
///
/// **For unit tests of other crates only** (a controller or API test that needs a store
/// without a file); production code opens a real store with [`open_url`](crate::open_url).
#[derive(Debug)]
pub struct MemoryStore {
    state: Arc<Mutex<MemState>>,
    feed: Feed,
}

/// Everything the memory store holds, behind one lock (commits are serialized by it).
#[derive(Debug, Default)]
struct MemState {
    objects: BTreeMap<String, (KeyMeta, Vec<u8>)>,
    /// Change log in revision order (ops of a txn in op order).
    log: Vec<WatchEvent>,
    revision: Revision,
    compacted: Revision,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store at revision 0.
    pub fn new() -> Self {
        Self::with_options(StoreOptions::default())
    }

    /// An empty store with explicit [`StoreOptions`].
    pub fn with_options(options: StoreOptions) -> Self {
        Self {
            state: Arc::new(Mutex::new(MemState::default())),
            feed: watch::feed(options.watch_buffer),
        }
    }
}

fn lock(state: &Mutex<MemState>) -> Result<MutexGuard<'_, MemState>, StoreError> {
    state
        .lock()
        .map_err(|_| StoreError::Backend("memory store lock poisoned by a panic".into()))
}

impl MemState {
    fn read_since(&self, prefix: &str, after: Revision) -> Result<(Vec<WatchEvent>, Revision), StoreError> {
        if after < self.compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted: self.compacted,
            });
        }
        let start = self.log.partition_point(|e| e.revision <= after);
        let events = self.log[start..]
            .iter()
            .filter(|e| e.key.starts_with(prefix))
            .cloned()
            .collect();
        Ok((events, self.revision))
    }
}

/// The memory store's change log as seen by its watchers (weak: dropping the store closes them).
struct MemLog(Weak<Mutex<MemState>>);

impl LogReader for MemLog {
    async fn read_since(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<(Vec<WatchEvent>, Revision), StoreError> {
        let state = self.0.upgrade().ok_or(StoreError::Closed)?;
        let guard = lock(&state)?;
        guard.read_since(prefix, after)
    }
}

impl ConfigStore for MemoryStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>> {
        Box::pin(async move {
            let state = lock(&self.state)?;
            Ok(state.objects.get(key).map(|(meta, value)| KeyValue {
                key: key.to_owned(),
                value: value.clone(),
                create_revision: meta.create_revision,
                mod_revision: meta.mod_revision,
            }))
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<(Vec<KeyValue>, Revision), StoreError>> {
        Box::pin(async move {
            let state = lock(&self.state)?;
            let items = state
                .objects
                .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
                .take_while(|(key, _)| key.starts_with(prefix))
                .map(|(key, (meta, value))| KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: meta.create_revision,
                    mod_revision: meta.mod_revision,
                })
                .collect();
            Ok((items, state.revision))
        })
    }

    fn commit(&self, txn: Txn) -> BoxFuture<'_, Result<Revision, StoreError>> {
        Box::pin(async move {
            let mut state = lock(&self.state)?;
            let new_revision = state.revision + 1;
            let (events, changes) = {
                let objects = &state.objects;
                let mut staging = Staging::new(|key: &str| objects.get(key).map(|(m, _)| *m));
                let events = apply_txn(&mut staging, txn, new_revision)?;
                (events, staging.changes)
            };
            if events.is_empty() {
                return Ok(state.revision);
            }
            for (key, change) in changes {
                match change {
                    Some(entry) => {
                        state.objects.insert(key, entry);
                    }
                    None => {
                        state.objects.remove(&key);
                    }
                }
            }
            state.log.extend(events.iter().cloned());
            state.revision = new_revision;
            // Sent under the lock: the feed stays in revision order. No receivers is fine.
            let _ = self.feed.send(Arc::new(Batch {
                revision: new_revision,
                events,
            }));
            Ok(new_revision)
        })
    }

    fn revision(&self) -> BoxFuture<'_, Result<Revision, StoreError>> {
        Box::pin(async move { Ok(lock(&self.state)?.revision) })
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        after: Revision,
    ) -> BoxFuture<'a, Result<WatchStream, StoreError>> {
        Box::pin(watch::start(
            MemLog(Arc::downgrade(&self.state)),
            &self.feed,
            prefix,
            after,
        ))
    }

    fn compact(&self, up_to: Revision) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut state = lock(&self.state)?;
            let target = up_to.min(state.revision);
            if target > state.compacted {
                let keep_from = state.log.partition_point(|e| e.revision <= target);
                state.log.drain(..keep_from);
                state.compacted = target;
            }
            Ok(())
        })
    }
}
