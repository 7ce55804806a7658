//! Choosing a backend from configuration (the `--store` flag of the controller and API).

use std::path::Path;
use std::sync::Arc;

use crate::{ConfigStore, EtcdStore, RedbStore, StoreError};

/// File name used inside a directory given to [`open_url`].
pub const DEFAULT_FILE_NAME: &str = "weft.redb";

/// Opens the store named by `url`:
/// * `redb:///abs/path/file.redb`: that redb file (its directory is created if missing);
/// * a plain directory path (no `scheme://`): `<dir>/weft.redb`, creating the directory;
/// * `etcd://host:port[,host:port…][/prefix]`: an [`EtcdStore`] (keys under `prefix/`,
///   default `weft/`; connects on first use);
/// * anything else: an error naming the URL.
pub fn open_url(url: &str) -> Result<Arc<dyn ConfigStore>, StoreError> {
    if let Some(path) = url.strip_prefix("redb://") {
        if !path.starts_with('/') {
            return Err(StoreError::Backend(format!(
                "store URL {url:?}: a redb URL needs an absolute path, like redb:///var/lib/weft/weft.redb"
            )));
        }
        let path = Path::new(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::backend(format!("store URL {url:?}: create {}", dir.display()), e)
            })?;
        }
        return Ok(Arc::new(RedbStore::open(path)?));
    }
    if url.starts_with("etcd://") {
        return Ok(Arc::new(EtcdStore::open(url)?));
    }
    if let Some((scheme, _)) = url.split_once("://") {
        return Err(StoreError::Backend(format!(
            "store URL {url:?}: unknown scheme {scheme:?} (expected redb:///path/file.redb, etcd://host:port[/prefix] or a directory)"
        )));
    }
    if url.is_empty() {
        return Err(StoreError::Backend("store URL is empty".into()));
    }
    let dir = Path::new(url);
    if dir.exists() && !dir.is_dir() {
        return Err(StoreError::Backend(format!(
            "store URL {url:?}: not a directory (give a directory, or redb:///path/file.redb for a file)"
        )));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| StoreError::backend(format!("store URL {url:?}: create directory"), e))?;
    Ok(Arc::new(RedbStore::open(&dir.join(DEFAULT_FILE_NAME))?))
}
