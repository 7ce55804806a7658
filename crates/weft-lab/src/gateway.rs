//! `weft lab up --gateway`: a gateway router and an external host, so the lab has an
//! outside. The gateway is a namespace on the underlay (192.0.2.1) running FRR's zebra
//! and bgpd (Debian `frr`); each cluster's controller peers with it (BgpPeer `gateway`,
//! role `router`), and zebra installs what bgpd learns — every pod, VIP and floating IP
//! /32 with the hosting node as next hop — into the gateway's kernel. The external host
//! (203.0.113.10) routes everything through the gateway; the nodes' default route is
//! the gateway too, so replies to the outside go back the way they came.
//!
//! ```text
//!  host namespace: controller(s) ── 127.0.0.1:<port k> ── weft lab relay (socket made in
//!                                     wl-L-bgp, from 10.255.255.1{k}) ──┐
//!                                                    bgp0 10.255.255.1 ─┘
//!  wl-L-ext  203.0.113.10 ─ eth0 ══ ext0 203.0.113.1 ─ wl-L-gw ─ ul0 192.0.2.1 ═ br0 (wl-L-ul)
//!                                                      zebra + bgpd, AS 65000,
//!                                                      neighbor 10.255.255.1{k} (cluster k)
//! ```
//!
//! The controllers run in the machine's namespace and the gateway in its own, which
//! share no network; `weft lab relay` (a TCP relay whose outgoing socket is made inside
//! the session namespace `wl-L-bgp`, bound to 10.255.255.1{k} so bgpd tells the clusters
//! apart) carries each BGP session, so nothing of the lab appears in the machine's
//! namespace.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::names::{LabName, NETNS_DIR};
use crate::sys;

/// The gateway's AS.
pub const GATEWAY_ASN: u32 = 65000;
/// The gateway's underlay address.
pub const GATEWAY_UNDERLAY_IP: &str = "192.0.2.1";
/// The external host's address.
pub const EXTERNAL_HOST_IP: &str = "203.0.113.10";
/// The gateway's address on the external link.
const GATEWAY_EXTERNAL_IP: &str = "203.0.113.1";
/// Where FRR's daemons live in Debian's package.
const FRR_DIR: &str = "/usr/lib/frr";
/// Bound on FRR's start.
const FRR_READY: Duration = Duration::from_secs(20);

/// What `up --gateway` made (in `state.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRecord {
    /// The gateway's namespace.
    pub netns: String,
    /// The external host's namespace.
    pub external_netns: String,
    /// FRR's config, sockets and logs.
    pub dir: PathBuf,
    /// Host-side relay port of cluster k's BGP session, index k-1.
    pub relay_ports: Vec<u16>,
}

impl GatewayRecord {
    /// `vtysh` arguments that reach this gateway's daemons.
    pub fn vtysh_args(&self) -> Vec<String> {
        vec!["--vty_socket".into(), self.dir.display().to_string()]
    }
}

/// Address the relay of cluster `k` binds in the session namespace: bgpd's neighbor.
pub fn relay_source(cluster: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 255, 255, 10 + cluster as u8)
}

/// bgpd's address on the session link.
const GATEWAY_SESSION_IP: &str = "10.255.255.1";

/// The `gateway` BgpPeer of a cluster whose relay listens on `relay_port`.
pub fn peer_object(relay_port: u16) -> Value {
    json!({"apiVersion": "weft.dev/v1alpha1", "kind": "BgpPeer", "metadata": {"name": "gateway"},
           "spec": {"address": "127.0.0.1", "port": relay_port, "asn": GATEWAY_ASN, "role": "router"}})
}

/// FRR configuration of the gateway for `clusters` clusters with ASNs from `asn`.
pub fn frr_config(clusters: usize, asn: impl Fn(usize) -> u32) -> String {
    let mut c = String::from(
        "frr defaults traditional\nhostname weft-lab-gateway\nlog stdout informational\n\
         router bgp 65000\n bgp router-id 192.0.2.1\n no bgp ebgp-requires-policy\n",
    );
    for k in 1..=clusters {
        let n = relay_source(k);
        c.push_str(&format!(
            " neighbor {n} remote-as {}\n neighbor {n} passive\n neighbor {n} disable-connected-check\n neighbor {n} timers 3 9\n",
            asn(k)
        ));
    }
    for family in ["ipv4 unicast", "ipv4 vpn"] {
        c.push_str(&format!(" address-family {family}\n"));
        for k in 1..=clusters {
            c.push_str(&format!("  neighbor {} activate\n", relay_source(k)));
        }
        c.push_str(" exit-address-family\n");
    }
    c
}

/// Builds the gateway and external host of `lab` on underlay `ul`, starts FRR and one
/// relay per cluster. `weft` is the binary that runs the relays.
pub async fn build(
    lab: &LabName,
    ul: &str,
    clusters: usize,
    asn: impl Fn(usize) -> u32,
    weft: &Path,
) -> Result<GatewayRecord> {
    for daemon in ["zebra", "bgpd"] {
        if !Path::new(FRR_DIR).join(daemon).is_file() {
            bail!(
                "--gateway runs FRR, but {FRR_DIR}/{daemon} is missing: install the `frr` package (scripts/install-deps does)"
            );
        }
    }
    let gw = format!("{}gw", lab.prefix());
    let ext = format!("{}ext", lab.prefix());
    let sessions = format!("{}bgp", lab.prefix());
    let dir = lab.state_dir().join("gateway");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for ns in [&gw, &ext, &sessions] {
        sys::ip(&["netns", "add", ns]).await?;
        sys::ip(&["-n", ns, "link", "set", "lo", "up"]).await?;
    }
    // Session link: bgpd wants its neighbors on an interface (not loopback addresses of
    // its own), so the relays' sockets live in a namespace of their own.
    veth(&gw, "bgp0", &sessions, "eth0").await?;
    address_up(&gw, "bgp0", &[format!("{GATEWAY_SESSION_IP}/24")]).await?;
    let relays: Vec<String> = (1..=clusters)
        .map(|k| format!("{}/24", relay_source(k)))
        .collect();
    address_up(&sessions, "eth0", &relays).await?;
    // Underlay leg: a bridge port like a node's.
    veth(&gw, "ul0", ul, "gw").await?;
    sys::ip(&["-n", ul, "link", "set", "gw", "master", "br0", "up"]).await?;
    address_up(&gw, "ul0", &[format!("{GATEWAY_UNDERLAY_IP}/24")]).await?;
    // External leg.
    veth(&gw, "ext0", &ext, "eth0").await?;
    address_up(&gw, "ext0", &[format!("{GATEWAY_EXTERNAL_IP}/24")]).await?;
    address_up(&ext, "eth0", &[format!("{EXTERNAL_HOST_IP}/24")]).await?;
    sys::ip(&["-n", &ext, "route", "add", "default", "via", GATEWAY_EXTERNAL_IP]).await?;
    sys::write_sysctl_in(&gw, "net/ipv4/ip_forward", "1")?;

    // FRR: zebra drops to the `frr` user, so its directory must be frr's.
    std::fs::write(dir.join("frr.conf"), frr_config(clusters, asn))?;
    let _ = std::process::Command::new("chown")
        .args(["frr:frr", &dir.display().to_string()])
        .status();
    let d = dir.display().to_string();
    let zserv = format!("{d}/zserv.api");
    let ip = PathBuf::from("ip");
    let netns_exec = |daemon: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["netns", "exec", gw.as_str()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(format!("{FRR_DIR}/{daemon}"));
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    sys::spawn_detached(
        &ip,
        &netns_exec(
            "zebra",
            &[
                "-z",
                &zserv,
                "-i",
                &format!("{d}/zebra.pid"),
                "--vty_socket",
                &d,
                "-u",
                "frr",
                "-g",
                "frr",
                "-f",
                "/dev/null",
            ],
        ),
        &[],
        &dir.join("zebra.log"),
    )?;
    wait_for(&PathBuf::from(&zserv), "zebra's socket").await?;
    sys::spawn_detached(
        &ip,
        &netns_exec(
            "bgpd",
            &[
                "-z",
                &zserv,
                "-i",
                &format!("{d}/bgpd.pid"),
                "--vty_socket",
                &d,
                "-S",
                "-p",
                "179",
                "-f",
                &format!("{d}/frr.conf"),
            ],
        ),
        &[],
        &dir.join("bgpd.log"),
    )?;
    wait_for(&dir.join("bgpd.vty"), "bgpd's vty socket").await?;

    let mut relay_ports = Vec::new();
    for k in 1..=clusters {
        let port = free_port()?;
        let args: Vec<String> = vec![
            "lab".into(),
            "relay".into(),
            "--netns".into(),
            sessions.clone(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--bind".into(),
            relay_source(k).to_string(),
            "--connect".into(),
            format!("{GATEWAY_SESSION_IP}:179"),
            // Names the lab's state directory, so `down` finds the process.
            "--log-dir".into(),
            d.clone(),
        ];
        sys::spawn_detached(weft, &args, &[], &dir.join(format!("relay-{k}.log")))?;
        relay_ports.push(port);
    }
    for port in &relay_ports {
        wait_listening(*port).await?;
    }
    route_nodes_via_gateway(lab).await?;
    Ok(GatewayRecord {
        netns: gw,
        external_netns: ext,
        dir,
        relay_ports,
    })
}

/// A veth pair: `dev` in `ns`, `peer` in `peer_ns`.
async fn veth(ns: &str, dev: &str, peer_ns: &str, peer: &str) -> Result<()> {
    sys::ip(&[
        "-n", ns, "link", "add", dev, "type", "veth", "peer", "name", peer, "netns", peer_ns,
    ])
    .await?;
    Ok(())
}

/// Gives `dev` in `ns` the addresses `cidrs` and sets it up.
async fn address_up(ns: &str, dev: &str, cidrs: &[String]) -> Result<()> {
    for cidr in cidrs {
        sys::ip(&["-n", ns, "addr", "add", cidr, "dev", dev]).await?;
    }
    sys::ip(&["-n", ns, "link", "set", dev, "up"]).await?;
    Ok(())
}

/// Points the nodes of a cluster on the gateway's underlay at the gateway.
pub async fn route_nodes_via_gateway(lab: &LabName) -> Result<()> {
    for node in 1.. {
        let ns = lab.node_ns(node);
        if !sys::netns_exists(&ns) {
            break;
        }
        sys::ip(&[
            "-n",
            &ns,
            "route",
            "replace",
            "default",
            "via",
            GATEWAY_UNDERLAY_IP,
        ])
        .await?;
    }
    Ok(())
}

async fn wait_for(path: &Path, what: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + FRR_READY;
    while !path.exists() {
        if tokio::time::Instant::now() > deadline {
            bail!(
                "{what} ({}) did not appear within {FRR_READY:?}; see the logs next to it",
                path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn wait_listening(port: u16) -> Result<()> {
    let deadline = tokio::time::Instant::now() + FRR_READY;
    loop {
        // The relay answers by entering the gateway namespace; bgpd there is passive
        // and drops the probe: only the listen matters.
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the BGP relay on 127.0.0.1:{port} did not start within {FRR_READY:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr().context("finding a free port")?.port())
}

/// `weft lab relay`: accepts on `listen` (the machine's namespace) and carries each
/// connection to `connect` from a socket made inside `netns` and bound to `bind`.
pub async fn relay(netns: &str, listen: SocketAddr, bind: Ipv4Addr, connect: SocketAddr) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let path = PathBuf::from(NETNS_DIR).join(netns);
    loop {
        let (mut inbound, from) = listener.accept().await?;
        let path = path.clone();
        tokio::spawn(async move {
            let socket = weft_cni::run_in_netns(&path, move || -> std::io::Result<tokio::net::TcpSocket> {
                let s = tokio::net::TcpSocket::new_v4()?;
                s.bind(SocketAddr::new(bind.into(), 0))?;
                Ok(s)
            });
            let socket = match socket {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::warn!(%from, "relay socket: {e}"),
                Err(e) => return tracing::warn!(%from, "entering the gateway namespace: {e}"),
            };
            match socket.connect(connect).await {
                Ok(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(e) => tracing::debug!(%from, "relay connect to {connect}: {e}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frr_config_names_one_passive_neighbor_per_cluster_in_both_families() {
        let c = frr_config(2, |k| 64511 + k as u32);
        assert!(c.contains(" neighbor 10.255.255.11 remote-as 64512\n"), "{c}");
        assert!(c.contains(" neighbor 10.255.255.12 remote-as 64513\n"), "{c}");
        assert_eq!(c.matches("passive").count(), 2, "{c}");
        assert_eq!(c.matches("activate").count(), 4, "{c}");
        assert_eq!(peer_object(4000)["spec"]["port"], 4000);
    }
}
