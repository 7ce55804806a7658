//! Derived objects: what the translator makes of the inputs, following TF's object
//! model (project, virtual network with its routing instance, VMI + instance-ip as one
//! [`InterfaceAttachment`], native load balancer as [`ServiceRecord`], firewall policy).
//! They are stored, shown by `weft get`, and compiled into per-node forwarding state.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::ids::{MacAddr, Vni};

/// A namespace's project (`<cluster>-<namespace>`) and the networks its pods use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    /// Project name, `<cluster>-<namespace>`.
    pub name: String,
    /// The Kubernetes namespace.
    pub namespace: String,
    /// `opencontrail.org/isolation: "true"`.
    pub isolated: bool,
    /// FQ name of the network the namespace's pods join by default.
    pub pod_network: String,
    /// FQ name of the network the namespace's service VIPs live in.
    pub service_network: String,
    /// Custom network from the namespace's `opencontrail.org/network`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_network: Option<String>,
    /// Pods are routed in the underlay (`opencontrail.org/ip_fabric_forwarding`).
    pub ip_fabric_forwarding: bool,
    /// Pods reach the fabric through SNAT (`opencontrail.org/ip_fabric_snat`).
    pub ip_fabric_snat: bool,
}

/// What a virtual network is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkKind {
    /// A pod network (shared default or per isolated namespace).
    Pod,
    /// A service network holding service VIPs.
    Service,
    /// A user-defined VirtualNetwork.
    Custom,
    /// A network made for a NetworkAttachmentDefinition.
    Attachment,
}

/// A virtual network with its routing instance, subnets and VNI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualNetworkRecord {
    /// `default-domain:<project>:<name>`.
    pub fq_name: String,
    /// Short name.
    pub name: String,
    /// Owning project.
    pub project: String,
    /// Kubernetes namespace of the project.
    pub namespace: String,
    /// What it is for.
    pub kind: NetworkKind,
    /// The IPAM the addresses come from (`k8s-pod-ipam`, or the network's own).
    pub ipam: String,
    /// Subnets addresses are allocated from.
    pub subnets: Vec<IpNet>,
    /// Gateway address (TF: last usable address of the subnet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// VXLAN network identifier, unique per network.
    pub vni: Vni,
    /// Routing instance name (a policy-routing table on each node).
    pub routing_instance: String,
    /// Route targets imported.
    pub import_targets: Vec<String>,
    /// Route targets exported.
    pub export_targets: Vec<String>,
    /// Networks whose routes leak into this one (TF's default network policies).
    pub connected_networks: Vec<String>,
    /// Routed in the underlay without encapsulation.
    pub ip_fabric_forwarding: bool,
    /// The input that made this network (`Namespace dev`, `VirtualNetwork a/b`, `cluster`).
    pub origin: String,
}

/// One pod interface: TF's VMI + instance-ip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceAttachment {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Pod UID (TF uses it as the VM UUID); empty when the manifest had none.
    pub pod_uid: String,
    /// Node the pod runs on, once scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Interface name inside the pod: `eth0`, then `net1`, `net2` …
    pub interface: String,
    /// FQ name of the network.
    pub network: String,
    /// The pod's address on that network.
    pub ip: IpAddr,
    /// Prefix length of the subnet the address came from.
    pub prefix_len: u8,
    /// Default gateway on that network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// The interface's MAC address.
    pub mac: MacAddr,
    /// The primary interface (carries the default route).
    pub primary: bool,
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePortRecord {
    /// Port name (may be empty for single-port services).
    pub name: String,
    /// TCP, UDP or SCTP.
    pub protocol: String,
    /// Port on the VIP.
    pub port: u16,
    /// Port number or named container port on the backends.
    pub target_port: String,
    /// NodePort, if the service has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
}

/// One backend of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendRecord {
    /// `namespace/pod` when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Backend address.
    pub ip: IpAddr,
    /// Node hosting the backend, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Ready to receive traffic.
    pub ready: bool,
    /// Target port on this backend per service port name (the EndpointSlice's ports, or
    /// a named targetPort resolved against the pod's containerPorts). A service port
    /// missing here uses its numeric targetPort; a named one missing here is not
    /// served by this backend.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub target_ports: BTreeMap<String, u16>,
}

/// A service as TF's native load balancer: VIP in the service network, ports, backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// Namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// ClusterIP, NodePort or LoadBalancer.
    pub service_type: String,
    /// The VIP (the ClusterIP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<IpAddr>,
    /// FQ name of the service network holding the VIP.
    pub network: String,
    /// Ports.
    pub ports: Vec<ServicePortRecord>,
    /// `ClientIP` or `None`.
    pub session_affinity: String,
    /// External IPs from the spec.
    pub external_ips: Vec<String>,
    /// Backends (from EndpointSlices, or from the selector when there are none).
    pub backends: Vec<BackendRecord>,
    /// Where the backends came from: `endpointslices` or `selector`.
    pub backends_from: String,
    /// A note for the user: which scope chose the floating-IP pool of a LoadBalancer,
    /// or why it has none (it then acts as NodePort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Floating IPs of a LoadBalancer service (reference §5.3), allocated from its pool
    /// network's IPAM. Every node DNATs them like external IPs and the controller
    /// exports them over BGP in the pool's network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub floating_ips: Vec<IpAddr>,
    /// The FloatingIpPool the floating IPs come from, as `namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fip_pool: Option<String>,
    /// FQ name of the pool's network, whose IPAM holds the floating IPs and in which
    /// they are exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fip_network: Option<String>,
}

/// A `FloatingIp` object as translated (TF floating-ip with its VMI reference): the
/// address allocated from the pool network's IPAM, and the pod interface it is bound
/// to right now. The address stays allocated while the object exists, whether or not
/// its pod does; the binding follows the pod (deleted and re-created, possibly on
/// another node, it binds to the new pod's interface). A bound floating IP is 1:1 NAT
/// on the pod's node and exported over BGP in the pool network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingIpRecord {
    /// Namespace of the FloatingIp (and of the pod).
    pub namespace: String,
    /// Name of the FloatingIp.
    pub name: String,
    /// The floating IP, once allocated (`None` while the pool or an address is missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// The FloatingIpPool, as `namespace/name`.
    pub pool: String,
    /// FQ name of the pool's network: its IPAM holds the address and the address is
    /// exported in it. `None` while the pool is not resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Name of the pod it binds to (same namespace).
    pub pod: String,
    /// The pod's interface it binds to (`eth0` by default).
    pub interface: String,
    /// Address of the bound interface (TF `floating_ip_fixed_ip_address`), when bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_ip: Option<IpAddr>,
    /// Node of the bound pod, when bound: where the NAT happens and the BGP next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Why it is not bound, or why it has no address; `None` when bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl FloatingIpRecord {
    /// The floating IP, the pod address and the node when it is bound to a scheduled
    /// pod interface; `None` otherwise (nothing to NAT or export).
    pub fn binding(&self) -> Option<(IpAddr, IpAddr, &str)> {
        Some((self.ip?, self.fixed_ip?, self.node.as_deref()?))
    }

    /// `namespace/pod/interface` of the interface it names (the [`InterfaceAttachment`] key).
    pub fn interface_key(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.pod, self.interface)
    }
}

/// A NetworkPolicy as a TF firewall policy with its sequence in the cluster policy set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallPolicyRecord {
    /// `<cluster>-<namespace>-<policy>`.
    pub name: String,
    /// Namespace of the NetworkPolicy.
    pub namespace: String,
    /// The NetworkPolicy's name.
    pub policy: String,
    /// Position in the cluster application policy set (after `<cluster>-Ingress`).
    pub sequence: u32,
    /// Ingress and/or Egress, with Kubernetes' defaults applied.
    pub policy_types: Vec<String>,
    /// The pod selector, rendered as `k=v,k2 in (a,b)`.
    pub pod_selector: String,
    /// Number of ingress rules.
    pub ingress_rules: usize,
    /// Number of egress rules.
    pub egress_rules: usize,
}

/// Readiness of an input object after translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectState {
    /// Fully translated.
    Ready,
    /// Waiting for something (a network, a free address); `reason` says what.
    Pending,
}

/// Status of one input object: ready, or pending with a reason a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectStatus {
    /// The input, as `Pod dev/web`.
    pub object: String,
    /// Ready or pending.
    pub state: ObjectState,
    /// Why it is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The kinds of derived objects, with their store prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DerivedKind {
    /// Projects.
    Project,
    /// Virtual networks.
    Network,
    /// Pod interfaces.
    Interface,
    /// Services.
    Service,
    /// Floating IPs of pods (`FloatingIp` objects).
    FloatingIp,
    /// Firewall policies.
    FirewallPolicy,
    /// Pending objects.
    Status,
    /// Service chains (`ServiceChain` objects).
    ServiceChain,
}

impl DerivedKind {
    /// All derived kinds.
    pub const ALL: [DerivedKind; 8] = [
        DerivedKind::Project,
        DerivedKind::Network,
        DerivedKind::Interface,
        DerivedKind::Service,
        DerivedKind::FloatingIp,
        DerivedKind::FirewallPolicy,
        DerivedKind::Status,
        DerivedKind::ServiceChain,
    ];

    /// Plural used in store keys and URLs.
    pub fn plural(self) -> &'static str {
        match self {
            DerivedKind::Project => "projects",
            DerivedKind::Network => "networks",
            DerivedKind::Interface => "interfaces",
            DerivedKind::Service => "services",
            DerivedKind::FloatingIp => "floatingips",
            DerivedKind::FirewallPolicy => "policies",
            DerivedKind::Status => "statuses",
            DerivedKind::ServiceChain => "servicechains",
        }
    }

    /// Looks a kind up by its plural.
    pub fn from_plural(plural: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.plural() == plural)
    }
}

/// Any derived object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "object", rename_all = "kebab-case")]
#[allow(missing_docs)]
pub enum DerivedObject {
    Project(Project),
    Network(VirtualNetworkRecord),
    Interface(InterfaceAttachment),
    Service(ServiceRecord),
    FloatingIp(FloatingIpRecord),
    FirewallPolicy(FirewallPolicyRecord),
    Status(ObjectStatus),
    ServiceChain(crate::chain::ServiceChainRecord),
}

impl DerivedObject {
    /// The object's kind.
    pub fn kind(&self) -> DerivedKind {
        match self {
            DerivedObject::Project(_) => DerivedKind::Project,
            DerivedObject::Network(_) => DerivedKind::Network,
            DerivedObject::Interface(_) => DerivedKind::Interface,
            DerivedObject::Service(_) => DerivedKind::Service,
            DerivedObject::FloatingIp(_) => DerivedKind::FloatingIp,
            DerivedObject::FirewallPolicy(_) => DerivedKind::FirewallPolicy,
            DerivedObject::Status(_) => DerivedKind::Status,
            DerivedObject::ServiceChain(_) => DerivedKind::ServiceChain,
        }
    }

    /// Name unique within the kind: project name, FQ network name,
    /// `namespace/pod/interface`, `namespace/service`, `namespace/floating-ip`, policy
    /// name, input object.
    pub fn name(&self) -> String {
        match self {
            DerivedObject::Project(p) => p.name.clone(),
            DerivedObject::Network(n) => n.fq_name.clone(),
            DerivedObject::Interface(i) => format!("{}/{}/{}", i.namespace, i.pod, i.interface),
            DerivedObject::Service(s) => format!("{}/{}", s.namespace, s.name),
            DerivedObject::FloatingIp(f) => format!("{}/{}", f.namespace, f.name),
            DerivedObject::FirewallPolicy(p) => p.name.clone(),
            DerivedObject::Status(s) => s.object.clone(),
            DerivedObject::ServiceChain(c) => format!("{}/{}", c.namespace, c.name),
        }
    }

    /// Namespace the object belongs to, for `-n` filtering.
    pub fn namespace(&self) -> Option<&str> {
        match self {
            DerivedObject::Project(p) => Some(&p.namespace),
            DerivedObject::Network(n) => Some(&n.namespace),
            DerivedObject::Interface(i) => Some(&i.namespace),
            DerivedObject::Service(s) => Some(&s.namespace),
            DerivedObject::FloatingIp(f) => Some(&f.namespace),
            DerivedObject::FirewallPolicy(p) => Some(&p.namespace),
            DerivedObject::Status(_) => None,
            DerivedObject::ServiceChain(c) => Some(&c.namespace),
        }
    }
}
