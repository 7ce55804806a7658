//! End-to-end tests of service load balancing in the lab (issue 4): ClusterIP from pods
//! on both nodes spread over backends on both nodes, UDP, multiple ports with a named
//! targetPort, ClientIP affinity, fast failure without endpoints, endpoint churn under a
//! long-lived connection, NodePort and external IPs from another node, type
//! LoadBalancer, and isolation.
//!
//! Like `lab.rs`: root needed (skipped otherwise), the `weft` and `weft-cni` binaries
//! of this workspace (built by `cargo nextest run --workspace`), one lab per test named
//! `s<pid % 10000><letter>`, taken down by a guard whatever happens, bounded waits. The
//! echo servers answer a `weft-whoami` line with their pod's `namespace/name`, which is
//! how a test sees which backend a connection reached.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{Lab, require_root};

/// Prefix of this file's lab names.
const LAB_PREFIX: char = 's';

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use weft_lab::echo::{ProbeKind, Proto, connect_from_netns, probe_from_netns, whoami_from_netns, whoami_on};

/// Bound on a state change reaching the nodes' kernels.
const CONVERGE: Duration = Duration::from_secs(20);
/// Bound on one probe step.
const STEP: Duration = Duration::from_secs(2);

/// Asks `count` times who answers at `target` from `netns`; answers counted by pod,
/// failures under `ERR <kind>`.
fn tally(netns: &str, target: SocketAddr, proto: Proto, count: usize) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for _ in 0..count {
        let key = match whoami_from_netns(netns, target, proto, STEP) {
            Ok(who) => who,
            Err(o) => format!("ERR {:?}: {}", o.kind, o.detail),
        };
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

/// Waits (bounded by [`CONVERGE`]) until `ok` holds for a tally of 10 attempts.
fn eventually(
    what: &str,
    netns: &str,
    target: SocketAddr,
    proto: Proto,
    ok: impl Fn(&BTreeMap<String, usize>) -> bool,
) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let t = tally(netns, target, proto, 10);
        if ok(&t) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {t:?} after {CONVERGE:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn all_answered(t: &BTreeMap<String, usize>) -> bool {
    !t.keys().any(|k| k.starts_with("ERR"))
}

fn pod(ns: &str, name: &str, node: u8, app: &str, ports: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}}}}}\nspec:\n  nodeName: node-{node}\n  containers: [{{name: c, image: weft/echo, ports: [{ports}]}}]\n---\n"
    )
}

const WEB_PORTS: &str = "{name: http, containerPort: 8080}, {name: dns, containerPort: 5353, protocol: UDP}";

#[test]
fn cluster_ip_spreads_over_nodes_with_udp_named_ports_affinity_and_fast_rejects() {
    require_root!();
    let mut m = String::new();
    m += &pod("default", "client-1", 1, "client", "{containerPort: 80}");
    m += &pod("default", "client-2", 2, "client", "{containerPort: 80}");
    m += &pod("default", "web-1", 1, "web", WEB_PORTS);
    m += &pod("default", "web-2", 2, "web", WEB_PORTS);
    // The same port names on other numbers: the named targetPort resolves per pod.
    m += &pod(
        "default",
        "web-3",
        2,
        "web",
        "{name: http, containerPort: 9090}, {name: dns, containerPort: 5300, protocol: UDP}",
    );
    m += "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec:\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: http}\n  - {name: dns, port: 53, protocol: UDP, targetPort: dns}\n---\n";
    m += "apiVersion: v1\nkind: Service\nmetadata: {name: sticky, namespace: default}\nspec:\n  selector: {app: web}\n  sessionAffinity: ClientIP\n  ports: [{port: 80, targetPort: http}]\n---\n";
    m += "apiVersion: v1\nkind: Service\nmetadata: {name: empty, namespace: default}\nspec:\n  selector: {app: nobody}\n  ports:\n  - {name: tcp, port: 80}\n  - {name: udp, port: 53, protocol: UDP}\n";
    let lab = Lab::up_text('a', &m);
    let web = lab.vip("default/web");
    let tcp80 = SocketAddr::new(web, 80);
    let udp53 = SocketAddr::new(web, 53);

    // From pods on both nodes: every connection answered, spread over the backends, and
    // together the two clients reach backends on both nodes (web-1 on node-1, web-2 and
    // web-3 on node-2; web-3 only through its own named port number).
    let mut seen = BTreeMap::new();
    for client in ["default/client-1", "default/client-2"] {
        let ns = lab.pod_netns(client);
        eventually(
            &format!("{client} -> {tcp80}"),
            &ns,
            tcp80,
            Proto::Tcp,
            all_answered,
        );
        let t = tally(&ns, tcp80, Proto::Tcp, 30);
        assert!(all_answered(&t), "{client} -> {tcp80}: {t:?}");
        assert!(t.len() >= 2, "{client}: 30 connections reached only {t:?}");
        for (k, v) in t {
            *seen.entry(k).or_insert(0) += v;
        }
    }
    for backend in ["default/web-1", "default/web-2", "default/web-3"] {
        assert!(seen.contains_key(backend), "{backend} never answered: {seen:?}");
    }

    // UDP, through the named UDP port.
    let ns1 = lab.pod_netns("default/client-1");
    let t = tally(&ns1, udp53, Proto::Udp, 20);
    assert!(all_answered(&t), "udp {udp53}: {t:?}");
    assert!(t.len() >= 2, "udp spread: {t:?}");

    // ClientIP affinity: one client, one backend, every time.
    let sticky = SocketAddr::new(lab.vip("default/sticky"), 80);
    for client in ["default/client-1", "default/client-2"] {
        let ns = lab.pod_netns(client);
        let t = tally(&ns, sticky, Proto::Tcp, 30);
        assert!(all_answered(&t) && t.len() == 1, "{client} -> sticky: {t:?}");
    }

    // No endpoints: refused at once (TCP reset / ICMP port unreachable), not a timeout.
    let empty = lab.vip("default/empty");
    for (port, proto) in [(80, Proto::Tcp), (53, Proto::Udp)] {
        let start = Instant::now();
        let o = probe_from_netns(&ns1, SocketAddr::new(empty, port), proto, Duration::from_secs(3));
        let took = start.elapsed();
        assert_eq!(o.kind, ProbeKind::Refused, "{port}/{proto:?}: {o:?}");
        assert!(took < Duration::from_secs(1), "{port}/{proto:?} took {took:?}");
    }
    // A port the service does not have: no translation, the table fails fast too.
    let o = probe_from_netns(&ns1, SocketAddr::new(web, 81), Proto::Tcp, Duration::from_secs(3));
    assert!(!o.ok(), "{o:?}");
}

#[test]
fn endpoint_churn_keeps_established_connections() {
    require_root!();
    let mut m = String::new();
    m += &pod("default", "client", 1, "client", "{containerPort: 80}");
    m += &pod("default", "b", 2, "web", "{containerPort: 80}");
    m += "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n";
    let lab = Lab::up_text('b', &m);
    let vip = SocketAddr::new(lab.vip("default/web"), 80);
    let ns = lab.pod_netns("default/client");
    eventually("client -> web", &ns, vip, Proto::Tcp, |t| {
        t.get("default/b") == Some(&10)
    });

    // A long-lived connection, to b (the only backend).
    let mut conn = connect_from_netns(&ns, vip, STEP).unwrap();
    assert_eq!(whoami_on(&mut conn, STEP).unwrap(), "default/b");

    // Another backend comes: new connections spread, the open one stays on b.
    let c = pod("default", "c", 1, "web", "{containerPort: 80}");
    lab.apply("c.yaml", &c);
    eventually("c joins", &ns, vip, Proto::Tcp, |t| {
        all_answered(t) && t.contains_key("default/c")
    });
    assert_eq!(whoami_on(&mut conn, STEP).unwrap(), "default/b", "after adding c");

    // It goes again: new connections only reach b, the open one still works.
    lab.delete("c.yaml", &c);
    eventually("c leaves", &ns, vip, Proto::Tcp, |t| {
        t.get("default/b") == Some(&10)
    });
    assert_eq!(
        whoami_on(&mut conn, STEP).unwrap(),
        "default/b",
        "after removing c"
    );
    // And through an agent restart (the table is compared, not rewritten).
    lab.ok(&["stop", "agent", "--node", "node-1"]);
    lab.ok(&["start", "agent", "--node", "node-1"]);
    assert_eq!(
        whoami_on(&mut conn, STEP).unwrap(),
        "default/b",
        "after an agent restart"
    );
}

#[test]
fn node_port_external_ip_and_load_balancer_from_another_node() {
    require_root!();
    let mut m = String::new();
    m += &pod("default", "web-1", 1, "web", "{containerPort: 8080}");
    m += &pod("default", "web-2", 2, "web", "{containerPort: 8080}");
    m += &pod("default", "client", 2, "client", "{containerPort: 80}");
    m += "apiVersion: v1\nkind: Service\nmetadata: {name: np, namespace: default}\nspec:\n  type: NodePort\n  selector: {app: web}\n  externalIPs: [198.51.100.10]\n  ports:\n  - {name: tcp, port: 80, targetPort: 8080, nodePort: 30080}\n  - {name: udp, port: 80, protocol: UDP, targetPort: 8080, nodePort: 30080}\n---\n";
    m += "apiVersion: v1\nkind: Service\nmetadata: {name: lb, namespace: default}\nspec:\n  type: LoadBalancer\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n";
    let lab = Lab::up_text('c', &m);
    let (n1, ip1) = lab.node(1);
    let (n2, ip2) = lab.node(2);

    // NodePort on each node's underlay address, from the other node: both backends
    // answer (one local to the receiving node, one through the tunnel with SNAT).
    for (from, to) in [(&n2, ip1), (&n1, ip2)] {
        let target = SocketAddr::new(to, 30080);
        eventually(
            &format!("{from} -> {target}"),
            from,
            target,
            Proto::Tcp,
            all_answered,
        );
        let t = tally(from, target, Proto::Tcp, 20);
        assert!(all_answered(&t), "{from} -> {target}: {t:?}");
        assert_eq!(t.len(), 2, "{from} -> {target}: {t:?}");
        let t = tally(from, target, Proto::Udp, 10);
        assert!(all_answered(&t), "udp {from} -> {target}: {t:?}");
    }

    // The external IP, routed to node-1 by the underlay (here: a route on node-2).
    let out = Command::new("ip")
        .args([
            "-n",
            &n2,
            "route",
            "replace",
            "198.51.100.10/32",
            "via",
            &ip1.to_string(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let ext = SocketAddr::new("198.51.100.10".parse().unwrap(), 80);
    let t = eventually("external IP", &n2, ext, Proto::Tcp, all_answered);
    assert!(!t.is_empty());
    // A pod of the cluster reaches the external IP too, translated on its own node as
    // for the ClusterIP (both backends, one of them across the tunnel).
    let client = lab.pod_netns("default/client");
    let t = eventually("pod -> external IP", &client, ext, Proto::Tcp, |t| {
        all_answered(t) && t.len() == 2
    });
    assert!(
        t.contains_key("default/web-1") && t.contains_key("default/web-2"),
        "{t:?}"
    );

    // LoadBalancer: a NodePort, and `weft get services` says so.
    let table = lab.get_services(false);
    let lb_line = table
        .lines()
        .find(|l| l.contains(" lb "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(lb_line.contains("behaves as NodePort"), "{table}");
    let lb_port = lab.service("default/lb")["ports"][0]["node_port"]
        .as_u64()
        .unwrap() as u16;
    let target = SocketAddr::new(ip1, lb_port);
    eventually("LoadBalancer as NodePort", &n2, target, Proto::Tcp, all_answered);
}

#[test]
fn isolated_namespace_services_follow_tf_isolation() {
    require_root!();
    let mut m = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: iso\n  annotations: {opencontrail.org/isolation: \"true\"}\n---\n",
    );
    m += &pod("iso", "i-client", 1, "client", "{containerPort: 80}");
    m += &pod("iso", "i-db", 2, "db", "{containerPort: 80}");
    m += &pod("default", "d-client", 2, "client", "{containerPort: 80}");
    m += &pod("default", "d-web", 1, "web", "{containerPort: 80}");
    m += "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: iso}\nspec:\n  selector: {app: db}\n  ports: [{port: 80}]\n---\n";
    m += "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n";
    let lab = Lab::up_text('d', &m);
    let db = SocketAddr::new(lab.vip("iso/db"), 80);
    let web = SocketAddr::new(lab.vip("default/web"), 80);
    let i_client = lab.pod_netns("iso/i-client");
    let d_client = lab.pod_netns("default/d-client");
    let d_web = lab.pod_netns("default/d-web");

    // The isolated namespace reaches its own service (backend on the other node)...
    eventually("iso client -> iso db", &i_client, db, Proto::Tcp, |t| {
        t.get("iso/i-db") == Some(&10)
    });
    // ... and the cluster's default services (TF's default-service policy).
    eventually("iso client -> default web", &i_client, web, Proto::Tcp, |t| {
        t.get("default/d-web") == Some(&10)
    });
    // Others do not reach the isolated service.
    let t = tally(&d_client, db, Proto::Tcp, 3);
    assert!(
        !t.contains_key("iso/i-db"),
        "default client reached the isolated service: {t:?}"
    );
    // The reply routes that let d-web answer the isolated client open nothing: d-web
    // cannot start a connection into the isolated namespace, and pods stay apart.
    let status = lab.status();
    let i_client_ip: IpAddr = status["pods"]["iso/i-client"]["ip"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let i_db_ip: IpAddr = status["pods"]["iso/i-db"]["ip"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    for (from, to) in [(&d_web, i_client_ip), (&d_client, i_client_ip), (&d_web, i_db_ip)] {
        let o = probe_from_netns(from, SocketAddr::new(to, 80), Proto::Tcp, STEP);
        assert!(!o.ok(), "{from} -> {to}: {o:?}");
    }
    let o = probe_from_netns(&i_client, SocketAddr::new(web.ip(), 80), Proto::Tcp, STEP);
    assert!(o.ok(), "{o:?}");
}
