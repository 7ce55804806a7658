//! Copying one store into another (`weft store migrate --from URL --to URL`): moving a
//! cluster from the embedded store to etcd (to run several controllers) and back.
//!
//! Values are copied; revisions are not (the destination numbers its own transactions), which
//! is fine because weft only uses revisions to order changes within one store.

use crate::{ConfigStore, StoreError, Txn};

/// How many keys one destination transaction carries (below etcd's default 128-op limit).
const CHUNK: usize = 100;

/// Why a copy did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The destination already holds keys and `force` was not given.
    #[error(
        "destination store is not empty ({keys} keys, e.g. {first:?}): refusing to overwrite it (use --force to replace its contents)"
    )]
    NotEmpty {
        /// How many keys the destination holds.
        keys: usize,
        /// One of them, to help recognise the store.
        first: String,
    },
    /// Reading the source or writing the destination failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a copy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyReport {
    /// Keys written to the destination.
    pub copied: usize,
    /// Destination keys removed because the source does not have them (only with `force`).
    pub removed: usize,
}

/// Copies every key of `from` into `to`. Refuses a non-empty destination unless `force`, in
/// which case the destination ends up with exactly the source's keys and values.
///
/// Writes in chunks of 100 keys (each chunk atomic, the whole copy not): run it while
/// no controller uses either store.
pub async fn copy_all(
    from: &dyn ConfigStore,
    to: &dyn ConfigStore,
    force: bool,
) -> Result<CopyReport, CopyError> {
    let (source, _) = from.list("").await?;
    let (existing, _) = to.list("").await?;
    if !existing.is_empty() && !force {
        return Err(CopyError::NotEmpty {
            keys: existing.len(),
            first: existing[0].key.clone(),
        });
    }
    let keep: std::collections::BTreeSet<&str> = source.iter().map(|kv| kv.key.as_str()).collect();
    let stale: Vec<&str> = existing
        .iter()
        .map(|kv| kv.key.as_str())
        .filter(|k| !keep.contains(k))
        .collect();
    for chunk in stale.chunks(CHUNK) {
        let mut txn = Txn::new();
        for key in chunk {
            txn.push_delete(*key);
        }
        to.commit(txn).await?;
    }
    for chunk in source.chunks(CHUNK) {
        let mut txn = Txn::new();
        for kv in chunk {
            txn.push_put(kv.key.clone(), kv.value.clone());
        }
        to.commit(txn).await?;
    }
    Ok(CopyReport {
        copied: source.len(),
        removed: stale.len(),
    })
}
