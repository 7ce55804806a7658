//! sig-network's cluster-wide policy kinds, `policy.networking.k8s.io/v1alpha1`
//! AdminNetworkPolicy (ANP) and BaselineAdminNetworkPolicy (BANP), as typed serde
//! structs (k8s-openapi does not carry them), with their validation.
//!
//! Data flow: `weft apply -f` or the Kubernetes watch decode them into
//! [`InputObject`](crate::InputObject)s; weft-policy evaluates them (ANP tiers before
//! NetworkPolicy, BANP after), weft-routing compiles them into the ordered verdict rules
//! of [`EndpointPolicy`](crate::node::EndpointPolicy), the agent renders those into
//! nftables.
//!
//! Why these kinds rather than a weft-specific `FirewallPolicy`: Tungsten Fabric orders
//! its application policy sets by an explicit `sequence` number and lets them decide
//! before the per-namespace policies; ANP is the same idea in the Kubernetes API
//! (cluster-scoped, `priority` 0–1000, lower first, actions Allow / Deny / Pass), with a
//! conformance suite and other implementations, and BANP is TF's "default" policy set
//! that applies when nothing more specific does. A TF `sequence` maps to ANP `priority`.
//!
//! Field names and semantics are upstream's (network-policy-api v0.1.x): `subject` is
//! exactly one of `namespaces` / `pods`; a peer is exactly one of `namespaces` / `pods`
//! (egress also `networks`); a port is exactly one of `portNumber` / `namedPort` /
//! `portRange`. weft does not implement the egress `nodes` peer (refused by decoding).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};

use crate::error::FieldError;

/// API group/version of AdminNetworkPolicy and BaselineAdminNetworkPolicy.
pub const ANP_API_VERSION: &str = "policy.networking.k8s.io/v1alpha1";

/// The only name a BaselineAdminNetworkPolicy may have (it is a singleton).
pub const BANP_NAME: &str = "default";

/// Highest (least important) ANP priority.
pub const MAX_PRIORITY: i32 = 1000;

/// A cluster-wide policy evaluated before NetworkPolicy, in tiers of `priority`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminNetworkPolicy {
    /// `policy.networking.k8s.io/v1alpha1` (filled in on encoding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `AdminNetworkPolicy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name (cluster-scoped: no namespace).
    pub metadata: ObjectMeta,
    /// Priority, subject and rules.
    pub spec: AdminNetworkPolicySpec,
}

/// The desired behaviour of an [`AdminNetworkPolicy`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminNetworkPolicySpec {
    /// 0–1000; lower values are checked first (TF's `sequence`).
    pub priority: i32,
    /// The pods the policy applies to.
    pub subject: AdminNetworkPolicySubject,
    /// Rules for traffic to the subject pods, checked in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<AdminRuleSpec<AdminAction>>,
    /// Rules for traffic from the subject pods, checked in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<AdminRuleSpec<AdminAction>>,
}

/// The cluster's default policy, evaluated after NetworkPolicy for pods no
/// NetworkPolicy isolates (singleton named `default`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaselineAdminNetworkPolicy {
    /// `policy.networking.k8s.io/v1alpha1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `BaselineAdminNetworkPolicy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name (`default`).
    pub metadata: ObjectMeta,
    /// Subject and rules.
    pub spec: BaselineAdminNetworkPolicySpec,
}

/// The desired behaviour of a [`BaselineAdminNetworkPolicy`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BaselineAdminNetworkPolicySpec {
    /// The pods the policy applies to.
    pub subject: AdminNetworkPolicySubject,
    /// Rules for traffic to the subject pods, checked in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<AdminRuleSpec<BaselineAction>>,
    /// Rules for traffic from the subject pods, checked in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<AdminRuleSpec<BaselineAction>>,
}

/// The pods a policy applies to: exactly one field is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminNetworkPolicySubject {
    /// Every pod of the namespaces this selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// The pods `podSelector` selects in the namespaces `namespaceSelector` selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
}

/// Pods by namespace AND pod labels (an empty selector selects everything).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespacedPod {
    /// Namespaces.
    pub namespace_selector: LabelSelector,
    /// Pods within them.
    pub pod_selector: LabelSelector,
}

/// An ANP rule action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AdminAction {
    /// Accept, without consulting NetworkPolicy or the baseline.
    Allow,
    /// Drop.
    Deny,
    /// Skip the remaining ANPs; NetworkPolicy (then the baseline) decides.
    Pass,
}

/// A BANP rule action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BaselineAction {
    /// Accept.
    Allow,
    /// Drop.
    Deny,
}

impl From<BaselineAction> for AdminAction {
    fn from(a: BaselineAction) -> Self {
        match a {
            BaselineAction::Allow => AdminAction::Allow,
            BaselineAction::Deny => AdminAction::Deny,
        }
    }
}

/// One ingress or egress rule (ANP with [`AdminAction`], BANP with [`BaselineAction`]):
/// it matches traffic whose peer is one of `from`/`to` and whose destination port is
/// one of `ports` (absent: any port).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminRuleSpec<A> {
    /// Name for people (≤ 100 characters).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// What happens to matching traffic.
    pub action: A,
    /// Sources (ingress rules).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<AdminPeer>,
    /// Destinations (egress rules).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<AdminPeer>,
    /// Destination ports; absent: every port and protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<AdminPort>>,
}

impl<A> AdminRuleSpec<A> {
    /// The peers of the rule for the direction (`from` for ingress, `to` for egress).
    pub fn peers(&self, ingress: bool) -> &[AdminPeer] {
        if ingress { &self.from } else { &self.to }
    }
}

/// A peer: exactly one field is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminPeer {
    /// Every pod of the namespaces this selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<LabelSelector>,
    /// Pods by namespace and pod labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<NamespacedPod>,
    /// Address ranges (egress peers only), e.g. `10.0.0.0/8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<String>>,
}

/// A destination port selector: exactly one field is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminPort {
    /// One port of one protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_number: Option<PortNumber>,
    /// A named container port of the destination pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub named_port: Option<String>,
    /// An inclusive range of ports of one protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range: Option<PortRange>,
}

/// `portNumber`: protocol (default TCP) and port 1–65535.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortNumber {
    /// `TCP`, `UDP` or `SCTP` (default `TCP`).
    #[serde(default = "tcp")]
    pub protocol: String,
    /// The port.
    pub port: i32,
}

/// `portRange`: protocol (default TCP) and `start` ≤ `end`, both 1–65535.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortRange {
    /// `TCP`, `UDP` or `SCTP` (default `TCP`).
    #[serde(default = "tcp")]
    pub protocol: String,
    /// First port.
    pub start: i32,
    /// Last port.
    pub end: i32,
}

fn tcp() -> String {
    "TCP".to_string()
}

const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];

fn check_subject(object: &str, s: &AdminNetworkPolicySubject) -> Result<(), FieldError> {
    if usize::from(s.namespaces.is_some()) + usize::from(s.pods.is_some()) != 1 {
        return Err(FieldError::new(
            object,
            "spec.subject",
            "exactly one of namespaces or pods",
        ));
    }
    Ok(())
}

fn check_port(object: &str, field: &str, p: &AdminPort) -> Result<(), FieldError> {
    let set = usize::from(p.port_number.is_some())
        + usize::from(p.named_port.is_some())
        + usize::from(p.port_range.is_some());
    if set != 1 {
        return Err(FieldError::new(
            object,
            field,
            "exactly one of portNumber, namedPort or portRange",
        ));
    }
    let proto_ok = |proto: &str, f: &str| -> Result<(), FieldError> {
        if PROTOCOLS.contains(&proto) {
            Ok(())
        } else {
            Err(FieldError::new(object, format!("{field}.{f}.protocol"), "TCP, UDP or SCTP").found(proto))
        }
    };
    let port_ok = |port: i32, f: &str| -> Result<(), FieldError> {
        if (1..=65535).contains(&port) {
            Ok(())
        } else {
            Err(FieldError::new(object, format!("{field}.{f}"), "a port from 1 to 65535").found(port))
        }
    };
    if let Some(n) = &p.port_number {
        proto_ok(&n.protocol, "portNumber")?;
        port_ok(n.port, "portNumber.port")?;
    }
    if let Some(r) = &p.port_range {
        proto_ok(&r.protocol, "portRange")?;
        port_ok(r.start, "portRange.start")?;
        port_ok(r.end, "portRange.end")?;
        if r.start > r.end {
            return Err(FieldError::new(
                object,
                format!("{field}.portRange.end"),
                format!("at least start ({})", r.start),
            )
            .found(r.end));
        }
    }
    if let Some(name) = &p.named_port
        && name.is_empty()
    {
        return Err(FieldError::new(
            object,
            format!("{field}.namedPort"),
            "a port name",
        ));
    }
    Ok(())
}

fn check_rules<A>(object: &str, rules: &[AdminRuleSpec<A>], ingress: bool) -> Result<(), FieldError> {
    let dir = if ingress { "ingress" } else { "egress" };
    if rules.len() > 100 {
        return Err(FieldError::new(object, format!("spec.{dir}"), "at most 100 rules").found(rules.len()));
    }
    for (i, rule) in rules.iter().enumerate() {
        let base = format!("spec.{dir}[{i}]");
        if rule.name.chars().count() > 100 {
            return Err(FieldError::new(
                object,
                format!("{base}.name"),
                "at most 100 characters",
            ));
        }
        let (key, other) = if ingress {
            ("from", &rule.to)
        } else {
            ("to", &rule.from)
        };
        if !other.is_empty() {
            let wrong = if ingress { "to" } else { "from" };
            return Err(FieldError::new(
                object,
                format!("{base}.{wrong}"),
                format!("no {wrong}: {dir} rules name their peers in {key}"),
            ));
        }
        let peers = rule.peers(ingress);
        if peers.is_empty() || peers.len() > 100 {
            return Err(FieldError::new(object, format!("{base}.{key}"), "1 to 100 peers"));
        }
        for (j, peer) in peers.iter().enumerate() {
            let field = format!("{base}.{key}[{j}]");
            let set = usize::from(peer.namespaces.is_some())
                + usize::from(peer.pods.is_some())
                + usize::from(peer.networks.is_some());
            if set != 1 {
                let expected = if ingress {
                    "exactly one of namespaces or pods"
                } else {
                    "exactly one of namespaces, pods or networks"
                };
                return Err(FieldError::new(object, field, expected));
            }
            if let Some(nets) = &peer.networks {
                if ingress {
                    return Err(FieldError::new(
                        object,
                        format!("{field}.networks"),
                        "namespaces or pods (networks is an egress peer)",
                    ));
                }
                if nets.is_empty() || nets.len() > 25 {
                    return Err(FieldError::new(
                        object,
                        format!("{field}.networks"),
                        "1 to 25 CIDRs",
                    ));
                }
                for (k, n) in nets.iter().enumerate() {
                    if n.parse::<ipnet::IpNet>().is_err() {
                        return Err(FieldError::new(
                            object,
                            format!("{field}.networks[{k}]"),
                            "a CIDR such as 10.0.0.0/8",
                        )
                        .found(n));
                    }
                }
            }
        }
        if let Some(ports) = &rule.ports {
            if ports.is_empty() || ports.len() > 100 {
                return Err(FieldError::new(
                    object,
                    format!("{base}.ports"),
                    "1 to 100 ports, or no ports field",
                ));
            }
            for (j, p) in ports.iter().enumerate() {
                check_port(object, &format!("{base}.ports[{j}]"), p)?;
            }
        }
    }
    Ok(())
}

impl AdminNetworkPolicy {
    /// Checks what decoding cannot: priority range, exactly-one-of fields, port
    /// ranges, CIDRs, list sizes. `object` names the object in the error.
    pub fn validate(&self, object: &str) -> Result<(), FieldError> {
        if !(0..=MAX_PRIORITY).contains(&self.spec.priority) {
            return Err(FieldError::new(
                object,
                "spec.priority",
                "an integer from 0 to 1000 (lower is checked first)",
            )
            .found(self.spec.priority));
        }
        check_subject(object, &self.spec.subject)?;
        check_rules(object, &self.spec.ingress, true)?;
        check_rules(object, &self.spec.egress, false)
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }
}

impl BaselineAdminNetworkPolicy {
    /// Checks the name (`default`) and the same rules as [`AdminNetworkPolicy::validate`].
    pub fn validate(&self, object: &str) -> Result<(), FieldError> {
        let name = self.metadata.name.as_deref().unwrap_or("");
        if name != BANP_NAME {
            return Err(FieldError::new(
                object,
                "metadata.name",
                "default (BaselineAdminNetworkPolicy is a singleton)",
            )
            .found(name));
        }
        check_subject(object, &self.spec.subject)?;
        check_rules(object, &self.spec.ingress, true)?;
        check_rules(object, &self.spec.egress, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn anp(spec: serde_json::Value) -> AdminNetworkPolicy {
        serde_json::from_value(
            json!({"apiVersion": ANP_API_VERSION, "kind": "AdminNetworkPolicy",
            "metadata": {"name": "a"}, "spec": spec}),
        )
        .expect("decodes")
    }

    #[test]
    fn upstream_example_decodes_and_validates() {
        let p = anp(json!({
            "priority": 50,
            "subject": {"pods": {"namespaceSelector": {"matchLabels": {"house": "g"}}, "podSelector": {}}},
            "ingress": [{"name": "deny-s", "action": "Deny", "from": [{"namespaces": {"matchLabels": {"house": "s"}}}],
                         "ports": [{"portNumber": {"protocol": "UDP", "port": 53}}, {"namedPort": "dns"},
                                   {"portRange": {"start": 80, "end": 90}}]}],
            "egress": [{"action": "Pass", "to": [{"networks": ["10.0.0.0/8"]}]}]
        }));
        p.validate("AdminNetworkPolicy a").expect("valid");
        assert_eq!(p.spec.ingress[0].action, AdminAction::Deny);
        let ports = p.spec.ingress[0].ports.as_ref().expect("ports");
        assert_eq!(ports[2].port_range.as_ref().expect("range").protocol, "TCP");
    }

    #[test]
    fn priority_out_of_range_names_the_field() {
        let p = anp(json!({"priority": 1001, "subject": {"namespaces": {}}}));
        let err = p.validate("AdminNetworkPolicy a").unwrap_err();
        assert_eq!(err.field, "spec.priority");
        assert_eq!(err.found.as_deref(), Some("1001"));
    }

    #[test]
    fn bad_shapes_are_refused() {
        let subject = anp(json!({"priority": 1, "subject": {}}));
        assert_eq!(subject.validate("x").unwrap_err().field, "spec.subject");
        let peer = anp(json!({"priority": 1, "subject": {"namespaces": {}},
            "ingress": [{"action": "Allow", "from": [{"networks": ["10.0.0.0/8"]}]}]}));
        assert_eq!(
            peer.validate("x").unwrap_err().field,
            "spec.ingress[0].from[0].networks"
        );
        let range = anp(json!({"priority": 1, "subject": {"namespaces": {}},
            "egress": [{"action": "Allow", "to": [{"namespaces": {}}], "ports": [{"portRange": {"start": 9, "end": 8}}]}]}));
        assert_eq!(
            range.validate("x").unwrap_err().field,
            "spec.egress[0].ports[0].portRange.end"
        );
        let none = anp(json!({"priority": 1, "subject": {"namespaces": {}},
            "egress": [{"action": "Allow", "to": []}]}));
        assert_eq!(none.validate("x").unwrap_err().field, "spec.egress[0].to");
    }

    #[test]
    fn unknown_action_is_a_decode_error() {
        let r: Result<AdminNetworkPolicy, _> = serde_json::from_value(json!({"metadata": {"name": "a"},
            "spec": {"priority": 1, "subject": {"namespaces": {}}, "ingress": [{"action": "Block", "from": [{"namespaces": {}}]}]}}));
        assert!(r.unwrap_err().to_string().contains("Block"));
        let b: Result<BaselineAdminNetworkPolicy, _> = serde_json::from_value(
            json!({"metadata": {"name": "default"},
            "spec": {"subject": {"namespaces": {}}, "ingress": [{"action": "Pass", "from": [{"namespaces": {}}]}]}}),
        );
        assert!(b.is_err(), "BANP has no Pass");
    }

    #[test]
    fn manifests_are_validated_on_decode_and_name_object_and_field() {
        use crate::{InputKey, InputKind, InputObject};
        let ok = InputObject::from_value(
            json!({"apiVersion": ANP_API_VERSION, "kind": "AdminNetworkPolicy",
            "metadata": {"name": "a"}, "spec": {"priority": 3, "subject": {"namespaces": {}}}}),
        )
        .expect("valid");
        assert_eq!(ok.key(), InputKey::cluster(InputKind::AdminNetworkPolicy, "a"));
        assert_eq!(ok.to_value()["apiVersion"], ANP_API_VERSION);
        let err = InputObject::from_value(
            json!({"apiVersion": ANP_API_VERSION, "kind": "AdminNetworkPolicy",
            "metadata": {"name": "a"}, "spec": {"priority": -1, "subject": {"namespaces": {}}}}),
        )
        .unwrap_err();
        assert_eq!(
            (err.object.as_str(), err.field.as_str()),
            ("AdminNetworkPolicy a", "spec.priority")
        );
        let err = InputObject::from_value(
            json!({"apiVersion": ANP_API_VERSION, "kind": "AdminNetworkPolicy",
            "metadata": {"name": "a"}, "spec": {"priority": 1, "subject": {"namespaces": {}},
            "egress": [{"action": "Reject", "to": [{"namespaces": {}}]}]}}),
        )
        .unwrap_err();
        assert_eq!(err.field, "spec.egress[0].action");
        assert!(err.expected.contains("Allow"), "{err}");
        let err = InputObject::from_value(
            json!({"apiVersion": ANP_API_VERSION, "kind": "BaselineAdminNetworkPolicy",
            "metadata": {"name": "b"}, "spec": {"subject": {"namespaces": {}}}}),
        )
        .unwrap_err();
        assert_eq!(err.field, "metadata.name");
        let err = InputObject::from_value(json!({"apiVersion": ANP_API_VERSION, "kind": "AdminNetworkPolicy",
            "metadata": {"name": "a", "namespace": "x"}, "spec": {"priority": 1, "subject": {"namespaces": {}}}}))
        .unwrap_err();
        assert_eq!(err.field, "metadata.namespace", "cluster-scoped");
    }

    #[test]
    fn baseline_must_be_named_default() {
        let b: BaselineAdminNetworkPolicy = serde_json::from_value(
            json!({"metadata": {"name": "other"}, "spec": {"subject": {"namespaces": {}}}}),
        )
        .expect("decodes");
        assert_eq!(b.validate("x").unwrap_err().field, "metadata.name");
    }
}
