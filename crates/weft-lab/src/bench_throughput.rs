//! `weft lab bench throughput`: TCP goodput pod → pod through weft's overlay, compared
//! in the same run with a bare veth pair and with a hand-made kernel VXLAN path that has
//! the same namespace hops and the same encapsulation as weft's. A benchmark: it prints
//! figures and asserts nothing about them.
//!
//! ```text
//!  (a) weft      pod ─veth─ node-1 ─ul0─[br0]─ul0─ node-2 ─veth─ pod     a fresh 2-node lab
//!                            rule iif veth → VN table → encap ip id VNI   `tp<pid%1000>`
//!                            → weft-vxlan (external) … tun_id rule → VN table
//!  (b) veth      va ─eth0══eth0─ vb                          198.51.100.0/24 (TEST-NET-2)
//!  (c) VXLAN     xa ─veth─ xn1 ─ul0─[br0 in xul]─ul0─ xn2 ─veth─ xb
//!                          vx0: vxlan id 42 remote <peer> dstport 4789 (classic, not external)
//!                underlay 203.0.113.0/24 (TEST-NET-3); vx0 198.18.0.0/24; pods 198.18.1.0/24
//!                and 198.18.2.0/24 (RFC 2544 benchmarking range); pod MTU 1450 as weft's
//! ```
//!
//! Every path is measured the same way, inside namespaces the bench makes itself: the
//! receiver's listening socket is opened inside the destination namespace and the
//! senders' sockets inside the source namespace (on the short-lived threads of
//! [`weft_cni::run_in_netns`], never on a tokio worker); the transfer itself then runs
//! on ordinary threads, since a socket stays in the namespace it was made in. Each
//! sender writes 128 KiB buffers as fast as it can for the given time and closes; each
//! receiver counts bytes until end of stream. Goodput = bytes received / (time from the
//! start to the last byte received).
//!
//! Names are unique to the run (`wtp-<pid>-…`, lab `tp<pid%1000>`), and everything is
//! removed afterwards: on success, on error, on Ctrl-C and (from a drop guard) on panic.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use serde_json::{Value, json};
use weft_api::types::ManifestDocument;

use crate::Progress;
use crate::echo::{Proto, probe_from_netns};
use crate::names::{LabName, NETNS_DIR};
use crate::state::LabState;
use crate::sys;
use crate::topology;

/// Size of each write of a sender.
pub const WRITE_SIZE: usize = 128 * 1024;
/// Port of the receivers (inside the bench's own namespaces).
const PORT: u16 = 5201;
/// Bound on connecting and accepting the streams.
const CONNECT_BOUND: Duration = Duration::from_secs(5);
/// A stream that moves nothing for this long fails the path.
const STALL_BOUND: Duration = Duration::from_secs(10);
/// Bound on the weft pods reaching each other after the lab is up.
const READY_BOUND: Duration = Duration::from_secs(30);
/// Longest run per path.
pub const MAX_SECONDS: u64 = 600;
/// Most parallel streams.
pub const MAX_STREAMS: usize = 64;
/// VNI of the hand-made VXLAN path.
const HAND_VNI: &str = "42";
/// MTU of the pods' interfaces on the hand-made VXLAN path: weft's pod MTU.
const HAND_POD_MTU: &str = "1450";

/// Options of `weft lab bench throughput`.
#[derive(Debug, Clone)]
pub struct ThroughputOptions {
    /// Seconds of traffic per path.
    pub seconds: u64,
    /// Parallel TCP streams per path.
    pub streams: usize,
    /// Print JSON instead of a table.
    pub json: bool,
}

/// Which path a result is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathKind {
    /// Pod to pod across two nodes through weft.
    Weft,
    /// The hand-made classic VXLAN path.
    HandVxlan,
    /// Two namespaces joined by one veth pair.
    BareVeth,
}

impl PathKind {
    /// What the table calls it.
    pub fn label(self) -> &'static str {
        match self {
            PathKind::Weft => "weft pod -> pod (2 nodes)",
            PathKind::HandVxlan => "hand-made VXLAN (same hops)",
            PathKind::BareVeth => "bare veth pair",
        }
    }
}

/// Bytes moved by one path's streams, and how long it took.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Goodput {
    /// Bytes received (all streams).
    pub bytes: u64,
    /// Seconds from the start to the last byte received.
    pub seconds: f64,
}

impl Goodput {
    /// Gbit/s: bytes × 8 / seconds / 10⁹ (0 when nothing was timed).
    pub fn gbits(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bytes as f64 * 8.0 / self.seconds / 1e9
        } else {
            0.0
        }
    }
}

/// The measurement of one path.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PathResult {
    /// Which path.
    pub path: PathKind,
    /// Bytes received.
    pub bytes: u64,
    /// Seconds to the last byte.
    pub seconds: f64,
    /// Goodput.
    pub gbit_per_sec: f64,
    /// MTU of the sending pod's interface.
    pub mtu: Option<u32>,
    /// MTU of the underlay (tunnelled paths).
    pub underlay_mtu: Option<u32>,
    /// Bytes the sending node's VXLAN device transmitted during the run (tunnelled
    /// paths): evidence that the traffic really took the tunnel.
    pub tunnel_tx_bytes: Option<u64>,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThroughputReport {
    /// Seconds of traffic per path.
    pub seconds: u64,
    /// Streams per path.
    pub streams: usize,
    /// Bytes per write.
    pub write_bytes: usize,
    /// The lab of path (a).
    pub lab: String,
    /// The namespaces made for paths (b) and (c).
    pub namespaces: Vec<String>,
    /// Results, in the order measured.
    pub paths: Vec<PathResult>,
}

impl ThroughputReport {
    fn gbits(&self, kind: PathKind) -> Option<f64> {
        self.paths.iter().find(|p| p.path == kind).map(|p| p.gbit_per_sec)
    }

    /// weft's goodput as a percentage of `kind`'s.
    pub fn weft_percent_of(&self, kind: PathKind) -> Option<f64> {
        let weft = self.gbits(PathKind::Weft)?;
        let other = self.gbits(kind).filter(|g| *g > 0.0)?;
        Some(weft / other * 100.0)
    }

    /// The report as JSON (with the two percentages).
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        v["weftPercentOfHandVxlan"] = json!(self.weft_percent_of(PathKind::HandVxlan));
        v["weftPercentOfBareVeth"] = json!(self.weft_percent_of(PathKind::BareVeth));
        v
    }

    /// The report as a table for people.
    pub fn to_table(&self) -> String {
        let mut out = format!(
            "TCP goodput, {} s per path, {} stream(s), {} KiB writes (bytes received / time)\n",
            self.seconds,
            self.streams,
            self.write_bytes / 1024
        );
        out.push_str(&format!(
            "{:<30} {:>8}  {:>13}  {:>10}  {:>14}\n",
            "path", "Gbit/s", "weft = % of", "pod MTU", "underlay MTU"
        ));
        let mtu = |m: Option<u32>| m.map_or("-".to_string(), |m| m.to_string());
        for p in &self.paths {
            let pct = match p.path {
                PathKind::Weft => "-".to_string(),
                k => self
                    .weft_percent_of(k)
                    .map_or("-".to_string(), |x| format!("{x:.1} %")),
            };
            out.push_str(&format!(
                "{:<30} {:>8.2}  {:>13}  {:>10}  {:>14}\n",
                p.path.label(),
                p.gbit_per_sec,
                pct,
                mtu(p.mtu),
                mtu(p.underlay_mtu)
            ));
        }
        let pct = |k| {
            self.weft_percent_of(k)
                .map_or("-".to_string(), |x| format!("{x:.1} %"))
        };
        out.push_str(&format!(
            "weft = {} of hand-made VXLAN, {} of bare veth\n",
            pct(PathKind::HandVxlan),
            pct(PathKind::BareVeth)
        ));
        for p in self.paths.iter().filter(|p| p.tunnel_tx_bytes.is_some()) {
            out.push_str(&format!(
                "{}: the sending node's VXLAN device sent {} bytes for {} bytes of payload\n",
                p.path.label(),
                p.tunnel_tx_bytes.unwrap_or(0),
                p.bytes
            ));
        }
        out
    }
}

/// Runs the three paths once each and prints the report. Everything the run makes is
/// removed before it returns (and by a drop guard if it panics).
pub async fn run(opts: &ThroughputOptions, progress: &Progress) -> Result<ThroughputReport> {
    if !sys::is_root() {
        bail!("weft lab bench throughput needs root: it creates network namespaces and links");
    }
    if !(1..=MAX_SECONDS).contains(&opts.seconds) {
        bail!("--seconds must be 1 to {MAX_SECONDS}, found {}", opts.seconds);
    }
    if !(1..=MAX_STREAMS).contains(&opts.streams) {
        bail!("--streams must be 1 to {MAX_STREAMS}, found {}", opts.streams);
    }
    let mut cleanup = Cleanup::default();
    let outcome = tokio::select! {
        r = measure_all(opts, &mut cleanup, progress) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    let (lab, namespaces) = (cleanup.lab.clone(), cleanup.namespaces.clone());
    progress.step("removing the bench's lab and namespaces");
    let cleaned = cleanup.run().await;
    let report = outcome?;
    cleaned?;
    if let Some(lab) = lab {
        let prefix = lab.prefix();
        let left: Vec<String> = sys::netns_list()
            .await?
            .into_iter()
            .filter(|n| n.starts_with(&prefix) || namespaces.contains(n))
            .collect();
        if !left.is_empty() {
            bail!("namespaces left after the bench: {}", left.join(", "));
        }
    }
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.to_table());
    }
    Ok(report)
}

/// Sets up the three paths, then measures them back to back.
async fn measure_all(
    opts: &ThroughputOptions,
    cleanup: &mut Cleanup,
    progress: &Progress,
) -> Result<ThroughputReport> {
    let pid = std::process::id();
    let prefix = format!("wtp-{pid}-");
    // A namespace with our pid in its name is a leftover of a dead run: ours to reuse.
    for ns in sys::netns_list().await? {
        if ns.starts_with(&prefix) {
            sys::ip(&["netns", "del", &ns]).await?;
        }
    }

    progress.step("bare veth: two namespaces, one veth pair (198.51.100.0/24)");
    let veth = setup_veth(&prefix, cleanup).await?;
    progress.step("hand-made VXLAN: pod, node, bridge, node, pod namespaces, vxlan id 42");
    let vxlan = setup_hand_vxlan(&prefix, cleanup).await?;
    let lab = topology::free_lab_name("tp").await?;
    progress.step(&format!("weft: a 2-node lab {lab}, one pod on each node"));
    cleanup.lab = Some(lab.clone());
    let weft = setup_weft(&lab).await?;

    let duration = Duration::from_secs(opts.seconds);
    let mut report = ThroughputReport {
        seconds: opts.seconds,
        streams: opts.streams,
        write_bytes: WRITE_SIZE,
        lab: lab.to_string(),
        namespaces: cleanup.namespaces.clone(),
        paths: Vec::new(),
    };
    for path in [weft, vxlan, veth] {
        progress.step(&format!(
            "{}: {} s of TCP, {} stream(s), {} -> {}",
            path.kind.label(),
            opts.seconds,
            opts.streams,
            path.src_ns,
            path.dst
        ));
        let r = measure_path(&path, duration, opts.streams)
            .await
            .with_context(|| format!("measuring {}", path.kind.label()))?;
        progress.step(&format!(
            "{}: {} bytes in {:.2} s = {:.2} Gbit/s",
            path.kind.label(),
            r.bytes,
            r.seconds,
            r.gbit_per_sec
        ));
        report.paths.push(r);
    }
    Ok(report)
}

/// One path, ready to measure.
#[derive(Debug, Clone)]
struct PathSetup {
    kind: PathKind,
    /// Sender's namespace and interface.
    src_ns: String,
    /// Receiver's namespace.
    dst_ns: String,
    /// Receiver's address.
    dst: IpAddr,
    /// Sending node's namespace and its underlay and VXLAN devices (tunnelled paths).
    node: Option<(String, String, String)>,
}

async fn measure_path(path: &PathSetup, duration: Duration, streams: usize) -> Result<PathResult> {
    let mtu = link_stats(&path.src_ns, "eth0").await?.0;
    let (underlay_mtu, tx_before) = match &path.node {
        Some((ns, ul, vx)) => (
            Some(link_stats(ns, ul).await?.0),
            Some(link_stats(ns, vx).await?.1),
        ),
        None => (None, None),
    };
    let (src, dst) = (netns_path(&path.src_ns), netns_path(&path.dst_ns));
    let to = SocketAddr::new(path.dst, PORT);
    let g = tokio::task::spawn_blocking(move || transfer(&src, &dst, to, duration, streams))
        .await
        .context("the transfer thread")??;
    let tunnel_tx_bytes = match (&path.node, tx_before) {
        (Some((ns, _, vx)), Some(before)) => Some(link_stats(ns, vx).await?.1.saturating_sub(before)),
        _ => None,
    };
    Ok(PathResult {
        path: path.kind,
        bytes: g.bytes,
        seconds: g.seconds,
        gbit_per_sec: g.gbits(),
        mtu: Some(mtu),
        underlay_mtu,
        tunnel_tx_bytes,
    })
}

fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// MTU and transmitted bytes of `dev` in namespace `ns` (`ip -s -j link show`).
async fn link_stats(ns: &str, dev: &str) -> Result<(u32, u64)> {
    let out = sys::ip(&["-n", ns, "-s", "-j", "link", "show", "dev", dev]).await?;
    parse_link_stats(&out).with_context(|| format!("reading MTU and counters of {dev} in {ns}"))
}

fn parse_link_stats(json_text: &str) -> Result<(u32, u64)> {
    let v: Value = serde_json::from_str(json_text).context("`ip -j` printed no JSON")?;
    let link = &v[0];
    let mtu = link["mtu"]
        .as_u64()
        .and_then(|m| u32::try_from(m).ok())
        .context("no mtu")?;
    let tx = link["stats64"]["tx"]["bytes"].as_u64().context("no tx bytes")?;
    Ok((mtu, tx))
}

/// Moves data from namespace `src` to `to` in namespace `dst` for `duration` over
/// `streams` TCP connections (blocking; see the module docs).
pub fn transfer(
    src: &Path,
    dst: &Path,
    to: SocketAddr,
    duration: Duration,
    streams: usize,
) -> Result<Goodput> {
    let listener = weft_cni::run_in_netns(dst, || {
        TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), to.port()))
    })?
    .with_context(|| format!("listening on port {} in {}", to.port(), dst.display()))?;
    listener.set_nonblocking(true).context("listener")?;
    let senders = weft_cni::run_in_netns(src, || {
        (0..streams)
            .map(|_| TcpStream::connect_timeout(&to, CONNECT_BOUND))
            .collect::<std::io::Result<Vec<_>>>()
    })?
    .with_context(|| format!("connecting to {to} from {}", src.display()))?;
    let deadline = Instant::now() + CONNECT_BOUND;
    let mut receivers = Vec::new();
    while receivers.len() < streams {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).context("receiver socket")?;
                s.set_read_timeout(Some(STALL_BOUND)).context("receiver socket")?;
                receivers.push(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    bail!(
                        "only {} of {streams} connections arrived within {CONNECT_BOUND:?}",
                        receivers.len()
                    );
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e).context("accepting"),
        }
    }
    drop(listener);
    for s in &senders {
        s.set_write_timeout(Some(STALL_BOUND)).context("sender socket")?;
    }
    let start = Instant::now();
    let end = start + duration;
    let (received, sent) = std::thread::scope(|scope| {
        let rx: Vec<_> = receivers
            .into_iter()
            .map(|s| scope.spawn(move || receive(s)))
            .collect();
        let tx: Vec<_> = senders
            .into_iter()
            .map(|s| scope.spawn(move || send(s, end)))
            .collect();
        let sent: Vec<std::io::Result<u64>> = tx.into_iter().map(join_stream).collect();
        let received: Vec<std::io::Result<(u64, Instant)>> = rx.into_iter().map(join_stream).collect();
        (received, sent)
    });
    for s in sent {
        s.context("sending")?;
    }
    let mut bytes = 0;
    let mut last = start;
    for r in received {
        let (b, t) = r.context("receiving")?;
        bytes += b;
        last = last.max(t);
    }
    Ok(Goodput {
        bytes,
        seconds: last.duration_since(start).as_secs_f64(),
    })
}

/// Waits for a stream thread; a panic becomes an error.
fn join_stream<T>(h: std::thread::ScopedJoinHandle<'_, std::io::Result<T>>) -> std::io::Result<T> {
    h.join()
        .map_err(|_| std::io::Error::other("a stream thread panicked"))
        .and_then(|r| r)
}

/// Writes [`WRITE_SIZE`] buffers until `end`, then closes the sending side.
fn send(mut s: TcpStream, end: Instant) -> std::io::Result<u64> {
    let buf = vec![0x5a_u8; WRITE_SIZE];
    let mut sent = 0u64;
    while Instant::now() < end {
        s.write_all(&buf)?;
        sent += WRITE_SIZE as u64;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    Ok(sent)
}

/// Reads until end of stream; the bytes and when the last one came.
fn receive(mut s: TcpStream) -> std::io::Result<(u64, Instant)> {
    let mut buf = vec![0u8; WRITE_SIZE];
    let mut got = 0u64;
    let mut last = Instant::now();
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok((got, last)),
            Ok(n) => {
                got += n as u64;
                last = Instant::now();
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Creates namespace `name` (recorded for cleanup) with `lo` up.
async fn add_netns(cleanup: &mut Cleanup, name: &str) -> Result<()> {
    cleanup.namespaces.push(name.to_string());
    sys::ip(&["netns", "add", name]).await?;
    sys::ip(&["-n", name, "link", "set", "lo", "up"]).await?;
    Ok(())
}

/// Runs `ip` once per argument list, in order.
async fn ip_all(cmds: &[&[&str]]) -> Result<()> {
    for args in cmds {
        sys::ip(args).await?;
    }
    Ok(())
}

/// Path (b): `<prefix>va` ─ veth ─ `<prefix>vb`.
async fn setup_veth(prefix: &str, cleanup: &mut Cleanup) -> Result<PathSetup> {
    let (a, b) = (format!("{prefix}va"), format!("{prefix}vb"));
    add_netns(cleanup, &a).await?;
    add_netns(cleanup, &b).await?;
    ip_all(&[
        &[
            "-n", &a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &b,
        ],
        &["-n", &a, "addr", "add", "198.51.100.1/24", "dev", "eth0"],
        &["-n", &b, "addr", "add", "198.51.100.2/24", "dev", "eth0"],
        &["-n", &a, "link", "set", "eth0", "up"],
        &["-n", &b, "link", "set", "eth0", "up"],
    ])
    .await?;
    Ok(PathSetup {
        kind: PathKind::BareVeth,
        src_ns: a,
        dst_ns: b,
        dst: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)),
        node: None,
    })
}

/// Path (c): pods `xa`, `xb` behind nodes `xn1`, `xn2`, whose `ul0` veths meet on a
/// bridge in `xul` (as the lab's nodes do), each node with a classic VXLAN device.
async fn setup_hand_vxlan(prefix: &str, cleanup: &mut Cleanup) -> Result<PathSetup> {
    let ul = format!("{prefix}xul");
    add_netns(cleanup, &ul).await?;
    ip_all(&[
        &["-n", &ul, "link", "add", "br0", "type", "bridge"],
        &["-n", &ul, "link", "set", "br0", "up"],
    ])
    .await?;
    for i in 1..=2u8 {
        let peer = 3 - i;
        let node = format!("{prefix}xn{i}");
        let pod = format!("{prefix}x{}", if i == 1 { 'a' } else { 'b' });
        let port = format!("n{i}");
        let underlay = format!("203.0.113.{i}");
        let remote = format!("203.0.113.{peer}");
        let overlay = format!("198.18.0.{i}/24");
        let peer_net = format!("198.18.{peer}.0/24");
        let peer_vtep = format!("198.18.0.{peer}");
        let gw = format!("198.18.{i}.1");
        let (gw_cidr, pod_cidr) = (format!("{gw}/24"), format!("198.18.{i}.2/24"));
        add_netns(cleanup, &node).await?;
        add_netns(cleanup, &pod).await?;
        ip_all(&[
            // Underlay: node ul0 ─ bridge port in the underlay namespace.
            &[
                "-n", &node, "link", "add", "ul0", "type", "veth", "peer", "name", &port, "netns", &ul,
            ],
            &["-n", &ul, "link", "set", &port, "master", "br0", "up"],
            &[
                "-n",
                &node,
                "addr",
                "add",
                &format!("{underlay}/24"),
                "dev",
                "ul0",
            ],
            &["-n", &node, "link", "set", "ul0", "up"],
            // Classic VXLAN: one VNI, one remote, the kernel's MTU for it (1450).
            &[
                "-n", &node, "link", "add", "vx0", "type", "vxlan", "id", HAND_VNI, "remote", &remote,
                "local", &underlay, "dstport", "4789", "dev", "ul0",
            ],
            &["-n", &node, "addr", "add", &overlay, "dev", "vx0"],
            &["-n", &node, "link", "set", "vx0", "up"],
            // The pod: a veth with weft's pod MTU, a default route to its node.
            &[
                "-n",
                &node,
                "link",
                "add",
                "vpod",
                "mtu",
                HAND_POD_MTU,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "mtu",
                HAND_POD_MTU,
                "netns",
                &pod,
            ],
            &["-n", &node, "addr", "add", &gw_cidr, "dev", "vpod"],
            &["-n", &node, "link", "set", "vpod", "up"],
            &["-n", &pod, "addr", "add", &pod_cidr, "dev", "eth0"],
            &["-n", &pod, "link", "set", "eth0", "up"],
            &["-n", &pod, "route", "add", "default", "via", &gw],
            // The other node's pods are behind its VXLAN address.
            &[
                "-n", &node, "route", "add", &peer_net, "via", &peer_vtep, "dev", "vx0",
            ],
        ])
        .await?;
        sys::write_sysctl_in(&node, "net/ipv4/ip_forward", "1")?;
    }
    Ok(PathSetup {
        kind: PathKind::HandVxlan,
        src_ns: format!("{prefix}xa"),
        dst_ns: format!("{prefix}xb"),
        dst: IpAddr::V4(Ipv4Addr::new(198, 18, 2, 2)),
        node: Some((format!("{prefix}xn1"), "ul0".into(), "vx0".into())),
    })
}

fn tp_pod(name: &str, node: &str) -> ManifestDocument {
    ManifestDocument {
        source: format!("throughput bench pod {name}"),
        object: json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node,
                     "containers": [{"name": "c", "image": "weft/echo", "ports": [{"containerPort": 80}]}]}}),
    }
}

/// Path (a): a 2-node lab with `default/tp-client` on node-1 and `default/tp-server`
/// on node-2, checked to reach each other.
async fn setup_weft(lab: &LabName) -> Result<PathSetup> {
    let opts = topology::UpOptions {
        documents: vec![tp_pod("tp-client", "node-1"), tp_pod("tp-server", "node-2")],
        ..Default::default()
    };
    if !topology::up(lab, &opts, &Progress::quiet()).await? {
        bail!("lab {lab}: the two bench pods could not be created");
    }
    let state = LabState::load(lab)?;
    let client = state.pod("default/tp-client")?.clone();
    let server = state.pod("default/tp-server")?.clone();
    let dst: IpAddr = server
        .ip
        .as_deref()
        .and_then(|ip| ip.parse().ok())
        .context("default/tp-server has no address")?;
    let node = state.node(client.node_index)?.netns.clone();
    // The overlay route may trail the CNI ADD by a moment.
    let deadline = Instant::now() + READY_BOUND;
    loop {
        let ns = client.netns.clone();
        let target = SocketAddr::new(dst, 80);
        let out = tokio::task::spawn_blocking(move || {
            probe_from_netns(&ns, target, Proto::Tcp, Duration::from_millis(500))
        })
        .await
        .context("probe thread")?;
        if out.ok() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "default/tp-client cannot reach default/tp-server within {READY_BOUND:?}: {}",
                out.detail
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(PathSetup {
        kind: PathKind::Weft,
        src_ns: client.netns,
        dst_ns: server.netns,
        dst,
        node: Some((node, "ul0".into(), weft_model::node::VXLAN_DEVICE.into())),
    })
}

/// What the run made: removed by [`Cleanup::run`], or by `drop` if the run panicked.
#[derive(Debug, Default)]
struct Cleanup {
    lab: Option<LabName>,
    namespaces: Vec<String>,
}

impl Cleanup {
    /// Takes the lab down and deletes the namespaces; tries everything, then returns
    /// the first error.
    async fn run(&mut self) -> Result<()> {
        let lab = self.lab.take();
        let namespaces = std::mem::take(&mut self.namespaces);
        remove(lab, namespaces).await
    }
}

async fn remove(lab: Option<LabName>, namespaces: Vec<String>) -> Result<()> {
    let mut first_error = None;
    if let Some(lab) = lab
        && let Err(e) = topology::down(&lab, &Progress::quiet()).await
    {
        first_error = Some(e.context(format!("taking lab {lab} down")));
    }
    for ns in namespaces.iter().rev() {
        for pid in sys::netns_pids(ns).await {
            let _ = sys::terminate(&[pid], Duration::from_secs(1)).await;
        }
        if sys::netns_exists(ns)
            && let Err(e) = sys::ip(&["netns", "del", ns]).await
            && sys::netns_exists(ns)
        {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.lab.is_none() && self.namespaces.is_empty() {
            return;
        }
        let lab = self.lab.take();
        let namespaces = std::mem::take(&mut self.namespaces);
        // Not on the caller's runtime (we may be unwinding on one of its workers): a
        // thread with its own small runtime.
        let worker = std::thread::spawn(move || {
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => {
                    if let Err(e) = rt.block_on(remove(lab, namespaces)) {
                        eprintln!("error: cleaning up after the throughput bench: {e:#}");
                    }
                }
                Err(e) => eprintln!("error: no runtime to clean up after the throughput bench: {e}"),
            }
        });
        let _ = worker.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goodput_is_bits_per_second() {
        let g = Goodput {
            bytes: 1_250_000_000,
            seconds: 2.0,
        };
        assert!((g.gbits() - 5.0).abs() < 1e-9);
        assert_eq!(
            Goodput {
                bytes: 10,
                seconds: 0.0
            }
            .gbits(),
            0.0
        );
    }

    #[test]
    fn link_stats_parse() {
        let text =
            r#"[{"ifindex":1,"ifname":"eth0","mtu":1450,"stats64":{"rx":{"bytes":5},"tx":{"bytes":42}}}]"#;
        assert_eq!(parse_link_stats(text).unwrap(), (1450, 42));
        assert!(parse_link_stats("[]").is_err());
        assert!(parse_link_stats("not json").is_err());
    }

    fn result(path: PathKind, gbit: f64) -> PathResult {
        PathResult {
            path,
            bytes: 1,
            seconds: 1.0,
            gbit_per_sec: gbit,
            mtu: Some(1450),
            underlay_mtu: None,
            tunnel_tx_bytes: None,
        }
    }

    #[test]
    fn report_percentages_and_table() {
        let r = ThroughputReport {
            seconds: 5,
            streams: 1,
            write_bytes: WRITE_SIZE,
            lab: "tp1".into(),
            namespaces: vec![],
            paths: vec![
                result(PathKind::Weft, 4.0),
                result(PathKind::HandVxlan, 5.0),
                result(PathKind::BareVeth, 0.0),
            ],
        };
        assert_eq!(r.weft_percent_of(PathKind::HandVxlan), Some(80.0));
        assert_eq!(
            r.weft_percent_of(PathKind::BareVeth),
            None,
            "nothing to divide by"
        );
        let t = r.to_table();
        assert!(t.contains("80.0 %"), "{t}");
        assert!(
            t.contains("weft = 80.0 % of hand-made VXLAN, - of bare veth"),
            "{t}"
        );
        let j = r.to_json();
        assert_eq!(j["weftPercentOfHandVxlan"], 80.0);
        assert_eq!(j["paths"][1]["path"], "hand-vxlan");
    }

    #[test]
    fn transfer_on_loopback() {
        // Our own namespace, through its /proc path: no root needed to enter it.
        let me = PathBuf::from(format!("/proc/{}/ns/net", std::process::id()));
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let to = SocketAddr::from(([127, 0, 0, 1], port));
        match transfer(&me, &me, to, Duration::from_millis(200), 2) {
            Ok(g) => assert!(g.bytes > 0 && g.seconds > 0.0, "{g:?}"),
            // Entering a namespace (even our own) needs CAP_SYS_ADMIN.
            Err(e) if !sys::is_root() => eprintln!("skipped: {e:#}"),
            Err(e) => panic!("{e:#}"),
        }
    }
}
