//! redb-specific behaviour: durability across reopen, recovery after SIGKILL, `open_url`.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use weft_store::{ConfigStore, RedbStore, StoreError, Txn, open_url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_data_revision_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.path(), path);
        store
            .commit(Txn::new().put("a", "1").put("b", "1"))
            .await
            .unwrap(); // 1
        store.commit(Txn::new().put("a", "2")).await.unwrap(); // 2
        store.commit(Txn::new().delete("b").put("c", "3")).await.unwrap(); // 3
        store.compact(1).await.unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.revision().await.unwrap(), 3);
    let a = store.get("a").await.unwrap().unwrap();
    assert_eq!(
        (a.value.as_slice(), a.create_revision, a.mod_revision),
        (&b"2"[..], 1, 2)
    );
    assert_eq!(store.get("b").await.unwrap(), None);
    let (items, rev) = store.list("").await.unwrap();
    assert_eq!(rev, 3);
    assert_eq!(
        items.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(),
        ["a", "c"]
    );

    // The compaction point survived, and so did the rest of the log.
    assert!(matches!(
        store.watch("", 0).await,
        Err(StoreError::Compacted {
            requested: 0,
            compacted: 1
        })
    ));
    let mut w = store.watch("", 1).await.unwrap();
    let mut revisions = Vec::new();
    for _ in 0..3 {
        revisions.push(w.next().await.unwrap().unwrap().revision);
    }
    assert_eq!(revisions, [2, 3, 3]);

    // The revision continues from the file.
    assert_eq!(store.commit(Txn::new().put("d", "4")).await.unwrap(), 4);
    assert_eq!(w.next().await.unwrap().unwrap().key, "d");
}

#[test]
fn second_open_of_same_file_is_a_backend_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let _first = RedbStore::open(&path).unwrap();
    match RedbStore::open(&path) {
        Err(StoreError::Backend(msg)) => assert!(msg.contains("s.redb"), "names the file: {msg}"),
        other => panic!("expected Backend error, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn garbage_file_is_a_backend_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.redb");
    std::fs::write(&path, vec![0xAB; 64 * 1024]).unwrap();
    match RedbStore::open(&path) {
        Err(StoreError::Backend(msg)) => assert!(msg.contains("garbage.redb"), "{msg}"),
        other => panic!("expected Backend error, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn open_url_accepts_redb_urls_and_directories() {
    let dir = tempfile::tempdir().unwrap();

    let file = dir.path().join("nested/deeper/x.redb");
    let url = format!("redb://{}", file.display());
    let store = open_url(&url).unwrap();
    store.commit(Txn::new().put("k", "v")).await.unwrap();
    drop(store);
    assert!(file.is_file(), "redb URL names the file, parents created");
    let store = open_url(&url).unwrap();
    assert_eq!(store.revision().await.unwrap(), 1);
    drop(store);

    let data_dir = dir.path().join("data");
    let store: Arc<dyn ConfigStore> = open_url(data_dir.to_str().unwrap()).unwrap();
    store.commit(Txn::new().put("k", "v")).await.unwrap();
    assert!(data_dir.join(weft_store::DEFAULT_FILE_NAME).is_file());
}

#[test]
fn open_url_rejects_unknown_schemes_and_bad_etcd_urls() {
    let err = |url: &str| match open_url(url) {
        Err(StoreError::Backend(msg)) => msg,
        Err(other) => panic!("{url}: expected Backend, got {other}"),
        Ok(_) => panic!("{url}: should not open"),
    };
    // etcd URLs open lazily (no connection yet) but must be well-formed.
    assert!(open_url("etcd://10.0.0.1:2379").is_ok());
    let msg = err("etcd://10.0.0.1");
    assert!(
        msg.contains("etcd://10.0.0.1") && msg.contains("host:port"),
        "{msg}"
    );
    let msg = err("s3://bucket/x");
    assert!(
        msg.contains("s3://bucket/x") && msg.contains("unknown scheme"),
        "{msg}"
    );
    let msg = err("redb://relative/x.redb");
    assert!(msg.contains("absolute"), "{msg}");
    err("");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let msg = err(file.to_str().unwrap());
    assert!(msg.contains("not a directory"), "{msg}");
}

// --- crash recovery -----------------------------------------------------------------------

/// Set (to the store path) only in the child process of the crash test.
const CRASH_CHILD_ENV: &str = "WEFT_STORE_CRASH_CHILD";

/// Child half of `sigkill_keeps_every_acknowledged_commit`: does nothing unless the env var
/// is set. Commits forever (bounded) and prints `ack <revision> <i>` after each commit returns.
#[tokio::test]
async fn crash_child_writer() {
    let Some(path) = std::env::var_os(CRASH_CHILD_ENV) else {
        return;
    };
    let store = RedbStore::open(std::path::Path::new(&path)).unwrap();
    let start = store.revision().await.unwrap();
    let mut counter_rev = store
        .get("crash/counter")
        .await
        .unwrap()
        .map_or(0, |kv| kv.mod_revision);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stdout = std::io::stdout().lock();
    for i in start.. {
        if Instant::now() > deadline {
            break;
        }
        // Two ops and a guard chained on the previous commit: a torn or lost txn shows up.
        let txn = Txn::new()
            .guard("crash/counter", counter_rev)
            .put(
                format!("crash/{i:06}"),
                vec![(i % 251) as u8; 1 + (i as usize % 3000)],
            )
            .put("crash/counter", i.to_string());
        let rev = store.commit(txn).await.unwrap();
        counter_rev = rev;
        writeln!(stdout, "ack {rev} {i}").unwrap();
        stdout.flush().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_keeps_every_acknowledged_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child_writer", "--nocapture", "--test-threads=1"])
        .env(CRASH_CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let parse = |line: &str| -> Option<(u64, u64)> {
        // libtest prints "test crash_child_writer ... " without a newline before the output.
        let rest = &line[line.find("ack ")? + 4..];
        let (rev, i) = rest.split_once(' ')?;
        Some((rev.parse().unwrap(), i.parse().unwrap()))
    };
    let mut acks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    while acks.len() < 300 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => acks.extend(parse(&line)),
            Err(_) => {
                let _ = child.kill();
                panic!("child acknowledged only {} commits in time", acks.len());
            }
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix: no destructor, no clean redb shutdown
    let status = child.wait().unwrap();
    assert!(!status.success(), "child was killed, not finished");
    reader.join().unwrap();
    // Everything printed before the kill was acknowledged.
    acks.extend(rx.try_iter().filter_map(|l| parse(&l)));

    let store = RedbStore::open(&path).unwrap();
    let revision = store.revision().await.unwrap();
    let &(last_acked, _) = acks.last().unwrap();
    assert!(
        revision >= last_acked,
        "revision {revision} < acknowledged {last_acked}"
    );
    for (n, &(rev, i)) in acks.iter().enumerate() {
        assert_eq!((rev, i), (n as u64 + 1, n as u64), "acks are consecutive");
        let kv = store
            .get(&format!("crash/{i:06}"))
            .await
            .unwrap()
            .expect("acknowledged key lost");
        assert_eq!(kv.mod_revision, rev);
        assert_eq!(kv.value, vec![(i % 251) as u8; 1 + (i as usize % 3000)]);
    }

    // Consistent: exactly one key per revision, the counter matches the last txn, and the
    // change log holds both events of every revision.
    let (items, list_rev) = store.list("crash/").await.unwrap();
    assert_eq!(list_rev, revision);
    assert_eq!(
        items.len() as u64,
        revision + 1,
        "one key per txn plus the counter"
    );
    let counter = store.get("crash/counter").await.unwrap().unwrap();
    assert_eq!(counter.mod_revision, revision);
    assert_eq!(counter.value, (revision - 1).to_string().as_bytes());
    let mut w = store.watch("crash/", 0).await.unwrap();
    for rev in 1..=revision {
        for _ in 0..2 {
            let event = tokio::time::timeout(Duration::from_secs(5), w.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(event.revision, rev);
        }
    }

    // And it keeps going from there.
    let next = store
        .commit(
            Txn::new()
                .guard("crash/counter", revision)
                .put("crash/after", "x"),
        )
        .await
        .unwrap();
    assert_eq!(next, revision + 1);
}
