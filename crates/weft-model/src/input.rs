//! Inputs: the Kubernetes objects and weft kinds the translator consumes, whether they
//! come from `weft apply` or from a Kubernetes watch. An [`InputChange`] is one event.

use std::fmt;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::admin_policy::{ANP_API_VERSION, AdminNetworkPolicy, BaselineAdminNetworkPolicy};
use crate::bgp::BgpPeer;
use crate::chain::ServiceChain;
use crate::config::ClusterConfig;
use crate::error::FieldError;
use crate::resources::{
    FloatingIp, FloatingIpPool, NAD_API_VERSION, NetworkAttachmentDefinition, VirtualNetwork,
    WEFT_API_VERSION,
};

/// Every kind of object weft accepts as input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum InputKind {
    /// Cluster settings (weft kind); applied first in a batch.
    ClusterConfig,
    /// A user-defined virtual network (weft kind).
    VirtualNetwork,
    /// A floating-IP pool (weft kind).
    FloatingIpPool,
    /// Kubernetes Namespace.
    Namespace,
    /// Kubernetes Node.
    Node,
    /// Multus NetworkAttachmentDefinition.
    NetworkAttachmentDefinition,
    /// Kubernetes Pod.
    Pod,
    /// Kubernetes Service.
    Service,
    /// Kubernetes EndpointSlice.
    EndpointSlice,
    /// Kubernetes NetworkPolicy.
    NetworkPolicy,
    /// A BGP neighbour of the controller (weft kind, cluster-scoped).
    BgpPeer,
    /// sig-network AdminNetworkPolicy (cluster-wide, checked before NetworkPolicy).
    AdminNetworkPolicy,
    /// sig-network BaselineAdminNetworkPolicy (cluster-wide, checked after NetworkPolicy).
    BaselineAdminNetworkPolicy,
    /// A floating IP bound to a pod interface (weft kind, namespaced; TF floating-ip).
    FloatingIp,
    /// Traffic between two networks steered through service pods (weft kind, namespaced).
    ServiceChain,
}

impl InputKind {
    /// All kinds, in the order a batch is applied (dependencies first).
    pub const ALL: [InputKind; 15] = [
        InputKind::ClusterConfig,
        InputKind::VirtualNetwork,
        InputKind::FloatingIpPool,
        InputKind::Namespace,
        InputKind::Node,
        InputKind::NetworkAttachmentDefinition,
        InputKind::Pod,
        InputKind::Service,
        InputKind::EndpointSlice,
        InputKind::NetworkPolicy,
        InputKind::BgpPeer,
        InputKind::AdminNetworkPolicy,
        InputKind::BaselineAdminNetworkPolicy,
        InputKind::FloatingIp,
        InputKind::ServiceChain,
    ];

    /// The manifest `kind:`.
    pub fn kind_name(self) -> &'static str {
        match self {
            InputKind::ClusterConfig => "ClusterConfig",
            InputKind::VirtualNetwork => "VirtualNetwork",
            InputKind::FloatingIpPool => "FloatingIpPool",
            InputKind::Namespace => "Namespace",
            InputKind::Node => "Node",
            InputKind::NetworkAttachmentDefinition => "NetworkAttachmentDefinition",
            InputKind::Pod => "Pod",
            InputKind::Service => "Service",
            InputKind::EndpointSlice => "EndpointSlice",
            InputKind::NetworkPolicy => "NetworkPolicy",
            InputKind::BgpPeer => "BgpPeer",
            InputKind::AdminNetworkPolicy => "AdminNetworkPolicy",
            InputKind::BaselineAdminNetworkPolicy => "BaselineAdminNetworkPolicy",
            InputKind::FloatingIp => "FloatingIp",
            InputKind::ServiceChain => "ServiceChain",
        }
    }

    /// The manifest `apiVersion:`.
    pub fn api_version(self) -> &'static str {
        match self {
            InputKind::ClusterConfig
            | InputKind::VirtualNetwork
            | InputKind::FloatingIpPool
            | InputKind::FloatingIp
            | InputKind::ServiceChain
            | InputKind::BgpPeer => WEFT_API_VERSION,
            InputKind::Namespace | InputKind::Node | InputKind::Pod | InputKind::Service => "v1",
            InputKind::NetworkAttachmentDefinition => NAD_API_VERSION,
            InputKind::EndpointSlice => "discovery.k8s.io/v1",
            InputKind::NetworkPolicy => "networking.k8s.io/v1",
            InputKind::AdminNetworkPolicy | InputKind::BaselineAdminNetworkPolicy => ANP_API_VERSION,
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(
            self,
            InputKind::ClusterConfig
                | InputKind::Namespace
                | InputKind::Node
                | InputKind::BgpPeer
                | InputKind::AdminNetworkPolicy
                | InputKind::BaselineAdminNetworkPolicy
        )
    }

    /// Lower-case plural used in store keys and URLs (`pods`, `clusterconfigs`).
    pub fn plural(self) -> &'static str {
        match self {
            InputKind::ClusterConfig => "clusterconfigs",
            InputKind::VirtualNetwork => "virtualnetworks",
            InputKind::FloatingIpPool => "floatingippools",
            InputKind::Namespace => "namespaces",
            InputKind::Node => "nodes",
            InputKind::NetworkAttachmentDefinition => "networkattachmentdefinitions",
            InputKind::Pod => "pods",
            InputKind::Service => "services",
            InputKind::EndpointSlice => "endpointslices",
            InputKind::NetworkPolicy => "networkpolicies",
            InputKind::BgpPeer => "bgppeers",
            InputKind::AdminNetworkPolicy => "adminnetworkpolicies",
            InputKind::BaselineAdminNetworkPolicy => "baselineadminnetworkpolicies",
            InputKind::FloatingIp => "floatingips",
            InputKind::ServiceChain => "servicechains",
        }
    }

    /// Looks a kind up by its plural.
    pub fn from_plural(plural: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.plural() == plural)
    }

    /// Looks a kind up by `kind:` alone.
    pub fn from_kind_name(kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.kind_name() == kind)
    }
}

impl fmt::Display for InputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind_name())
    }
}

/// Identity of one input object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InputKey {
    /// Its kind.
    pub kind: InputKind,
    /// Its namespace (for namespaced kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

impl InputKey {
    /// A key for a namespaced object.
    pub fn namespaced(kind: InputKind, namespace: &str, name: &str) -> Self {
        Self {
            kind,
            namespace: Some(namespace.to_string()),
            name: name.to_string(),
        }
    }

    /// A key for a cluster-scoped object.
    pub fn cluster(kind: InputKind, name: &str) -> Self {
        Self {
            kind,
            namespace: None,
            name: name.to_string(),
        }
    }

    /// `namespace/name` or `name`.
    pub fn qualified_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

impl fmt::Display for InputKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.qualified_name())
    }
}

/// One input object of any kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "object")]
#[allow(missing_docs)]
pub enum InputObject {
    ClusterConfig(Box<ClusterConfig>),
    VirtualNetwork(Box<VirtualNetwork>),
    FloatingIpPool(Box<FloatingIpPool>),
    Namespace(Box<Namespace>),
    Node(Box<Node>),
    NetworkAttachmentDefinition(Box<NetworkAttachmentDefinition>),
    Pod(Box<Pod>),
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    NetworkPolicy(Box<NetworkPolicy>),
    BgpPeer(Box<BgpPeer>),
    AdminNetworkPolicy(Box<AdminNetworkPolicy>),
    BaselineAdminNetworkPolicy(Box<BaselineAdminNetworkPolicy>),
    FloatingIp(Box<FloatingIp>),
    ServiceChain(Box<ServiceChain>),
}

/// Decodes `value` as `T`, naming the failing field path on error.
fn decode<T: serde::de::DeserializeOwned>(value: serde_json::Value, object: &str) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." {
            "(document)".to_string()
        } else {
            path
        };
        FieldError::new(object, field, err.inner().to_string())
    })
}

impl InputObject {
    /// Decodes a manifest document (already parsed from YAML or JSON). The error names
    /// the object (as far as it is known), the field and what was expected.
    pub fn from_value(value: serde_json::Value) -> Result<Self, FieldError> {
        let text = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let api_version = text(&value, "apiVersion");
        let kind = text(&value, "kind");
        let name = value.get("metadata").and_then(|m| text(m, "name"));
        let namespace = value.get("metadata").and_then(|m| text(m, "namespace"));
        let shown = format!(
            "{} {}",
            kind.as_deref().unwrap_or("(no kind)"),
            match (&namespace, &name) {
                (Some(ns), Some(n)) => format!("{ns}/{n}"),
                (None, Some(n)) => n.clone(),
                _ => "(no name)".to_string(),
            }
        );
        if !value.is_object() {
            return Err(FieldError::new(
                "(document)",
                "(document)",
                "a mapping with apiVersion, kind and metadata",
            ));
        }
        let kind_name = kind.ok_or_else(|| FieldError::new(&shown, "kind", "the object's kind, e.g. Pod"))?;
        let api_version = api_version
            .ok_or_else(|| FieldError::new(&shown, "apiVersion", "the object's apiVersion, e.g. v1"))?;
        let known = InputKind::from_kind_name(&kind_name).ok_or_else(|| {
            let names: Vec<&str> = InputKind::ALL.iter().map(|k| k.kind_name()).collect();
            FieldError::new(&shown, "kind", format!("one of {}", names.join(", "))).found(&kind_name)
        })?;
        if known.api_version() != api_version {
            return Err(FieldError::new(
                &shown,
                "apiVersion",
                format!("{} for kind {}", known.api_version(), kind_name),
            )
            .found(&api_version));
        }
        match &name {
            Some(n) if is_dns_subdomain(n) => {}
            Some(n) => {
                return Err(FieldError::new(
                    &shown,
                    "metadata.name",
                    "a DNS-1123 name: lowercase letters, digits, '-' and '.', at most 253 characters",
                )
                .found(n));
            }
            None => return Err(FieldError::new(&shown, "metadata.name", "a name")),
        }
        if let Some(ns) = &namespace
            && (!known.namespaced() || !is_dns_label(ns))
        {
            let expected = if known.namespaced() {
                "a DNS-1123 label: lowercase letters, digits and '-', at most 63 characters"
            } else {
                "no namespace: this kind is cluster-scoped"
            };
            return Err(FieldError::new(&shown, "metadata.namespace", expected).found(ns));
        }
        Ok(match known {
            InputKind::ClusterConfig => InputObject::ClusterConfig(decode(value, &shown)?),
            InputKind::VirtualNetwork => InputObject::VirtualNetwork(decode(value, &shown)?),
            InputKind::FloatingIpPool => InputObject::FloatingIpPool(decode(value, &shown)?),
            InputKind::Namespace => InputObject::Namespace(decode(value, &shown)?),
            InputKind::Node => InputObject::Node(decode(value, &shown)?),
            InputKind::NetworkAttachmentDefinition => {
                InputObject::NetworkAttachmentDefinition(decode(value, &shown)?)
            }
            InputKind::Pod => InputObject::Pod(decode(value, &shown)?),
            InputKind::Service => InputObject::Service(decode(value, &shown)?),
            InputKind::EndpointSlice => InputObject::EndpointSlice(decode(value, &shown)?),
            InputKind::NetworkPolicy => InputObject::NetworkPolicy(decode(value, &shown)?),
            InputKind::BgpPeer => {
                let peer: Box<BgpPeer> = decode(value, &shown)?;
                peer.spec
                    .validate(&shown, &peer.metadata.name.clone().unwrap_or_default())?;
                InputObject::BgpPeer(peer)
            }
            InputKind::AdminNetworkPolicy => {
                let anp: Box<AdminNetworkPolicy> = decode(value, &shown)?;
                anp.validate(&shown)?;
                InputObject::AdminNetworkPolicy(anp)
            }
            InputKind::BaselineAdminNetworkPolicy => {
                let banp: Box<BaselineAdminNetworkPolicy> = decode(value, &shown)?;
                banp.validate(&shown)?;
                InputObject::BaselineAdminNetworkPolicy(banp)
            }
            InputKind::FloatingIp => InputObject::FloatingIp(decode(value, &shown)?),
            InputKind::ServiceChain => InputObject::ServiceChain(decode(value, &shown)?),
        })
    }

    /// Encodes back to a manifest document, with apiVersion and kind filled in.
    pub fn to_value(&self) -> serde_json::Value {
        let mut value = match self {
            InputObject::ClusterConfig(o) => serde_json::to_value(o),
            InputObject::VirtualNetwork(o) => serde_json::to_value(o),
            InputObject::FloatingIpPool(o) => serde_json::to_value(o),
            InputObject::Namespace(o) => serde_json::to_value(o),
            InputObject::Node(o) => serde_json::to_value(o),
            InputObject::NetworkAttachmentDefinition(o) => serde_json::to_value(o),
            InputObject::Pod(o) => serde_json::to_value(o),
            InputObject::Service(o) => serde_json::to_value(o),
            InputObject::EndpointSlice(o) => serde_json::to_value(o),
            InputObject::NetworkPolicy(o) => serde_json::to_value(o),
            InputObject::BgpPeer(o) => serde_json::to_value(o),
            InputObject::AdminNetworkPolicy(o) => serde_json::to_value(o),
            InputObject::BaselineAdminNetworkPolicy(o) => serde_json::to_value(o),
            InputObject::FloatingIp(o) => serde_json::to_value(o),
            InputObject::ServiceChain(o) => serde_json::to_value(o),
        }
        .unwrap_or(serde_json::Value::Null);
        if let Some(map) = value.as_object_mut() {
            let kind = self.kind();
            map.insert("apiVersion".into(), kind.api_version().into());
            map.insert("kind".into(), kind.kind_name().into());
        }
        value
    }

    /// The object's kind.
    pub fn kind(&self) -> InputKind {
        match self {
            InputObject::ClusterConfig(_) => InputKind::ClusterConfig,
            InputObject::VirtualNetwork(_) => InputKind::VirtualNetwork,
            InputObject::FloatingIpPool(_) => InputKind::FloatingIpPool,
            InputObject::Namespace(_) => InputKind::Namespace,
            InputObject::Node(_) => InputKind::Node,
            InputObject::NetworkAttachmentDefinition(_) => InputKind::NetworkAttachmentDefinition,
            InputObject::Pod(_) => InputKind::Pod,
            InputObject::Service(_) => InputKind::Service,
            InputObject::EndpointSlice(_) => InputKind::EndpointSlice,
            InputObject::NetworkPolicy(_) => InputKind::NetworkPolicy,
            InputObject::BgpPeer(_) => InputKind::BgpPeer,
            InputObject::AdminNetworkPolicy(_) => InputKind::AdminNetworkPolicy,
            InputObject::BaselineAdminNetworkPolicy(_) => InputKind::BaselineAdminNetworkPolicy,
            InputObject::FloatingIp(_) => InputKind::FloatingIp,
            InputObject::ServiceChain(_) => InputKind::ServiceChain,
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            InputObject::ClusterConfig(o) => &o.metadata,
            InputObject::VirtualNetwork(o) => &o.metadata,
            InputObject::FloatingIpPool(o) => &o.metadata,
            InputObject::Namespace(o) => &o.metadata,
            InputObject::Node(o) => &o.metadata,
            InputObject::NetworkAttachmentDefinition(o) => &o.metadata,
            InputObject::Pod(o) => &o.metadata,
            InputObject::Service(o) => &o.metadata,
            InputObject::EndpointSlice(o) => &o.metadata,
            InputObject::NetworkPolicy(o) => &o.metadata,
            InputObject::BgpPeer(o) => &o.metadata,
            InputObject::AdminNetworkPolicy(o) => &o.metadata,
            InputObject::BaselineAdminNetworkPolicy(o) => &o.metadata,
            InputObject::FloatingIp(o) => &o.metadata,
            InputObject::ServiceChain(o) => &o.metadata,
        }
    }

    /// Mutable metadata (the API server fills in defaults such as the namespace).
    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            InputObject::ClusterConfig(o) => &mut o.metadata,
            InputObject::VirtualNetwork(o) => &mut o.metadata,
            InputObject::FloatingIpPool(o) => &mut o.metadata,
            InputObject::Namespace(o) => &mut o.metadata,
            InputObject::Node(o) => &mut o.metadata,
            InputObject::NetworkAttachmentDefinition(o) => &mut o.metadata,
            InputObject::Pod(o) => &mut o.metadata,
            InputObject::Service(o) => &mut o.metadata,
            InputObject::EndpointSlice(o) => &mut o.metadata,
            InputObject::NetworkPolicy(o) => &mut o.metadata,
            InputObject::BgpPeer(o) => &mut o.metadata,
            InputObject::AdminNetworkPolicy(o) => &mut o.metadata,
            InputObject::BaselineAdminNetworkPolicy(o) => &mut o.metadata,
            InputObject::FloatingIp(o) => &mut o.metadata,
            InputObject::ServiceChain(o) => &mut o.metadata,
        }
    }

    /// Fills in `metadata.namespace` with `default_namespace` for namespaced kinds that
    /// have none, as kubectl does.
    pub fn default_namespace(&mut self, default_namespace: &str) {
        if self.kind().namespaced() && self.metadata().namespace.is_none() {
            self.metadata_mut().namespace = Some(default_namespace.to_string());
        }
    }

    /// The object's key (kind, namespace, name).
    pub fn key(&self) -> InputKey {
        let meta = self.metadata();
        let kind = self.kind();
        InputKey {
            kind,
            namespace: if kind.namespaced() {
                Some(meta.namespace.clone().unwrap_or_else(|| "default".into()))
            } else {
                None
            },
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

/// One event on the inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InputChange {
    /// The object was created or changed.
    Upsert(InputObject),
    /// The object was deleted.
    Delete(InputKey),
}

/// A DNS-1123 label (namespaces, most names).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain (object names).
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_a_pod() {
        let obj = InputObject::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "dev"},
            "spec": {"containers": [{"name": "c", "image": "x"}]}
        }))
        .unwrap();
        assert_eq!(obj.key(), InputKey::namespaced(InputKind::Pod, "dev", "web"));
        assert_eq!(obj.to_value()["kind"], "Pod");
    }

    #[test]
    fn unknown_kind_names_the_choices() {
        let err =
            InputObject::from_value(json!({"apiVersion": "v1", "kind": "Frob", "metadata": {"name": "x"}}))
                .unwrap_err();
        assert_eq!(err.field, "kind");
        assert!(err.expected.contains("Pod"));
        assert_eq!(err.found.as_deref(), Some("Frob"));
    }

    #[test]
    fn wrong_api_version() {
        let err =
            InputObject::from_value(json!({"apiVersion": "v2", "kind": "Pod", "metadata": {"name": "x"}}))
                .unwrap_err();
        assert_eq!(err.field, "apiVersion");
    }

    #[test]
    fn bad_field_type_names_the_path() {
        let err = InputObject::from_value(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "a"},
            "spec": {"ports": [{"port": "eighty"}]}
        }))
        .unwrap_err();
        assert_eq!(err.object, "Service a/s");
        assert_eq!(err.field, "spec.ports[0].port");
    }

    #[test]
    fn weft_kind_rejects_unknown_fields() {
        let err = InputObject::from_value(json!({
            "apiVersion": "weft.dev/v1alpha1", "kind": "ClusterConfig", "metadata": {"name": "default"},
            "spec": {"podSubnet": "10.0.0.0/16"}
        }))
        .unwrap_err();
        assert!(err.expected.contains("podSubnet"), "{err}");
    }

    #[test]
    fn bgp_peer_is_validated_on_decode() {
        let ok = InputObject::from_value(json!({
            "apiVersion": "weft.dev/v1alpha1", "kind": "BgpPeer", "metadata": {"name": "gw"},
            "spec": {"address": "192.0.2.1", "asn": 65000, "role": "router"}
        }))
        .unwrap();
        assert_eq!(ok.key(), InputKey::cluster(InputKind::BgpPeer, "gw"));
        let err = InputObject::from_value(json!({
            "apiVersion": "weft.dev/v1alpha1", "kind": "BgpPeer", "metadata": {"name": "gw"},
            "spec": {"address": "192.0.2.1", "asn": 65000, "role": "switch"}
        }))
        .unwrap_err();
        assert_eq!(
            (err.object.as_str(), err.field.as_str()),
            ("BgpPeer gw", "spec.role")
        );
        let err = InputObject::from_value(json!({
            "apiVersion": "weft.dev/v1alpha1", "kind": "BgpPeer", "metadata": {"name": "gw"},
            "spec": {"address": "300.0.2.1", "asn": 65000}
        }))
        .unwrap_err();
        assert_eq!(err.field, "spec.address");
    }

    #[test]
    fn floating_ip_decodes_with_defaults() {
        let obj = InputObject::from_value(json!({
            "apiVersion": "weft.dev/v1alpha1", "kind": "FloatingIp",
            "metadata": {"name": "web-fip", "namespace": "dev"},
            "spec": {"pool": "public/pool", "pod": "web"}
        }))
        .unwrap();
        assert_eq!(
            obj.key(),
            InputKey::namespaced(InputKind::FloatingIp, "dev", "web-fip")
        );
        let InputObject::FloatingIp(f) = &obj else {
            panic!("{obj:?}")
        };
        assert_eq!(f.spec.interface(), "eth0");
        assert_eq!(f.spec.pool_key("dev"), ("public", "pool"));
        assert_eq!(obj.to_value()["kind"], "FloatingIp");
        assert!(
            obj.to_value()["spec"].get("interface").is_none(),
            "no default written back"
        );
        let same_ns = crate::FloatingIpSpec {
            pool: "pool".into(),
            interface: Some("net1".into()),
            ..Default::default()
        };
        assert_eq!(same_ns.pool_key("dev"), ("dev", "pool"));
        assert_eq!(same_ns.interface(), "net1");
        let err = InputObject::from_value(json!({
            "apiVersion": "weft.dev/v1alpha1", "kind": "FloatingIp",
            "metadata": {"name": "f", "namespace": "dev"},
            "spec": {"pool": "p", "pod": "web", "port": 80}
        }))
        .unwrap_err();
        assert_eq!(err.object, "FloatingIp dev/f");
        assert!(err.expected.contains("address"), "{err}");
    }

    #[test]
    fn bad_names() {
        let err = InputObject::from_value(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Web_1"}}),
        )
        .unwrap_err();
        assert_eq!(err.field, "metadata.name");
        let err = InputObject::from_value(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a", "namespace": "b"}}),
        )
        .unwrap_err();
        assert_eq!(err.field, "metadata.namespace");
    }
}
