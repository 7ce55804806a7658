//! [`PolicyCompiler`]: the compilation of [`super`] with indexes and memoisation, so
//! that compiling every pod of a large cluster is not quadratic.
//!
//! What a rule's peers resolve to (prefixes, and the pods they select) depends only on
//! the policy and the rule, not on the pod the policy is compiled for; the compiler
//! resolves each rule once and reuses it for every selected pod. Selection goes through
//! a namespace index (pods by namespace, namespace labels computed once), so a
//! selector is checked against namespaces first and against the pods of the matching
//! namespaces only. The semantics stay [`PolicySet::evaluate`]'s: the property tests
//! compare the compiled rules with it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::rc::Rc;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use weft_model::admin_policy::{AdminNetworkPolicy, AdminPeer, AdminRuleSpec, NamespacedPod};
use weft_model::node::{AdminRule, AdminVerdict, EndpointPolicy, PolicyPort, PolicyRule};
use weft_policy::{Endpoint, PodInfo, PolicySet, Protocol, policy_types, selector_matches};

use super::{AdminPortKind, admin_port, host_prefixes, l4, numeric_range, subtract};

/// A rule's peers, resolved: `prefixes` (`None`: any address) and the pods some peer
/// selects (for named ports of egress rules, which resolve per destination pod).
#[derive(Debug, Default)]
struct Resolved {
    prefixes: Option<Vec<IpNet>>,
    pods: Vec<usize>,
}

/// Which rule list a memoised resolution belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum RuleKey {
    /// NetworkPolicy `index` of `set.policies`, direction, rule.
    Network(usize, bool, usize),
    /// ANP `index` of the evaluation order, direction, rule.
    Admin(usize, bool, usize),
    /// The baseline, direction, rule.
    Baseline(bool, usize),
}

/// Compiles the policy of many pods of one [`PolicySet`], sharing the work.
pub struct PolicyCompiler<'a> {
    set: &'a PolicySet,
    ns_labels: BTreeMap<String, BTreeMap<String, String>>,
    pods_by_ns: BTreeMap<String, Vec<usize>>,
    /// Per pod: the NetworkPolicies (indices) selecting it for ingress / egress.
    np_ingress: Vec<Vec<usize>>,
    np_egress: Vec<Vec<usize>>,
    admin: Vec<&'a AdminNetworkPolicy>,
    /// Per pod: the ANPs (indices into `admin`) whose subject selects it.
    admin_subject: Vec<Vec<usize>>,
    /// Per pod: whether the baseline's subject selects it.
    baseline_subject: Vec<bool>,
    memo: HashMap<RuleKey, Rc<Resolved>>,
}

impl<'a> PolicyCompiler<'a> {
    /// Indexes `set` (one pass over pods, namespaces and policies).
    pub fn new(set: &'a PolicySet) -> Self {
        let mut pods_by_ns: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, pod) in set.pods.iter().enumerate() {
            pods_by_ns.entry(pod.namespace.clone()).or_default().push(i);
        }
        let mut ns_labels = BTreeMap::new();
        for ns in set.namespaces.keys().chain(pods_by_ns.keys()) {
            ns_labels
                .entry(ns.clone())
                .or_insert_with(|| set.namespace_labels(ns));
        }
        let mut c = PolicyCompiler {
            set,
            ns_labels,
            pods_by_ns,
            np_ingress: vec![Vec::new(); set.pods.len()],
            np_egress: vec![Vec::new(); set.pods.len()],
            admin: set.admin_order(),
            admin_subject: vec![Vec::new(); set.pods.len()],
            baseline_subject: vec![false; set.pods.len()],
            memo: HashMap::new(),
        };
        for (p, policy) in set.policies.iter().enumerate() {
            let (has_ingress, has_egress) = policy_types(policy);
            let ns = policy.metadata.namespace.as_deref().unwrap_or("default");
            let selector = policy
                .spec
                .as_ref()
                .and_then(|s| s.pod_selector.clone())
                .unwrap_or_default();
            for &i in c.pods_by_ns.get(ns).map(Vec::as_slice).unwrap_or_default() {
                if selector_matches(&selector, &set.pods[i].labels) {
                    if has_ingress {
                        c.np_ingress[i].push(p);
                    }
                    if has_egress {
                        c.np_egress[i].push(p);
                    }
                }
            }
        }
        for a in 0..c.admin.len() {
            let subject = &c.admin[a].spec.subject;
            for i in c.subject_pods(subject.namespaces.as_ref(), subject.pods.as_ref()) {
                c.admin_subject[i].push(a);
            }
        }
        if let Some(banp) = &set.baseline {
            let subject = &banp.spec.subject;
            for i in c.subject_pods(subject.namespaces.as_ref(), subject.pods.as_ref()) {
                c.baseline_subject[i] = true;
            }
        }
        c
    }

    /// Pods of the namespaces `namespaces` selects, else the pods `pods` selects;
    /// neither: none (an admin subject or peer, as [`PolicySet::subject_selects`]).
    fn subject_pods(&self, namespaces: Option<&LabelSelector>, pods: Option<&NamespacedPod>) -> Vec<usize> {
        match (namespaces, pods) {
            (Some(ns), _) => self.pods_in(ns, None),
            (None, Some(p)) => self.pods_in(&p.namespace_selector, Some(&p.pod_selector)),
            (None, None) => Vec::new(),
        }
    }

    /// Pods in namespaces matching `ns` whose labels match `pod` (`None`: all).
    fn pods_in(&self, ns: &LabelSelector, pod: Option<&LabelSelector>) -> Vec<usize> {
        let mut out = Vec::new();
        for (name, labels) in &self.ns_labels {
            if !selector_matches(ns, labels) {
                continue;
            }
            out.extend(self.pods_of(name, pod));
        }
        out
    }

    /// Pods of namespace `ns` whose labels match `pod` (`None`: all).
    fn pods_of<'s>(&'s self, ns: &str, pod: Option<&'s LabelSelector>) -> impl Iterator<Item = usize> + 's {
        self.pods_by_ns
            .get(ns)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .copied()
            .filter(move |i| pod.is_none_or(|sel| selector_matches(sel, &self.set.pods[*i].labels)))
    }

    /// Pods whose addresses an address-based peer matches (`matches`: the set's own
    /// peer predicate, so both agree).
    fn pods_where(&self, matches: impl Fn(&Endpoint) -> bool) -> Vec<usize> {
        (0..self.set.pods.len())
            .filter(|i| matches(&Endpoint::Pod(*i)))
            .collect()
    }

    fn prefixes_of(&self, pods: &[usize]) -> Vec<IpNet> {
        pods.iter()
            .flat_map(|i| host_prefixes(&self.set.pods[*i]))
            .collect()
    }

    /// The peers of a NetworkPolicy rule (memoised).
    fn network_peers(&mut self, key: RuleKey, ns: &str, peers: Option<&[NetworkPolicyPeer]>) -> Rc<Resolved> {
        if let Some(r) = self.memo.get(&key) {
            return r.clone();
        }
        let resolved = match peers {
            None | Some([]) => Resolved {
                prefixes: None,
                pods: (0..self.set.pods.len()).collect(),
            },
            Some(list) => {
                let mut prefixes = Vec::new();
                let mut pods = BTreeSet::new();
                for peer in list {
                    if let Some(block) = &peer.ip_block {
                        if let Ok(cidr) = block.cidr.parse::<IpNet>() {
                            let excepts: Vec<IpNet> = block
                                .except
                                .as_deref()
                                .unwrap_or_default()
                                .iter()
                                .filter_map(|e| e.parse().ok())
                                .collect();
                            prefixes.extend(subtract(cidr, &excepts));
                        }
                        pods.extend(self.pods_where(|e| self.set.peer_matches(ns, peer, e)));
                        continue;
                    }
                    let selected: Vec<usize> = match &peer.namespace_selector {
                        Some(sel) => self.pods_in(sel, peer.pod_selector.as_ref()),
                        None => self.pods_of(ns, peer.pod_selector.as_ref()).collect(),
                    };
                    prefixes.extend(self.prefixes_of(&selected));
                    pods.extend(selected);
                }
                Resolved {
                    prefixes: Some(IpNet::aggregate(&prefixes)),
                    pods: pods.into_iter().collect(),
                }
            }
        };
        let resolved = Rc::new(resolved);
        self.memo.insert(key, resolved.clone());
        resolved
    }

    /// The peers of an admin rule (memoised).
    fn admin_peers(&mut self, key: RuleKey, peers: &[AdminPeer]) -> Rc<Resolved> {
        if let Some(r) = self.memo.get(&key) {
            return r.clone();
        }
        let mut prefixes = Vec::new();
        let mut pods = BTreeSet::new();
        for peer in peers {
            if let Some(nets) = &peer.networks {
                prefixes.extend(
                    nets.iter()
                        .filter_map(|n| n.parse::<IpNet>().ok())
                        .map(|n| n.trunc()),
                );
                pods.extend(self.pods_where(|e| self.set.admin_peer_matches(peer, e)));
                continue;
            }
            let selected = self.subject_pods(peer.namespaces.as_ref(), peer.pods.as_ref());
            prefixes.extend(self.prefixes_of(&selected));
            pods.extend(selected);
        }
        let resolved = Rc::new(Resolved {
            prefixes: Some(IpNet::aggregate(&prefixes)),
            pods: pods.into_iter().collect(),
        });
        self.memo.insert(key, resolved.clone());
        resolved
    }

    /// Everything that applies to pod `index`, as the policy of its interface `key`
    /// with address `ip`.
    pub fn endpoint(&mut self, index: usize, key: String, ip: IpAddr) -> EndpointPolicy {
        let mut policy = EndpointPolicy::open(key, ip);
        policy.ingress = self.side(index, true);
        policy.egress = self.side(index, false);
        policy.admin_ingress = self.admin_side(index, true);
        policy.admin_egress = self.admin_side(index, false);
        if policy.ingress.is_none() {
            policy.baseline_ingress = self.baseline_side(index, true);
        }
        if policy.egress.is_none() {
            policy.baseline_egress = self.baseline_side(index, false);
        }
        policy
    }

    /// The NetworkPolicy rules of one side of pod `index` (`None`: not isolated).
    pub fn side(&mut self, index: usize, ingress: bool) -> Option<Vec<PolicyRule>> {
        let set = self.set;
        let pod = set.pods.get(index)?;
        let selecting = if ingress {
            &self.np_ingress
        } else {
            &self.np_egress
        };
        let selecting = selecting.get(index)?.clone();
        if selecting.is_empty() {
            return None;
        }
        let mut rules: BTreeSet<PolicyRule> = BTreeSet::new();
        for p in selecting {
            let policy = &set.policies[p];
            let ns = policy.metadata.namespace.as_deref().unwrap_or("default");
            let Some(spec) = policy.spec.as_ref() else {
                continue;
            };
            type RawRule<'r> = (Option<&'r [NetworkPolicyPeer]>, Option<&'r [NetworkPolicyPort]>);
            let raw: Vec<RawRule<'_>> = if ingress {
                spec.ingress
                    .iter()
                    .flatten()
                    .map(|r| (r.from.as_deref(), r.ports.as_deref()))
                    .collect()
            } else {
                spec.egress
                    .iter()
                    .flatten()
                    .map(|r| (r.to.as_deref(), r.ports.as_deref()))
                    .collect()
            };
            for (r, (peers, ports)) in raw.into_iter().enumerate() {
                let resolved = self.network_peers(RuleKey::Network(p, ingress, r), ns, peers);
                if resolved.prefixes.as_ref().is_some_and(Vec::is_empty) {
                    continue;
                }
                let ports = ports.unwrap_or_default();
                if ports.is_empty() {
                    rules.insert(PolicyRule {
                        peers: resolved.prefixes.clone(),
                        ports: None,
                    });
                    continue;
                }
                let mut numeric = BTreeSet::new();
                for port in ports {
                    let proto = port
                        .protocol
                        .as_deref()
                        .and_then(Protocol::parse)
                        .unwrap_or(Protocol::Tcp);
                    match &port.port {
                        None => {
                            numeric.insert(PolicyPort {
                                protocol: l4(proto),
                                first: 0,
                                last: 65535,
                            });
                        }
                        Some(IntOrString::Int(start)) => {
                            if let Some((first, last)) = numeric_range(*start, port.end_port) {
                                numeric.insert(PolicyPort {
                                    protocol: l4(proto),
                                    first,
                                    last,
                                });
                            }
                        }
                        Some(IntOrString::String(name)) if ingress => {
                            for np in pod
                                .ports
                                .iter()
                                .filter(|np| &np.name == name && np.protocol == proto)
                            {
                                numeric.insert(PolicyPort {
                                    protocol: l4(proto),
                                    first: np.port,
                                    last: np.port,
                                });
                            }
                        }
                        Some(IntOrString::String(name)) => {
                            // Egress: per destination pod the peers select.
                            for &i in &resolved.pods {
                                let dst = &set.pods[i];
                                let dst_ports: BTreeSet<PolicyPort> = dst
                                    .ports
                                    .iter()
                                    .filter(|np| &np.name == name && np.protocol == proto)
                                    .map(|np| PolicyPort {
                                        protocol: l4(proto),
                                        first: np.port,
                                        last: np.port,
                                    })
                                    .collect();
                                if !dst_ports.is_empty() && !dst.ips.is_empty() {
                                    rules.insert(PolicyRule {
                                        peers: Some(IpNet::aggregate(&host_prefixes(dst))),
                                        ports: Some(dst_ports.into_iter().collect()),
                                    });
                                }
                            }
                        }
                    }
                }
                if !numeric.is_empty() {
                    rules.insert(PolicyRule {
                        peers: resolved.prefixes.clone(),
                        ports: Some(numeric.into_iter().collect()),
                    });
                }
            }
        }
        Some(rules.into_iter().collect())
    }

    /// The ANP rules of one side of pod `index`, in evaluation order.
    pub fn admin_side(&mut self, index: usize, ingress: bool) -> Vec<AdminRule> {
        let Some(selecting) = self.admin_subject.get(index).cloned() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for a in selecting {
            let anp = self.admin[a];
            let rules = if ingress {
                &anp.spec.ingress
            } else {
                &anp.spec.egress
            };
            for (r, rule) in rules.iter().enumerate() {
                self.admin_rule(
                    RuleKey::Admin(a, ingress, r),
                    index,
                    rule,
                    ingress,
                    rule.action.into(),
                    &mut out,
                );
            }
        }
        out
    }

    /// The baseline's rules of one side of pod `index` (empty if it does not select it).
    pub fn baseline_side(&mut self, index: usize, ingress: bool) -> Vec<AdminRule> {
        let set = self.set;
        let Some(banp) = set.baseline.as_ref() else {
            return Vec::new();
        };
        if !self.baseline_subject.get(index).copied().unwrap_or(false) {
            return Vec::new();
        }
        let rules = if ingress {
            &banp.spec.ingress
        } else {
            &banp.spec.egress
        };
        let mut out = Vec::new();
        for (r, rule) in rules.iter().enumerate() {
            self.admin_rule(
                RuleKey::Baseline(ingress, r),
                index,
                rule,
                ingress,
                rule.action.into(),
                &mut out,
            );
        }
        out
    }

    /// Appends the compiled form of one admin rule (several [`AdminRule`]s with the
    /// same verdict when named ports resolve per destination pod).
    fn admin_rule<A>(
        &mut self,
        key: RuleKey,
        index: usize,
        rule: &AdminRuleSpec<A>,
        ingress: bool,
        action: AdminVerdict,
        out: &mut Vec<AdminRule>,
    ) {
        let set = self.set;
        let resolved = self.admin_peers(key, rule.peers(ingress));
        let Some(peers) = resolved.prefixes.clone().filter(|p| !p.is_empty()) else {
            return;
        };
        let Some(ports) = &rule.ports else {
            out.push(AdminRule {
                action,
                rule: PolicyRule {
                    peers: Some(peers),
                    ports: None,
                },
            });
            return;
        };
        let mut numeric = BTreeSet::new();
        let mut names = Vec::new();
        for p in ports {
            match admin_port(p) {
                AdminPortKind::Range(proto, first, last) => {
                    numeric.insert(PolicyPort {
                        protocol: l4(proto),
                        first,
                        last,
                    });
                }
                AdminPortKind::Named(name) => names.push(name),
                AdminPortKind::Nothing => {}
            }
        }
        let named_ports = |dst: &PodInfo| -> BTreeSet<PolicyPort> {
            dst.ports
                .iter()
                .filter(|np| names.contains(&np.name.as_str()))
                .map(|np| PolicyPort {
                    protocol: l4(np.protocol),
                    first: np.port,
                    last: np.port,
                })
                .collect()
        };
        if ingress && let Some(pod) = set.pods.get(index) {
            numeric.extend(named_ports(pod));
        }
        if !numeric.is_empty() {
            out.push(AdminRule {
                action,
                rule: PolicyRule {
                    peers: Some(peers),
                    ports: Some(numeric.into_iter().collect()),
                },
            });
        }
        if ingress || names.is_empty() {
            return;
        }
        // Egress named ports: per destination pod some peer selects.
        for &i in &resolved.pods {
            let dst = &set.pods[i];
            let dst_ports = named_ports(dst);
            if dst.ips.is_empty() || dst_ports.is_empty() {
                continue;
            }
            out.push(AdminRule {
                action,
                rule: PolicyRule {
                    peers: Some(IpNet::aggregate(&host_prefixes(dst))),
                    ports: Some(dst_ports.into_iter().collect()),
                },
            });
        }
    }
}
