//! `weft lab up --clusters 2`: two weft clusters on one underlay, their controllers
//! peered over BGP, as the seeds' two-cloud demo. Cluster 1 is lab `L`, cluster 2 is lab
//! `L2`, whose nodes join `L`'s underlay bridge (addresses 192.0.2.111 and up, bridge
//! ports `c2n<i>`). Each cluster has its own ASN, router ID and non-overlapping pod,
//! service and ip-fabric subnets; their shared default networks export
//! `target:<own ASN>:100` and import the other's ([`cluster_objects`]), so a pod of one
//! cluster reaches the pods and ClusterIP services of the other through the overlay:
//!
//! ```text
//!  cluster 1 (lab L, AS 64512)                     cluster 2 (lab L2, AS 64513)
//!  controller ◄──── BGP VPNv4, 127.0.0.1 ────► controller
//!  node-1 192.0.2.11 ──┐                  ┌── node-1 192.0.2.111
//!  node-2 192.0.2.12 ──┴── br0 (wl-L-ul) ─┴── node-2 192.0.2.112
//!  pod ─ table ─ imported /32 ─ encap VNI (from the label) ─► node ─ VIP DNAT ─ backend
//! ```
//!
//! Both controllers run in the machine's namespace and listen for BGP on 127.0.0.1 (free
//! ports chosen at `up`); cluster 2's side is passive.

use serde_json::{Value, json};

use crate::Progress;
use crate::names::LabName;
use crate::state::LabState;
use crate::topology::{self, UpOptions};

/// ASN of cluster `k` (1-based): 64511 + k.
pub fn asn(cluster: usize) -> u32 {
    64511 + cluster as u32
}

/// The second cluster's lab name: `<name>2`.
pub fn sibling(lab: &LabName) -> anyhow::Result<LabName> {
    LabName::new(&format!("{lab}2")).map_err(|_| {
        anyhow::anyhow!(
            "--clusters 2 names the second cluster's lab {lab}2, which is too long: use a lab name of at most {} characters",
            crate::names::MAX_LAB_NAME - 1
        )
    })
}

/// Pod, service and ip-fabric subnets of cluster `k`: cluster 1 keeps TF's defaults,
/// cluster 2 takes ranges that overlap none of them.
pub fn subnets(cluster: usize) -> [&'static str; 3] {
    match cluster {
        1 => ["10.32.0.0/12", "10.96.0.0/12", "10.64.0.0/12"],
        _ => ["10.128.0.0/12", "10.112.0.0/12", "10.144.0.0/12"],
    }
}

/// ClusterConfig and the BgpPeer of cluster `cluster` (1 or 2) of a federated pair whose
/// controllers listen for BGP on 127.0.0.1 at `bgp_ports[0]` and `bgp_ports[1]`.
pub fn cluster_objects(cluster: usize, bgp_ports: [u16; 2]) -> Vec<Value> {
    let other = 3 - cluster;
    let [pods, services, fabric] = subnets(cluster);
    let [other_pods, other_services, other_fabric] = subnets(other);
    vec![
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ClusterConfig", "metadata": {"name": "default"},
               "spec": {"asn": asn(cluster), "routerId": format!("10.255.0.{cluster}"),
                        "podSubnets": [pods], "serviceSubnets": [services], "ipFabricSubnets": [fabric],
                        "bgpListenAddress": "127.0.0.1", "bgpPort": bgp_ports[cluster - 1],
                        "routeTargets": {"import": [format!("target:{}:100", asn(other))],
                                         "export": [format!("target:{}:100", asn(cluster))]}}}),
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "BgpPeer", "metadata": {"name": format!("cluster-{other}")},
               "spec": {"address": "127.0.0.1", "port": bgp_ports[other - 1], "asn": asn(other),
                        "role": "cluster", "passive": cluster == 2,
                        "remoteSubnets": [other_pods, other_services, other_fabric]}}),
    ]
}

/// Builds cluster 1 as lab `lab` (with `opts`' manifests) and cluster 2 as lab
/// `<lab>2` on its underlay. Returns whether every manifest applied cleanly.
pub async fn up_pair(lab: &LabName, opts: UpOptions, progress: &Progress) -> anyhow::Result<bool> {
    let second = sibling(lab)?;
    if topology::exists(&second).await {
        anyhow::bail!("lab {second} already exists; remove it with `weft lab down --name {second}`");
    }
    let ports = [free_port()?, free_port()?];
    let first = UpOptions {
        cluster_objects: cluster_objects(1, ports),
        gateway: opts.gateway.map(|_| 2),
        ..opts.clone()
    };
    let ok = topology::up(lab, &first, progress).await?;
    let gateway_relay = match opts.gateway {
        Some(_) => LabState::load(lab)?
            .gateway
            .and_then(|g| g.relay_ports.get(1).copied()),
        None => None,
    };
    let two = UpOptions {
        files: Vec::new(),
        documents: Vec::new(),
        cluster_objects: cluster_objects(2, ports),
        join_underlay: Some((lab.underlay_ns(), 2)),
        gateway: None,
        gateway_relay,
        ..opts
    };
    topology::up(&second, &two, progress).await?;
    progress.step(&format!(
        "clusters {lab} (AS {}) and {second} (AS {}) are up and peered over BGP; \
         apply the second cluster's manifests with `weft lab apply --name {second} -f …`",
        asn(1),
        asn(2)
    ));
    Ok(ok)
}

/// The second cluster built on `lab`'s underlay, if there is one.
pub fn joined_sibling(lab: &LabName) -> Option<LabName> {
    let second = sibling(lab).ok()?;
    let state = LabState::load(&second).ok()?;
    (state.underlay_ns == lab.underlay_ns()).then_some(second)
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_clusters_mirror_each_other_without_overlap() {
        let one = cluster_objects(1, [1790, 1791]);
        let two = cluster_objects(2, [1790, 1791]);
        assert_eq!(one[0]["spec"]["bgpPort"], 1790);
        assert_eq!(two[0]["spec"]["bgpPort"], 1791);
        assert_eq!(one[1]["spec"]["port"], 1791);
        assert_eq!(two[1]["spec"]["port"], 1790);
        assert_eq!(
            one[0]["spec"]["routeTargets"]["export"],
            two[0]["spec"]["routeTargets"]["import"]
        );
        assert_eq!(two[1]["spec"]["passive"], true);
        let all: Vec<_> = [subnets(1), subnets(2)]
            .iter()
            .flatten()
            .map(|s| weft_model::config::parse_cidr("test", "subnet", s).unwrap())
            .collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert!(!weft_model::config::overlaps(a, b), "{a} {b}");
            }
        }
        assert!(sibling(&LabName::new("abcdef").unwrap()).is_err());
        assert_eq!(sibling(&LabName::new("weft").unwrap()).unwrap().as_str(), "weft2");
    }
}
