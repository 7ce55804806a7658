//! Per-node desired forwarding state: what the controller computes for one node and
//! streams to that node's agent, which programs it into the kernel.
//!
//! ```text
//! derived objects (networks, interfaces) + Node inputs
//!        │  weft-routing::compile_node_state (pure)
//!        v
//! NodeState ──watch stream (revision)──> agent ──> netlink / nftables
//! ```
//!
//! Data-plane model (product.md): every virtual network is a policy-routing table
//! ([`NodeNetwork::table`]); pod traffic enters it by `ip rule iif <host veth>`, VXLAN
//! traffic by `ip rule iif weft-vxlan tun_id <VNI>`. A remote prefix is a route with
//! `encap ip id <VNI of the destination network> dst <remote node>` through the one
//! external-mode VXLAN device. Route leaking between connected networks is done here,
//! by copying routes between tables, never by sharing a table.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::ids::{MacAddr, Vni};

/// First routing-table id used for virtual networks; a network's table is this plus its
/// VNI, the same on every node.
pub const VN_TABLE_BASE: u32 = 10_000;

/// Name of the VXLAN device (external / collect-metadata mode) on every node.
pub const VXLAN_DEVICE: &str = "weft-vxlan";

/// UDP port of the overlay (IANA VXLAN).
pub const VXLAN_PORT: u16 = 4789;

/// Routing table of a network with this VNI.
pub fn vn_table(vni: Vni) -> u32 {
    VN_TABLE_BASE + vni.0
}

/// MAC of a node's VXLAN device, derived from the node name so every node computes
/// the same value for its peers.
pub fn vtep_mac(node: &str) -> MacAddr {
    MacAddr::derived_from(&format!("vtep {node}"))
}

/// Everything one node must program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// The node's name (Kubernetes Node name).
    pub node: String,
    /// Store revision this state was computed from.
    pub revision: u64,
    /// The node's underlay address (Node `status.addresses` InternalIP), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay_ip: Option<IpAddr>,
    /// MAC of this node's VXLAN device ([`vtep_mac`]).
    pub vtep_mac: MacAddr,
    /// Other nodes that host endpoints this node routes to.
    pub peers: Vec<VtepPeer>,
    /// Virtual networks present on this node (a table each), sorted by VNI.
    pub networks: Vec<NodeNetwork>,
    /// Pod interfaces placed on this node, sorted by namespace/pod/interface.
    pub interfaces: Vec<LocalInterface>,
    /// Why the state is incomplete, if it is (e.g. "Node n2 has no InternalIP yet").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A remote VXLAN tunnel endpoint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VtepPeer {
    /// Node name.
    pub node: String,
    /// Its underlay address (the VXLAN outer destination).
    pub underlay_ip: IpAddr,
    /// Its VXLAN device MAC (the inner destination MAC; permanent neighbour entry).
    pub vtep_mac: MacAddr,
}

/// One virtual network's routing instance on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeNetwork {
    /// FQ name of the network.
    pub fq_name: String,
    /// Its VNI (also the `tun_id` of received traffic).
    pub vni: Vni,
    /// Policy-routing table id ([`vn_table`]).
    pub table: u32,
    /// Gateway address pods of this network use (the agent answers for it locally).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Routes of this table: own endpoints plus those leaked from connected networks.
    pub routes: Vec<NodeRoute>,
}

/// One route in a network's table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeRoute {
    /// Destination.
    pub prefix: IpNet,
    /// Where it goes.
    pub next_hop: NextHop,
    /// FQ name of the network the destination belongs to (differs from the table's
    /// network when the route was leaked from a connected network).
    pub network: String,
}

/// Next hop of a route.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum NextHop {
    /// A pod interface on this node: `namespace/pod/interface` of a [`LocalInterface`];
    /// the agent maps it to the host-side veth it attached.
    Local {
        /// `namespace/pod/interface`.
        interface: String,
    },
    /// An endpoint on another node: encapsulate with `vni` to `node`'s underlay address.
    Remote {
        /// Remote node name (see [`NodeState::peers`]).
        node: String,
        /// VNI of the destination network (the remote node decapsulates into that table).
        vni: Vni,
    },
}

/// A pod interface this node hosts (what the CNI plugin asks the agent for).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalInterface {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Pod UID, if known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod_uid: String,
    /// Interface name in the pod (`eth0`, `net1` …).
    pub interface: String,
    /// FQ name of its network.
    pub network: String,
    /// Table of its network.
    pub table: u32,
    /// VNI of its network.
    pub vni: Vni,
    /// Address.
    pub ip: IpAddr,
    /// Prefix length of the network's subnet.
    pub prefix_len: u8,
    /// Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// MAC of the pod-side interface.
    pub mac: MacAddr,
    /// Carries the default route.
    pub primary: bool,
}

impl LocalInterface {
    /// `namespace/pod/interface`, the key [`NextHop::Local`] uses.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.pod, self.interface)
    }
}
