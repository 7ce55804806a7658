//! `weft lab bench outside`: what reaching the outside costs, in a fresh 2-node lab
//! with a gateway (`bo<pid % 1000>`, removed afterwards). A benchmark: it prints figures
//! and asserts nothing about them.
//!
//! ```text
//!  pod-to-pod   default/bo-client (node-1) ──VXLAN──> default/bo-web (node-2)
//!  LB FIP       external host ──gateway (FRR)──> LoadBalancer floating IP ──DNAT on node-2──> bo-web
//!  pod FIP      external host ──gateway (FRR)──> bo-db's floating IP ──1:1 NAT on node-2──> bo-db
//!  SNAT         bo-client (fabric SNAT) ──node-1 SNAT──> gateway ──> external host
//!  chain        bo-left (vn-left, node-1) ──> bo-fw1 (node-1) ──VXLAN──> bo-fw2 (node-2) ──> bo-right (vn-right)
//! ```
//!
//! The chain path is a two-hop ServiceChain through lab forwarder pods (kernel IPv4
//! forwarding in their namespaces), for the cost of steering next to the plain path.
//!
//! Per path: TCP goodput ([`crate::bench_throughput::transfer`], one stream) and the
//! connection rate (one thread connects and closes for the given time) with the number
//! of connects that failed or took over 200 ms — for SNAT that is the per-destination
//! port pool running out: TIME_WAIT entries keep their translated port.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use weft_api::types::ManifestDocument;

use crate::Progress;
use crate::names::{LabName, NETNS_DIR};
use crate::state::LabState;
use crate::{bench_throughput, converge, gateway, sys, topology};

/// The port the goodput runs on (no echo server there).
const BULK_PORT: u16 = 5201;
/// The echo port the connection rates use.
const ECHO_PORT: u16 = 80;
/// Bound on the FIP route reaching the gateway.
const READY: Duration = Duration::from_secs(60);

/// Options of `weft lab bench outside`.
#[derive(Debug, Clone)]
pub struct OutsideBenchOptions {
    /// Seconds of traffic per figure.
    pub seconds: u64,
    /// Print JSON instead of a table.
    pub json: bool,
}

/// Figures of one path.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutsidePath {
    /// What the path is.
    pub path: String,
    /// TCP goodput, Gbit/s.
    pub gbit_per_sec: f64,
    /// New TCP connections per second.
    pub connections_per_sec: f64,
    /// Connects that failed (or took over 200 ms) meanwhile.
    pub failed_connects: u64,
}

/// The report of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutsideBenchReport {
    /// Per path.
    pub paths: Vec<OutsidePath>,
}

impl OutsideBenchReport {
    fn table(&self) -> String {
        let mut out = format!("{:<44} {:>10} {:>10}  NOTE\n", "PATH", "GBIT/S", "CONN/S");
        for p in &self.paths {
            out += &format!(
                "{:<44} {:>10.2} {:>10.0}  {}\n",
                p.path,
                p.gbit_per_sec,
                p.connections_per_sec,
                if p.failed_connects == 0 {
                    String::new()
                } else {
                    format!("{} connects failed or took over 200 ms", p.failed_connects)
                }
            );
        }
        out
    }
}

fn netns_path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

fn docs(objects: impl IntoIterator<Item = Value>) -> Vec<ManifestDocument> {
    objects
        .into_iter()
        .map(|object| ManifestDocument {
            source: "outside bench".into(),
            object,
        })
        .collect()
}

fn scenario() -> Vec<Value> {
    let pool = r#"{"domain":"default-domain","project":"k8s-default","network":"public","name":"pool"}"#;
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default",
               "annotations": {"opencontrail.org/ip_fabric_snat": "true", "opencontrail.org/fip-pool": pool}}}),
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "VirtualNetwork", "metadata": {"name": "public", "namespace": "default"},
               "spec": {"subnets": ["198.51.100.0/24"]}}),
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "FloatingIpPool", "metadata": {"name": "pool", "namespace": "default"},
               "spec": {"network": "public"}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bo-client", "namespace": "default"},
               "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "x"}]}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bo-web", "namespace": "default", "labels": {"app": "bo-web"}},
               "spec": {"nodeName": "node-2", "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": ECHO_PORT}]}]}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bo-db", "namespace": "default"},
               "spec": {"nodeName": "node-2", "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": ECHO_PORT}]}]}}),
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "FloatingIp", "metadata": {"name": "bo-db", "namespace": "default"},
               "spec": {"pool": "pool", "pod": "bo-db"}}),
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "VirtualNetwork", "metadata": {"name": "vn-left", "namespace": "default"},
               "spec": {"subnets": ["10.10.10.0/24"]}}),
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "VirtualNetwork", "metadata": {"name": "vn-right", "namespace": "default"},
               "spec": {"subnets": ["20.20.20.0/24"]}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bo-left", "namespace": "default",
               "annotations": {"opencontrail.org/network": "{'domain': 'default-domain', 'project': 'k8s-default', 'name': 'vn-left'}"}},
               "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "x"}]}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bo-right", "namespace": "default",
               "annotations": {"opencontrail.org/network": "{'domain': 'default-domain', 'project': 'k8s-default', 'name': 'vn-right'}"}},
               "spec": {"nodeName": "node-2", "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": ECHO_PORT}]}]}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bo-fw1", "namespace": "default",
               "annotations": {"k8s.v1.cni.cncf.io/networks": "vn-left,vn-right", crate::pods::FORWARDER_ANNOTATION: "true"}},
               "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "x"}]}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bo-fw2", "namespace": "default",
               "annotations": {"k8s.v1.cni.cncf.io/networks": "vn-left,vn-right", crate::pods::FORWARDER_ANNOTATION: "true"}},
               "spec": {"nodeName": "node-2", "containers": [{"name": "c", "image": "x"}]}}),
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ServiceChain", "metadata": {"name": "bo-chain", "namespace": "default"},
               "spec": {"leftNetwork": "vn-left", "rightNetwork": "vn-right",
                        "services": [{"pod": "bo-fw1"}, {"pod": "bo-fw2"}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bo-web", "namespace": "default"},
               "spec": {"type": "LoadBalancer", "selector": {"app": "bo-web"},
                        "ports": [{"name": "echo", "port": ECHO_PORT, "targetPort": ECHO_PORT},
                                  {"name": "bulk", "port": BULK_PORT, "targetPort": BULK_PORT}]}}),
    ]
}

/// Successful connections per second from namespace `src` to `to` for `duration`, and
/// how many connects failed (each waits at most 200 ms).
fn connection_rate(src: &str, to: SocketAddr, duration: Duration) -> Result<(f64, u64)> {
    Ok(weft_cni::run_in_netns(netns_path(src), || {
        let start = Instant::now();
        let (mut ok, mut failed) = (0u64, 0u64);
        while start.elapsed() < duration {
            match TcpStream::connect_timeout(&to, Duration::from_millis(200)) {
                Ok(s) => {
                    drop(s);
                    ok += 1;
                }
                Err(_) => failed += 1,
            }
        }
        (ok as f64 / start.elapsed().as_secs_f64(), failed)
    })?)
}

/// Accepts and closes connections in namespace `netns` on `port` until `until`.
fn accept_and_close(netns: &str, port: u16, until: Instant) -> Result<std::thread::JoinHandle<()>> {
    let listener = weft_cni::run_in_netns(netns_path(netns), || {
        TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
    })??;
    listener.set_nonblocking(true)?;
    Ok(std::thread::spawn(move || {
        while Instant::now() < until {
            match listener.accept() {
                Ok((s, _)) => drop(s),
                Err(_) => std::thread::sleep(Duration::from_micros(200)),
            }
        }
    }))
}

/// Waits (at most [`READY`]) until `lookup` names an address the gateway in namespace
/// `gw` has a route for; that address.
async fn wait_routed<F, Fut>(gw: &str, what: &str, lookup: F) -> Result<IpAddr>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Option<IpAddr>>>,
{
    let deadline = Instant::now() + READY;
    loop {
        if let Some(ip) = lookup().await? {
            let out = sys::ip(&["-n", gw, "route", "show", &ip.to_string()])
                .await
                .unwrap_or_default();
            if out.contains("via") {
                return Ok(ip);
            }
        }
        if Instant::now() > deadline {
            bail!("no route for {what} on the gateway within {READY:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the benchmark in a fresh lab (removed afterwards, also on error).
pub async fn run(opts: &OutsideBenchOptions, progress: &Progress) -> Result<OutsideBenchReport> {
    let report = topology::in_throwaway_lab("outside", "bo", progress, |lab| async move {
        progress.step(&format!(
        "lab {lab}: 2 nodes and a gateway; bo-client (fabric SNAT) on node-1, bo-web behind a LoadBalancer FIP on node-2"
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

async fn measure(
    lab: &LabName,
    opts: &OutsideBenchOptions,
    progress: &Progress,
) -> Result<OutsideBenchReport> {
    let up = topology::UpOptions {
        documents: docs(scenario()),
        gateway: Some(1),
        ..Default::default()
    };
    if !topology::up(lab, &up, &Progress::quiet()).await? {
        bail!("lab {lab}: the bench's objects could not be applied");
    }
    let st = LabState::load(lab)?;
    converge::wait_converged(&st, READY, &Progress::quiet()).await?;
    let client = st.pod("default/bo-client")?.clone();
    let web = st.pod("default/bo-web")?.clone();
    let web_ip = crate::inspect::resolve_target(&st, "default/bo-web").await?;
    let gw = st.gateway.clone().context("the lab has no gateway")?;
    for ns in [&client.netns, &gw.external_netns] {
        for setting in [
            "net.ipv4.tcp_tw_reuse=1",
            "net.ipv4.ip_local_port_range=1024 65000",
        ] {
            sys::ip(&["netns", "exec", ns, "sysctl", "-qw", setting]).await?;
        }
    }
    // The floating IPs, once the gateway has their routes.
    let client_api = weft_api::client::ApiClient::new(&st.controller.url);
    let fip = wait_routed(&gw.netns, "bo-web's LoadBalancer FIP", || async {
        Ok(client_api
            .derived("services", Some("default"))
            .await?
            .into_iter()
            .find_map(|d| match d {
                weft_model::DerivedObject::Service(s) if s.name == "bo-web" => {
                    s.floating_ips.first().copied()
                }
                _ => None,
            }))
    })
    .await?;
    let db = st.pod("default/bo-db")?.clone();
    let db_fip = wait_routed(&gw.netns, "bo-db's floating IP", || async {
        Ok(client_api
            .derived("floatingips", Some("default"))
            .await?
            .into_iter()
            .find_map(|d| match d {
                weft_model::DerivedObject::FloatingIp(f) if f.name == "bo-db" && f.node.is_some() => f.ip,
                _ => None,
            }))
    })
    .await?;
    let external: IpAddr = gateway::EXTERNAL_HOST_IP.parse()?;
    let left = st.pod("default/bo-left")?.clone();
    let right = st.pod("default/bo-right")?.clone();
    let right_ip = crate::inspect::resolve_target(&st, "default/bo-right").await?;
    for setting in [
        "net.ipv4.tcp_tw_reuse=1",
        "net.ipv4.ip_local_port_range=1024 65000",
    ] {
        sys::ip(&["netns", "exec", &left.netns, "sysctl", "-qw", setting]).await?;
    }
    let duration = Duration::from_secs(opts.seconds);
    let mut paths = Vec::new();
    let cases = [
        (
            "pod -> pod (VXLAN, baseline)",
            client.netns.clone(),
            web.netns.clone(),
            web_ip,
        ),
        (
            "external host -> LoadBalancer FIP (DNAT)",
            gw.external_netns.clone(),
            web.netns.clone(),
            fip,
        ),
        (
            "external host -> pod floating IP (1:1 NAT)",
            gw.external_netns.clone(),
            db.netns.clone(),
            db_fip,
        ),
        (
            "fabric-SNAT pod -> external host",
            client.netns.clone(),
            gw.external_netns.clone(),
            external,
        ),
        (
            "pod -> pod through a 2-hop service chain",
            left.netns.clone(),
            right.netns.clone(),
            right_ip,
        ),
    ];
    for (name, src, dst, ip) in cases {
        progress.step(&format!(
            "{name}: {} s of goodput, {} s of connections",
            opts.seconds, opts.seconds
        ));
        let (s, d) = (netns_path(&src), netns_path(&dst));
        let to = SocketAddr::new(ip, BULK_PORT);
        let goodput =
            tokio::task::spawn_blocking(move || bench_throughput::transfer(&s, &d, to, duration, 1))
                .await
                .context("goodput thread")??;
        // Connection rate: the echo server of bo-web, or a closing acceptor on the
        // external host.
        let echo = SocketAddr::new(ip, ECHO_PORT);
        let acceptor = if dst == gw.external_netns {
            Some(accept_and_close(
                &dst,
                ECHO_PORT,
                Instant::now() + duration + Duration::from_secs(3),
            )?)
        } else {
            None
        };
        let src2 = src.clone();
        let (rate, failed) = tokio::task::spawn_blocking(move || connection_rate(&src2, echo, duration))
            .await
            .context("connection thread")??;
        if let Some(a) = acceptor {
            let _ = tokio::task::spawn_blocking(move || a.join()).await;
        }
        paths.push(OutsidePath {
            path: name.to_string(),
            gbit_per_sec: goodput.bytes as f64 * 8.0 / goodput.seconds.max(1e-9) / 1e9,
            connections_per_sec: rate,
            failed_connects: failed,
        });
    }
    Ok(OutsideBenchReport { paths })
}
