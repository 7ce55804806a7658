//! `weft lab bench policy`: what NetworkPolicy costs in the data plane, in a fresh
//! 2-node lab of its own (`bp<pid % 1000>`, removed afterwards). A benchmark: it prints
//! figures and asserts nothing about them.
//!
//! ```text
//!  node-1: default/bp-client ──VXLAN──> node-2: default/bp-server (echo on 80)
//!  (a) label change: policy "server accepts role=allowed" (bp-other always is); flip
//!      the client's label; time apply → first probe that flips (probing back to back
//!      from the start) and apply → `weft lab wait` (agents report it applied)
//!  (b) TCP goodput and connection rate client → server with
//!        none    no policy on the server
//!        sets    a NetworkPolicy allowing 10,000 ipBlock /32s (+ the client): weft's
//!                named sets (one lookup)
//!        chain   no weft policy; a table `inet wbench` on node-2 built with nft, the way
//!                iptables CNIs do it: `ct state established accept`, then 10,000
//!                `ip saddr A tcp dport 80 accept` rules, the client's last, then drop
//!  (c) connection rate to a ClusterIP service (DNAT on node-1) vs to the pod directly
//! ```
//!
//! Connection rate (the better of two runs): one thread connects, closes, and connects
//! again for the given time
//! (the client's namespace gets `tcp_tw_reuse` and a wide port range so TIME_WAIT does
//! not run out of ports); goodput uses [`crate::bench_throughput::transfer`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use weft_api::node_client::NodeStateClient;
use weft_api::types::{ApplyRequest, ManifestDocument};

use crate::Progress;
use crate::echo::{ProbeKind, Proto, probe_from_netns};
use crate::names::{LabName, NETNS_DIR};
use crate::state::LabState;
use crate::{bench_throughput, converge, pods, sys, topology};

/// Allowed peer addresses in the sets and in the linear chain.
pub const PEERS: usize = 10_000;
/// Bound on a change reaching the kernels.
const CONVERGE: Duration = Duration::from_secs(60);
/// Bound on one probe while waiting for a flip.
const FLIP_PROBE: Duration = Duration::from_millis(50);

/// Options of `weft lab bench policy`.
#[derive(Debug, Clone)]
pub struct PolicyBenchOptions {
    /// Label flips to time.
    pub flips: usize,
    /// Seconds of traffic per goodput and connection-rate figure.
    pub seconds: u64,
    /// Print JSON instead of a table.
    pub json: bool,
}

fn netns_path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// `objects` as documents named `bench policy#N`.
fn docs(objects: impl IntoIterator<Item = Value>) -> Vec<ManifestDocument> {
    ApplyRequest::from_objects("bench policy", objects).documents
}

/// An echo pod serving 80/tcp on `node`.
fn pod(name: &str, node: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"nodeName": node,
                 "containers": [{"name": "c", "image": "weft/echo", "ports": [{"containerPort": 80}]}]}})
}

fn client_pod(role: &str) -> Value {
    pod("bp-client", "node-1", json!({"role": role}))
}

/// A pod that is always allowed, so the server's peer set never becomes empty (an
/// empty set drops its rule, which is a structural change, not an element change).
fn other_pod() -> Value {
    pod("bp-other", "node-1", json!({"role": "allowed"}))
}

fn server_pod() -> Value {
    pod("bp-server", "node-2", json!({"app": "bp-server"}))
}

/// The `i`-th of the [`PEERS`] addresses: every other address of 172.16.0.0/12, so no
/// two aggregate into a prefix.
fn peer(i: usize) -> Ipv4Addr {
    let n = u32::try_from(i).unwrap_or(0) * 2 + 2;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 0)) + n)
}

fn label_policy() -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "bp-label", "namespace": "default"},
        "spec": {"podSelector": {"matchLabels": {"app": "bp-server"}},
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "allowed"}}}]}]}})
}

fn peers_policy(client: Ipv4Addr) -> Value {
    let mut from: Vec<Value> = (0..PEERS)
        .map(|i| json!({"ipBlock": {"cidr": format!("{}/32", peer(i))}}))
        .collect();
    from.push(json!({"ipBlock": {"cidr": format!("{client}/32")}}));
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "bp-peers", "namespace": "default"},
        "spec": {"podSelector": {"matchLabels": {"app": "bp-server"}},
                 "ingress": [{"from": from}]}})
}

fn service() -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "bp-svc", "namespace": "default"},
        "spec": {"selector": {"app": "bp-server"}, "ports": [{"port": 80, "targetPort": 80}]}})
}

/// One connection-rate and goodput figure.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PathFigures {
    /// What was measured.
    pub case: String,
    /// TCP connections per second (connect + close, one thread).
    pub connections_per_sec: f64,
    /// TCP goodput, Gbit/s (one stream), if measured.
    pub gbit_per_sec: Option<f64>,
}

/// The report of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicyBenchReport {
    /// Milliseconds from the label change (apply) to the agents reporting it applied.
    pub label_applied_ms: Vec<f64>,
    /// Milliseconds from the label change (start of the apply) to sending the first
    /// probe whose outcome flipped (probes run back to back from the start).
    pub label_effective_ms: Vec<f64>,
    /// Whether the agents applied the label changes as set element updates.
    pub label_incremental: bool,
    /// Milliseconds to apply the 10,000-peer policy (apply → agents applied).
    pub peers_applied_ms: f64,
    /// Seconds to load the 10,000-rule chain with `nft -f`.
    pub chain_load_s: f64,
    /// Goodput and connection rate per case.
    pub paths: Vec<PathFigures>,
}

impl PolicyBenchReport {
    fn table(&self) -> String {
        let stats = |v: &[f64]| {
            let mut s = v.to_vec();
            s.sort_by(f64::total_cmp);
            if s.is_empty() {
                return "-".to_string();
            }
            format!(
                "median {:.0} ms, min {:.0}, max {:.0} (n={})",
                s[s.len() / 2],
                s[0],
                s[s.len() - 1],
                s.len()
            )
        };
        let mut out = String::new();
        out += &format!(
            "label change → agents applied:   {}\nlabel change → probe flipped:    {}\n  applied as set elements only:  {}\n",
            stats(&self.label_applied_ms),
            stats(&self.label_effective_ms),
            if self.label_incremental {
                "yes"
            } else {
                "no (table rewritten)"
            }
        );
        out += &format!(
            "{PEERS}-peer policy applied in:    {:.0} ms\n{PEERS}-rule chain loaded in:      {:.1} s\n\n",
            self.peers_applied_ms, self.chain_load_s
        );
        out += &format!("{:<34} {:>14} {:>12}\n", "case", "conn/s", "Gbit/s");
        for p in &self.paths {
            out += &format!(
                "{:<34} {:>14.0} {:>12}\n",
                p.case,
                p.connections_per_sec,
                p.gbit_per_sec.map_or("-".to_string(), |g| format!("{g:.2}"))
            );
        }
        out
    }
}

/// Connections per second from namespace `src` to `to` for `duration`.
fn connection_rate(src: &str, to: SocketAddr, duration: Duration) -> Result<f64> {
    weft_cni::run_in_netns(netns_path(src), || -> Result<f64> {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < duration {
            let s = TcpStream::connect_timeout(&to, Duration::from_secs(2))
                .with_context(|| format!("connection {n} to {to}"))?;
            drop(s);
            n += 1;
        }
        Ok(n as f64 / start.elapsed().as_secs_f64())
    })?
}

fn lines_in(path: &std::path::Path, what: &str) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter(|l| l.contains(what)).count())
        .unwrap_or(0)
}

/// Runs the benchmark in a fresh lab (removed afterwards, also on error).
pub async fn run(opts: &PolicyBenchOptions, progress: &Progress) -> Result<PolicyBenchReport> {
    let report = topology::in_throwaway_lab("policy", "bp", progress, |lab| async move {
        progress.step(&format!(
            "lab {lab}: 2 nodes, bp-client on node-1, bp-server on node-2"
        ));
        measure(&lab, opts, progress).await
    })
    .await?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(report)
}

async fn apply(lab: &LabName, objects: Vec<Value>) -> Result<()> {
    let _lock = crate::state::LabLock::acquire_existing(lab)?;
    let mut st = LabState::load(lab)?;
    let ok = pods::apply_docs(lab, &mut st, docs(objects), None, 30, &Progress::quiet()).await;
    st.save(lab)?;
    if !ok? {
        bail!("lab {lab}: apply failed");
    }
    Ok(())
}

async fn delete(lab: &LabName, objects: Vec<Value>) -> Result<()> {
    let _lock = crate::state::LabLock::acquire_existing(lab)?;
    let mut st = LabState::load(lab)?;
    let ok = pods::delete_docs(lab, &mut st, docs(objects), None, &Progress::quiet()).await;
    st.save(lab)?;
    if !ok? {
        bail!("lab {lab}: delete failed");
    }
    Ok(())
}

async fn wait(lab: &LabName) -> Result<Duration> {
    let st = LabState::load(lab)?;
    converge::wait_converged(&st, CONVERGE, &Progress::quiet()).await
}

async fn measure(lab: &LabName, opts: &PolicyBenchOptions, progress: &Progress) -> Result<PolicyBenchReport> {
    let up = topology::UpOptions {
        documents: docs([client_pod("denied"), server_pod(), other_pod()]),
        ..Default::default()
    };
    if !topology::up(lab, &up, &Progress::quiet()).await? {
        bail!("lab {lab}: the bench pods could not be created");
    }
    let st = LabState::load(lab)?;
    let client = st.pod("default/bp-client")?.clone();
    let server = st.pod("default/bp-server")?.clone();
    let ip_of = |p: &crate::state::PodRecord| -> Result<Ipv4Addr> {
        p.ip.as_deref()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("{}/{} has no IPv4 address", p.namespace, p.pod))
    };
    let (client_ip, server_ip) = (ip_of(&client)?, ip_of(&server)?);
    let target = SocketAddr::new(IpAddr::V4(server_ip), 80);
    sys::ip(&[
        "netns",
        "exec",
        &client.netns,
        "sysctl",
        "-qw",
        "net.ipv4.tcp_tw_reuse=1",
    ])
    .await?;
    sys::ip(&[
        "netns",
        "exec",
        &client.netns,
        "sysctl",
        "-qw",
        "net.ipv4.ip_local_port_range=1024 65000",
    ])
    .await?;
    wait(lab).await?;
    let duration = Duration::from_secs(opts.seconds);

    // (a) label flips.
    progress.step(&format!(
        "(a) {} label flips of bp-client (role=allowed|denied)",
        opts.flips
    ));
    apply(lab, vec![label_policy()]).await?;
    wait(lab).await?;
    let node2_log = st.node(2)?.agent_log.clone();
    let rewrites_before = lines_in(&node2_log, "nftables table rewritten");
    let (mut applied_ms, mut effective_ms) = (Vec::new(), Vec::new());
    for i in 0..opts.flips {
        let allow = i % 2 == 0;
        // Probe from the start of the change on, concurrently with apply and wait: the
        // first probe whose outcome flipped tells when the kernel changed (to within
        // one probe; a refused probe to another node ends at its timeout, so the time
        // a probe was sent is what counts).
        let start = Instant::now();
        let flipped = tokio::task::spawn_blocking({
            let ns = client.netns.clone();
            move || -> Option<f64> {
                while start.elapsed() < CONVERGE {
                    let sent = start.elapsed().as_secs_f64() * 1000.0;
                    if (probe_from_netns(&ns, target, Proto::Tcp, FLIP_PROBE).kind == ProbeKind::Connected)
                        == allow
                    {
                        return Some(sent);
                    }
                }
                None
            }
        });
        apply(lab, vec![client_pod(if allow { "allowed" } else { "denied" })]).await?;
        applied_ms.push(wait(lab).await.map(|_| start.elapsed().as_secs_f64() * 1000.0)?);
        match flipped.await? {
            Some(ms) => effective_ms.push(ms),
            None => bail!("the probe did not flip within {CONVERGE:?} after label change {i}"),
        }
    }
    let label_incremental = lines_in(&node2_log, "nftables table rewritten") == rewrites_before
        && lines_in(&node2_log, "nftables set elements updated") > 0;
    delete(lab, vec![label_policy()]).await?;
    apply(lab, vec![client_pod("allowed")]).await?;
    wait(lab).await?;

    // (b) none / sets / chain.
    let mut paths = Vec::new();
    let (src, dst) = (netns_path(&client.netns), netns_path(&server.netns));
    let measure_case = |case: String| {
        let (src, dst, client_ns) = (src.clone(), dst.clone(), client.netns.clone());
        async move {
            let (rate, goodput) = tokio::task::spawn_blocking(move || -> Result<(f64, f64)> {
                // The better of two runs: the first may pay for warming up.
                let rate = connection_rate(&client_ns, target, duration)?
                    .max(connection_rate(&client_ns, target, duration)?);
                let g =
                    bench_throughput::transfer(&src, &dst, SocketAddr::new(target.ip(), 5201), duration, 1)?;
                Ok((rate, g.gbits()))
            })
            .await??;
            Ok::<_, anyhow::Error>(PathFigures {
                case,
                connections_per_sec: rate,
                gbit_per_sec: Some(goodput),
            })
        }
    };
    progress.step("(b) no policy");
    paths.push(measure_case("no policy".into()).await?);

    progress.step(&format!("(b) NetworkPolicy with {PEERS} allowed peers (sets)"));
    let start = Instant::now();
    apply(lab, vec![peers_policy(client_ip)]).await?;
    wait(lab).await?;
    let peers_applied_ms = start.elapsed().as_secs_f64() * 1000.0;
    paths.push(measure_case(format!("{PEERS} peers in sets (weft)")).await?);
    delete(lab, vec![peers_policy(client_ip)]).await?;
    wait(lab).await?;

    progress.step(&format!(
        "(b) {PEERS}-rule linear chain (iptables style), built with nft"
    ));
    let node2 = st.node(2)?.netns.clone();
    let server_veth = server_host_veth(&node2, server_ip).await?;
    let mut script = format!(
        "table inet wbench {{\n chain forward {{\n  type filter hook forward priority 10; policy accept;\n  ct state established,related accept\n  oifname \"{server_veth}\" jump linear\n }}\n chain linear {{\n"
    );
    for i in 0..PEERS {
        script += &format!("  ip saddr {} accept\n", peer(i));
    }
    script += &format!("  ip saddr {client_ip} accept\n  drop\n }}\n}}\n");
    let file = std::env::temp_dir().join(format!("weft-bench-chain-{pid}.nft", pid = std::process::id()));
    std::fs::write(&file, &script)?;
    let start = Instant::now();
    let loaded = sys::ip(&["netns", "exec", &node2, "nft", "-f", &file.display().to_string()]).await;
    let chain_load_s = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&file);
    loaded.context("loading the linear chain")?;
    let figures = measure_case(format!("{PEERS}-rule linear chain")).await;
    let removed = sys::ip(&[
        "netns", "exec", &node2, "nft", "delete", "table", "inet", "wbench",
    ])
    .await;
    paths.push(figures?);
    removed?;
    progress.step("(b) no policy, again (order effects)");
    paths.push(measure_case("no policy (again)".into()).await?);

    // (c) service.
    progress.step("(c) ClusterIP service (DNAT) vs the pod directly");
    apply(lab, vec![service()]).await?;
    wait(lab).await?;
    let url = st.controller.url.clone();
    let vip = NodeStateClient::new(&url)?
        .state("node-1")
        .await?
        .services
        .iter()
        .find(|s| s.name == "bp-svc")
        .and_then(|s| s.vip)
        .context("service bp-svc has no VIP on node-1")?;
    let rate = tokio::task::spawn_blocking({
        let ns = client.netns.clone();
        move || -> Result<f64> {
            let to = SocketAddr::new(vip, 80);
            Ok(connection_rate(&ns, to, duration)?.max(connection_rate(&ns, to, duration)?))
        }
    })
    .await??;
    paths.push(PathFigures {
        case: "ClusterIP service (DNAT)".into(),
        connections_per_sec: rate,
        gbit_per_sec: None,
    });
    Ok(PolicyBenchReport {
        label_applied_ms: applied_ms,
        label_effective_ms: effective_ms,
        label_incremental,
        peers_applied_ms,
        chain_load_s,
        paths,
    })
}

/// The host-side veth of the pod with address `ip` in node namespace `node` (the route
/// to the pod's /32 names it).
async fn server_host_veth(node: &str, ip: Ipv4Addr) -> Result<String> {
    let out = sys::ip(&[
        "-n",
        node,
        "-j",
        "route",
        "show",
        "table",
        "all",
        &format!("{ip}/32"),
    ])
    .await?;
    let v: Value = serde_json::from_str(&out).context("ip -j route")?;
    v.as_array()
        .into_iter()
        .flatten()
        .find_map(|r| {
            r["dev"]
                .as_str()
                .filter(|d| d.starts_with("weft") && *d != "weft-vxlan")
        })
        .map(str::to_string)
        .with_context(|| format!("no route to {ip}/32 through a pod veth in {node}"))
}
