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
//!
//! Services ([`NodeService`], TF's native ECMP load balancer, reference §7.1–7.3): the
//! node's agent DNATs a VIP (or an external IP, or a NodePort on the node's own
//! address) to one of the ready backends it lists, so every node balances on its own.
//! For that the compiler also puts each backend's /32 into the tables of the networks
//! allowed to use the service (the *client tables*), the clients' /32s into the
//! backends' tables for the replies only ([`NodeRoute::reply_only`]), and the backends
//! of NodePort / external-IP services into [`SERVICE_TABLE`] ([`NodeState::service_routes`]).

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::admin_policy::{AdminAction, BaselineAction};
use crate::ids::{MacAddr, Vni};

/// First routing-table id used for virtual networks; a network's table is this plus its
/// VNI, the same on every node.
pub const VN_TABLE_BASE: u32 = 10_000;

/// Routing table of the backends of NodePort and external-IP services: traffic that
/// arrives from outside the pod networks (the underlay) and was DNATed to a backend is
/// routed here (the agent marks it; see the agent's `nft` module).
pub const SERVICE_TABLE: u32 = VN_TABLE_BASE;

/// Name of the VXLAN device (external / collect-metadata mode) on every node.
pub const VXLAN_DEVICE: &str = "weft-vxlan";

/// UDP port of the overlay (IANA VXLAN).
pub const VXLAN_PORT: u16 = 4789;

/// Routing table of a network with this VNI.
pub fn vn_table(vni: Vni) -> u32 {
    VN_TABLE_BASE + vni.0
}

/// The address a node translates the source of NodePort / external-IP traffic to before
/// sending it to a backend on another node (`169.254.C.D` for an IPv4 underlay address
/// `A.B.C.D`), so the backend's reply comes back through the node holding the
/// connection's NAT state. It is on no interface: it only names "that node" in the
/// backends' tables. `None` for an IPv6 underlay (the overlay is IPv4 only).
pub fn node_service_address(underlay: IpAddr) -> Option<Ipv4Addr> {
    match underlay {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            Some(Ipv4Addr::new(169, 254, o[2], o[3]))
        }
        IpAddr::V6(_) => None,
    }
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
    /// Services this node load-balances (VIPs its pods may use, NodePorts, external
    /// IPs), sorted by namespace/name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<NodeService>,
    /// Routes of [`SERVICE_TABLE`]: the backends of NodePort / external-IP services.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_routes: Vec<NodeRoute>,
    /// Why the state is incomplete, if it is (e.g. "Node n2 has no InternalIP yet").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Kubernetes NetworkPolicy of the local pod interfaces that some policy isolates
    /// (one entry per interface, sorted by interface key); an interface not listed is
    /// not isolated in either direction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<EndpointPolicy>,
}

/// The compiled NetworkPolicy of one local pod interface: per direction, `None` when no
/// policy isolates the pod for it (everything allowed), else the rules of which at
/// least one must match a new connection (an empty list denies everything).
///
/// Replies of allowed connections are always allowed (conntrack); the rules decide new
/// connections only. Egress rules match the destination address and port of packets
/// the pod sends; ingress rules match the source address and the destination port of
/// packets sent to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointPolicy {
    /// `namespace/pod/interface` ([`LocalInterface::key`]).
    pub interface: String,
    /// The interface's address.
    pub ip: IpAddr,
    /// Rules for connections to this pod; `None`: not isolated for ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Vec<PolicyRule>>,
    /// Rules for connections from this pod; `None`: not isolated for egress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<PolicyRule>>,
    /// AdminNetworkPolicy rules for connections to this pod, in evaluation order
    /// (priority, then rule order), checked before `ingress`: the first match decides
    /// (accept, drop, or pass to `ingress`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_ingress: Vec<AdminRule>,
    /// AdminNetworkPolicy rules for connections from this pod (as `admin_ingress`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_egress: Vec<AdminRule>,
    /// BaselineAdminNetworkPolicy rules for connections to this pod, checked (first
    /// match decides, accept or drop) only when `ingress` is `None`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baseline_ingress: Vec<AdminRule>,
    /// BaselineAdminNetworkPolicy rules for connections from this pod (as
    /// `baseline_ingress`, when `egress` is `None`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baseline_egress: Vec<AdminRule>,
}

impl EndpointPolicy {
    /// An endpoint with no rules at all (everything allowed).
    pub fn open(interface: String, ip: IpAddr) -> Self {
        EndpointPolicy {
            interface,
            ip,
            ingress: None,
            egress: None,
            admin_ingress: Vec::new(),
            admin_egress: Vec::new(),
            baseline_ingress: Vec::new(),
            baseline_egress: Vec::new(),
        }
    }

    /// True when nothing restricts this endpoint (it need not be listed).
    pub fn is_open(&self) -> bool {
        self.ingress.is_none()
            && self.egress.is_none()
            && self.admin_ingress.is_empty()
            && self.admin_egress.is_empty()
            && self.baseline_ingress.is_empty()
            && self.baseline_egress.is_empty()
    }

    /// True when the `ingress` (else egress) direction of this endpoint allows a new
    /// connection with `peer`, `protocol` and destination `port`: admin rules, then
    /// NetworkPolicy rules if isolated, else baseline rules, else allowed.
    pub fn allows(&self, ingress: bool, peer: IpAddr, protocol: L4Protocol, port: u16) -> bool {
        let (admin, np, baseline) = if ingress {
            (&self.admin_ingress, &self.ingress, &self.baseline_ingress)
        } else {
            (&self.admin_egress, &self.egress, &self.baseline_egress)
        };
        let first = |rules: &[AdminRule]| {
            rules
                .iter()
                .find(|r| r.rule.matches(peer, protocol, port))
                .map(|r| r.action)
        };
        match first(admin) {
            Some(AdminVerdict::Accept) => true,
            Some(AdminVerdict::Drop) => false,
            Some(AdminVerdict::Pass) | None => match np.as_deref() {
                Some(rules) => direction_allows(Some(rules), peer, protocol, port),
                None => first(baseline) != Some(AdminVerdict::Drop),
            },
        }
    }
}

/// The verdict of an [`AdminRule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminVerdict {
    /// Accept (ANP / BANP `Allow`).
    Accept,
    /// Drop (ANP / BANP `Deny`).
    Drop,
    /// Go on with NetworkPolicy (ANP `Pass`).
    Pass,
}

impl From<AdminAction> for AdminVerdict {
    fn from(a: AdminAction) -> Self {
        match a {
            AdminAction::Allow => AdminVerdict::Accept,
            AdminAction::Deny => AdminVerdict::Drop,
            AdminAction::Pass => AdminVerdict::Pass,
        }
    }
}

impl From<BaselineAction> for AdminVerdict {
    fn from(a: BaselineAction) -> Self {
        AdminAction::from(a).into()
    }
}

/// One compiled AdminNetworkPolicy or BaselineAdminNetworkPolicy rule: a match (peers
/// and ports, as a [`PolicyRule`]) and a verdict.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AdminRule {
    /// What happens to a matching new connection.
    pub action: AdminVerdict,
    /// What it matches.
    #[serde(flatten)]
    pub rule: PolicyRule,
}

/// One compiled rule: it matches a connection whose peer address is in `peers` and
/// whose protocol and destination port are in `ports`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyRule {
    /// Peer prefixes (pods as host prefixes, ipBlocks with their excepts cut out);
    /// `None`: any address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<IpNet>>,
    /// Protocol and destination port ranges; `None`: any protocol and port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PolicyPort>>,
}

/// A protocol and an inclusive range of destination ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PolicyPort {
    /// Protocol.
    pub protocol: L4Protocol,
    /// First port.
    pub first: u16,
    /// Last port (≥ `first`).
    pub last: u16,
}

impl PolicyRule {
    /// True when this rule matches a connection with peer address `peer`, protocol
    /// `protocol` and destination port `port`.
    pub fn matches(&self, peer: IpAddr, protocol: L4Protocol, port: u16) -> bool {
        let peer_ok = self
            .peers
            .as_ref()
            .is_none_or(|ps| ps.iter().any(|p| p.contains(&peer)));
        let port_ok = self.ports.as_ref().is_none_or(|ps| {
            ps.iter()
                .any(|p| p.protocol == protocol && p.first <= port && port <= p.last)
        });
        peer_ok && port_ok
    }
}

/// True when one direction with `rules` (see [`EndpointPolicy`]) allows the connection.
pub fn direction_allows(rules: Option<&[PolicyRule]>, peer: IpAddr, protocol: L4Protocol, port: u16) -> bool {
    rules.is_none_or(|rs| rs.iter().any(|r| r.matches(peer, protocol, port)))
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
    /// This table lets traffic to destinations outside the cluster leave through the
    /// node's underlay: for fabric SNAT (`opencontrail.org/ip_fabric_snat`, TF's
    /// distributed SNAT) and for pods with floating IPs. `None`: the table fails fast
    /// for every destination it has no route to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside: Option<Outside>,
    /// IP fabric forwarding (`opencontrail.org/ip_fabric_forwarding`): the network's own
    /// pods on other nodes are reached natively through the underlay (no VXLAN), packets
    /// from the underlay to its local pods enter its table, and destinations outside the
    /// cluster leave through the underlay with the pod's own address (no NAT).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ip_fabric_forwarding: bool,
    /// Service chains this table is a side of: which of its pods' new connections into
    /// the chain are let through ([`crate::chain`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain_guards: Vec<crate::chain::ChainGuard>,
}

/// How a network's pods reach the outside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outside {
    /// The cluster's own ranges (pod, service, ip-fabric and virtual-network subnets):
    /// destinations there stay in the overlay (and fail fast when the table has no
    /// route); everything else leaves through the underlay.
    pub cluster_subnets: Vec<IpNet>,
    /// Fabric SNAT: pods without a floating IP leave as the node's address, with TF's
    /// port pools. Without it only pods with a floating IP may leave (as their FIP).
    #[serde(default)]
    pub fabric_snat: bool,
}

/// TF's port pool for fabric SNAT of TCP (`port_translation_pools`), per node address.
pub const SNAT_TCP_PORTS: (u16, u16) = (56000, 57023);
/// TF's port pool for fabric SNAT of UDP.
pub const SNAT_UDP_PORTS: (u16, u16) = (57024, 58047);

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
    /// Only for the replies of service traffic: a client of a service whose backend is
    /// in this table's network, although the two networks are not connected. The agent
    /// refuses new connections from this table's pods to it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reply_only: bool,
    /// Only for service traffic: a backend of a service this table's pods may use, in a
    /// network this one is not connected to. The agent lets through only connections
    /// that were translated from the service's VIP, so the backend is not reachable
    /// directly (TF: an isolated namespace reaches cluster services, not their pods).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub service_only: bool,
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
    /// A route learned over BGP (another cluster): encapsulate with `vni` straight to
    /// the VXLAN endpoint `address` (a node of that cluster), whose VXLAN device has MAC
    /// `vtep_mac`. Programmed like a remote peer ([`crate::bgp::ImportedRoute`]).
    External {
        /// Underlay address of the remote VTEP (the BGP next hop).
        address: IpAddr,
        /// VNI from the VPNv4 label.
        vni: Vni,
        /// MAC of the remote VTEP's VXLAN device.
        vtep_mac: MacAddr,
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
    /// Floating IPs bound to this interface (`FloatingIp` objects naming the pod): 1:1
    /// NAT between each and [`LocalInterface::ip`] on this node, both directions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub floating_ips: Vec<IpAddr>,
}

impl LocalInterface {
    /// `namespace/pod/interface`, the key [`NextHop::Local`] uses.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.pod, self.interface)
    }
}

/// Transport protocol of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum L4Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl L4Protocol {
    /// Parses a Kubernetes protocol name (`TCP`, `UDP`, `SCTP`, any case).
    pub fn from_kubernetes(name: &str) -> Option<L4Protocol> {
        match name.to_ascii_uppercase().as_str() {
            "TCP" => Some(L4Protocol::Tcp),
            "UDP" => Some(L4Protocol::Udp),
            "SCTP" => Some(L4Protocol::Sctp),
            _ => None,
        }
    }

    /// Lower-case name, as nftables spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            L4Protocol::Tcp => "tcp",
            L4Protocol::Udp => "udp",
            L4Protocol::Sctp => "sctp",
        }
    }
}

/// How a service picks a backend for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionAffinity {
    /// Any ready backend, at random per connection.
    #[default]
    None,
    /// `sessionAffinity: ClientIP`: a hash of the client address picks the backend, so
    /// one client's connections land on one backend while the backends stay the same.
    ClientIp,
}

/// A service as one node load-balances it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeService {
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// `ClusterIP`, `NodePort` or `LoadBalancer` (NodePort plus its floating IPs, which
    /// are in `external_ips`).
    pub service_type: String,
    /// The VIP (ClusterIP), if the service has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<IpAddr>,
    /// FQ name of the service network holding the VIP.
    pub network: String,
    /// Tables of this node's networks whose pods may use the VIP: the networks
    /// connected to the service network (TF's default policies: a pod network and its
    /// service network; isolated pod networks and the cluster's default service network).
    pub client_tables: Vec<u32>,
    /// Backend choice.
    #[serde(default)]
    pub affinity: SessionAffinity,
    /// External IPs from the spec and a LoadBalancer's floating IPs, handled like the
    /// VIP for any sender.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_ips: Vec<IpAddr>,
    /// Ports with their ready backends.
    pub ports: Vec<NodeServicePort>,
}

impl NodeService {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// One port of a [`NodeService`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeServicePort {
    /// Port name (may be empty on a single-port service).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Transport protocol.
    pub protocol: L4Protocol,
    /// Port on the VIP and external IPs.
    pub port: u16,
    /// NodePort on every node's own addresses, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
    /// Ready backends with their resolved target port, sorted; empty means the port
    /// rejects new connections at once.
    pub backends: Vec<NodeBackend>,
}

/// One ready backend of a service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeBackend {
    /// Backend address.
    pub ip: IpAddr,
    /// Target port on the backend (a named targetPort resolved against the pod).
    pub port: u16,
    /// Node hosting it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `namespace/pod`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}
