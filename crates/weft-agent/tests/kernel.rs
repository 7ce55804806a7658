//! Kernel tests of the agent: the reconciler programming private network namespaces,
//! checked with `ip -j …`, and the whole data path between two "nodes".
//!
//! They need root and iproute2; without them each test prints a message and passes.
//! Every test creates its own uniquely named namespaces (`weftag-<pid>-<n>`) and a
//! guard that deletes them on drop, on success and on failure; every wait is bounded;
//! traffic only flows between namespaces the test made. The reconciler always runs on
//! a dedicated thread inside the namespace (`weft_cni::netns`), never on a tokio worker.
//!
//! Cross-node topology (`cross_node_path_isolation_and_restart`):
//!
//! ```text
//!  pod A 10.47.255.252 (VNI 1)                pod B 10.47.255.251 (VNI 1)
//!     │ veth (weft-cni)                          │ veth          pod C 10.47.255.249 (VNI 4)
//!  ┌──┴──────── node n1 ────────┐          ┌──────┴──── node n2 ─┴────────────┐
//!  │ table 10001, weft-vxlan    │ u1 ── u2 │ tables 10001 + 10004, weft-vxlan │
//!  └──────────── 192.0.2.1/24 ──┘ underlay └── 192.0.2.2/24 ──────────────────┘
//! ```

// Test helpers outside #[test] functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weft_agent::attachment::{Attachment, Attachments};
use weft_agent::kernel::{self, ReconcileReport};
use weft_agent::{Agent, AgentConfig, KernelState, desired};
use weft_cni::agent_proto::{AddRequest, AgentRequest};
use weft_cni::{AgentCallError, AgentClient};
use weft_model::ids::{MacAddr, Vni};
use weft_model::node::{
    LocalInterface, NextHop, NodeNetwork, NodeRoute, NodeState, VtepPeer, vn_table, vtep_mac,
};

const WAIT: Duration = Duration::from_secs(30);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn next_id() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
        && Command::new("ip").arg("-V").output().is_ok()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipping: needs root and iproute2 (creates network namespaces)");
            return;
        }
    };
}

/// Runs a command with a bound; returns (code, stdout, stderr).
fn run_bounded(mut cmd: Command) -> (i32, String, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("command {cmd:?} did not finish within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ip(args: &[&str]) -> String {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    let (code, out, err) = run_bounded(cmd);
    assert_eq!(code, 0, "ip {args:?} failed: {err}");
    out
}

fn ip_json(args: &[&str]) -> Vec<Value> {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    let out = ip(&full);
    let v: Value =
        serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out }).expect("ip -j output");
    v.as_array().cloned().unwrap_or_default()
}

fn sysctl(ns: &str, key: &str) -> String {
    ip(&["netns", "exec", ns, "cat", &format!("/proc/sys/{key}")])
        .trim()
        .to_string()
}

fn netns_path(name: &str) -> PathBuf {
    PathBuf::from(format!("/var/run/netns/{name}"))
}

/// Namespaces of one test; all deleted on drop.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn new() -> Namespaces {
        Namespaces(Vec::new())
    }

    fn add(&mut self) -> String {
        let name = format!("weftag-{}", next_id());
        ip(&["netns", "add", &name]);
        self.0.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        name
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

// ===== fixtures =====

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pod_iface(pod: &str, vni: u32, ip: &str) -> LocalInterface {
    LocalInterface {
        namespace: "default".into(),
        pod: pod.into(),
        pod_uid: format!("uid-{pod}"),
        interface: "eth0".into(),
        network: format!("net{vni}"),
        table: vn_table(Vni(vni)),
        vni: Vni(vni),
        ip: addr(ip),
        prefix_len: 12,
        gateway: Some(addr("10.47.255.254")),
        mac: MacAddr::derived_from(&format!("default/{pod}/eth0")),
        primary: true,
        floating_ips: Vec::new(),
    }
}

fn route(prefix: &str, next_hop: NextHop, vni: u32) -> NodeRoute {
    NodeRoute {
        prefix: prefix.parse().unwrap(),
        next_hop,
        network: format!("net{vni}"),
        reply_only: false,
        service_only: false,
    }
}

fn local(pod: &str) -> NextHop {
    NextHop::Local {
        interface: format!("default/{pod}/eth0"),
    }
}

fn remote(node: &str, vni: u32) -> NextHop {
    NextHop::Remote {
        node: node.into(),
        vni: Vni(vni),
    }
}

fn network(vni: u32, routes: Vec<NodeRoute>) -> NodeNetwork {
    NodeNetwork {
        fq_name: format!("net{vni}"),
        vni: Vni(vni),
        table: vn_table(Vni(vni)),
        gateway: Some(addr("10.47.255.254")),
        routes,
        outside: None,
        ip_fabric_forwarding: false,
        chain_guards: Vec::new(),
    }
}

fn peer(node: &str, underlay: &str) -> VtepPeer {
    VtepPeer {
        node: node.into(),
        underlay_ip: addr(underlay),
        vtep_mac: vtep_mac(node),
    }
}

/// Node n1: pod A (VNI 1); B is on n2.
fn node1_state() -> NodeState {
    NodeState {
        node: "n1".into(),
        revision: 10,
        underlay_ip: Some(addr("192.0.2.1")),
        vtep_mac: vtep_mac("n1"),
        peers: vec![peer("n2", "192.0.2.2")],
        networks: vec![network(
            1,
            vec![
                route("10.47.255.251/32", remote("n2", 1), 1),
                route("10.47.255.252/32", local("a"), 1),
            ],
        )],
        interfaces: vec![pod_iface("a", 1, "10.47.255.252")],
        services: vec![],
        service_routes: vec![],
        warnings: vec![],
        policies: vec![],
    }
}

/// Node n2: pod B (VNI 1) and pod C (VNI 4, isolated); A is on n1.
fn node2_state() -> NodeState {
    NodeState {
        node: "n2".into(),
        revision: 10,
        underlay_ip: Some(addr("192.0.2.2")),
        vtep_mac: vtep_mac("n2"),
        peers: vec![peer("n1", "192.0.2.1")],
        networks: vec![
            network(
                1,
                vec![
                    route("10.47.255.251/32", local("b"), 1),
                    route("10.47.255.252/32", remote("n1", 1), 1),
                ],
            ),
            network(4, vec![route("10.47.255.249/32", local("c"), 4)]),
        ],
        interfaces: vec![
            pod_iface("b", 1, "10.47.255.251"),
            pod_iface("c", 4, "10.47.255.249"),
        ],
        services: vec![],
        service_routes: vec![],
        warnings: vec![],
        policies: vec![],
    }
}

fn attachments(pods: &[(&str, &str)]) -> Attachments {
    pods.iter()
        .map(|(pod, host)| {
            (
                format!("default/{pod}/eth0"),
                Attachment {
                    container_id: format!("cid-{pod}"),
                    if_name: "eth0".into(),
                    host_if_name: (*host).into(),
                },
            )
        })
        .collect()
}

/// Runs one reconcile pass inside namespace `ns`.
fn reconcile_in(ns: &str, want: &KernelState) -> ReconcileReport {
    let want = want.clone();
    weft_cni::with_netlink_in_netns(
        netns_path(ns),
        |h| async move { kernel::reconcile(&h, &want).await },
    )
    .expect("enter namespace")
    .expect("reconcile")
}

fn assert_clean(report: &ReconcileReport) {
    let failures: Vec<String> = report
        .failures
        .iter()
        .map(|f| format!("{}: {}", f.op, f.error))
        .collect();
    assert!(failures.is_empty(), "failed ops: {failures:#?}");
}

/// A host-side veth standing in for a pod's (the test does not need the pod end).
fn fake_pod_veth(ns: &str, host: &str) {
    ip(&[
        "-n",
        ns,
        "link",
        "add",
        host,
        "type",
        "veth",
        "peer",
        "name",
        &format!("{host}p"),
    ]);
    ip(&["-n", ns, "link", "set", host, "up"]);
}

fn rules(ns: &str) -> Vec<Value> {
    ip_json(&["-n", ns, "rule", "show"])
}

fn routes(ns: &str) -> Vec<Value> {
    ip_json(&["-n", ns, "route", "show", "table", "all"])
}

fn has_rule(rules: &[Value], table: &str, iif: &str, extra: &[(&str, Value)]) -> bool {
    rules.iter().any(|r| {
        r["priority"] == 1000
            && r["table"] == table
            && r["iif"] == iif
            && extra.iter().all(|(k, v)| r[*k] == *v)
    })
}

fn routes_in(routes: &[Value], table: &str) -> Vec<Value> {
    routes.iter().filter(|r| r["table"] == table).cloned().collect()
}

// ===== programming one namespace =====

#[test]
fn programs_a_node_state_and_converges() {
    require_root!();
    let mut nss = Namespaces::new();
    let ns = nss.add();
    fake_pod_veth(&ns, "weftb");
    fake_pod_veth(&ns, "weftc");
    let want = desired(&node2_state(), &attachments(&[("b", "weftb"), ("c", "weftc")]));

    let first = reconcile_in(&ns, &want);
    assert_clean(&first);
    assert!(!first.ops.is_empty());

    // Links.
    let vx = &ip_json(&["-n", &ns, "-d", "link", "show", "weft-vxlan"])[0];
    assert_eq!(vx["linkinfo"]["info_kind"], "vxlan");
    let data = &vx["linkinfo"]["info_data"];
    assert_eq!(data["external"], true, "{data}");
    assert_eq!(data["port"], 4789);
    assert_eq!(data["learning"], false);
    assert_eq!(data["local"], "192.0.2.2");
    assert_eq!(vx["address"], vtep_mac("n2").to_string());
    assert_eq!(vx["mtu"], 1450);
    assert!(vx["flags"].as_array().unwrap().contains(&json!("UP")));
    let gw = &ip_json(&["-n", &ns, "-d", "addr", "show", "weft-gw"])[0];
    // A dummy, or an empty bridge on kernels without the dummy driver (this lab's).
    assert!(
        gw["linkinfo"]["info_kind"] == "dummy" || gw["linkinfo"]["info_kind"] == "bridge",
        "{gw}"
    );
    assert!(gw["flags"].as_array().unwrap().contains(&json!("UP")));
    let gw_addrs: Vec<String> = gw["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == "inet")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    assert_eq!(gw_addrs, vec!["10.47.255.254/32"]);

    // Rules.
    let r = rules(&ns);
    assert!(
        has_rule(&r, "10001", "weft-vxlan", &[("tun_id", json!(1))]),
        "{r:#?}"
    );
    assert!(
        has_rule(&r, "10004", "weft-vxlan", &[("tun_id", json!(4))]),
        "{r:#?}"
    );
    assert!(has_rule(&r, "10001", "weftb", &[]), "{r:#?}");
    assert!(has_rule(&r, "10004", "weftc", &[]), "{r:#?}");
    assert!(
        has_rule(&r, "10001", "lo", &[("dst", json!("10.47.255.251"))]),
        "{r:#?}"
    );
    assert!(
        has_rule(&r, "10004", "lo", &[("dst", json!("10.47.255.249"))]),
        "{r:#?}"
    );
    assert_eq!(r.iter().filter(|r| r["priority"] == 1000).count(), 6, "{r:#?}");

    // Routes.
    let all = routes(&ns);
    let t1 = routes_in(&all, "10001");
    assert_eq!(t1.len(), 3, "{t1:#?}");
    assert!(
        t1.iter()
            .any(|r| r["type"] == "unreachable" && r["dst"] == "default")
    );
    assert!(
        t1.iter()
            .any(|r| r["dst"] == "10.47.255.251" && r["dev"] == "weftb" && r["scope"] == "link")
    );
    let enc = t1.iter().find(|r| r["encap"] == "ip").expect("an encap route");
    assert_eq!(enc["gateway"], "169.254.2.1");
    assert_eq!(enc["dev"], "weft-vxlan");
    assert_eq!(enc["id"], 1);
    assert!(enc["flags"].as_array().unwrap().contains(&json!("onlink")));
    // `ip -j` prints the route's and the tunnel's `dst` under one key: check the text.
    let text = ip(&["-n", &ns, "route", "show", "table", "10001", "10.47.255.252/32"]);
    assert!(
        text.contains("encap ip id 1 src 0.0.0.0 dst 192.0.2.1")
            && text.contains("via 169.254.2.1 dev weft-vxlan")
            && text.contains("onlink"),
        "{text}"
    );
    let t4 = routes_in(&all, "10004");
    assert_eq!(t4.len(), 2, "{t4:#?}");
    assert!(
        t4.iter()
            .any(|r| r["dst"] == "10.47.255.249" && r["dev"] == "weftc")
    );

    // Neighbour and sysctls.
    let neigh = ip_json(&["-n", &ns, "neigh", "show", "dev", "weft-vxlan"]);
    assert_eq!(neigh.len(), 1, "{neigh:#?}");
    assert_eq!(neigh[0]["dst"], "169.254.2.1");
    assert_eq!(neigh[0]["lladdr"], vtep_mac("n1").to_string());
    assert_eq!(neigh[0]["state"], json!(["PERMANENT"]));
    assert_eq!(sysctl(&ns, "net/ipv4/ip_forward"), "1");
    assert_eq!(sysctl(&ns, "net/ipv4/conf/all/rp_filter"), "0");
    assert_eq!(sysctl(&ns, "net/ipv4/conf/default/rp_filter"), "0");
    assert_eq!(sysctl(&ns, "net/ipv4/conf/weft-vxlan/rp_filter"), "0");

    // Idempotence: a second pass finds nothing to do (and so writes nothing).
    let second = reconcile_in(&ns, &want);
    assert!(second.ops.is_empty(), "second pass wanted {:#?}", second.ops);

    // Drift repair: break things behind the agent's back; one pass fixes exactly them.
    ip(&[
        "-n", &ns, "rule", "del", "pref", "1000", "iif", "weftb", "lookup", "10001",
    ]);
    ip(&["-n", &ns, "route", "del", "10.47.255.252/32", "table", "10001"]);
    ip(&["-n", &ns, "neigh", "del", "169.254.2.1", "dev", "weft-vxlan"]);
    ip(&["-n", &ns, "link", "set", "weft-gw", "down"]);
    ip(&[
        "-n",
        &ns,
        "route",
        "add",
        "10.9.9.9/32",
        "dev",
        "weftb",
        "table",
        "10001",
    ]);
    ip(&[
        "netns",
        "exec",
        &ns,
        "sh",
        "-c",
        "echo 1 > /proc/sys/net/ipv4/conf/all/rp_filter",
    ]);
    let repair = reconcile_in(&ns, &want);
    assert_clean(&repair);
    let text: Vec<String> = repair.ops.iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 6, "{text:#?}");
    assert!(
        text.contains(&"ip route del 10.9.9.9/32 dev weftb scope link table 10001".to_string()),
        "{text:#?}"
    );
    assert!(reconcile_in(&ns, &want).ops.is_empty());
    assert_eq!(sysctl(&ns, "net/ipv4/conf/all/rp_filter"), "0");
    assert!(has_rule(&rules(&ns), "10001", "weftb", &[]));
}

#[test]
fn foreign_state_is_never_touched() {
    require_root!();
    let mut nss = Namespaces::new();
    let ns = nss.add();
    fake_pod_veth(&ns, "weftb");
    // Things weft does not own, some of them close to what it does own.
    ip(&["-n", &ns, "link", "add", "foreign0", "type", "bridge"]);
    ip(&["-n", &ns, "link", "set", "foreign0", "up"]);
    ip(&["-n", &ns, "addr", "add", "198.51.100.1/24", "dev", "foreign0"]);
    ip(&["-n", &ns, "route", "add", "203.0.113.0/24", "via", "198.51.100.2"]);
    ip(&[
        "-n",
        &ns,
        "route",
        "add",
        "203.0.113.0/24",
        "dev",
        "foreign0",
        "table",
        "100",
    ]);
    ip(&[
        "-n",
        &ns,
        "route",
        "add",
        "203.0.113.0/24",
        "dev",
        "foreign0",
        "table",
        "9999",
    ]);
    ip(&[
        "-n", &ns, "rule", "add", "pref", "1000", "iif", "foreign0", "lookup", "100",
    ]);
    ip(&[
        "-n", &ns, "rule", "add", "pref", "2000", "iif", "foreign0", "lookup", "10001",
    ]);
    ip(&[
        "-n",
        &ns,
        "neigh",
        "add",
        "198.51.100.9",
        "lladdr",
        "02:00:00:00:00:09",
        "dev",
        "foreign0",
        "nud",
        "permanent",
    ]);
    let before_rules = rules(&ns).len();

    let state = node2_state();
    let want = desired(&state, &attachments(&[("b", "weftb")]));
    assert_clean(&reconcile_in(&ns, &want));
    assert!(reconcile_in(&ns, &want).ops.is_empty());
    // Now remove everything weft programmed for pods and networks.
    let mut empty = state.clone();
    empty.networks.clear();
    empty.interfaces.clear();
    empty.peers.clear();
    let report = reconcile_in(&ns, &desired(&empty, &Attachments::new()));
    assert_clean(&report);

    let r = rules(&ns);
    assert!(
        r.iter().any(|r| r["priority"] == 1000 && r["table"] == "100"),
        "{r:#?}"
    );
    assert!(
        r.iter().any(|r| r["priority"] == 2000 && r["table"] == "10001"),
        "{r:#?}"
    );
    assert_eq!(r.len(), before_rules, "{r:#?}");
    let all = routes(&ns);
    assert!(
        all.iter()
            .any(|r| r["dst"] == "203.0.113.0/24" && r.get("table").is_none())
    );
    assert!(
        all.iter()
            .any(|r| r["dst"] == "203.0.113.0/24" && r["table"] == "100")
    );
    assert!(
        all.iter()
            .any(|r| r["dst"] == "203.0.113.0/24" && r["table"] == "9999")
    );
    assert!(routes_in(&all, "10001").is_empty() && routes_in(&all, "10004").is_empty());
    let links: Vec<String> = ip_json(&["-n", &ns, "link", "show"])
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect();
    for l in ["foreign0", "weftb", "weftbp", "weft-vxlan", "weft-gw"] {
        assert!(links.contains(&l.to_string()), "{l} missing from {links:?}");
    }
    let neigh = ip_json(&["-n", &ns, "neigh", "show", "dev", "foreign0"]);
    assert_eq!(neigh.len(), 1);
    assert!(ip_json(&["-n", &ns, "neigh", "show", "dev", "weft-vxlan"]).is_empty());
}

#[test]
fn removing_a_network_cleans_its_rules_and_routes() {
    require_root!();
    let mut nss = Namespaces::new();
    let ns = nss.add();
    fake_pod_veth(&ns, "weftb");
    fake_pod_veth(&ns, "weftc");
    let state = node2_state();
    assert_clean(&reconcile_in(
        &ns,
        &desired(&state, &attachments(&[("b", "weftb"), ("c", "weftc")])),
    ));
    assert_eq!(routes_in(&routes(&ns), "10004").len(), 2);

    let mut without = state.clone();
    without.networks.retain(|n| n.vni != Vni(4));
    without.interfaces.retain(|i| i.vni != Vni(4));
    let want = desired(&without, &attachments(&[("b", "weftb"), ("c", "weftc")]));
    let report = reconcile_in(&ns, &want);
    assert_clean(&report);
    assert!(
        report.ops.iter().all(|op| matches!(
            op,
            weft_agent::KernelOp::DelRule(_) | weft_agent::KernelOp::DelRoute(_)
        )),
        "{:#?}",
        report.ops
    );

    let r = rules(&ns);
    assert!(!r.iter().any(|r| r["table"] == "10004"), "{r:#?}");
    assert!(has_rule(&r, "10001", "weftb", &[]));
    let all = routes(&ns);
    assert!(routes_in(&all, "10004").is_empty(), "{all:#?}");
    assert_eq!(routes_in(&all, "10001").len(), 3);
    assert!(reconcile_in(&ns, &want).ops.is_empty());
}

// ===== the whole agent between two nodes =====

/// One node's agent: its CNI socket and reconciler tasks on the test's runtime.
struct NodeAgent {
    agent: Agent,
    socket: PathBuf,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl NodeAgent {
    fn start(rt: &tokio::runtime::Runtime, node: &str, ns: &str, dir: &Path) -> NodeAgent {
        let agent = Agent::open(AgentConfig {
            node: node.into(),
            state_dir: dir.join("state"),
            netns: Some(netns_path(ns)),
            resync: Duration::from_secs(30),
            attach_wait: Duration::from_secs(10),
        })
        .unwrap();
        let socket = dir.join("agent.sock");
        let server = rt.block_on(agent.serve_cni(&socket)).unwrap();
        let reconciler = rt.spawn(agent.clone().run_reconciler());
        NodeAgent {
            agent,
            socket,
            tasks: vec![server, reconciler],
        }
    }

    fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Runs the real CNI plugin (`weft_cni::plugin::run`, what the `weft-cni` binary
/// does) inside node namespace `node_ns`, as the runtime would; returns the result.
fn cni(command: &str, node_ns: &str, socket: &Path, cid: &str, pod_ns: &str, pod: &str) -> Value {
    let env = [
        ("CNI_COMMAND".to_string(), command.to_string()),
        ("CNI_CONTAINERID".to_string(), cid.to_string()),
        ("CNI_NETNS".to_string(), netns_path(pod_ns).display().to_string()),
        ("CNI_IFNAME".to_string(), "eth0".to_string()),
        ("CNI_PATH".to_string(), "/opt/cni/bin".to_string()),
        (
            "CNI_ARGS".to_string(),
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};K8S_POD_UID=uid-{pod}"),
        ),
    ];
    let conf = json!({
        "cniVersion": "1.1.0",
        "name": "weft",
        "type": "weft",
        "agentSocket": socket,
        "addTimeoutSeconds": 10,
    })
    .to_string();
    let outcome = weft_cni::run_in_netns(netns_path(node_ns), move || {
        let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        weft_cni::plugin::run(lookup, conf.as_bytes())
    })
    .unwrap();
    assert_eq!(
        outcome.exit_code, 0,
        "CNI {command} {pod} failed: {}",
        outcome.stdout
    );
    if outcome.stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&outcome.stdout).unwrap()
    }
}

/// A listener inside `ns` on `ip`; it accepts one connection, answers "pong" to "ping"
/// and reports the peer.
fn listen(ns: &str, ip: &str) -> (SocketAddr, std::thread::JoinHandle<std::io::Result<SocketAddr>>) {
    let bind = format!("{ip}:0");
    let listener = weft_cni::run_in_netns(netns_path(ns), move || TcpListener::bind(bind))
        .unwrap()
        .unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let server = std::thread::spawn(move || -> std::io::Result<SocketAddr> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match listener.accept() {
                Ok((mut s, peer)) => {
                    s.set_nonblocking(false)?;
                    s.set_read_timeout(Some(Duration::from_secs(10)))?;
                    let mut buf = [0u8; 4];
                    s.read_exact(&mut buf)?;
                    s.write_all(b"pong")?;
                    return Ok(peer);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    });
    (addr, server)
}

/// Connects from inside `ns` and exchanges ping/pong.
fn ping_pong(ns: &str, to: SocketAddr) -> std::io::Result<()> {
    let mut stream = weft_cni::run_in_netns(netns_path(ns), move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(10))
    })
    .unwrap()?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"ping")?;
    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply)?;
    assert_eq!(&reply, b"pong");
    Ok(())
}

/// Connects from inside `ns`; returns the error and how long it took to get it.
fn connect_error(ns: &str, to: SocketAddr) -> (std::io::Error, Duration) {
    let started = Instant::now();
    let result = weft_cni::run_in_netns(netns_path(ns), move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(5))
    })
    .unwrap();
    match result {
        Ok(_) => panic!("{ns} reached {to}, which must be isolated"),
        Err(e) => (e, started.elapsed()),
    }
}

fn assert_fails_fast(ns: &str, to: SocketAddr, what: &str) {
    let (err, took) = connect_error(ns, to);
    eprintln!("{what}: {err} after {took:?}");
    assert!(
        took < Duration::from_secs(1) && err.kind() != std::io::ErrorKind::TimedOut,
        "{what}: expected a fast unreachable/refused error, got {err} ({:?}) after {took:?}",
        err.kind()
    );
}

#[test]
fn cross_node_path_isolation_and_restart() {
    require_root!();
    let mut nss = Namespaces::new();
    let (n1, n2) = (nss.add(), nss.add());
    let (pa, pb, pc) = (nss.add(), nss.add(), nss.add());
    // Underlay: one veth between the two node namespaces.
    ip(&[
        "-n", &n1, "link", "add", "u1", "type", "veth", "peer", "name", "u2", "netns", &n2,
    ]);
    ip(&["-n", &n1, "addr", "add", "192.0.2.1/24", "dev", "u1"]);
    ip(&["-n", &n2, "addr", "add", "192.0.2.2/24", "dev", "u2"]);
    ip(&["-n", &n1, "link", "set", "u1", "up"]);
    ip(&["-n", &n2, "link", "set", "u2", "up"]);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (dir1, dir2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a1 = NodeAgent::start(&rt, "n1", &n1, dir1.path());
    let a2 = NodeAgent::start(&rt, "n2", &n2, dir2.path());

    // Before the controller's state names pod A: "try again later", over the socket.
    let client = AgentClient::new(&a1.socket);
    let add_a = AddRequest {
        container_id: "early".into(),
        netns: netns_path(&pa).display().to_string(),
        if_name: "eth0".into(),
        pod_namespace: "default".into(),
        pod_name: "a".into(),
        pod_uid: String::new(),
    };
    match rt.block_on(client.add(add_a.clone())) {
        Err(AgentCallError::Agent(e)) => {
            assert_eq!(e.code, 11);
            assert_eq!(e.msg, "pod default/a has no interface on node n1 yet");
        }
        other => panic!("expected code 11, got {other:?}"),
    }
    assert!(
        rt.block_on(client.status()).is_err(),
        "no state yet: status must fail"
    );

    rt.block_on(a1.agent.set_node_state(node1_state())).unwrap();
    rt.block_on(a2.agent.set_node_state(node2_state())).unwrap();
    rt.block_on(client.status()).unwrap();
    let reply = rt.block_on(client.add(add_a)).unwrap();
    assert_eq!(reply.interfaces[0].address.to_string(), "10.47.255.252/32");
    assert_eq!(reply.interfaces[0].gateway, Some(addr("10.47.255.254")));
    assert_eq!(reply.interfaces[0].mtu, Some(1450));

    // The runtime's CNI ADD for each pod, through the real plugin.
    let (cid_a, cid_b, cid_c) = (
        format!("ca{}", next_id()),
        format!("cb{}", next_id()),
        format!("cc{}", next_id()),
    );
    let result = cni("ADD", &n1, &a1.socket, &cid_a, &pa, "a");
    assert_eq!(result["ips"][0]["address"], "10.47.255.252/32");
    cni("ADD", &n2, &a2.socket, &cid_b, &pb, "b");
    cni("ADD", &n2, &a2.socket, &cid_c, &pc, "c");
    let host_a = weft_cni::link::host_if_name(&cid_a, "eth0");
    let host_c = weft_cni::link::host_if_name(&cid_c, "eth0");
    assert!(
        has_rule(&rules(&n1), "10001", &host_a, &[]),
        "attached pod A has its rule"
    );
    assert_eq!(a1.agent.attachments()["default/a/eth0"].host_if_name, host_a);

    // A -> B across the overlay: encapsulated on n1, decapsulated on n2 into table
    // 10001 by `iif weft-vxlan tun_id 1` (the only table with a route to B).
    let (to_b, server_b) = listen(&pb, "10.47.255.251");
    ping_pong(&pa, to_b).expect("pod A reaches pod B on the other node");
    let peer = server_b.join().unwrap().unwrap();
    assert_eq!(peer.ip(), addr("10.47.255.252"), "B sees A's own address");
    for ns in [&n1, &n2] {
        let vx = &ip_json(&["-n", ns, "-s", "link", "show", "weft-vxlan"])[0];
        let (rx, tx) = (&vx["stats64"]["rx"]["packets"], &vx["stats64"]["tx"]["packets"]);
        assert!(
            rx.as_u64().unwrap_or(0) > 0 && tx.as_u64().unwrap_or(0) > 0,
            "traffic went through weft-vxlan in {ns}: rx {rx} tx {tx}"
        );
    }

    // A -> C (other VNI, other node) and B -> C (other VNI, same node): no route in
    // the VNI 1 tables, so `unreachable default` answers at once.
    let (to_c, _server_c) = listen(&pc, "10.47.255.249");
    assert_fails_fast(&pa, to_c, "A -> C");
    assert_fails_fast(&pb, to_c, "B -> C");

    // Restart node 1's agent on the same state dir and kernel: nothing to change.
    a1.stop();
    let restarted = Agent::open(AgentConfig {
        node: "n1".into(),
        state_dir: dir1.path().join("state"),
        netns: Some(netns_path(&n1)),
        resync: Duration::from_secs(30),
        attach_wait: Duration::from_secs(10),
    })
    .unwrap();
    assert_eq!(restarted.revision(), 10, "state reloaded from disk");
    assert_eq!(restarted.attachments().len(), 1, "attachment reloaded from disk");
    assert!(rt.block_on(restarted.handle_cni(AgentRequest::Status)).is_ok());
    let report = rt.block_on(restarted.reconcile_now()).unwrap();
    assert!(
        report.ops.is_empty(),
        "restart changed the kernel: {:#?}",
        report.ops
    );
    let (to_b, server_b) = listen(&pb, "10.47.255.251");
    ping_pong(&pa, to_b).expect("pod A still reaches pod B after the restart");
    server_b.join().unwrap().unwrap();

    // CNI DEL of pod C removes its rule and route on n2.
    cni("DEL", &n2, &a2.socket, &cid_c, &pc, "c");
    let r = rules(&n2);
    assert!(!r.iter().any(|r| r["iif"] == host_c.as_str()), "{r:#?}");
    assert!(
        !routes_in(&routes(&n2), "10004")
            .iter()
            .any(|r| r["dst"] == "10.47.255.249"),
        "C's route is gone"
    );
    a2.stop();
    drop(rt);
}
