//! weft's own input kinds (`apiVersion: weft.dev/v1alpha1`) and the Multus
//! NetworkAttachmentDefinition, as manifests spell them. They are usable both in
//! `weft apply` files and as Kubernetes custom resources.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::error::FieldError;
use crate::naming::DEFAULT_DOMAIN;

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

/// A floating IP for one pod interface (TF: a floating-ip allocated from a
/// floating-ip-pool and referenced to the pod's VMI; reference §5.1–§5.2). Pods get
/// floating IPs only when asked, with one of these: the address stays allocated while
/// the object exists, and is bound (1:1 NAT, both directions) to whichever pod of that
/// name currently exists, on whatever node it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FloatingIp {
    /// `weft.dev/v1alpha1`.
    pub api_version: String,
    /// `FloatingIp`.
    pub kind: String,
    /// Name and namespace (the pod is looked up in this namespace).
    pub metadata: ObjectMeta,
    /// Pool, pod and optional fixed address.
    pub spec: FloatingIpSpec,
}

/// Interface a [`FloatingIp`] binds to when `spec.interface` is not given.
pub const DEFAULT_FIP_INTERFACE: &str = "eth0";

/// Settings of a [`FloatingIp`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FloatingIpSpec {
    /// The FloatingIpPool the address comes from: `name` (same namespace) or
    /// `namespace/name` (TF: a pool shared with the pod's project).
    #[serde(default)]
    pub pool: String,
    /// Name of the pod (same namespace) the address is bound to.
    #[serde(default)]
    pub pod: String,
    /// The pod's interface (`eth0` when absent; `net1` … for Multus interfaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// A fixed address inside the pool's ranges; allocated from the pool when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

impl FloatingIpSpec {
    /// The interface the address binds to: `spec.interface`, else [`DEFAULT_FIP_INTERFACE`].
    pub fn interface(&self) -> &str {
        self.interface
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_FIP_INTERFACE)
    }

    /// The pool as (namespace, name): `spec.pool` split at its `/`, or `namespace` (the
    /// FloatingIp's own) and the whole value. Not validated here.
    pub fn pool_key<'a>(&'a self, namespace: &'a str) -> (&'a str, &'a str) {
        let pool = self.pool.trim();
        match pool.split_once('/') {
            Some((ns, name)) => (ns, name),
            None => (namespace, pool),
        }
    }
}

/// A reference to a floating-IP pool as Tungsten Fabric writes it in the
/// `opencontrail.org/fip-pool` annotation and kube-manager's `public_fip_pool`:
/// `{"domain": "default-domain", "project": "k8s-public", "network": "public", "name": "pool"}`.
///
/// In weft the project `<cluster>-<ns>` stands for namespace `<ns>`, `network` for a
/// VirtualNetwork and `name` for a FloatingIpPool, both in that namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FipPoolRef {
    /// TF domain; only `default-domain` can name a weft pool.
    pub domain: String,
    /// TF project, `<cluster>-<namespace>`.
    pub project: String,
    /// Name of the pool's VirtualNetwork.
    pub network: String,
    /// Name of the FloatingIpPool.
    pub name: String,
}

impl FipPoolRef {
    /// Parses a reference (JSON or Python-literal dict with the keys `domain`,
    /// `project`, `network` and `name`), naming `object` and `field` on error.
    pub fn parse(object: &str, field: &str, text: &str) -> Result<FipPoolRef, FieldError> {
        let dict = parse_flat_dict(object, field, text)?;
        let get = |k: &str| -> Result<String, FieldError> {
            match dict.get(k) {
                Some(v) if !v.is_empty() => Ok(v.clone()),
                _ => Err(FieldError::new(
                    object,
                    field,
                    format!("key \"{k}\" (keys domain, project, network and name are all required)"),
                )
                .found(text)),
            }
        };
        Ok(FipPoolRef {
            domain: get("domain")?,
            project: get("project")?,
            network: get("network")?,
            name: get("name")?,
        })
    }

    /// The namespace the reference points into for cluster `cluster`: the project with
    /// its `<cluster>-` prefix removed; `None` when the domain or project cannot name a
    /// weft pool.
    pub fn namespace(&self, cluster: &str) -> Option<&str> {
        if self.domain != DEFAULT_DOMAIN {
            return None;
        }
        self.project
            .strip_prefix(cluster)
            .and_then(|rest| rest.strip_prefix('-'))
            .filter(|ns| !ns.is_empty())
    }
}

impl fmt::Display for FipPoolRef {
    /// TF's FQ name of the pool: `domain:project:network:name`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            self.domain, self.project, self.network, self.name
        )
    }
}

/// Parses a flat dictionary of strings written either as JSON (`{"a": "b"}`) or as a
/// Python literal (`{'a': 'b'}`), the two forms TF users write (TF reads them with
/// `ast.literal_eval`). Errors name `object` and `field`.
pub fn parse_flat_dict(
    object: &str,
    field: &str,
    value: &str,
) -> Result<BTreeMap<String, String>, FieldError> {
    let expected =
        "a dictionary such as {\"domain\": \"default-domain\", \"project\": \"k8s-dev\", \"name\": \"vn1\"}";
    let err = || FieldError::new(object, field, expected).found(value);
    let mut chars = value.trim().chars().peekable();
    let mut out = BTreeMap::new();
    let skip_ws = |c: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while c.peek().is_some_and(|ch| ch.is_whitespace()) {
            c.next();
        }
    };
    let read_string = |c: &mut std::iter::Peekable<std::str::Chars<'_>>| -> Option<String> {
        let quote = c.next()?;
        if quote != '"' && quote != '\'' {
            return None;
        }
        let mut s = String::new();
        loop {
            match c.next()? {
                '\\' => s.push(c.next()?),
                ch if ch == quote => return Some(s),
                ch => s.push(ch),
            }
        }
    };
    if chars.next() != Some('{') {
        return Err(err());
    }
    skip_ws(&mut chars);
    if chars.peek() == Some(&'}') {
        chars.next();
    } else {
        loop {
            skip_ws(&mut chars);
            let k = read_string(&mut chars).ok_or_else(err)?;
            skip_ws(&mut chars);
            if chars.next() != Some(':') {
                return Err(err());
            }
            skip_ws(&mut chars);
            let v = read_string(&mut chars).ok_or_else(err)?;
            out.insert(k, v);
            skip_ws(&mut chars);
            match chars.next() {
                Some(',') => continue,
                Some('}') => break,
                _ => return Err(err()),
            }
        }
    }
    skip_ws(&mut chars);
    if chars.next().is_some() {
        return Err(err());
    }
    Ok(out)
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
