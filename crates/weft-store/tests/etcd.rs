//! etcd-specific behaviour beyond the conformance suite: several writers on one prefix (the
//! HA controllers' situation), prefix isolation, URL parsing and `copy_all` (store migrate)
//! in both directions between the embedded store and etcd. Each test spawns its own etcd.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use weft_store::{
    ConfigStore, CopyError, EtcdConfig, EtcdServer, EtcdStore, RedbStore, StoreError, Txn, copy_all,
};

async fn server() -> Option<EtcdServer> {
    if !EtcdServer::available() {
        eprintln!(
            "SKIPPED: {} not installed (run scripts/install-deps to get etcd-server)",
            EtcdServer::binary().display()
        );
        return None;
    }
    Some(EtcdServer::start().await.unwrap())
}

#[test]
fn url_parsing() {
    let c = EtcdConfig::parse("etcd://h1:2379,h2:2380").unwrap();
    assert_eq!(c.endpoints, ["http://h1:2379", "http://h2:2380"]);
    assert_eq!(c.prefix, "weft/");
    let c = EtcdConfig::parse("etcd://127.0.0.1:2379/clusters/a/").unwrap();
    assert_eq!(c.endpoints, ["http://127.0.0.1:2379"]);
    assert_eq!(c.prefix, "clusters/a/");
    for bad in [
        "etcd://",
        "etcd://host",
        "etcd://host:notaport",
        "etcd://:2379",
        "http://h:1",
    ] {
        let err = EtcdConfig::parse(bad).unwrap_err().to_string();
        assert!(err.contains(bad), "error for {bad:?} names the URL: {err}");
    }
}

/// Several stores (as several controller replicas would) allocate unique "addresses" with
/// guarded transactions at the same time: every allocation is unique and none is lost, and a
/// watcher sees each exactly once, in revision order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_keep_guards_and_revisions() {
    let Some(server) = server().await else { return };
    let url = server.url("ha");
    let watcher = EtcdStore::open(&url).unwrap();
    let mut watch = watcher.watch("ipam/", 0).await.unwrap();
    let mut tasks = Vec::new();
    for writer in 0..4 {
        let store: Arc<dyn ConfigStore> = Arc::new(EtcdStore::open(&url).unwrap());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..25 {
                // Allocate the lowest free index: read, then guard "still absent".
                loop {
                    let (used, _) = store.list("ipam/").await.unwrap();
                    let index = used.len();
                    let key = format!("ipam/{index:04}");
                    let txn = Txn::new()
                        .guard_absent(key.clone())
                        .put(key.clone(), format!("writer-{writer}"));
                    match store.commit(txn).await {
                        Ok(revision) => {
                            mine.push((key, revision));
                            break;
                        }
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    let keys: Vec<_> = all.iter().map(|(k, _)| k.clone()).collect();
    let expected: Vec<_> = (0..100).map(|i| format!("ipam/{i:04}")).collect();
    assert_eq!(keys, expected, "every index allocated exactly once");
    let mut revisions: Vec<_> = all.iter().map(|(_, r)| *r).collect();
    revisions.sort_unstable();
    assert_eq!(
        revisions,
        (1..=100).collect::<Vec<_>>(),
        "one revision per allocation, contiguous"
    );
    let mut seen = Vec::new();
    while seen.len() < 100 {
        let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push(event.revision);
    }
    assert_eq!(seen, (1..=100).collect::<Vec<_>>());
}

/// Two prefixes on one etcd are two independent stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_are_isolated() {
    let Some(server) = server().await else { return };
    let a = EtcdStore::open(&server.url("a")).unwrap();
    let ab = EtcdStore::open(&server.url("ab")).unwrap();
    assert_eq!(a.commit(Txn::new().put("k", "1")).await.unwrap(), 1);
    assert_eq!(ab.commit(Txn::new().put("k", "2")).await.unwrap(), 1);
    assert_eq!(a.get("k").await.unwrap().unwrap().value, b"1");
    assert_eq!(ab.list("").await.unwrap().0.len(), 1);
}

/// A weft txn touching more keys than one etcd read carries (the commit reads them in
/// several etcd txns at one snapshot): guards on keys of a later chunk still hold, and
/// overwritten keys keep their create revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_txn_reads_keys_in_several_chunks() {
    let Some(server) = server().await else { return };
    let store = EtcdStore::open(&server.url("big")).unwrap();
    let mut txn = Txn::new();
    for i in 0..250 {
        txn.push_put(format!("k/{i:03}"), "v1");
    }
    assert_eq!(store.commit(txn).await.unwrap(), 1);
    // A stale guard on the last key (third chunk) fails the whole txn.
    let mut txn = Txn::new();
    for i in 0..250 {
        txn.push_put(format!("k/{i:03}"), "v2");
    }
    txn.push_guard("k/249", 0);
    assert!(matches!(
        store.commit(txn).await,
        Err(StoreError::Conflict { .. })
    ));
    let mut txn = Txn::new();
    for i in 0..250 {
        txn.push_put(format!("k/{i:03}"), "v2");
    }
    txn.push_guard("k/249", 1);
    assert_eq!(store.commit(txn).await.unwrap(), 2);
    let (kvs, revision) = store.list("k/").await.unwrap();
    assert_eq!((kvs.len(), revision), (250, 2));
    assert!(
        kvs.iter()
            .all(|kv| kv.value == b"v2" && kv.create_revision == 1 && kv.mod_revision == 2)
    );
}

/// An etcd that cannot be reached is a clear backend error, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_is_a_backend_error() {
    // A port nothing listens on: the first call fails with a Backend error naming etcd.
    let store = EtcdStore::open("etcd://127.0.0.1:1/x").unwrap();
    let err = tokio::time::timeout(Duration::from_secs(30), store.revision())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Backend(ref m) if m.contains("etcd")),
        "{err}"
    );
}

async fn fill(store: &dyn ConfigStore, n: usize) {
    for chunk in 0..n.div_ceil(50) {
        let mut txn = Txn::new();
        for i in chunk * 50..((chunk + 1) * 50).min(n) {
            txn.push_put(format!("k/{i:05}"), format!("value-{i}"));
        }
        store.commit(txn).await.unwrap();
    }
}

async fn contents(store: &dyn ConfigStore) -> Vec<(String, Vec<u8>)> {
    store
        .list("")
        .await
        .unwrap()
        .0
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_embedded_to_etcd_and_back() {
    let Some(server) = server().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let redb = RedbStore::open(&dir.path().join("a.redb")).unwrap();
    fill(&redb, 320).await;
    let etcd = EtcdStore::open(&server.url("migrated")).unwrap();

    let report = copy_all(&redb, &etcd, false).await.unwrap();
    assert_eq!((report.copied, report.removed), (320, 0));
    assert_eq!(contents(&etcd).await, contents(&redb).await);

    // A second copy into the now non-empty destination is refused...
    let err = copy_all(&redb, &etcd, false).await.unwrap_err();
    assert!(matches!(err, CopyError::NotEmpty { keys: 320, .. }), "{err}");

    // ...and back: etcd -> a fresh embedded store.
    let back = RedbStore::open(&dir.path().join("b.redb")).unwrap();
    copy_all(&etcd, &back, false).await.unwrap();
    assert_eq!(contents(&back).await, contents(&redb).await);

    // --force replaces: extra destination keys go, changed values are overwritten.
    back.commit(Txn::new().put("extra", "x").put("k/00001", "changed"))
        .await
        .unwrap();
    let report = copy_all(&etcd, &back, true).await.unwrap();
    assert_eq!((report.copied, report.removed), (320, 1));
    assert_eq!(contents(&back).await, contents(&redb).await);
}
