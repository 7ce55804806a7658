//! HA controllers on etcd, as a user runs them: three `weft controller --store etcd://…`
//! processes on one etcd, pods applied through all of them while the leader is SIGKILLed.
//! Checks: a follower becomes leader within a few seconds, every acknowledged pod is stored
//! once with a unique address (consistency endpoint), and every replica serves the same state.
//! Also the API token: 401 without / with a wrong token, success with it.
//!
//! Needs `/usr/bin/etcd` (scripts/install-deps installs etcd-server); skipped with a message
//! when it is absent.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_api::client::{ApiClient, ClientError};
use weft_api::types::ApplyRequest;
use weft_store::{EtcdServer, EtcdStore};

mod support;

use support::{ControllerProcess, interfaces, start_controller};

/// A replica on `store` with its own `--data-dir`, given `--token-file` when `Some`.
async fn start(
    store: &str,
    data_dir: &std::path::Path,
    token_file: Option<&std::path::Path>,
) -> ControllerProcess {
    let mut args: Vec<OsString> = vec![
        "--store".into(),
        store.into(),
        "--data-dir".into(),
        data_dir.into(),
    ];
    if let Some(file) = token_file {
        args.extend(["--token-file".into(), file.into()]);
    }
    start_controller(&args).await
}

fn pod(ns: &str, name: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
                       "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "x"}]}})
}

fn request(objects: Vec<serde_json::Value>) -> ApplyRequest {
    ApplyRequest::from_objects("test", objects)
}

async fn etcd() -> Option<EtcdServer> {
    if !EtcdServer::available() {
        eprintln!(
            "SKIPPED: {} not installed (run scripts/install-deps to get etcd-server)",
            EtcdServer::binary().display()
        );
        return None;
    }
    Some(EtcdServer::start().await.unwrap())
}

async fn wait_leader(etcd: &EtcdStore, not: Option<&str>, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(leader)) = etcd.leader().await
            && Some(leader.as_str()) != not
        {
            return leader;
        }
        assert!(Instant::now() < deadline, "no new leader within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_during_applies_follower_takes_over_nothing_lost() {
    let Some(server) = etcd().await else { return };
    let store_url = server.url("ha-test");
    let dir = tempfile::tempdir().unwrap();
    let mut replicas = Vec::new();
    for i in 0..3 {
        replicas.push(start(&store_url, &dir.path().join(format!("r{i}")), None).await);
    }
    let etcd = EtcdStore::open(&store_url).unwrap();
    let leader = wait_leader(&etcd, None, Duration::from_secs(15)).await;
    let leader_index = replicas.iter().position(|r| r.url == leader).unwrap();

    // Writers: batches of 5 pods, each sent to replicas in turn, moving on when one fails.
    let clients: Arc<Vec<ApiClient>> = Arc::new(replicas.iter().map(|r| r.client.clone()).collect());
    let mut tasks = Vec::new();
    for w in 0..4usize {
        let clients = clients.clone();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for b in 0..15usize {
                let names: Vec<String> = (0..5).map(|i| format!("w{w}-b{b}-p{i}")).collect();
                let req = request(names.iter().map(|n| pod("default", n)).collect());
                for attempt in 0..6 {
                    let client = &clients[(w + b + attempt) % clients.len()];
                    match client.apply(&req).await {
                        Ok(report) => {
                            assert_eq!(report.errors(), 0, "{report:?}");
                            acknowledged.extend(names.iter().cloned());
                            break;
                        }
                        Err(ClientError::Unreachable { .. } | ClientError::Refused { .. }) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            acknowledged
        }));
    }
    // Kill the leader once some pods are in.
    let watcher = clients[(leader_index + 1) % 3].clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while interfaces(&watcher).await.len() < 40 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed_at = Instant::now();
    let mut dead = replicas.remove(leader_index);
    dead.child.kill().unwrap();
    let _ = dead.child.wait();
    let new_leader = wait_leader(&etcd, Some(&leader), Duration::from_secs(15)).await;
    let failover = killed_at.elapsed();
    eprintln!("failover: new leader {new_leader} after {failover:?}");
    assert!(replicas.iter().any(|r| r.url == new_leader));

    let mut acknowledged = BTreeSet::new();
    for t in tasks {
        acknowledged.extend(t.await.unwrap());
    }
    assert!(
        acknowledged.len() >= 200,
        "most batches acknowledged: {}",
        acknowledged.len()
    );

    // Every surviving replica converges on the same state: all acknowledged pods, unique IPs.
    for replica in &replicas {
        let deadline = Instant::now() + Duration::from_secs(15);
        let ifs = loop {
            let ifs = interfaces(&replica.client).await;
            let names: BTreeSet<String> = ifs.iter().map(|i| i.pod.clone()).collect();
            if acknowledged.iter().all(|n| names.contains(n)) || Instant::now() > deadline {
                break ifs;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let names: BTreeSet<String> = ifs.iter().map(|i| i.pod.clone()).collect();
        let lost: Vec<_> = acknowledged.iter().filter(|n| !names.contains(*n)).collect();
        assert!(
            lost.is_empty(),
            "{}: acknowledged pods missing: {lost:?}",
            replica.url
        );
        let ips: BTreeSet<_> = ifs.iter().map(|i| i.ip).collect();
        assert_eq!(ips.len(), ifs.len(), "{}: duplicate pod addresses", replica.url);
        let report = replica.client.consistency().await.unwrap();
        assert!(
            report.problems.is_empty(),
            "{}: {:?}",
            replica.url,
            report.problems
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_the_token_when_one_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let c = start(
        &dir.path().join("store").display().to_string(),
        dir.path(),
        Some(&token_file),
    )
    .await;
    let req = request(vec![pod("default", "p1")]);

    // Reads stay open.
    assert!(c.client.status().await.is_ok());
    // No token: 401.
    match ApiClient::with_token(&c.url, None).apply(&req).await {
        Err(ClientError::Refused { message, .. }) => assert!(message.contains("401"), "{message}"),
        other => panic!("expected 401, got {other:?}"),
    }
    // Wrong token: 401.
    match ApiClient::with_token(&c.url, Some("wrong")).apply(&req).await {
        Err(ClientError::Refused { message, .. }) => assert!(message.contains("401"), "{message}"),
        other => panic!("expected 401, got {other:?}"),
    }
    // The node-state endpoints (agents) need it too.
    let node = weft_api::node_client::NodeStateClient::new(&c.url)
        .unwrap()
        .with_token(None);
    assert!(node.state("node-1").await.is_err());
    let node = node.with_token(Some("s3cret-token".into()));
    assert!(node.state("node-1").await.is_ok());
    // Right token: applied.
    let report = ApiClient::with_token(&c.url, Some("s3cret-token"))
        .apply(&req)
        .await
        .unwrap();
    assert_eq!(report.errors(), 0);
    assert_eq!(interfaces(&c.client).await.len(), 1);
}

#[test]
fn open_api_on_a_public_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["controller", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("WEFT_TOKEN")
        .env_remove("WEFT_TOKEN_FILE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("without a token") && stderr.contains("--insecure"),
        "{stderr}"
    );
}

/// A leader stopped with SIGTERM hands over by revoking its lease; the other replica takes
/// over and still serves the state written through the old leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_leader_hands_over() {
    let Some(server) = etcd().await else { return };
    let store_url = server.url("handover");
    let dir = tempfile::tempdir().unwrap();
    let mut replicas = vec![
        start(&store_url, &dir.path().join("a"), None).await,
        start(&store_url, &dir.path().join("b"), None).await,
    ];
    let etcd = EtcdStore::open(&store_url).unwrap();
    let leader = wait_leader(&etcd, None, Duration::from_secs(15)).await;
    let index = replicas.iter().position(|r| r.url == leader).unwrap();
    let report = replicas[index]
        .client
        .apply(&request(vec![pod("default", "p1")]))
        .await
        .unwrap();
    assert_eq!(report.errors(), 0);

    let mut old = replicas.remove(index);
    let stopped_at = Instant::now();
    let pid = i32::try_from(old.child.id()).unwrap();
    assert_eq!(sigterm(pid), 0);
    let status = old.child.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    let new_leader = wait_leader(&etcd, Some(&leader), Duration::from_secs(15)).await;
    eprintln!(
        "handover after SIGTERM: {new_leader} after {:?}",
        stopped_at.elapsed()
    );
    assert_eq!(new_leader, replicas[0].url);
    let deadline = Instant::now() + Duration::from_secs(10);
    while interfaces(&replicas[0].client).await.len() != 1 {
        assert!(
            Instant::now() < deadline,
            "the pod written through the old leader is served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends SIGTERM with the `kill` command (unsafe code is forbidden, so no libc call).
fn sigterm(pid: i32) -> i32 {
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .map(|s| s.code().unwrap_or(1))
        .unwrap_or(1)
}
