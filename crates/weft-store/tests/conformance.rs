//! Conformance suite: the same behavioural tests against every backend, so the in-memory
//! test double and the durable stores (redb, etcd) cannot drift apart. Each case is a plain
//! async fn over a [`Fixture`]; the macro at the bottom instantiates it once per backend. The
//! etcd cases run against a real etcd spawned per test.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use weft_store::{
    ConfigStore, EtcdConfig, EtcdServer, EtcdStore, EventKind, KeyValue, MemoryStore, RedbStore, StoreError,
    StoreOptions, Txn, WatchEvent, WatchStream,
};

/// A store under test plus whatever must outlive it (dropped after the store).
struct Fixture {
    store: Arc<dyn ConfigStore>,
    _dir: Option<tempfile::TempDir>,
    _etcd: Option<EtcdServer>,
}

async fn memory(options: StoreOptions) -> Option<Fixture> {
    Some(Fixture {
        store: Arc::new(MemoryStore::with_options(options)),
        _dir: None,
        _etcd: None,
    })
}

async fn redb(options: StoreOptions) -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open_with(&dir.path().join("store.redb"), options).unwrap();
    Some(Fixture {
        store: Arc::new(store),
        _dir: Some(dir),
        _etcd: None,
    })
}

/// A real etcd (spawned for this test, killed by its drop guard), with the weft keys under a
/// prefix so the layout's isolation is exercised too. `None` (test skipped) only when the etcd
/// binary is not installed: `scripts/install-deps` installs it, so CI runs these.
async fn etcd(options: StoreOptions) -> Option<Fixture> {
    if !EtcdServer::available() {
        eprintln!(
            "SKIPPED: {} not installed (run scripts/install-deps to get etcd-server)",
            EtcdServer::binary().display()
        );
        return None;
    }
    let server = EtcdServer::start().await.unwrap();
    // Noise under a sibling prefix: must not show up in this store's revisions or watches.
    let noise = EtcdStore::open(&server.url("other")).unwrap();
    noise.commit(Txn::new().put("a", "noise")).await.unwrap();
    let config = EtcdConfig::parse(&server.url("conformance/test")).unwrap();
    Some(Fixture {
        store: Arc::new(EtcdStore::with_config(config, options)),
        _dir: None,
        _etcd: Some(server),
    })
}

const WAIT: Duration = Duration::from_secs(10);

fn put(key: &str, value: &str, revision: u64) -> WatchEvent {
    WatchEvent {
        revision,
        kind: EventKind::Put,
        key: key.into(),
        value: Some(value.as_bytes().to_vec()),
    }
}

fn del(key: &str, revision: u64) -> WatchEvent {
    WatchEvent {
        revision,
        kind: EventKind::Delete,
        key: key.into(),
        value: None,
    }
}

/// Reads exactly `n` events (failing on an error item, an end, or a 10 s stall).
async fn take(stream: &mut WatchStream, n: usize) -> Vec<WatchEvent> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(WAIT, stream.next()).await {
            Ok(Some(Ok(event))) => out.push(event),
            Ok(Some(Err(err))) => panic!("watch error after {} events: {err}", out.len()),
            Ok(None) => panic!("watch ended after {} of {n} events", out.len()),
            Err(_) => panic!("watch stalled after {} of {n} events: {out:?}", out.len()),
        }
    }
    out
}

/// Asserts two event sequences are equal, reporting the first difference (not 1000 events).
#[track_caller]
fn assert_events(got: &[WatchEvent], expected: &[WatchEvent], context: &str) {
    if got == expected {
        return;
    }
    let at = got
        .iter()
        .zip(expected)
        .position(|(g, e)| g != e)
        .unwrap_or(got.len().min(expected.len()));
    panic!(
        "{context}: {} events, expected {}; first difference at #{at}: got {:?}, expected {:?}",
        got.len(),
        expected.len(),
        got.get(at),
        expected.get(at)
    );
}

/// Asserts the stream yields nothing for a short while.
async fn assert_quiet(stream: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(150), stream.next()).await {
        panic!("unexpected watch item: {item:?}");
    }
}

async fn commit(store: &Arc<dyn ConfigStore>, txn: Txn) -> u64 {
    store.commit(txn).await.unwrap()
}

// ---------------------------------------------------------------------------------------

async fn revisions_increase_by_one_per_txn(f: Fixture) {
    let s = &f.store;
    assert_eq!(s.revision().await.unwrap(), 0);
    assert_eq!(s.get("a").await.unwrap(), None);

    assert_eq!(commit(s, Txn::new().put("a", "1")).await, 1);
    assert_eq!(commit(s, Txn::new().put("b", "2").put("c", "3")).await, 2);
    let b = s.get("b").await.unwrap().unwrap();
    let c = s.get("c").await.unwrap().unwrap();
    assert_eq!((b.create_revision, b.mod_revision), (2, 2));
    assert_eq!(
        (c.create_revision, c.mod_revision),
        (2, 2),
        "ops of one txn share its revision"
    );

    // Update keeps create_revision.
    assert_eq!(commit(s, Txn::new().put("a", "1b")).await, 3);
    let a = s.get("a").await.unwrap().unwrap();
    assert_eq!(
        a,
        KeyValue {
            key: "a".into(),
            value: b"1b".to_vec(),
            create_revision: 1,
            mod_revision: 3
        }
    );

    // A txn with no ops writes nothing and returns the current revision.
    assert_eq!(commit(s, Txn::new()).await, 3);
    // Even with a (passing) guard.
    assert_eq!(commit(s, Txn::new().guard("a", 3)).await, 3);
    assert_eq!(s.revision().await.unwrap(), 3);

    // Delete then re-create: create_revision restarts.
    assert_eq!(commit(s, Txn::new().delete("a")).await, 4);
    assert_eq!(s.get("a").await.unwrap(), None);
    assert_eq!(commit(s, Txn::new().put("a", "again")).await, 5);
    let a = s.get("a").await.unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (5, 5));
    assert_eq!(s.revision().await.unwrap(), 5);
}

async fn list_is_sorted_with_snapshot_revision(f: Fixture) {
    let s = &f.store;
    let (items, rev) = s.list("").await.unwrap();
    assert!(items.is_empty());
    assert_eq!(rev, 0);

    commit(s, Txn::new().put("dir/c", "c").put("dir/a", "a")).await;
    commit(
        s,
        Txn::new()
            .put("dirx/z", "z")
            .put("dir", "bare")
            .put("di", "short"),
    )
    .await;
    commit(s, Txn::new().put("dir/b", "b").put("dir/a", "a2")).await;
    commit(s, Txn::new().put("other", "o")).await;

    let (items, rev) = s.list("dir/").await.unwrap();
    assert_eq!(rev, 4, "list reports the store revision of its snapshot");
    let keys: Vec<_> = items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["dir/a", "dir/b", "dir/c"]);
    assert_eq!(items[0].value, b"a2");
    assert_eq!((items[0].create_revision, items[0].mod_revision), (1, 3));
    assert_eq!((items[2].create_revision, items[2].mod_revision), (1, 1));

    // Plain string prefix: "dir" also matches "dir", "dir/..." and "dirx/...".
    let (items, _) = s.list("dir").await.unwrap();
    let keys: Vec<_> = items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["dir", "dir/a", "dir/b", "dir/c", "dirx/z"]);

    let (items, _) = s.list("").await.unwrap();
    let keys: Vec<_> = items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["di", "dir", "dir/a", "dir/b", "dir/c", "dirx/z", "other"]);

    let (items, rev) = s.list("nothing/").await.unwrap();
    assert!(items.is_empty());
    assert_eq!(rev, 4);
}

async fn conflict_writes_nothing(f: Fixture) {
    let s = &f.store;
    let mut watch = s.watch("", 0).await.unwrap();
    let r1 = commit(s, Txn::new().put("k", "v1")).await;
    let r2 = commit(s, Txn::new().guard("k", r1).put("k", "v2").put("side", "x")).await;
    assert_eq!(r2, r1 + 1);

    // Stale guard: conflict, and neither op is applied.
    let err = s
        .commit(Txn::new().guard("k", r1).put("k", "v3").put("side2", "y"))
        .await
        .unwrap_err();
    match err {
        StoreError::Conflict {
            key,
            expected,
            actual,
        } => {
            assert_eq!((key.as_str(), expected, actual), ("k", r1, r2));
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    // The first guard passes, the second fails: still nothing written.
    let err = s
        .commit(
            Txn::new()
                .guard("k", r2)
                .guard_absent("side")
                .delete("k")
                .put("side3", "z"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict { key, expected: 0, actual } if key == "side" && *actual == r2),
        "{err:?}"
    );
    assert!(err.to_string().contains("side"), "error names the key: {err}");

    assert_eq!(s.revision().await.unwrap(), r2);
    assert_eq!(s.get("k").await.unwrap().unwrap().value, b"v2");
    assert_eq!(s.get("side2").await.unwrap(), None);
    assert_eq!(s.get("side3").await.unwrap(), None);

    // Guard on absent key: passes when absent, then conflicts once created.
    let r3 = commit(s, Txn::new().guard_absent("new").put("new", "n")).await;
    assert_eq!(r3, r2 + 1);
    let err = s
        .commit(Txn::new().guard_absent("new").put("new", "n2"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { expected: 0, actual, .. } if actual == r3));
    // A guard on a key deleted meanwhile sees 0.
    let r4 = commit(s, Txn::new().delete("new")).await;
    let err = s.commit(Txn::new().guard("new", r3)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { expected, actual: 0, .. } if expected == r3));

    // Watchers saw only the committed transactions.
    let events = take(&mut watch, 5).await;
    assert_eq!(
        events,
        [
            put("k", "v1", r1),
            put("k", "v2", r2),
            put("side", "x", r2),
            put("new", "n", r3),
            del("new", r4)
        ]
    );
    assert_quiet(&mut watch).await;
}

async fn delete_absent_key_is_no_change(f: Fixture) {
    let s = &f.store;
    let mut watch = s.watch("", 0).await.unwrap();
    assert_eq!(commit(s, Txn::new().delete("ghost")).await, 0);
    assert_eq!(commit(s, Txn::new().put("a", "1")).await, 1);
    assert_eq!(
        commit(s, Txn::new().delete("ghost").delete("ghost2")).await,
        1,
        "nothing changed"
    );
    assert_eq!(s.revision().await.unwrap(), 1);
    // Mixed: only the real change produces an event.
    assert_eq!(commit(s, Txn::new().delete("ghost").put("b", "2")).await, 2);
    // Delete twice in one txn: one event.
    assert_eq!(commit(s, Txn::new().delete("a").delete("a")).await, 3);
    let events = take(&mut watch, 3).await;
    assert_eq!(events, [put("a", "1", 1), put("b", "2", 2), del("a", 3)]);
    assert_quiet(&mut watch).await;
}

async fn ops_apply_in_order_within_txn(f: Fixture) {
    let s = &f.store;
    commit(s, Txn::new().put("keep", "0")).await;
    let rev = commit(
        s,
        Txn::new()
            .put("a", "1")
            .put("b", "1")
            .delete("a")
            .put("keep", "1")
            .put("b", "2"),
    )
    .await;
    assert_eq!(rev, 2);
    assert_eq!(s.get("a").await.unwrap(), None);
    let b = s.get("b").await.unwrap().unwrap();
    assert_eq!(
        (b.value.as_slice(), b.create_revision, b.mod_revision),
        (&b"2"[..], 2, 2)
    );
    let keep = s.get("keep").await.unwrap().unwrap();
    assert_eq!((keep.create_revision, keep.mod_revision), (1, 2));
    let mut watch = s.watch("", 1).await.unwrap();
    assert_eq!(
        take(&mut watch, 5).await,
        [
            put("a", "1", 2),
            put("b", "1", 2),
            del("a", 2),
            put("keep", "1", 2),
            put("b", "2", 2)
        ]
    );
}

/// The history used by the replay tests: (revision, events) for keys under "p/" and "q/".
async fn write_history(s: &Arc<dyn ConfigStore>) -> Vec<WatchEvent> {
    commit(s, Txn::new().put("p/1", "a")).await; // 1
    commit(s, Txn::new().put("q/1", "b").put("p/2", "c")).await; // 2
    commit(s, Txn::new().delete("p/1").put("pp/1", "d")).await; // 3
    commit(s, Txn::new().put("p/2", "e")).await; // 4
    commit(s, Txn::new().put("q/2", "f")).await; // 5
    commit(s, Txn::new().put("p/3", "g").delete("q/1")).await; // 6
    vec![
        put("p/1", "a", 1),
        put("q/1", "b", 2),
        put("p/2", "c", 2),
        del("p/1", 3),
        put("pp/1", "d", 3),
        put("p/2", "e", 4),
        put("q/2", "f", 5),
        put("p/3", "g", 6),
        del("q/1", 6),
    ]
}

async fn watch_replays_from_zero_and_middle(f: Fixture) {
    let s = &f.store;
    let history = write_history(s).await;

    let mut all = s.watch("", 0).await.unwrap();
    assert_eq!(take(&mut all, history.len()).await, history);
    assert_quiet(&mut all).await;

    for after in 0..=6 {
        let expected: Vec<_> = history.iter().filter(|e| e.revision > after).cloned().collect();
        let mut w = s.watch("", after).await.unwrap();
        assert_eq!(take(&mut w, expected.len()).await, expected, "after {after}");
        assert_quiet(&mut w).await;
    }

    // Prefix filtering: "p/" must not match "pp/".
    let expected: Vec<_> = history
        .iter()
        .filter(|e| e.key.starts_with("p/") && e.revision > 2)
        .cloned()
        .collect();
    assert_eq!(expected.len(), 3);
    let mut w = s.watch("p/", 2).await.unwrap();
    assert_eq!(take(&mut w, expected.len()).await, expected);
    assert_quiet(&mut w).await;

    // ...while the plain prefix "p" matches both.
    let mut w = s.watch("p", 0).await.unwrap();
    let got = take(&mut w, 6).await;
    assert!(got.iter().any(|e| e.key == "pp/1"));
    assert_quiet(&mut w).await;

    // Replay then live on the same stream.
    let mut w = s.watch("q/", 5).await.unwrap();
    assert_eq!(take(&mut w, 1).await, [del("q/1", 6)]);
    commit(s, Txn::new().put("p/9", "skip").put("q/3", "live")).await; // 7
    assert_eq!(take(&mut w, 1).await, [put("q/3", "live", 7)]);
    assert_quiet(&mut w).await;
}

async fn watch_from_future_revision(f: Fixture) {
    let s = &f.store;
    commit(s, Txn::new().put("a", "1")).await; // 1
    let mut w = s.watch("", 3).await.unwrap();
    commit(s, Txn::new().put("a", "2")).await; // 2
    commit(s, Txn::new().put("a", "3")).await; // 3
    commit(s, Txn::new().put("a", "4")).await; // 4
    assert_eq!(take(&mut w, 1).await, [put("a", "4", 4)]);
    assert_quiet(&mut w).await;
}

/// A deterministic workload for the concurrency test, with the events it must produce
/// under prefix "w/" (not "wx/").
fn workload(first_revision: u64) -> (Vec<Txn>, Vec<WatchEvent>) {
    let mut txns = Vec::new();
    let mut expected = Vec::new();
    let mut present = BTreeSet::new();
    for i in 0..500u64 {
        let revision = first_revision + i;
        let mut txn = Txn::new();
        let mut events = Vec::new();
        if i % 11 == 0 {
            // Outside the watched prefix only: the watcher sees nothing at this revision.
            txn.push_put(format!("wx/{i}"), i.to_string());
        } else {
            let key = format!("w/{i:04}");
            txn.push_put(key.clone(), i.to_string());
            events.push(put(&key, &i.to_string(), revision));
            present.insert(key);
            if i % 5 == 0 {
                txn.push_put(format!("wx/{i}"), "side");
            }
            if i % 7 == 0 {
                let prev = format!("w/{:04}", i - 1);
                txn.push_delete(prev.clone()); // absent if i-1 was a wx-only txn
                if present.remove(&prev) {
                    events.push(del(&prev, revision));
                }
            }
        }
        txns.push(txn);
        expected.extend(events);
    }
    (txns, expected)
}

async fn watch_handover_under_concurrent_commits(f: Fixture) {
    let s = &f.store;
    for i in 0..10 {
        commit(s, Txn::new().put(format!("w/pre/{i}"), "p")).await;
    }
    let (txns, expected_live) = workload(11);
    let pre: Vec<_> = (0..10).map(|i| put(&format!("w/pre/{i}"), "p", i + 1)).collect();

    // Watcher A: started before the writer, replays 6..=10 then is live throughout.
    let mut early = s.watch("w/", 5).await.unwrap();

    let writer = {
        let s = Arc::clone(s);
        tokio::spawn(async move {
            for (i, txn) in txns.into_iter().enumerate() {
                s.commit(txn).await.unwrap();
                tokio::task::yield_now().await;
                if i % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };

    // Watchers B: started one after another while the writer is running, each resuming a
    // few revisions back, so their replay/live handovers race with commits.
    let mut mid = Vec::new();
    let mut next_start = 30;
    loop {
        let now = s.revision().await.unwrap();
        if now >= 505 {
            break;
        }
        if now >= next_start {
            let after = now - 7;
            mid.push((after, s.watch("w/", after).await.unwrap()));
            next_start = now + 20;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        mid.len() >= 10,
        "too few watchers started during the writes: {}",
        mid.len()
    );

    let all: Vec<_> = pre.iter().chain(&expected_live).cloned().collect();
    let since =
        |after: u64| -> Vec<WatchEvent> { all.iter().filter(|e| e.revision > after).cloned().collect() };
    let expected_early = since(5);
    let got_early = take(&mut early, expected_early.len()).await;
    assert_events(&got_early, &expected_early, "watcher started before the writes");
    for (after, w) in &mut mid {
        let expected = since(*after);
        let got = take(w, expected.len()).await;
        assert_events(
            &got,
            &expected,
            &format!("watcher started after revision {after}"),
        );
    }
    writer.await.unwrap();
    assert_eq!(s.revision().await.unwrap(), 510);
    assert_quiet(&mut early).await;
    for (after, w) in &mut mid {
        assert!(
            w.next().now_or_never().is_none(),
            "extra event for the watcher after {after}"
        );
    }
}

async fn compaction_then_old_watch_fails(f: Fixture) {
    let s = &f.store;
    for i in 1..=10u64 {
        commit(s, Txn::new().put(format!("k/{}", i % 3), i.to_string())).await;
    }
    let (before, _) = s.list("").await.unwrap();
    s.compact(5).await.unwrap();

    // Values are untouched.
    assert_eq!(s.list("").await.unwrap(), (before, 10));

    for after in [0, 4] {
        match s.watch("k/", after).await {
            Err(StoreError::Compacted { requested, compacted }) => {
                assert_eq!((requested, compacted), (after, 5))
            }
            Err(other) => panic!("expected Compacted, got {other}"),
            Ok(_) => panic!("watch after {after} should fail: compacted at 5"),
        }
    }
    // From the compaction point itself everything is still there.
    let mut w = s.watch("k/", 5).await.unwrap();
    let got = take(&mut w, 5).await;
    assert_eq!(
        got.iter().map(|e| e.revision).collect::<Vec<_>>(),
        [6, 7, 8, 9, 10]
    );
    assert_quiet(&mut w).await;

    // Compacting lower is a no-op; beyond the head clamps to the head.
    s.compact(3).await.unwrap();
    assert!(s.watch("", 5).await.is_ok());
    s.compact(1000).await.unwrap();
    assert!(matches!(
        s.watch("", 9).await,
        Err(StoreError::Compacted {
            requested: 9,
            compacted: 10
        })
    ));
    let mut w = s.watch("", 10).await.unwrap();
    // Later commits are logged normally after a clamped compaction.
    commit(s, Txn::new().put("k/new", "n")).await;
    assert_eq!(take(&mut w, 1).await, [put("k/new", "n", 11)]);
    let mut w = s.watch("", 10).await.unwrap();
    assert_eq!(take(&mut w, 1).await, [put("k/new", "n", 11)]);
}

/// A watcher that falls behind the live fan-out (buffer of 2 txns) must re-read the gap
/// from the change log: no event lost, none repeated.
async fn lagging_watcher_loses_nothing(f: Fixture) {
    let s = &f.store;
    let mut w = s.watch("", 0).await.unwrap();
    let mut expected = Vec::new();
    for i in 1..=50u64 {
        let key = format!("lag/{}", i % 4);
        commit(s, Txn::new().put(key.clone(), i.to_string())).await;
        expected.push(put(&key, &i.to_string(), i));
    }
    // Read a few, fall behind again, read the rest.
    assert_eq!(take(&mut w, 10).await, expected[..10]);
    for i in 51..=80u64 {
        commit(s, Txn::new().put("lag/x", i.to_string()).delete("lag/0")).await;
        expected.push(put("lag/x", &i.to_string(), i));
        if i == 51 {
            expected.push(del("lag/0", i));
        }
    }
    assert_eq!(take(&mut w, expected.len() - 10).await, expected[10..]);
    assert_quiet(&mut w).await;
}

/// A lagging watcher whose gap was compacted meanwhile ends with Compacted.
async fn lagging_watcher_behind_compaction_ends(f: Fixture) {
    let s = &f.store;
    let mut w = s.watch("", 0).await.unwrap();
    for i in 1..=20u64 {
        commit(s, Txn::new().put("c", i.to_string())).await;
    }
    s.compact(15).await.unwrap();
    match tokio::time::timeout(WAIT, w.next()).await.unwrap() {
        Some(Err(StoreError::Compacted { requested, compacted })) => {
            assert_eq!((requested, compacted), (0, 15))
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(
        tokio::time::timeout(WAIT, w.next()).await.unwrap().is_none(),
        "stream ends"
    );
}

async fn dropping_store_closes_watchers(f: Fixture) {
    let s = f.store;
    commit(&s, Txn::new().put("a", "1")).await;
    let mut w = s.watch("", 0).await.unwrap();
    commit(&s, Txn::new().put("a", "2")).await;
    drop(s);
    // Buffered events are still delivered, then Closed, then the end.
    assert_eq!(take(&mut w, 2).await, [put("a", "1", 1), put("a", "2", 2)]);
    match tokio::time::timeout(WAIT, w.next()).await.unwrap() {
        Some(Err(StoreError::Closed)) => {}
        other => panic!("expected Closed, got {other:?}"),
    }
    assert!(tokio::time::timeout(WAIT, w.next()).await.unwrap().is_none());
}

// ---------------------------------------------------------------------------------------

macro_rules! conformance {
    ($backend:ident: $($case:ident $(($options:expr))?),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    #[allow(unused_mut, unused_assignments)]
                    let mut options = weft_store::StoreOptions::default();
                    $( options = $options; )?
                    if let Some(fixture) = super::$backend(options).await {
                        super::$case(fixture).await;
                    }
                }
            )*
        }
    };
}

macro_rules! suite {
    ($($backend:ident),*) => {
        $(
            conformance!($backend:
                revisions_increase_by_one_per_txn,
                list_is_sorted_with_snapshot_revision,
                conflict_writes_nothing,
                delete_absent_key_is_no_change,
                ops_apply_in_order_within_txn,
                watch_replays_from_zero_and_middle,
                watch_from_future_revision,
                watch_handover_under_concurrent_commits,
                compaction_then_old_watch_fails,
                lagging_watcher_loses_nothing(weft_store::StoreOptions::default().watch_buffer(2)),
                lagging_watcher_behind_compaction_ends(weft_store::StoreOptions::default().watch_buffer(2)),
                dropping_store_closes_watchers,
            );
        )*
    };
}

suite!(memory, redb, etcd);
