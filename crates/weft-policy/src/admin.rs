//! AdminNetworkPolicy and BaselineAdminNetworkPolicy (sig-network policy-api,
//! `policy.networking.k8s.io/v1alpha1`): selection and rule matching, the stages of
//! [`PolicySet::evaluate`] before and after NetworkPolicy.
//!
//! Per direction of a pod (egress of the source, ingress of the destination):
//! 1. the ANPs whose subject selects the pod, by ascending `priority` (ties by name,
//!    which upstream leaves undefined), each rule in written order: the first rule
//!    whose peers and ports match decides: `Allow` accepts (NetworkPolicy is not
//!    consulted), `Deny` drops, `Pass` skips the remaining ANPs;
//! 2. NetworkPolicy, if some policy isolates the pod for the direction: its verdict is
//!    final;
//! 3. the BaselineAdminNetworkPolicy, if its subject selects the pod: the first
//!    matching rule decides (`Allow` / `Deny`);
//! 4. otherwise allowed (TF's and Kubernetes' default).
//!
//! This is TF's ordered application policy sets (an explicit `sequence`, evaluated
//! before the namespace's policies) in the form Kubernetes standardised.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::{Deserialize, Serialize};
use weft_model::admin_policy::{
    AdminAction, AdminNetworkPolicy, AdminNetworkPolicySubject, AdminPeer, AdminPort, AdminRuleSpec,
    NamespacedPod,
};

use crate::{Endpoint, Flow, PodInfo, PolicySet, Protocol, selector_matches};

/// Which stage decided one side of a flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// An AdminNetworkPolicy rule allowed or denied it.
    AdminNetworkPolicy,
    /// NetworkPolicy isolates the pod (after no ANP rule or a `Pass`).
    NetworkPolicy,
    /// A BaselineAdminNetworkPolicy rule allowed or denied it.
    BaselineAdminNetworkPolicy,
    /// Nothing applied: allowed by default.
    #[default]
    Default,
}

/// A rule of an ANP or of the BANP that matched a flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminRuleRef {
    /// The policy's name.
    pub policy: String,
    /// Its priority (`None` for the BANP).
    pub priority: Option<i32>,
    /// Index of the rule in `spec.ingress` or `spec.egress`.
    pub rule: usize,
    /// The rule's `name`, if it has one.
    pub name: String,
    /// Its action (a BANP's `Allow` / `Deny` as the same words).
    pub action: AdminAction,
}

impl PolicySet {
    /// The ANPs by evaluation order: ascending priority, then name.
    pub fn admin_order(&self) -> Vec<&AdminNetworkPolicy> {
        let mut order: Vec<&AdminNetworkPolicy> = self.admin.iter().collect();
        order.sort_by(|a, b| (a.spec.priority, a.name()).cmp(&(b.spec.priority, b.name())));
        order
    }

    /// True if `subject` selects `pod`.
    pub fn subject_selects(&self, subject: &AdminNetworkPolicySubject, pod: &PodInfo) -> bool {
        self.pod_selected(subject.namespaces.as_ref(), subject.pods.as_ref(), pod)
    }

    /// The pod selection shared by subjects and peers: every pod of the namespaces
    /// `namespaces` selects, else the pods `pods` selects; neither set: none.
    fn pod_selected(
        &self,
        namespaces: Option<&LabelSelector>,
        pods: Option<&NamespacedPod>,
        pod: &PodInfo,
    ) -> bool {
        if let Some(ns) = namespaces {
            return selector_matches(ns, &self.namespace_labels(&pod.namespace));
        }
        if let Some(p) = pods {
            return selector_matches(&p.namespace_selector, &self.namespace_labels(&pod.namespace))
                && selector_matches(&p.pod_selector, &pod.labels);
        }
        false
    }

    /// True if an admin `peer` matches `endpoint`: `namespaces` / `pods` select pods
    /// (never external addresses), `networks` matches addresses (a pod by any of its
    /// addresses). A peer with no field set matches nothing (validation refuses it).
    pub fn admin_peer_matches(&self, peer: &AdminPeer, endpoint: &Endpoint) -> bool {
        if let Some(nets) = &peer.networks {
            let ips = self.endpoint_ips(endpoint);
            return nets
                .iter()
                .filter_map(|n| n.parse::<ipnet::IpNet>().ok())
                .any(|n| ips.iter().any(|ip| n.contains(ip)));
        }
        let Endpoint::Pod(i) = endpoint else { return false };
        self.pods
            .get(*i)
            .is_some_and(|pod| self.pod_selected(peer.namespaces.as_ref(), peer.pods.as_ref(), pod))
    }

    /// True if one of `ports` (absent: any) matches the flow's protocol and
    /// destination port; a named port resolves against the destination pod.
    pub fn admin_ports_match(&self, ports: Option<&[AdminPort]>, flow: &Flow) -> bool {
        let Some(ports) = ports else { return true };
        ports.iter().any(|p| {
            if let Some(n) = &p.port_number {
                return Protocol::parse(&n.protocol) == Some(flow.protocol) && n.port == i32::from(flow.port);
            }
            if let Some(r) = &p.port_range {
                return Protocol::parse(&r.protocol) == Some(flow.protocol)
                    && r.start <= i32::from(flow.port)
                    && i32::from(flow.port) <= r.end;
            }
            if let Some(name) = &p.named_port {
                return self.named_port_matches(name, flow);
            }
            false
        })
    }

    /// True if `rule` matches the flow for the direction (`ingress`: its `from`
    /// against the source; else its `to` against the destination).
    pub fn admin_rule_matches<A>(&self, rule: &AdminRuleSpec<A>, ingress: bool, flow: &Flow) -> bool {
        let peer_end = if ingress { &flow.src } else { &flow.dst };
        rule.peers(ingress)
            .iter()
            .any(|peer| self.admin_peer_matches(peer, peer_end))
            && self.admin_ports_match(rule.ports.as_deref(), flow)
    }

    /// The ANP stage of one side: the names of the ANPs that select the pod with
    /// rules for the direction (in order), and the first rule that matched.
    pub fn admin_side(
        &self,
        pod: &PodInfo,
        ingress: bool,
        flow: &Flow,
    ) -> (Vec<String>, Option<AdminRuleRef>) {
        let mut selecting = Vec::new();
        let mut matched = None;
        for anp in self.admin_order() {
            let rules = if ingress {
                &anp.spec.ingress
            } else {
                &anp.spec.egress
            };
            if rules.is_empty() || !self.subject_selects(&anp.spec.subject, pod) {
                continue;
            }
            selecting.push(anp.name().to_string());
            if matched.is_some() {
                continue;
            }
            if let Some((index, rule)) = rules
                .iter()
                .enumerate()
                .find(|(_, r)| self.admin_rule_matches(r, ingress, flow))
            {
                matched = Some(AdminRuleRef {
                    policy: anp.name().to_string(),
                    priority: Some(anp.spec.priority),
                    rule: index,
                    name: rule.name.clone(),
                    action: rule.action,
                });
            }
        }
        (selecting, matched)
    }

    /// The BANP stage of one side: the first matching rule, if the BANP selects the pod.
    pub fn baseline_side(&self, pod: &PodInfo, ingress: bool, flow: &Flow) -> Option<AdminRuleRef> {
        let banp = self.baseline.as_ref()?;
        if !self.subject_selects(&banp.spec.subject, pod) {
            return None;
        }
        let rules = if ingress {
            &banp.spec.ingress
        } else {
            &banp.spec.egress
        };
        rules
            .iter()
            .enumerate()
            .find(|(_, r)| self.admin_rule_matches(r, ingress, flow))
            .map(|(index, rule)| AdminRuleRef {
                policy: banp.metadata.name.clone().unwrap_or_default(),
                priority: None,
                rule: index,
                name: rule.name.clone(),
                action: rule.action.into(),
            })
    }
}
