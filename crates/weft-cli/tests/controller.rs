//! The `weft controller` binary as a user runs it: HTTP API, embedded store, restarts,
//! concurrent applies, and a SIGKILL in the middle of a large apply.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_api::client::ApiClient;
use weft_api::types::{ApplyRequest, ManifestDocument};

mod support;

use support::{ControllerProcess, interfaces, start_controller};

async fn start(data_dir: &Path) -> ControllerProcess {
    start_controller(&["--data-dir".into(), data_dir.into()]).await
}

fn pod(ns: &str, name: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": {"app": "x"}},
                       "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "x"}]}})
}

fn request(objects: Vec<serde_json::Value>) -> ApplyRequest {
    ApplyRequest {
        documents: objects
            .into_iter()
            .enumerate()
            .map(|(i, object)| ManifestDocument {
                source: format!("test#{}", i + 1),
                object,
            })
            .collect(),
        namespace: None,
    }
}

async fn assert_consistent(client: &ApiClient) {
    let report = client.consistency().await.expect("consistency");
    assert!(
        report.problems.is_empty(),
        "store inconsistent: {:?}",
        report.problems
    );
    let ifs = interfaces(client).await;
    let unique: BTreeSet<_> = ifs.iter().map(|i| i.ip).collect();
    assert_eq!(unique.len(), ifs.len(), "duplicate pod addresses");
}

#[tokio::test]
async fn apply_is_idempotent_reports_errors_and_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/namespaces");
    let docs: Vec<ManifestDocument> = weft_api::manifest::read_manifests(&[examples.to_string()])
        .into_iter()
        .map(|d| d.expect("example manifests parse"))
        .collect();
    let req = ApplyRequest {
        documents: docs,
        namespace: None,
    };
    let before;
    {
        let c = start(dir.path()).await;
        let first = c.client.apply(&req).await.expect("apply");
        assert_eq!(first.errors(), 0, "{:?}", first.results);
        assert!(first.results.iter().all(|r| r.action == "created"));
        let second = c.client.apply(&req).await.expect("apply again");
        assert!(
            second.results.iter().all(|r| r.action == "unchanged"),
            "{:?}",
            second.results
        );
        assert_eq!(
            second.revision, first.revision,
            "an unchanged apply writes nothing"
        );
        // One bad document among good ones: the good one takes effect.
        let mixed = request(vec![
            pod("default", "good"),
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "iso", "annotations": {"opencontrail.org/isolation": "yes"}}}),
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default", "annotations": {"opencontrail.org/network": "{bad"}}}),
        ]);
        let report = c.client.apply(&mixed).await.expect("apply mixed");
        assert_eq!(report.results[0].action, "created");
        let e1 = report.results[1].error.clone().expect("namespace refused");
        assert!(
            e1.contains("test#2")
                && e1.contains("Namespace iso")
                && e1.contains("opencontrail.org/isolation"),
            "{e1}"
        );
        let e2 = report.results[2].error.clone().expect("pod refused");
        assert!(
            e2.contains("Pod default/p") && e2.contains("opencontrail.org/network"),
            "{e2}"
        );
        assert_consistent(&c.client).await;
        before = interfaces(&c.client).await;
        assert_eq!(before.len(), 6);
    }
    // Restart on the same data directory: same addresses, nothing re-done.
    let c = start(dir.path()).await;
    let after = interfaces(&c.client).await;
    assert_eq!(before, after);
    let again = c.client.apply(&req).await.expect("apply after restart");
    assert!(again.results.iter().all(|r| r.action == "unchanged"));
    // Delete frees addresses.
    let del = c
        .client
        .delete(&request(vec![pod("default", "good")]))
        .await
        .expect("delete");
    assert_eq!(del.results[0].action, "deleted");
    assert_eq!(interfaces(&c.client).await.len(), 5);
    assert_consistent(&c.client).await;
}

#[tokio::test]
async fn thousand_pods_applied_concurrently_get_unique_addresses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(dir.path()).await;
    let client = Arc::new(c.client.clone());
    let namespaces: Vec<serde_json::Value> = (0..10)
        .map(|n| {
            let ann = if n % 2 == 0 { serde_json::json!({"opencontrail.org/isolation": "true"}) } else { serde_json::json!({}) };
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("c{n}"), "annotations": ann}})
        })
        .collect();
    client.apply(&request(namespaces)).await.expect("namespaces");
    let mut tasks = Vec::new();
    for p in 0..1000 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .apply(&request(vec![pod(&format!("c{}", p % 10), &format!("p{p}"))]))
                .await
        }));
    }
    for t in tasks {
        let report = t.await.expect("join").expect("apply");
        assert_eq!(report.errors(), 0);
    }
    assert_eq!(interfaces(&client).await.len(), 1000);
    assert_consistent(&client).await;
}

#[tokio::test]
async fn sigkill_during_a_large_apply_leaves_a_consistent_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start(dir.path()).await;
    let client = Arc::new(c.client.clone());
    // Many writers in flight: batches of 20 pods; some are acknowledged, some not.
    let mut tasks = Vec::new();
    for b in 0..60 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let pods = (0..20).map(|i| pod("default", &format!("b{b}-p{i}"))).collect();
            client.apply(&request(pods)).await.ok().map(|_| b)
        }));
    }
    // Let part of the work land, then kill -9.
    let deadline = Instant::now() + Duration::from_secs(10);
    while interfaces(&client).await.len() < 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut c = c;
    c.child.kill().expect("SIGKILL");
    let _ = c.child.wait();
    let mut acknowledged = BTreeSet::new();
    for t in tasks {
        if let Some(b) = t.await.expect("join") {
            acknowledged.insert(b);
        }
    }
    drop(c);
    // Restart: every acknowledged batch is there, nothing is duplicated or leaked.
    let c = start(dir.path()).await;
    assert_consistent(&c.client).await;
    let stored: BTreeSet<String> = interfaces(&c.client).await.into_iter().map(|i| i.pod).collect();
    for b in &acknowledged {
        for i in 0..20 {
            assert!(
                stored.contains(&format!("b{b}-p{i}")),
                "acknowledged pod b{b}-p{i} lost"
            );
        }
    }
    let status = c.client.status().await.expect("status");
    let pod_pool = status
        .pools
        .iter()
        .find(|p| p.name == "k8s-pod-ipam")
        .expect("pod pool");
    assert_eq!(
        pod_pool.in_use,
        stored.len(),
        "pool usage equals stored interfaces: no leaked address"
    );
    // Re-applying everything completes the set without duplicates.
    for b in 0..60 {
        let pods = (0..20).map(|i| pod("default", &format!("b{b}-p{i}"))).collect();
        c.client.apply(&request(pods)).await.expect("re-apply");
    }
    assert_eq!(interfaces(&c.client).await.len(), 1200);
    assert_consistent(&c.client).await;
    eprintln!(
        "SIGKILL test: {} of 60 batches acknowledged before the kill",
        acknowledged.len()
    );
}
