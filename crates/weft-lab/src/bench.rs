//! `weft lab bench`: CNI ADD/DEL latency over N pods and the time from applying a pod
//! to its first successful probe from a pod on another node. Prints figures; asserts
//! nothing. (`weft lab bench throughput` is [`crate::bench_throughput`].)
//!
//! How it runs, so that 200 pods take seconds rather than minutes:
//!
//! * one probe-source pod per node (`weft-bench/probe-n<i>`, not counted);
//! * the N bench pods are applied **one at a time** (each CNI ADD runs alone, so its
//!   latency is not inflated by other ADDs), pinned round-robin to the nodes;
//! * as soon as pod `b<i>` is applied, a task starts probing it (TCP echo, port 80)
//!   from the probe pod of the *next* node, every 10 ms, while the main loop already
//!   applies `b<i+1>`: the waits overlap instead of adding up;
//! * teardown stops every echo server at once, then runs CNI DEL one pod at a time
//!   (measured), then removes the pod's namespace.
//!
//! Bench pods left by an interrupted earlier run are removed first; on an error the
//! bench still removes its pods (CNI DEL) and its objects from the controller.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;
use weft_api::types::{ApplyRequest, ManifestDocument};

use crate::Progress;
use crate::echo::{Proto, probe_from_netns};
use crate::names::LabName;
use crate::pods;
use crate::state::{LabLock, LabState};
use crate::sys;

/// The Kubernetes namespace of the bench pods.
const NAMESPACE: &str = "weft-bench";
/// Most pods one bench run may create.
const MAX_PODS: usize = 500;
/// Bound on apply → first successful probe, per pod.
const FIRST_PROBE_BOUND: Duration = Duration::from_secs(30);
/// Pause between two probe attempts.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// Bound on one probe attempt (connect, echo).
const PROBE_ATTEMPT: Duration = Duration::from_millis(500);
/// The port the bench pods' echo servers listen on.
const PORT: u16 = 80;

/// The `p`-th percentile (nearest rank) of ascending `sorted`; 0 when empty.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// One result line: `name n=… p50 … p99 … max …` (the format scripts read).
fn summary_line(name: &str, mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    format!(
        "{name:<30} n={:<4} p50 {:>8.1} ms   p99 {:>8.1} ms   max {:>8.1} ms",
        ms.len(),
        percentile(&ms, 50.0),
        percentile(&ms, 99.0),
        ms.last().copied().unwrap_or(0.0)
    )
}

fn pod(name: &str, node: &str) -> ManifestDocument {
    ManifestDocument {
        source: format!("bench {name}"),
        object: json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"nodeName": node,
                     "containers": [{"name": "c", "image": "weft/echo", "ports": [{"containerPort": PORT}]}]}}),
    }
}

fn namespace_doc() -> ManifestDocument {
    ManifestDocument {
        source: "bench namespace".into(),
        object: json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
    }
}

/// What one run measured (milliseconds).
#[derive(Debug, Default)]
struct Figures {
    add: Vec<f64>,
    del: Vec<f64>,
    first_probe: Vec<f64>,
    probe_failures: usize,
}

/// Runs the benchmark on a running lab: its pods live in namespace `weft-bench` and are
/// removed afterwards (also when the run fails).
pub async fn run(lab: &LabName, n: usize, progress: &Progress) -> Result<()> {
    if n == 0 || n > MAX_PODS {
        bail!("--pods must be 1 to {MAX_PODS}, found {n}");
    }
    let _lock = LabLock::acquire_existing(lab)?;
    let mut state = LabState::load(lab)?;
    if state.nodes.is_empty() {
        bail!("lab {lab} has no nodes");
    }
    let leftovers = bench_pods(&state);
    if !leftovers.is_empty() {
        progress.step(&format!(
            "removing {} bench pod(s) left by an earlier run",
            leftovers.len()
        ));
        remove_pods(lab, &mut state, &leftovers, None).await?;
    }
    let started = Instant::now();
    let mut figures = Figures::default();
    let measured = measure(lab, &mut state, n, &mut figures, progress).await;

    progress.step("deleting the bench pods one at a time");
    // Probe sources last; they are not counted.
    let mut keys = bench_pods(&state);
    keys.sort_by_key(|k| k.contains("/probe-"));
    let counted: Vec<bool> = keys.iter().map(|k| !k.contains("/probe-")).collect();
    let mut del = Vec::new();
    let removed = remove_pods(lab, &mut state, &keys, Some(&mut del)).await;
    figures.del = del
        .into_iter()
        .zip(counted)
        .filter_map(|(ms, c)| c.then_some(ms))
        .collect();
    let forgotten = forget_objects(&state, n).await;
    state.save(lab)?;
    measured?;
    removed?;
    if let Err(e) = forgotten {
        progress.step(&format!(
            "note: could not delete the bench objects from the controller: {e:#}"
        ));
    }

    println!("lab {lab}: {} node(s), {n} bench pods", state.nodes.len());
    println!("{}", summary_line("CNI ADD (plugin run)", figures.add));
    println!("{}", summary_line("CNI DEL (plugin run)", figures.del));
    if state.nodes.len() >= 2 {
        println!(
            "{}",
            summary_line("apply -> first probe (x-node)", figures.first_probe)
        );
        if figures.probe_failures > 0 {
            println!(
                "{} pod(s) had no successful probe within {FIRST_PROBE_BOUND:?} (not in the figures)",
                figures.probe_failures
            );
        }
    }
    progress.step(&format!("bench done in {:.1}s", started.elapsed().as_secs_f64()));
    Ok(())
}

/// Keys (`ns/pod`) of the lab's bench pods.
fn bench_pods(state: &LabState) -> Vec<String> {
    state
        .pods
        .values()
        .filter(|p| p.namespace == NAMESPACE)
        .map(|p| p.key())
        .collect()
}

/// Creates the pods and measures ADD and apply → first probe into `figures`.
async fn measure(
    lab: &LabName,
    state: &mut LabState,
    n: usize,
    figures: &mut Figures,
    progress: &Progress,
) -> Result<()> {
    let quiet = Progress::quiet();
    let nodes: Vec<(usize, String)> = state.nodes.iter().map(|n| (n.index, n.name.clone())).collect();
    pods::apply_docs(lab, state, vec![namespace_doc()], None, 30, &quiet).await?;
    // One probe source per node, when there is another node to probe from.
    let mut sources = Vec::new();
    if nodes.len() >= 2 {
        let docs: Vec<ManifestDocument> = nodes
            .iter()
            .map(|(i, name)| pod(&format!("probe-n{i}"), name))
            .collect();
        if !pods::apply_docs(lab, state, docs, None, 30, &quiet).await? {
            bail!("the probe-source pods could not be created");
        }
        for (i, _) in &nodes {
            let key = format!("{NAMESPACE}/probe-n{i}");
            sources.push(state.pod(&key)?.netns.clone());
        }
    }

    progress.step(&format!(
        "creating {n} pods one at a time{}",
        if sources.is_empty() {
            ""
        } else {
            ", each probed from another node as soon as it is applied"
        }
    ));
    let mut probes = Vec::new();
    for i in 0..n {
        let slot = i % nodes.len();
        let name = format!("b{i}");
        let start = Instant::now();
        let ok = pods::apply_docs(lab, state, vec![pod(&name, &nodes[slot].1)], None, 30, &quiet).await?;
        let rec = state.pods.get(&format!("{NAMESPACE}/{name}"));
        let (Some(rec), true) = (rec, ok) else {
            bail!("bench pod {NAMESPACE}/{name} could not be created");
        };
        figures.add.push(rec.cni_add_ms);
        if sources.is_empty() {
            continue;
        }
        let ip: IpAddr = rec
            .ip
            .as_deref()
            .and_then(|ip| ip.parse().ok())
            .with_context(|| format!("pod {NAMESPACE}/{name} has no address"))?;
        let from = sources[(slot + 1) % sources.len()].clone();
        probes.push(tokio::spawn(first_probe(from, SocketAddr::new(ip, PORT), start)));
        if (i + 1) % 50 == 0 && i + 1 < n {
            progress.step(&format!("{} pods created", i + 1));
        }
    }
    for p in futures::future::join_all(probes).await {
        match p.context("a probe task failed")? {
            Some(ms) => figures.first_probe.push(ms),
            None => figures.probe_failures += 1,
        }
    }
    Ok(())
}

/// Probes `target` from `netns` until it answers; milliseconds since `start`, or
/// `None` when nothing answered within [`FIRST_PROBE_BOUND`].
async fn first_probe(netns: String, target: SocketAddr, start: Instant) -> Option<f64> {
    let deadline = start + FIRST_PROBE_BOUND;
    loop {
        let ns = netns.clone();
        let out =
            tokio::task::spawn_blocking(move || probe_from_netns(&ns, target, Proto::Tcp, PROBE_ATTEMPT))
                .await
                .ok()?;
        if out.ok() {
            return Some(start.elapsed().as_secs_f64() * 1000.0);
        }
        if Instant::now() > deadline {
            eprintln!(
                "{target}: no successful probe within {FIRST_PROBE_BOUND:?} ({})",
                out.detail
            );
            return None;
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// Removes the pods `keys` (echo servers all at once, then CNI DEL one at a time, then
/// the namespace); with `del`, records each DEL's duration in `keys` order. Tries every
/// pod, then returns the first error.
async fn remove_pods(
    lab: &LabName,
    state: &mut LabState,
    keys: &[String],
    mut del: Option<&mut Vec<f64>>,
) -> Result<()> {
    let echoes: Vec<u32> = keys
        .iter()
        .filter_map(|k| state.pods.get(k).and_then(|p| p.echo_pid))
        .collect();
    let stuck = sys::terminate(&echoes, Duration::from_secs(2)).await;
    let mut first_error = None;
    if !stuck.is_empty() {
        first_error = Some(anyhow::anyhow!("could not stop echo servers {stuck:?}"));
    }
    for key in keys {
        let Some(mut rec) = state.pods.get(key).cloned() else {
            continue;
        };
        if rec.echo_pid.is_some_and(|p| !stuck.contains(&p)) {
            rec.echo_pid = None;
        }
        match pods::teardown(state, &rec).await {
            Ok(took) => {
                if let Some(d) = del.as_deref_mut() {
                    d.push(took.as_secs_f64() * 1000.0);
                }
                state.pods.remove(key);
                state.save(lab)?;
            }
            Err(e) => {
                let e = e.context(format!("removing bench pod {key}"));
                eprintln!("error: {e:#}");
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Deletes the bench pods' objects and namespace from the controller.
async fn forget_objects(state: &LabState, n: usize) -> Result<()> {
    let mut docs: Vec<ManifestDocument> = (0..n).map(|i| pod(&format!("b{i}"), "")).collect();
    docs.extend(
        state
            .nodes
            .iter()
            .map(|node| pod(&format!("probe-n{}", node.index), "")),
    );
    docs.push(namespace_doc());
    weft_api::client::ApiClient::new(&state.controller.url)
        .delete(&ApplyRequest {
            documents: docs,
            namespace: None,
        })
        .await
        .context("deleting the bench objects")?;
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

    #[test]
    fn summary_format_is_stable() {
        let line = summary_line("CNI ADD (plugin run)", vec![3.0, 1.0, 2.0]);
        assert_eq!(
            line,
            "CNI ADD (plugin run)           n=3    p50      2.0 ms   p99      3.0 ms   max      3.0 ms"
        );
        assert!(summary_line("x", Vec::new()).contains("n=0"));
    }

    #[test]
    fn bench_pods_are_pinned() {
        let p = pod("b1", "node-2");
        assert_eq!(p.object["spec"]["nodeName"], "node-2");
        assert_eq!(p.object["metadata"]["namespace"], NAMESPACE);
    }
}
