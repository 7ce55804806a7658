//! `weft lab bench`: CNI ADD/DEL latency over N pods and the time from applying a pod
//! to its first successful probe from another node. Prints figures; asserts nothing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;
use weft_api::types::ManifestDocument;

use crate::Progress;
use crate::echo::{Proto, probe_from_netns};
use crate::names::LabName;
use crate::pods;
use crate::state::{LabLock, LabState};

const NAMESPACE: &str = "weft-bench";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{name:<30} n={:<4} p50 {:>8.1} ms   p99 {:>8.1} ms   max {:>8.1} ms",
        ms.len(),
        percentile(&ms, 50.0),
        percentile(&ms, 99.0),
        ms.last().copied().unwrap_or(0.0)
    );
}

fn pod(name: &str, node: Option<&str>) -> ManifestDocument {
    let mut spec =
        json!({"containers": [{"name": "c", "image": "weft/echo", "ports": [{"containerPort": 80}]}]});
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    ManifestDocument {
        source: format!("bench {name}"),
        object: json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}),
    }
}

/// Runs the benchmark on a running lab (its pods in namespace `weft-bench`, removed
/// afterwards).
pub async fn run(lab: &LabName, n: usize, progress: &Progress) -> Result<()> {
    if n == 0 || n > 500 {
        bail!("--pods must be 1 to 500");
    }
    let _lock = LabLock::acquire_existing(lab)?;
    let mut state = LabState::load(lab)?;
    let quiet = Progress::quiet();
    let ns_doc = ManifestDocument {
        source: "bench namespace".into(),
        object: json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
    };
    pods::apply_docs(lab, &mut state, vec![ns_doc.clone()], None, 30, &quiet).await?;

    progress.step(&format!("creating {n} pods one at a time"));
    for i in 0..n {
        let ok = pods::apply_docs(
            lab,
            &mut state,
            vec![pod(&format!("b{i}"), None)],
            None,
            30,
            &quiet,
        )
        .await?;
        if !ok {
            bail!("bench pod b{i} could not be created");
        }
    }
    // Apply → first probe success from another node.
    let mut first_probe = Vec::new();
    if state.nodes.len() >= 2 {
        let from = state
            .pods
            .values()
            .find(|p| p.namespace == NAMESPACE && p.node_index == 1)
            .context("a bench pod on node-1")?
            .netns
            .clone();
        for round in 0..n.min(10) {
            let name = format!("t{round}");
            let start = Instant::now();
            pods::apply_docs(
                lab,
                &mut state,
                vec![pod(&name, Some("node-2"))],
                None,
                30,
                &quiet,
            )
            .await?;
            let ip = state
                .pods
                .get(&format!("{NAMESPACE}/{name}"))
                .and_then(|p| p.ip.clone())
                .and_then(|ip| ip.parse().ok())
                .context("the probe target's address")?;
            let target = SocketAddr::new(ip, 80);
            let deadline = start + Duration::from_secs(30);
            loop {
                let netns = from.clone();
                let out = tokio::task::spawn_blocking(move || {
                    probe_from_netns(&netns, target, Proto::Tcp, Duration::from_millis(500))
                })
                .await?;
                if out.ok() {
                    first_probe.push(start.elapsed().as_secs_f64() * 1000.0);
                    break;
                }
                if Instant::now() > deadline {
                    progress.step(&format!(
                        "{name}: no successful probe within 30 s ({})",
                        out.detail
                    ));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    let add: Vec<f64> = state
        .pods
        .values()
        .filter(|p| p.namespace == NAMESPACE)
        .map(|p| p.cni_add_ms)
        .collect();
    progress.step("deleting the bench pods one at a time");
    let mut del = Vec::new();
    let keys: Vec<String> = state
        .pods
        .values()
        .filter(|p| p.namespace == NAMESPACE)
        .map(|p| p.key())
        .collect();
    for key in keys {
        let Some(rec) = state.pods.get(&key).cloned() else {
            continue;
        };
        let took = pods::teardown(&state, &rec).await?;
        del.push(took.as_secs_f64() * 1000.0);
        state.pods.remove(&key);
        state.save(lab)?;
    }
    let client = weft_api::client::ApiClient::new(&state.controller.url);
    let _ = client
        .delete(&weft_api::types::ApplyRequest {
            documents: vec![ns_doc],
            namespace: None,
        })
        .await;
    state.save(lab)?;

    println!("lab {lab}: {} node(s), {n} bench pods", state.nodes.len());
    summary("CNI ADD (plugin run)", add);
    summary("CNI DEL (plugin run)", del);
    if !first_probe.is_empty() {
        summary("apply -> first probe (n1->n2)", first_probe);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 51.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
