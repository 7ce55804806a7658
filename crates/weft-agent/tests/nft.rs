//! The agent's nftables table in a real (private) network namespace: the rendered
//! document is accepted by `nft`, applied atomically and only when it changed, found
//! again after a restart, removed when no service is left, and no other table is
//! touched; element-only changes are applied incrementally and keep established
//! connections.
//!
//! Needs root and the `nft` binary; without them the test prints a message and passes.
//! It makes its own namespace (`weftnft-<pid>`) and deletes it on drop.

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

use weft_agent::attachment::{Attachment, Attachments};
use weft_agent::nft::{self, Applied, LiveTable};
use weft_model::ids::{MacAddr, Vni};
use weft_model::node::{
    L4Protocol, LocalInterface, NodeBackend, NodeService, NodeServicePort, NodeState, SessionAffinity,
    vn_table, vtep_mac,
};

fn usable() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
        && Command::new("ip").arg("-V").output().is_ok()
        && Command::new("nft").arg("--version").output().is_ok()
}

struct Netns(String);

impl Netns {
    fn new() -> Netns {
        Netns::named(format!("weftnft-{}", std::process::id()))
    }

    /// A fresh namespace `name` (a stale one of that name is deleted first).
    fn named(name: String) -> Netns {
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        assert!(
            Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .unwrap()
                .success()
        );
        Netns(name)
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }

    fn nft(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn state(backends: &[&str]) -> NodeState {
    NodeState {
        node: "n1".into(),
        revision: 1,
        underlay_ip: Some(ip("192.0.2.11")),
        vtep_mac: vtep_mac("n1"),
        peers: vec![],
        networks: vec![],
        interfaces: vec![LocalInterface {
            namespace: "default".into(),
            pod: "a".into(),
            pod_uid: String::new(),
            interface: "eth0".into(),
            network: "net1".into(),
            table: vn_table(Vni(1)),
            vni: Vni(1),
            ip: ip("10.47.255.252"),
            prefix_len: 12,
            gateway: Some(ip("10.47.255.254")),
            mac: MacAddr::derived_from("a"),
            primary: true,
            floating_ips: Vec::new(),
        }],
        services: vec![NodeService {
            namespace: "default".into(),
            name: "web".into(),
            service_type: "NodePort".into(),
            vip: Some(ip("10.96.0.10")),
            network: "svc".into(),
            client_tables: vec![vn_table(Vni(1))],
            affinity: SessionAffinity::ClientIp,
            external_ips: vec![ip("203.0.113.7")],
            ports: vec![NodeServicePort {
                name: String::new(),
                protocol: L4Protocol::Tcp,
                port: 80,
                node_port: Some(30080),
                backends: backends
                    .iter()
                    .map(|b| NodeBackend {
                        ip: ip(b),
                        port: 8080,
                        node: None,
                        pod: None,
                    })
                    .collect(),
            }],
        }],
        service_routes: vec![],
        warnings: vec![],
        policies: vec![],
    }
}

fn attachments() -> Attachments {
    [(
        "default/a/eth0".to_string(),
        Attachment {
            container_id: "c".into(),
            if_name: "eth0".into(),
            host_if_name: "wefta".into(),
        },
    )]
    .into_iter()
    .collect()
}

#[test]
fn table_is_applied_once_found_after_restart_and_removed() {
    if !usable() {
        eprintln!("skipping: needs root, iproute2 and nft");
        return;
    }
    let ns = Netns::new();
    let path = ns.path();
    // Someone else's table: never touched.
    assert!(ns.nft(&["add", "table", "inet", "other"]).0);
    assert!(ns.nft(&["add", "chain", "inet", "other", "c"]).0);

    let sync = |wanted: Option<nft::NftTable>, last: Applied| -> (bool, Applied) {
        weft_cni::run_in_netns(&path, move || {
            let mut last = last;
            let wrote = nft::sync(wanted.as_ref(), &mut last).unwrap();
            (wrote, last)
        })
        .unwrap()
    };
    let live = || weft_cni::run_in_netns(&path, nft::live_table).unwrap().unwrap();

    // Absent and nothing wanted: nothing written.
    assert_eq!(live(), LiveTable::Absent);
    let (wrote, last) = sync(None, Applied::Unknown);
    assert!(!wrote);
    assert_eq!(last, Applied::Absent);

    let (two, warnings) = nft::render(&state(&["10.47.255.250", "10.47.255.251"]), &attachments());
    assert!(warnings.is_empty(), "{warnings:?}");
    let two = two.unwrap();
    let (wrote, last) = sync(Some(two.clone()), last);
    assert!(wrote);
    assert_eq!(last, Applied::Table(two.fingerprint.clone()));
    assert_eq!(live(), LiveTable::Present(Some(two.fingerprint.clone())));
    let (ok, text) = ns.nft(&["list", "table", "inet", "weft"]);
    assert!(ok, "{text}");
    assert!(text.contains("jhash ip saddr mod 2 seed"), "{text}");
    assert!(text.contains("udp dport 4789 notrack"), "{text}");
    assert!(text.contains("fib daddr type local"), "{text}");

    // Same rendering: no write. A restarted agent (unknown) compares with the live table.
    let (wrote, _) = sync(Some(two.clone()), last);
    assert!(!wrote);
    let (wrote, last) = sync(Some(two.clone()), Applied::Unknown);
    assert!(!wrote, "a restart rewrites nothing");
    assert_eq!(last, Applied::Table(two.fingerprint.clone()));

    // A backend goes: one atomic rewrite.
    let (one, _) = nft::render(&state(&["10.47.255.250"]), &attachments());
    let one = one.unwrap();
    let (wrote, last) = sync(Some(one.clone()), last);
    assert!(wrote);
    let (_, text) = ns.nft(&["list", "table", "inet", "weft"]);
    assert!(text.contains("dnat ip to 10.47.255.250:8080"), "{text}");
    assert!(!text.contains("10.47.255.251"), "{text}");

    // A live table whose fingerprint someone removed by hand is rewritten by a fresh
    // agent.
    assert!(
        ns.nft(&["flush", "chain", "inet", "weft", nft::FINGERPRINT_CHAIN])
            .0
    );
    let (wrote, _) = sync(Some(one.clone()), Applied::Unknown);
    assert!(wrote);
    assert_eq!(live(), LiveTable::Present(Some(one.fingerprint.clone())));

    // No service left: the table goes.
    let (wrote, last) = sync(None, last);
    assert!(wrote);
    assert_eq!(last, Applied::Absent);
    assert_eq!(live(), LiveTable::Absent);
    let (ok, text) = ns.nft(&["list", "table", "inet", "other"]);
    assert!(ok && text.contains("chain c"), "{text}");
}

// ===== incremental updates (set elements only) =====

/// Runs `ip ARGS`, asserting success.
fn ip_cmd(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A "pod" namespace behind veth `host_if` of the node namespace: pod address
/// `addr/24` on its `eth0`, gateway `gw/24` on the node side (the pod's default route).
fn plug(node: &Netns, pod: &Netns, host_if: &str, gw: &str, addr: &str) {
    ip_cmd(&[
        "-n", &node.0, "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", &pod.0,
    ]);
    ip_cmd(&["-n", &node.0, "addr", "add", &format!("{gw}/24"), "dev", host_if]);
    ip_cmd(&["-n", &node.0, "link", "set", host_if, "up"]);
    ip_cmd(&["-n", &pod.0, "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
    ip_cmd(&["-n", &pod.0, "link", "set", "eth0", "up"]);
    ip_cmd(&["-n", &pod.0, "link", "set", "lo", "up"]);
    ip_cmd(&["-n", &pod.0, "route", "add", "default", "via", gw]);
}

/// Namespaces `<prefix>-<pid>-<tag>` of a node and pods plugged into it (deleted on
/// drop), with forwarding on in the node.
fn topology(prefix: &str, node: &str, pods: &[(&str, &str, &str, &str)]) -> (Netns, Vec<Netns>) {
    let ns = |tag: &str| Netns::named(format!("{prefix}-{}-{tag}", std::process::id()));
    let node = ns(node);
    ip_cmd(&["-n", &node.0, "link", "set", "lo", "up"]);
    let pods = pods
        .iter()
        .map(|(tag, host_if, gw, addr)| {
            let pod = ns(tag);
            plug(&node, &pod, host_if, gw, addr);
            pod
        })
        .collect();
    ip_cmd(&["netns", "exec", &node.0, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    (node, pods)
}

/// Node state with one policy: pod b (`weftb`) accepts TCP 8080 from `peers` only.
fn policy_state(peers: &[&str]) -> (NodeState, Attachments) {
    let mut s = state(&[]);
    s.services.clear();
    s.interfaces.clear();
    s.policies = vec![
        serde_json::from_value(serde_json::json!({
            "interface": "default/b/eth0",
            "ip": "10.61.2.1",
            "ingress": [{"peers": peers, "ports": [{"protocol": "tcp", "first": 8080, "last": 8080}]}],
        }))
        .unwrap(),
    ];
    let attachments = [(
        "default/b/eth0".to_string(),
        Attachment {
            container_id: "b".into(),
            if_name: "eth0".into(),
            host_if_name: "weftb".into(),
        },
    )]
    .into_iter()
    .collect();
    (s, attachments)
}

/// One echo exchange on an open connection (bounded).
fn echo(stream: &mut std::net::TcpStream, what: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Write};
    stream.write_all(what)?;
    let mut back = vec![0; what.len()];
    stream.read_exact(&mut back)?;
    Ok(back)
}

#[test]
fn element_only_changes_are_incremental_and_keep_established_connections() {
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::time::Duration;
    if !usable() {
        eprintln!("skipping: needs root, iproute2 and nft");
        return;
    }
    // client 10.61.1.1/24 ── wefta | router (forwards, runs the table) | weftb ── server 10.61.2.1/24
    let (router_ns, pods) = topology(
        "weftinc",
        "r",
        &[
            ("a", "wefta", "10.61.1.254", "10.61.1.1"),
            ("b", "weftb", "10.61.2.254", "10.61.2.1"),
        ],
    );
    let (router, client, server) = (router_ns.path(), pods[0].path(), pods[1].path());
    let target: SocketAddr = "10.61.2.1:8080".parse().unwrap();
    // An echo server in b (the socket stays in b's namespace; served from this process).
    let listener = weft_cni::run_in_netns(&server, || TcpListener::bind(target))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let _ = conn.set_read_timeout(Some(Duration::from_secs(20)));
                let mut buf = [0u8; 256];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let connect = || {
        weft_cni::run_in_netns(&client, || {
            let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            echo(&mut s, b"hello").map(|_| s)
        })
        .unwrap()
    };
    let sync = |peers: &[&str], last: Applied, previous: Option<nft::NftTable>| {
        let (s, attachments) = policy_state(peers);
        let (table, warnings) = nft::render(&s, &attachments);
        assert!(warnings.is_empty(), "{warnings:?}");
        let table = table.unwrap();
        weft_cni::run_in_netns(&router, move || {
            let (mut last, mut previous) = (last, previous);
            let synced = nft::sync_incremental(Some(&table), &mut last, &mut previous).unwrap();
            (synced, last, previous, table)
        })
        .unwrap()
    };
    let listing = || router_ns.nft(&["list", "table", "inet", "weft"]).1;
    // With rule handles: a rewritten chain has new ones.
    let chain_with_handles = || {
        router_ns
            .nft(&["-a", "list", "chain", "inet", "weft", "pol-in-0"])
            .1
    };
    let live = || weft_cni::run_in_netns(&router, nft::live_table).unwrap().unwrap();

    // First table: a full write; a is allowed.
    let (synced, last, previous, first) = sync(&["10.61.1.1/32", "10.70.0.1/32"], Applied::Unknown, None);
    assert_eq!(synced, nft::Synced::Rewritten);
    let mut held = connect().expect("a is allowed");
    assert!(listing().contains("chain pol-in-0"), "{}", listing());
    let chains_before = chain_with_handles();

    // Other peers change (a pod elsewhere got or lost a label): set elements only.
    let (synced, last, previous, second) =
        sync(&["10.61.1.1/32", "10.70.0.2/32", "10.70.0.9/32"], last, previous);
    assert!(matches!(synced, nft::Synced::Elements(n) if n >= 2), "{synced:?}");
    assert_ne!(first.fingerprint, second.fingerprint);
    assert_eq!(live(), LiveTable::Present(Some(second.fingerprint.clone())));
    let text = listing();
    assert!(
        text.contains("10.70.0.2") && text.contains("10.70.0.9") && !text.contains("10.70.0.1 "),
        "{text}"
    );
    // The chain was not rewritten (same rule handles).
    let chains_after = chain_with_handles();
    assert_eq!(chains_before, chains_after);
    assert_eq!(echo(&mut held, b"still there").unwrap(), b"still there");
    connect().expect("a is still allowed");

    // a itself loses its allowance: new connections are refused, the established one
    // keeps working (weft keeps established flows, as Calico and Cilium do).
    let (synced, last, _, third) = sync(&["10.70.0.2/32", "10.70.0.9/32"], last, previous);
    assert!(matches!(synced, nft::Synced::Elements(_)), "{synced:?}");
    assert!(connect().is_err(), "a new connection from a must be refused now");
    assert_eq!(echo(&mut held, b"established").unwrap(), b"established");

    // A fresh agent finds the incrementally updated table as rendered: no write.
    let (synced, _, _, _) = sync(&["10.70.0.2/32", "10.70.0.9/32"], Applied::Unknown, None);
    assert_eq!(synced, nft::Synced::Unchanged);
    assert_eq!(last, Applied::Table(third.fingerprint.clone()));
}

fn admin(action: weft_model::node::AdminVerdict, peer: &str) -> weft_model::node::AdminRule {
    weft_model::node::AdminRule {
        action,
        rule: weft_model::node::PolicyRule {
            peers: Some(vec![peer.parse().unwrap()]),
            ports: None,
        },
    }
}

/// An AdminNetworkPolicy Deny beats a NetworkPolicy allow, a Pass defers to the
/// NetworkPolicy (allow or deny), an Allow beats a NetworkPolicy deny, and the
/// baseline decides where no NetworkPolicy isolates the pod: real TCP connections
/// from a client namespace, forwarded by a node namespace holding the rendered table,
/// to a server namespace (the policy endpoint). Denied connections get a TCP reset.
#[test]
fn admin_policy_tiers_decide_real_connections() {
    use weft_model::node::{AdminVerdict, EndpointPolicy, PolicyPort, PolicyRule};
    if !usable() {
        eprintln!("skipping: needs root, iproute2 and nft");
        return;
    }
    let (node, pods) = topology(
        "weftanp",
        "node",
        &[
            ("server", "wefta", "10.1.2.1", "10.1.2.2"),
            ("client", "weftb", "10.1.1.1", "10.1.1.2"),
        ],
    );
    let (server, client) = (&pods[0], &pods[1]);

    // The server: accepts and drops connections until the test ends.
    let listener = weft_cni::run_in_netns(server.path(), || std::net::TcpListener::bind("10.1.2.2:8080"))
        .unwrap()
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in listener.incoming() {
            drop(c);
        }
    });
    let connects = || -> bool {
        weft_cni::run_in_netns(client.path(), move || {
            let target = std::net::SocketAddr::from(([10, 1, 2, 2], port));
            match std::net::TcpStream::connect_timeout(&target, std::time::Duration::from_secs(3)) {
                Ok(_) => true,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => false,
                Err(e) => panic!("neither connected nor refused (a reset): {e}"),
            }
        })
        .unwrap()
    };
    assert!(connects(), "no policy yet: the path works");

    let np_allow = PolicyRule {
        peers: Some(vec!["10.1.1.2/32".parse().unwrap()]),
        ports: Some(vec![PolicyPort {
            protocol: L4Protocol::Tcp,
            first: port,
            last: port,
        }]),
    };
    let mut last = Applied::Unknown;
    let mut check = |admin_ingress: Vec<weft_model::node::AdminRule>,
                     np: Option<Vec<PolicyRule>>,
                     baseline: Vec<weft_model::node::AdminRule>,
                     want: bool,
                     what: &str| {
        let mut s = state(&[]);
        s.services.clear();
        let mut ep = EndpointPolicy::open("default/a/eth0".into(), ip("10.1.2.2"));
        ep.admin_ingress = admin_ingress;
        ep.ingress = np;
        ep.baseline_ingress = baseline;
        s.policies = vec![ep];
        let (table, warnings) = nft::render(&s, &attachments());
        assert!(warnings.is_empty(), "{warnings:?}");
        let table = table.unwrap();
        let applied = last.clone();
        last = weft_cni::run_in_netns(node.path(), move || {
            let mut applied = applied;
            nft::sync(Some(&table), &mut applied).unwrap();
            applied
        })
        .unwrap();
        assert_eq!(connects(), want, "{what}");
    };
    check(
        vec![],
        Some(vec![np_allow.clone()]),
        vec![],
        true,
        "NetworkPolicy allows",
    );
    check(
        vec![],
        Some(vec![]),
        vec![],
        false,
        "NetworkPolicy isolates, no rule",
    );
    check(
        vec![admin(AdminVerdict::Drop, "10.1.1.0/24")],
        Some(vec![np_allow.clone()]),
        vec![],
        false,
        "ANP Deny beats the NetworkPolicy allow",
    );
    check(
        vec![
            admin(AdminVerdict::Pass, "10.1.1.0/24"),
            admin(AdminVerdict::Drop, "0.0.0.0/0"),
        ],
        Some(vec![np_allow.clone()]),
        vec![],
        true,
        "ANP Pass (before a Deny) defers to the NetworkPolicy allow",
    );
    check(
        vec![admin(AdminVerdict::Pass, "10.1.1.0/24")],
        Some(vec![]),
        vec![],
        false,
        "ANP Pass defers to the NetworkPolicy deny",
    );
    check(
        vec![admin(AdminVerdict::Accept, "10.1.1.2/32")],
        Some(vec![]),
        vec![],
        true,
        "ANP Allow beats the NetworkPolicy deny",
    );
    check(
        vec![admin(AdminVerdict::Pass, "10.1.1.0/24")],
        None,
        vec![admin(AdminVerdict::Drop, "10.1.0.0/16")],
        false,
        "no NetworkPolicy: the baseline Deny decides",
    );
    check(
        vec![],
        None,
        vec![admin(AdminVerdict::Accept, "10.1.1.2/32")],
        true,
        "baseline Allow",
    );
}
