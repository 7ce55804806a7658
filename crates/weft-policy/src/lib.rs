//! Kubernetes NetworkPolicy semantics (networking.k8s.io/v1), as pure functions.
//!
//! Data flow: the controller's pods, namespaces and NetworkPolicies → [`PolicySet`] →
//! [`PolicySet::evaluate`] decides one flow and says why (which policies isolate the
//! source for egress and the destination for ingress, and which rule, if any, allowed
//! it). `weft explain` prints that; the kernel compiler must agree with it, and tests
//! check the kernel against it.
//!
//! Semantics follow upstream Kubernetes, not TF's kube-manager (reference §6.3):
//! - a pod is isolated for a direction only if some policy selecting it has that
//!   policyType; `policyTypes` defaults to Ingress, plus Egress when `egress` is set;
//! - a flow is allowed when the source's egress side and the destination's ingress side
//!   both allow it (a side that is not isolated allows everything); policies are a union;
//! - a peer with podSelector and namespaceSelector is their AND; separate peers are OR;
//!   a peer with only podSelector means the policy's own namespace;
//! - named ports resolve against the destination pod's container ports; endPort ranges;
//! - replies of allowed connections are always allowed (that is the kernel's conntrack;
//!   this module decides new flows).
//!
//! On top of NetworkPolicy, TF's ordering model: cluster-wide policies with explicit
//! sequence numbers decide before the namespaces' policies. weft implements it as
//! sig-network's AdminNetworkPolicy (ANP, `priority` = TF's `sequence`, actions Allow /
//! Deny / Pass) and BaselineAdminNetworkPolicy (BANP, the cluster default that applies
//! where no NetworkPolicy isolates the pod) rather than a weft-specific
//! `FirewallPolicy` kind: it is the same model in the standard Kubernetes API, so
//! manifests and tooling carry over. Each side of a flow goes ANP tiers → NetworkPolicy
//! → BANP → allow; see [`admin`] and [`Stage`].

pub mod admin;
mod selector;

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

pub use admin::{AdminRuleRef, Stage};
pub use selector::selector_matches;
pub use weft_model::admin_policy::{AdminAction, AdminNetworkPolicy, BaselineAdminNetworkPolicy};

/// Label key every namespace carries with its own name (Kubernetes ≥ 1.21).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Transport protocol of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Parses `TCP`, `udp` …
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_uppercase().as_str() {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// `TCP`, `UDP` or `SCTP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

/// A named container port of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedPort {
    /// Port name (`http`).
    pub name: String,
    /// Number.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
}

/// A pod as policy sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Addresses of its interfaces.
    pub ips: Vec<IpAddr>,
    /// Named container ports.
    pub ports: Vec<NamedPort>,
}

/// One end of a flow: a pod, or an address outside the pods weft knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Endpoint {
    /// A pod (by index into [`PolicySet::pods`]).
    Pod(usize),
    /// Any other address.
    External(IpAddr),
}

/// A new connection to decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// Who opens it.
    pub src: Endpoint,
    /// Who it goes to.
    pub dst: Endpoint,
    /// Destination port.
    pub port: u16,
    /// Protocol.
    pub protocol: Protocol,
}

/// Where a rule sits: `policy` (namespace/name), direction, rule index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRef {
    /// `namespace/name` of the NetworkPolicy.
    pub policy: String,
    /// Index of the rule in `spec.ingress` or `spec.egress`.
    pub rule: usize,
}

/// Decision for one side (egress of the source, or ingress of the destination).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideDecision {
    /// Policies that select the pod for this direction (empty: not isolated).
    pub selecting: Vec<String>,
    /// The first rule that allows the flow, if any.
    pub allowed_by: Option<RuleRef>,
    /// The verdict of this side.
    pub allowed: bool,
    /// AdminNetworkPolicies that select the pod with rules for this direction, in
    /// evaluation order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_selecting: Vec<String>,
    /// The first ANP rule that matched (Allow, Deny or Pass), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminRuleRef>,
    /// The BaselineAdminNetworkPolicy rule that decided, if that stage was reached and
    /// a rule matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<AdminRuleRef>,
    /// The stage that decided.
    #[serde(default)]
    pub stage: Stage,
}

fn rule_text(r: &AdminRuleRef, direction: &str) -> String {
    let name = if r.name.is_empty() {
        String::new()
    } else {
        format!(" ({:?})", r.name)
    };
    format!("{}[{}]{name}", direction.to_ascii_lowercase(), r.rule)
}

impl SideDecision {
    fn open() -> Self {
        SideDecision {
            selecting: Vec::new(),
            allowed_by: None,
            allowed: true,
            admin_selecting: Vec::new(),
            admin: None,
            baseline: None,
            stage: Stage::Default,
        }
    }

    /// The steps of this side for people, one line each: the AdminNetworkPolicy
    /// stage, then NetworkPolicy or the baseline, whichever decided.
    pub fn explain_steps(&self, direction: &str, who: &str) -> Vec<String> {
        let mut out = Vec::new();
        if !self.admin_selecting.is_empty() {
            let line = match &self.admin {
                Some(r) => format!(
                    "{direction}: AdminNetworkPolicy {} (priority {}) selects {who}; rule {} matches → {}",
                    r.policy,
                    r.priority.unwrap_or_default(),
                    rule_text(r, direction),
                    match r.action {
                        AdminAction::Allow => "Allow: accepted without consulting NetworkPolicy",
                        AdminAction::Deny => "Deny: dropped",
                        AdminAction::Pass =>
                            "Pass: remaining AdminNetworkPolicies skipped, NetworkPolicy decides",
                    }
                ),
                None => format!(
                    "{direction}: AdminNetworkPolicies {} select {who}; no rule matches → NetworkPolicy decides",
                    self.admin_selecting.join(", ")
                ),
            };
            out.push(line);
        }
        match self.stage {
            Stage::AdminNetworkPolicy => {}
            Stage::BaselineAdminNetworkPolicy => {
                if let Some(r) = &self.baseline {
                    out.push(format!(
                        "{direction}: {who} is not isolated by any NetworkPolicy; BaselineAdminNetworkPolicy {} rule {} → {}",
                        r.policy,
                        rule_text(r, direction),
                        if self.allowed { "Allow" } else { "Deny" }
                    ));
                }
            }
            Stage::NetworkPolicy | Stage::Default => out.push(self.explain_network_policy(direction, who)),
        }
        out
    }

    /// All steps of [`explain_steps`](Self::explain_steps) on one line.
    pub fn explain(&self, direction: &str, who: &str) -> String {
        self.explain_steps(direction, who).join("; ")
    }

    fn explain_network_policy(&self, direction: &str, who: &str) -> String {
        if self.selecting.is_empty() {
            return format!(
                "{direction}: {who} is not selected by any policy with {direction} → allowed (TF/Kubernetes default)"
            );
        }
        match &self.allowed_by {
            Some(r) => format!(
                "{direction}: {who} is selected by {}; rule {}[{}] of {} allows it",
                self.selecting.join(", "),
                direction.to_ascii_lowercase(),
                r.rule,
                r.policy
            ),
            None => format!(
                "{direction}: {who} is selected by {}; no rule allows it → denied",
                self.selecting.join(", ")
            ),
        }
    }
}

/// A full decision with its reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Egress side of the source pod.
    pub egress: SideDecision,
    /// Ingress side of the destination pod.
    pub ingress: SideDecision,
}

impl Decision {
    /// True when both sides allow the flow.
    pub fn allowed(&self) -> bool {
        self.egress.allowed && self.ingress.allowed
    }
}

/// One rule of either direction: its peers and its ports.
type Rule = (Option<Vec<NetworkPolicyPeer>>, Option<Vec<NetworkPolicyPort>>);

/// Pods, namespace labels and policies: everything a decision depends on.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    /// Pods.
    pub pods: Vec<PodInfo>,
    /// Namespace name → labels (the name label is added automatically).
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// NetworkPolicies.
    pub policies: Vec<NetworkPolicy>,
    /// AdminNetworkPolicies (any order: [`PolicySet::admin_order`] sorts them).
    pub admin: Vec<AdminNetworkPolicy>,
    /// The BaselineAdminNetworkPolicy, if there is one.
    pub baseline: Option<BaselineAdminNetworkPolicy>,
}

fn policy_name(p: &NetworkPolicy) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or("default"),
        p.metadata.name.as_deref().unwrap_or("")
    )
}

/// The policy types a policy applies, with Kubernetes' defaults.
pub fn policy_types(p: &NetworkPolicy) -> (bool, bool) {
    let spec = p.spec.as_ref();
    match spec
        .and_then(|s| s.policy_types.as_ref())
        .filter(|t| !t.is_empty())
    {
        Some(types) => (
            types.iter().any(|t| t == "Ingress"),
            types.iter().any(|t| t == "Egress"),
        ),
        None => (true, spec.is_some_and(|s| s.egress.is_some())),
    }
}

impl PolicySet {
    /// Labels of a namespace, including `kubernetes.io/metadata.name`.
    pub fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        let mut labels = self.namespaces.get(ns).cloned().unwrap_or_default();
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), ns.to_string());
        labels
    }

    /// True if `policy` selects `pod` (same namespace, podSelector matches).
    pub fn selects(&self, policy: &NetworkPolicy, pod: &PodInfo) -> bool {
        let ns = policy.metadata.namespace.as_deref().unwrap_or("default");
        let selector = policy
            .spec
            .as_ref()
            .and_then(|s| s.pod_selector.clone())
            .unwrap_or_default();
        ns == pod.namespace && selector_matches(&selector, &pod.labels)
    }

    /// True if `peer` (of a policy in namespace `policy_ns`) matches `endpoint`: an
    /// ipBlock by address (cidr minus excepts, for pods by any of their addresses),
    /// else namespaceSelector AND podSelector (no namespaceSelector: `policy_ns`).
    pub fn peer_matches(&self, policy_ns: &str, peer: &NetworkPolicyPeer, endpoint: &Endpoint) -> bool {
        if let Some(block) = &peer.ip_block {
            let ips = self.endpoint_ips(endpoint);
            let Ok(cidr) = block.cidr.parse::<ipnet::IpNet>() else {
                return false;
            };
            let excepts: Vec<ipnet::IpNet> = block
                .except
                .as_deref()
                .unwrap_or_default()
                .iter()
                .filter_map(|e| e.parse().ok())
                .collect();
            return ips
                .iter()
                .any(|ip| cidr.contains(ip) && !excepts.iter().any(|e| e.contains(ip)));
        }
        let Endpoint::Pod(i) = endpoint else { return false };
        let Some(pod) = self.pods.get(*i) else {
            return false;
        };
        let ns_ok = match &peer.namespace_selector {
            Some(sel) => selector_matches(sel, &self.namespace_labels(&pod.namespace)),
            None => pod.namespace == policy_ns,
        };
        let pod_ok = match &peer.pod_selector {
            Some(sel) => selector_matches(sel, &pod.labels),
            None => true,
        };
        ns_ok && pod_ok
    }

    /// The addresses of `endpoint` (a pod's, or the external address).
    fn endpoint_ips<'a>(&'a self, endpoint: &'a Endpoint) -> &'a [IpAddr] {
        match endpoint {
            Endpoint::External(ip) => std::slice::from_ref(ip),
            Endpoint::Pod(i) => self.pods.get(*i).map_or(&[], |p| p.ips.as_slice()),
        }
    }

    /// True if the flow's destination is a pod with a container port `name` that is
    /// the flow's port and protocol (an external destination has no named ports).
    fn named_port_matches(&self, name: &str, flow: &Flow) -> bool {
        let Endpoint::Pod(i) = flow.dst else {
            return false;
        };
        self.pods.get(i).is_some_and(|pod| {
            pod.ports
                .iter()
                .any(|np| np.name == name && np.port == flow.port && np.protocol == flow.protocol)
        })
    }

    fn port_matches(&self, ports: &[NetworkPolicyPort], flow: &Flow) -> bool {
        if ports.is_empty() {
            return true;
        }
        ports.iter().any(|p| {
            let proto = p
                .protocol
                .as_deref()
                .and_then(Protocol::parse)
                .unwrap_or(Protocol::Tcp);
            if proto != flow.protocol {
                return false;
            }
            match &p.port {
                None => true,
                Some(IntOrString::Int(start)) => {
                    let end = p.end_port.unwrap_or(*start);
                    i32::from(flow.port) >= *start && i32::from(flow.port) <= end
                }
                Some(IntOrString::String(name)) => self.named_port_matches(name, flow),
            }
        })
    }

    /// One side: ANP stage, then NetworkPolicy, then the baseline, then allow.
    fn side(&self, pod_index: usize, ingress: bool, flow: &Flow) -> SideDecision {
        let Some(pod) = self.pods.get(pod_index) else {
            return SideDecision::open();
        };
        let mut decision = self.np_side(pod, ingress, flow);
        let (admin_selecting, admin) = self.admin_side(pod, ingress, flow);
        decision.admin_selecting = admin_selecting;
        match admin.as_ref().map(|r| r.action) {
            Some(AdminAction::Allow) | Some(AdminAction::Deny) => {
                decision.allowed = admin.as_ref().is_some_and(|r| r.action == AdminAction::Allow);
                decision.stage = Stage::AdminNetworkPolicy;
                decision.admin = admin;
                return decision;
            }
            Some(AdminAction::Pass) | None => decision.admin = admin,
        }
        if !decision.selecting.is_empty() {
            decision.stage = Stage::NetworkPolicy;
            return decision;
        }
        if let Some(r) = self.baseline_side(pod, ingress, flow) {
            decision.allowed = r.action == AdminAction::Allow;
            decision.stage = Stage::BaselineAdminNetworkPolicy;
            decision.baseline = Some(r);
        }
        decision
    }

    /// The NetworkPolicy stage of one side (open when no policy isolates the pod).
    fn np_side(&self, pod: &PodInfo, ingress: bool, flow: &Flow) -> SideDecision {
        let mut decision = SideDecision {
            allowed: false,
            ..SideDecision::open()
        };
        for policy in &self.policies {
            let (has_ingress, has_egress) = policy_types(policy);
            if (ingress && !has_ingress) || (!ingress && !has_egress) || !self.selects(policy, pod) {
                continue;
            }
            let name = policy_name(policy);
            decision.selecting.push(name.clone());
            if decision.allowed_by.is_some() {
                continue;
            }
            let ns = policy.metadata.namespace.as_deref().unwrap_or("default");
            let spec = policy.spec.clone().unwrap_or_default();
            let peer_end = if ingress { &flow.src } else { &flow.dst };
            let rules: Vec<Rule> = if ingress {
                spec.ingress
                    .unwrap_or_default()
                    .into_iter()
                    .map(|r| (r.from, r.ports))
                    .collect()
            } else {
                spec.egress
                    .unwrap_or_default()
                    .into_iter()
                    .map(|r| (r.to, r.ports))
                    .collect()
            };
            for (index, (peers, ports)) in rules.iter().enumerate() {
                let peers_ok = match peers.as_deref() {
                    None | Some([]) => true,
                    Some(list) => list.iter().any(|peer| self.peer_matches(ns, peer, peer_end)),
                };
                if peers_ok && self.port_matches(ports.as_deref().unwrap_or_default(), flow) {
                    decision.allowed_by = Some(RuleRef {
                        policy: name.clone(),
                        rule: index,
                    });
                    break;
                }
            }
        }
        if decision.selecting.is_empty() {
            return SideDecision::open();
        }
        decision.allowed = decision.allowed_by.is_some();
        decision
    }

    /// Decides a new flow: egress of the source pod, then ingress of the destination pod.
    pub fn evaluate(&self, flow: &Flow) -> Decision {
        let egress = match flow.src {
            Endpoint::Pod(i) => self.side(i, false, flow),
            Endpoint::External(_) => SideDecision::open(),
        };
        let ingress = match flow.dst {
            Endpoint::Pod(i) => self.side(i, true, flow),
            Endpoint::External(_) => SideDecision::open(),
        };
        Decision { egress, ingress }
    }

    /// Index of a pod by namespace and name.
    pub fn pod_index(&self, namespace: &str, name: &str) -> Option<usize> {
        self.pods
            .iter()
            .position(|p| p.namespace == namespace && p.name == name)
    }
}

#[cfg(test)]
mod tests;
