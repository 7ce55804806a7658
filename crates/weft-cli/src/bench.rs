//! `weft bench`: measured figures for the closing notes (never asserted in tests).
//!
//! - `policy`: NetworkPolicy + AdminNetworkPolicy + baseline compilation for every
//!   pod of a synthetic cluster (weft-routing `policy::synthetic`) — wall time per run,
//!   RSS before and peak RSS during each run.
//! - `translate`: translation + IPAM of a synthetic cluster in memory — wall time and
//!   peak RSS of this process.
//! - `apply`: the same cluster through the HTTP API into a controller with the embedded
//!   store (durable commits), in batches and one object per request.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use weft_api::client::ApiClient;
use weft_api::types::{ApplyRequest, ManifestDocument};
use weft_model::{InputChange, InputObject};
use weft_translator::Translator;

/// Arguments of `weft bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchKind,
}

#[derive(Debug, Args, Clone)]
struct Shape {
    /// Pods.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Namespaces.
    #[arg(long, default_value_t = 1_000)]
    namespaces: usize,
    /// How many of the namespaces are isolated.
    #[arg(long, default_value_t = 100)]
    isolated: usize,
    /// Services.
    #[arg(long, default_value_t = 2_000)]
    services: usize,
}

#[derive(Debug, Args, Clone)]
struct PolicyShape {
    /// Pods.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Namespaces.
    #[arg(long, default_value_t = 1_000)]
    namespaces: usize,
    /// NetworkPolicies.
    #[arg(long, default_value_t = 1_000)]
    policies: usize,
    /// AdminNetworkPolicies (plus a BaselineAdminNetworkPolicy when non-zero).
    #[arg(long, default_value_t = 20)]
    admin: usize,
    /// Compile runs (the time of each is printed).
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

#[derive(Debug, Subcommand)]
enum BenchKind {
    /// Translation + IPAM in memory.
    Translate(Shape),
    /// Policy compilation (NetworkPolicy, AdminNetworkPolicy, baseline) for every pod
    /// of a synthetic cluster, in memory.
    Policy(PolicyShape),
    /// Apply through the HTTP API into a controller on the embedded store.
    Apply {
        #[command(flatten)]
        shape: Shape,
        /// Documents per request in the batched run.
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Pods applied one per request, concurrently, in the second run.
        #[arg(long, default_value_t = 1_000)]
        single: usize,
        /// Concurrent requests in the one-per-request run.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Use the controller at --server instead of starting one in this process (so
        /// its own peak RSS can be read from /proc/<pid>/status).
        #[arg(long)]
        external: bool,
        /// Skip the final consistency check (it decodes the whole store once more, which
        /// would dominate the controller's peak memory).
        #[arg(long)]
        no_check: bool,
        /// Store of the in-process controller: a store URL (`etcd://host:port/prefix`, a
        /// directory …), or `etcd` for a throwaway local etcd (needs /usr/bin/etcd).
        /// Default: a temporary embedded store.
        #[arg(long)]
        store: Option<String>,
    },
}

/// A memory field of `/proc/self/status` (`VmHWM:`, `VmRSS:` …) in MiB (0 if absent).
fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

/// Peak resident set size of this process in MiB (VmHWM).
pub fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

/// Runs a benchmark and prints its figures.
pub async fn run(server: &str, args: BenchArgs) -> Result<()> {
    match args.what {
        BenchKind::Translate(shape) => translate(shape),
        BenchKind::Policy(shape) => policy(shape),
        BenchKind::Apply {
            shape,
            batch,
            single,
            concurrency,
            external,
            no_check,
            store,
        } => {
            apply(
                shape,
                batch,
                single,
                concurrency,
                external.then_some(server),
                no_check,
                store.as_deref(),
            )
            .await
        }
    }
}

/// `VmRSS` of this process in MiB.
fn rss_mib() -> f64 {
    status_mib("VmRSS:")
}

fn policy(shape: PolicyShape) -> Result<()> {
    use weft_routing::policy::synthetic::{Shape as World, compile_all, world};
    let start = Instant::now();
    let set = world(World {
        pods: shape.pods,
        namespaces: shape.namespaces,
        policies: shape.policies,
        admin: shape.admin,
    });
    println!(
        "policy: world of {} pods, {} namespaces, {} NetworkPolicies, {} AdminNetworkPolicies{} built in {:.3} s",
        set.pods.len(),
        set.namespaces.len(),
        set.policies.len(),
        set.admin.len(),
        if set.baseline.is_some() { " + baseline" } else { "" },
        start.elapsed().as_secs_f64()
    );
    for run in 1..=shape.runs.max(1) {
        // "5" resets the peak RSS to the current RSS (Linux >= 4.0): the peak below is
        // the world plus this compile.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let before = rss_mib();
        let start = Instant::now();
        let (endpoints, rules) = compile_all(&set);
        let elapsed = start.elapsed();
        println!(
            "policy: run {run}: {endpoints} restricted endpoints, {rules} compiled rules in {:.3} s; RSS {before:.1} MiB before, peak {:.1} MiB during the compile",
            elapsed.as_secs_f64(),
            peak_rss_mib()
        );
    }
    Ok(())
}

fn translate(shape: Shape) -> Result<()> {
    let rss_before = peak_rss_mib();
    let manifests = weft_translator::synthetic::cluster_manifests(
        shape.pods,
        shape.namespaces,
        shape.isolated,
        shape.services,
    );
    let start = Instant::now();
    let mut t = Translator::new();
    for m in manifests {
        let object = InputObject::from_value(m).map_err(|e| anyhow::anyhow!("{e}"))?;
        t.apply(InputChange::Upsert(object))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let changes = t.flush();
    let elapsed = start.elapsed();
    println!(
        "translate: {} pods, {} namespaces ({} isolated), {} services -> {} derived objects in {:.3} s; peak RSS {:.1} MiB (before inputs {:.1} MiB)",
        shape.pods,
        shape.namespaces,
        shape.isolated,
        shape.services,
        changes.len(),
        elapsed.as_secs_f64(),
        peak_rss_mib(),
        rss_before
    );
    Ok(())
}

async fn apply(
    shape: Shape,
    batch: usize,
    single: usize,
    concurrency: usize,
    external: Option<&str>,
    no_check: bool,
    store_url: Option<&str>,
) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("weft-bench-{}", std::process::id()));
    // Kept alive (and killed on drop) for the whole run when --store etcd.
    let mut _etcd = None;
    let (client, server) = match external {
        Some(url) => (Arc::new(ApiClient::new(url)), None),
        None => {
            let _ = std::fs::remove_dir_all(&dir);
            let url = match store_url {
                None => dir.display().to_string(),
                Some("etcd") => {
                    let etcd = weft_store::EtcdServer::start()
                        .await
                        .context("starting a throwaway etcd")?;
                    let url = etcd.url("bench");
                    _etcd = Some(etcd);
                    url
                }
                Some(url) => url.to_string(),
            };
            println!("store: {url}");
            let store = weft_store::open_url(&url).context("opening the bench store")?;
            let controller = weft_api::Controller::open(store, "bench").await?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let server = tokio::spawn(weft_api::server::serve(
                controller,
                listener,
                std::future::pending(),
            ));
            (Arc::new(ApiClient::new(&format!("http://{addr}"))), Some(server))
        }
    };
    let manifests = weft_translator::synthetic::cluster_manifests(
        shape.pods,
        shape.namespaces,
        shape.isolated,
        shape.services,
    );
    let total = manifests.len();
    let start = Instant::now();
    for (i, chunk) in manifests.chunks(batch.max(1)).enumerate() {
        let documents = chunk
            .iter()
            .enumerate()
            .map(|(j, o)| ManifestDocument {
                source: format!("bench#{}", i * batch + j + 1),
                object: o.clone(),
            })
            .collect();
        let report = client
            .apply(&ApplyRequest {
                documents,
                namespace: None,
            })
            .await?;
        anyhow::ensure!(
            report.errors() == 0,
            "bench objects refused: {:?}",
            report.results.iter().find(|r| r.error.is_some())
        );
    }
    let batched = start.elapsed();
    println!(
        "apply (batches of {batch}): {total} objects in {:.2} s = {:.0} objects/s; process peak RSS {:.1} MiB",
        batched.as_secs_f64(),
        total as f64 / batched.as_secs_f64(),
        peak_rss_mib()
    );
    let start = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::new();
    for p in 0..single {
        let client = client.clone();
        let permit = sem.clone().acquire_owned().await?;
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let object = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("single-{p}"), "namespace": "default"},
                "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "x"}]}});
            client
                .apply(&ApplyRequest {
                    documents: vec![ManifestDocument {
                        source: "bench".into(),
                        object,
                    }],
                    namespace: None,
                })
                .await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let singles = start.elapsed();
    println!(
        "apply (one pod per request, {concurrency} concurrent): {single} pods in {:.2} s = {:.0} pods/s ({:.2} ms per durable commit)",
        singles.as_secs_f64(),
        single as f64 / singles.as_secs_f64(),
        singles.as_secs_f64() * 1000.0 / single.max(1) as f64
    );
    if no_check {
        return Ok(());
    }
    let report = client.consistency().await?;
    println!(
        "consistency: {} addresses, {} problems",
        report.addresses,
        report.problems.len()
    );
    if let Some(server) = server {
        server.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
