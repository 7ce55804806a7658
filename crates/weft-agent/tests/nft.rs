//! The agent's nftables table in a real (private) network namespace: the rendered
//! document is accepted by `nft`, applied atomically and only when it changed, found
//! again after a restart, removed when no service is left, and no other table is
//! touched.
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
        let name = format!("weftnft-{}", std::process::id());
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

    // A live table someone changed by hand is rewritten by a fresh agent.
    assert!(ns.nft(&["flush", "chain", "inet", "weft", "raw-prerouting"]).0);
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
