//! weft's own input kinds (`apiVersion: weft.dev/v1alpha1`) and the Multus
//! NetworkAttachmentDefinition, as manifests spell them. They are usable both in
//! `weft apply` files and as Kubernetes custom resources.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// API group/version of weft's own kinds.
pub const WEFT_API_VERSION: &str = "weft.dev/v1alpha1";
/// API group/version of NetworkAttachmentDefinition.
pub const NAD_API_VERSION: &str = "k8s.cni.cncf.io/v1";

/// A user-defined virtual network (TF virtual-network) in a namespace's project; pods
/// reach it through the `opencontrail.org/network` annotation or as an extra interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualNetwork {
    /// `weft.dev/v1alpha1`.
    pub api_version: String,
    /// `VirtualNetwork`.
    pub kind: String,
    /// Name and namespace (the namespace decides the project).
    pub metadata: ObjectMeta,
    /// The network's settings.
    pub spec: VirtualNetworkSpec,
}

/// Settings of a user-defined virtual network.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualNetworkSpec {
    /// The network's own subnets (user-defined IPAM). Empty: draw from the cluster pod IPAM.
    #[serde(default)]
    pub subnets: Vec<String>,
    /// Route targets; defaults to `target:<ASN>:<VNI>` for both import and export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_targets: Option<RouteTargetsSpec>,
    /// A fixed VNI; allocated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// Route this network in the underlay without encapsulation.
    #[serde(default)]
    pub ip_fabric_forwarding: bool,
}

/// Route targets of a network (`target:ASN:N` or `target:IP:N`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteTargetsSpec {
    /// Targets whose routes this network imports.
    #[serde(default)]
    pub import: Vec<String>,
    /// Targets this network's routes carry.
    #[serde(default)]
    pub export: Vec<String>,
}

/// A floating-IP pool on a (usually public) virtual network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FloatingIpPool {
    /// `weft.dev/v1alpha1`.
    pub api_version: String,
    /// `FloatingIpPool`.
    pub kind: String,
    /// Name and namespace.
    pub metadata: ObjectMeta,
    /// The pool's settings.
    pub spec: FloatingIpPoolSpec,
}

/// Settings of a floating-IP pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FloatingIpPoolSpec {
    /// Name of the VirtualNetwork (same namespace) the addresses come from.
    pub network: String,
    /// Restrict the pool to these subnets of the network; empty = all of them.
    #[serde(default)]
    pub subnets: Vec<String>,
}

/// A Multus NetworkAttachmentDefinition (`k8s.cni.cncf.io/v1`). TF reads its
/// `opencontrail.org/cidr` (new network) or `opencontrail.org/network` (existing one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkAttachmentDefinition {
    /// `k8s.cni.cncf.io/v1`.
    pub api_version: String,
    /// `NetworkAttachmentDefinition`.
    pub kind: String,
    /// Name, namespace and the TF annotations.
    pub metadata: ObjectMeta,
    /// The CNI config Multus would pass on; kept, not interpreted.
    #[serde(default)]
    pub spec: NetworkAttachmentSpec,
}

/// Spec of a NetworkAttachmentDefinition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkAttachmentSpec {
    /// CNI configuration JSON as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}
