//! Service chaining (reference §11): traffic between two virtual networks steered
//! through an ordered list of service pods, in both directions, as Tungsten Fabric does
//! with a network policy that applies a service instance in `in-network` mode.
//!
//! ```text
//! ServiceChain (input) ──translator──> ServiceChainRecord (derived: networks resolved,
//!                                       one VNI per gap between consecutive hops)
//!        ──weft-routing::chains (per node)──> routes + ChainGuard in NodeState ──> agent
//! ```
//!
//! A ServiceChain names its left and right networks, the service pods in order from
//! left to right (each with the interface it has in the left network and the one it has
//! in the right network), the traffic it applies to and what happens when a service pod
//! is gone. TF builds hidden service routing instances and re-originates each side's
//! routes with the service interfaces as next hops; weft does the same with its tables:
//! the left network's table routes the right network's endpoints to the first hop's
//! left interface, the right network's table routes the left network's endpoints to the
//! last hop's right interface, and between two hops a routing instance of the chain's
//! own (its own table and VNI, so the steering survives crossing nodes) holds the routes
//! from one hop's right interface to the next hop's left interface and back.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::ids::Vni;
use crate::node::PolicyPort;

/// A service chain between two virtual networks (weft kind, namespaced; TF's service
/// instance + port tuple + the policy that applies it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceChain {
    /// `weft.dev/v1alpha1`.
    pub api_version: String,
    /// `ServiceChain`.
    pub kind: String,
    /// Name and namespace (service pods and unqualified network names are looked up in
    /// this namespace).
    pub metadata: ObjectMeta,
    /// Networks, service pods, traffic, failure behaviour.
    pub spec: ServiceChainSpec,
}

/// Settings of a [`ServiceChain`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceChainSpec {
    /// The left network: a VirtualNetwork or NetworkAttachmentDefinition, as `name`
    /// (this namespace) or `namespace/name`.
    #[serde(default)]
    pub left_network: String,
    /// The right network, named the same way.
    #[serde(default)]
    pub right_network: String,
    /// The service pods, in the order traffic from left to right crosses them (right to
    /// left crosses them in reverse). At least one.
    #[serde(default)]
    pub services: Vec<ChainService>,
    /// The traffic the chain carries: new connections (either way) whose protocol and
    /// destination port match one entry. Empty: all traffic. Connections that match no
    /// entry are refused, as TF's policy rule with `apply_service` denies what it does
    /// not match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ChainPort>,
    /// What happens while a service pod is missing (deleted, not scheduled, or without
    /// the named interface): [`ChainFailure::Drop`] (default) or [`ChainFailure::Bypass`].
    #[serde(default)]
    pub on_failure: ChainFailure,
}

/// One service pod of a chain and its two data interfaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChainService {
    /// Name of the pod (in the chain's namespace).
    pub pod: String,
    /// The pod's interface in the left network (`net1` when absent: the first
    /// `k8s.v1.cni.cncf.io/networks` entry).
    #[serde(default = "default_left_interface")]
    pub left_interface: String,
    /// The pod's interface in the right network (`net2` when absent).
    #[serde(default = "default_right_interface")]
    pub right_interface: String,
}

fn default_left_interface() -> String {
    "net1".to_string()
}

fn default_right_interface() -> String {
    "net2".to_string()
}

/// A protocol and destination port (range) a chain carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChainPort {
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Destination port; every port when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Last port of a range starting at `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<u16>,
}

/// What a chain does while one of its service pods is missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChainFailure {
    /// Fail closed: traffic between the two networks is dropped (refused: no route)
    /// until every service pod is back. What a firewall chain wants.
    #[default]
    Drop,
    /// Fail open: the missing service pods are skipped; with none left the two networks
    /// reach each other directly. What a monitoring or optimising chain wants.
    Bypass,
}

/// A ServiceChain as translated: its networks resolved to FQ names and a VNI for
/// each routing instance between two consecutive hops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceChainRecord {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// FQ name of the left network.
    pub left_network: String,
    /// FQ name of the right network.
    pub right_network: String,
    /// The hops, left to right.
    pub hops: Vec<ChainHop>,
    /// VNI of the routing instance between hop `i` and hop `i + 1` (one fewer than the
    /// hops), allocated like a network's and held while the chain exists.
    pub hop_vnis: Vec<Vni>,
    /// The traffic the chain carries (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PolicyPort>,
    /// Behaviour while a service pod is missing.
    pub on_failure: ChainFailure,
    /// Service pods missing right now, each with why (empty: the chain is whole). The
    /// route compiler decides from the interfaces themselves; this is for people.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

/// One hop of a translated chain: `namespace/pod/interface` keys of its two sides.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChainHop {
    /// Pod name.
    pub pod: String,
    /// Its interface in the left network.
    pub left_interface: String,
    /// Its interface in the right network.
    pub right_interface: String,
}

/// What every chain routing instance's name holds after its project
/// ([`ServiceChainRecord::instance_name`]), so tools can tell chain instances apart.
pub const CHAIN_INSTANCE_MARK: &str = ":service-chain-";

impl ServiceChainRecord {
    /// FQ name of the routing instance between hop `gap` and hop `gap + 1` (0-based),
    /// in the left network's project, as TF names its service routing instances after
    /// the service. The chain's namespace is part of the name: chains of one name in two
    /// namespaces may share a left network (hence a project), and each needs its own
    /// instance (`.` cannot occur in a namespace, so the name is unambiguous).
    pub fn instance_name(&self, gap: usize) -> String {
        let project = self
            .left_network
            .rsplit_once(':')
            .map(|(p, _)| p)
            .unwrap_or(self.left_network.as_str());
        format!(
            "{project}{CHAIN_INSTANCE_MARK}{}.{}-{}",
            self.namespace,
            self.name,
            gap + 1
        )
    }

    /// `namespace/pod/interface` of a hop's interface.
    pub fn interface_key(&self, pod: &str, interface: &str) -> String {
        format!("{}/{}/{}", self.namespace, pod, interface)
    }
}

/// A chain's entry on one side, in that side's table: new connections from the table's
/// local pods to `destinations` (the other side's endpoints) are let through only when
/// they match `ports` (empty: all). Rendered by the agent in its forward filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainGuard {
    /// The chain, as `namespace/name`.
    pub chain: String,
    /// The other side's endpoint prefixes.
    pub destinations: Vec<ipnet::IpNet>,
    /// The protocols and ports the chain carries.
    pub ports: Vec<PolicyPort>,
}
