//! Translation of Kubernetes objects into weft's network objects, following Tungsten
//! Fabric's kube-manager (reference §2–§4, §6.1, §7.1).
//!
//! Data flow: inputs (from `weft apply` or a Kubernetes watch) → [`Translator::apply`]
//! (validates, records, marks what must be recomputed) → [`Translator::flush`]
//! (recomputes projects, networks, pod interfaces with IPAM, services, pod floating
//! IPs, policies) →
//! a list of [`DerivedChange`]s the controller writes to the store in the same
//! transaction as the inputs.
//!
//! Pure and synchronous: no I/O, no clock, no randomness. Address state lives in the
//! derived objects themselves, so after a restart [`Translator::restore`] rebuilds the
//! IPAM pools from what was stored and nothing can leak or be handed out twice.

pub mod annotations;
mod chains;
mod fips;
mod networks;
mod pod_fips;
mod pods;
mod policies;
mod services;
pub mod synthetic;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use weft_ipam::{IpamError, Pool, VniAllocator};
use weft_model::config::EffectiveConfig;
use weft_model::derived::ObjectState;
use weft_model::{
    DerivedKind, DerivedObject, FieldError, InputChange, InputKey, InputKind, InputObject, ObjectStatus,
};

/// Lowest VNI handed out automatically.
pub const FIRST_VNI: u32 = 1;
/// NodePort range of Kubernetes' default `--service-node-port-range`.
pub const NODE_PORT_RANGE: std::ops::RangeInclusive<u16> = 30000..=32767;

/// What an apply or delete did to one input object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplyAction {
    /// The object is new.
    Created,
    /// The object existed and changed.
    Configured,
    /// The object existed and is identical.
    Unchanged,
    /// The object was deleted.
    Deleted,
    /// Delete of an object that does not exist.
    NotFound,
}

/// One change to a derived object, for the store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // built once per change and moved straight into a store write
pub enum DerivedChange {
    /// Create or replace.
    Put(DerivedObject),
    /// Remove (kind, name).
    Delete(DerivedKind, String),
}

/// What must be recomputed at the next flush.
#[derive(Debug, Default)]
struct Dirty {
    everything: bool,
    networks: bool,
    namespaces: BTreeSet<String>,
    pods: BTreeSet<(String, String)>,
    services: BTreeSet<(String, String)>,
    policies: BTreeSet<(String, String)>,
    floating_ips: BTreeSet<(String, String)>,
    chains: BTreeSet<(String, String)>,
}

type DerivedKey = (DerivedKind, String);

/// The translator: inputs, derived objects and the allocators that go with them.
pub struct Translator {
    config: EffectiveConfig,
    inputs: BTreeMap<InputKey, InputObject>,
    derived: BTreeMap<DerivedKey, DerivedObject>,
    pools: BTreeMap<String, Pool>,
    vnis: VniAllocator,
    node_ports: BTreeMap<u16, String>,
    next_policy_sequence: u32,
    policy_sequences: BTreeMap<(String, String), u32>,
    dirty: Dirty,
    before: BTreeMap<DerivedKey, Option<DerivedObject>>,
}

impl Default for Translator {
    fn default() -> Self {
        Self::new()
    }
}

fn object_name(key: &InputKey) -> String {
    key.to_string()
}

impl Translator {
    /// An empty translator with TF's default cluster settings.
    pub fn new() -> Self {
        let config = EffectiveConfig::default();
        let mut t = Translator {
            pools: BTreeMap::new(),
            config,
            inputs: BTreeMap::new(),
            derived: BTreeMap::new(),
            vnis: VniAllocator::new(FIRST_VNI, weft_model::Vni::MAX)
                .expect("1..=2^24-1 is a valid VNI range"),
            node_ports: BTreeMap::new(),
            next_policy_sequence: 1,
            policy_sequences: BTreeMap::new(),
            dirty: Dirty {
                everything: true,
                networks: true,
                ..Dirty::default()
            },
            before: BTreeMap::new(),
        };
        t.sync_cluster_pools_unchecked();
        t
    }

    /// Rebuilds a translator from stored inputs and derived objects (controller start).
    /// Addresses, VNIs and NodePorts are re-reserved for their stored owners; anything
    /// inconsistent (a duplicate address, say) is dropped and recomputed, and described
    /// in the returned notes. Call [`Translator::flush`] afterwards and store its changes.
    pub fn restore(inputs: Vec<InputObject>, derived: Vec<DerivedObject>) -> (Self, Vec<String>) {
        let mut t = Translator::new();
        let mut notes = Vec::new();
        for input in inputs {
            if let InputObject::ClusterConfig(cc) = &input {
                let name = cc.metadata.name.clone().unwrap_or_default();
                match cc
                    .spec
                    .validate(&format!("ClusterConfig {name}"), Some(name.clone()))
                {
                    Ok(cfg) => t.config = cfg,
                    Err(e) => notes.push(format!("stored ClusterConfig is invalid, using defaults: {e}")),
                }
            }
            t.inputs.insert(input.key(), input);
        }
        t.sync_cluster_pools_unchecked();
        // Networks first: they define the pools the other objects draw from.
        let mut sorted = derived;
        sorted.sort_by_key(|d| d.kind());
        for object in sorted {
            let key = (object.kind(), object.name());
            let problem = match &object {
                DerivedObject::Network(n) => {
                    if let Err(e) = t.ensure_network_pool(n) {
                        Some(e)
                    } else {
                        t.vnis
                            .reserve(n.vni.0, &format!("network {}", n.fq_name))
                            .err()
                            .map(|e| e.to_string())
                    }
                }
                DerivedObject::Interface(i) => match t.pool_for_network_mut(&i.network) {
                    Some(pool) => pool
                        .reserve(i.ip, &pods::interface_owner(&i.namespace, &i.pod, &i.interface))
                        .err()
                        .map(|e| e.to_string()),
                    None => Some(format!("network {} is not stored", i.network)),
                },
                DerivedObject::Service(s) => {
                    let mut problem = None;
                    if let Some(vip) = s.vip {
                        let owner = services::service_owner(&s.namespace, &s.name);
                        problem = match t.pool_for_network_mut(&s.network) {
                            Some(pool) => pool.reserve(vip, &owner).err().map(|e| e.to_string()),
                            None => Some(format!("network {} is not stored", s.network)),
                        };
                    }
                    let fip_owner = fips::fip_owner(&s.namespace, &s.name);
                    for ip in &s.floating_ips {
                        let network = s.fip_network.clone().unwrap_or_default();
                        let result = match t.pool_for_network_mut(&network) {
                            Some(pool) => pool.reserve(*ip, &fip_owner).err().map(|e| e.to_string()),
                            None => Some(format!("floating-IP network {network} is not stored")),
                        };
                        problem = problem.or(result);
                    }
                    if problem.is_some() {
                        // Dropped: free what was reserved for it; the flush allocates afresh.
                        if let Some(vip) = s.vip {
                            pods::release_owned(&mut t, vip, &services::service_owner(&s.namespace, &s.name));
                        }
                        for ip in &s.floating_ips {
                            pods::release_owned(&mut t, *ip, &fip_owner);
                        }
                    }
                    for port in s.ports.iter().filter_map(|p| p.node_port) {
                        let owner = services::service_owner(&s.namespace, &s.name);
                        match t.node_ports.get(&port) {
                            Some(other) if other != &owner => {
                                problem = Some(format!("NodePort {port} also held by {other}"))
                            }
                            _ => {
                                t.node_ports.insert(port, owner);
                            }
                        }
                    }
                    problem
                }
                DerivedObject::FloatingIp(f) => match (f.ip, f.network.as_deref()) {
                    (Some(ip), Some(network)) => {
                        let owner = pod_fips::floating_ip_owner(&f.namespace, &f.name);
                        match t.pool_for_network_mut(network) {
                            Some(pool) => pool.reserve(ip, &owner).err().map(|e| e.to_string()),
                            None => Some(format!("floating-IP network {network} is not stored")),
                        }
                    }
                    // No address held: nothing to reserve; the flush retries.
                    _ => None,
                },
                DerivedObject::FirewallPolicy(p) => {
                    t.next_policy_sequence = t.next_policy_sequence.max(p.sequence + 1);
                    t.policy_sequences
                        .insert((p.namespace.clone(), p.policy.clone()), p.sequence);
                    None
                }
                DerivedObject::ServiceChain(c) => {
                    let mut problem = None;
                    let owner = |gap: usize| chains::vni_owner(&c.namespace, &c.name, gap);
                    for (gap, vni) in c.hop_vnis.iter().enumerate() {
                        if let Err(e) = t.vnis.reserve(vni.0, &owner(gap)) {
                            problem = Some(e.to_string());
                        }
                    }
                    if problem.is_some() {
                        // Free only what this chain reserved above, not a VNI another
                        // chain (or network) holds.
                        for (gap, vni) in c.hop_vnis.iter().enumerate() {
                            if t.vnis.owner(vni.0) == Some(owner(gap).as_str()) {
                                t.vnis.release(vni.0);
                            }
                        }
                    }
                    problem
                }
                DerivedObject::Project(_) | DerivedObject::Status(_) => None,
            };
            match problem {
                None => {
                    t.derived.insert(key, object);
                }
                Some(problem) => {
                    notes.push(format!(
                        "dropped stored {} {}: {problem}; it will be recomputed",
                        key.0.plural(),
                        key.1
                    ));
                    // Record it as "before" so the flush deletes or replaces the stored copy.
                    t.before.insert(key, Some(object));
                }
            }
        }
        t.dirty = Dirty {
            everything: true,
            networks: true,
            ..Dirty::default()
        };
        (t, notes)
    }

    /// The cluster settings in force.
    pub fn config(&self) -> &EffectiveConfig {
        &self.config
    }

    /// All inputs, sorted by key.
    pub fn inputs(&self) -> impl Iterator<Item = &InputObject> {
        self.inputs.values()
    }

    /// One input.
    pub fn input(&self, key: &InputKey) -> Option<&InputObject> {
        self.inputs.get(key)
    }

    /// All derived objects of one kind, sorted by name.
    pub fn derived(&self, kind: DerivedKind) -> impl Iterator<Item = &DerivedObject> {
        self.derived
            .range((kind, String::new())..)
            .take_while(move |((k, _), _)| *k == kind)
            .map(|(_, v)| v)
    }

    /// One derived object.
    pub fn derived_object(&self, kind: DerivedKind, name: &str) -> Option<&DerivedObject> {
        self.derived.get(&(kind, name.to_string()))
    }

    /// Status of an input: `None` when it is ready (or unknown).
    pub fn pending_reason(&self, key: &InputKey) -> Option<&str> {
        match self.derived.get(&(DerivedKind::Status, object_name(key))) {
            Some(DerivedObject::Status(s)) => s.reason.as_deref(),
            _ => None,
        }
    }

    /// Number of addresses in use per IPAM pool, for status output.
    pub fn pool_usage(&self) -> Vec<(String, usize, u128)> {
        self.pools
            .iter()
            .map(|(n, p)| (n.clone(), p.in_use(), p.capacity()))
            .collect()
    }

    /// Validates and records one input change, marking what it affects for the next
    /// [`flush`](Self::flush). An invalid object is refused with an error naming the
    /// object, the field and what was expected, and nothing changes.
    pub fn apply(&mut self, change: InputChange) -> Result<ApplyAction, FieldError> {
        match change {
            InputChange::Upsert(mut object) => {
                object.default_namespace("default");
                let key = object.key();
                self.validate(&key, &object)?;
                if let Some(existing) = self.inputs.get(&key)
                    && existing == &object
                {
                    return Ok(ApplyAction::Unchanged);
                }
                if let InputObject::ClusterConfig(cc) = &object {
                    let cfg = cc
                        .spec
                        .validate(&object_name(&key), Some(key.name.clone()))
                        .map_err(|e| FieldError {
                            object: object_name(&key),
                            ..e
                        })?;
                    self.change_config(&key, cfg)?;
                }
                if key.kind == InputKind::NetworkPolicy {
                    // TF orders user policies by creation: number them as they arrive.
                    let id = (key.namespace.clone().unwrap_or_default(), key.name.clone());
                    if !self.policy_sequences.contains_key(&id) {
                        self.policy_sequences.insert(id, self.next_policy_sequence);
                        self.next_policy_sequence += 1;
                    }
                }
                self.mark(&key, Some(&object));
                let action = if self.inputs.insert(key, object).is_some() {
                    ApplyAction::Configured
                } else {
                    ApplyAction::Created
                };
                Ok(action)
            }
            InputChange::Delete(key) => {
                let Some(old) = self.inputs.get(&key).cloned() else {
                    return Ok(ApplyAction::NotFound);
                };
                if key.kind == InputKind::ClusterConfig {
                    self.change_config(&key, EffectiveConfig::default())?;
                }
                self.mark(&key, Some(&old));
                self.inputs.remove(&key);
                Ok(ApplyAction::Deleted)
            }
        }
    }

    /// Marks what an input change affects.
    fn mark(&mut self, key: &InputKey, object: Option<&InputObject>) {
        let ns = key.namespace.clone().unwrap_or_default();
        match key.kind {
            InputKind::ClusterConfig => {
                self.dirty.everything = true;
                self.dirty.networks = true;
            }
            InputKind::Namespace => {
                self.dirty.networks = true;
                self.dirty.namespaces.insert(key.name.clone());
                // Its opencontrail.org/fip-pool annotation is a scope of its services' pool.
                self.mark_services_of_namespace(&key.name);
            }
            InputKind::VirtualNetwork
            | InputKind::NetworkAttachmentDefinition
            | InputKind::FloatingIpPool => {
                self.dirty.networks = true;
            }
            // BGP peers feed the controller's speaker, not the translation.
            InputKind::Node | InputKind::BgpPeer => {}
            InputKind::Pod => {
                self.dirty.pods.insert((ns.clone(), key.name.clone()));
                // Services select pods by label; recompute this namespace's services.
                self.mark_services_of_namespace(&ns);
            }
            InputKind::Service => {
                self.dirty.services.insert((ns, key.name.clone()));
            }
            InputKind::EndpointSlice => {
                let service = object.and_then(|o| {
                    o.metadata()
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("kubernetes.io/service-name").cloned())
                });
                if let Some(service) = service {
                    self.dirty.services.insert((ns, service));
                } else {
                    self.mark_services_of_namespace(&ns);
                }
            }
            InputKind::NetworkPolicy => {
                self.dirty.policies.insert((ns, key.name.clone()));
            }
            InputKind::FloatingIp => {
                self.dirty.floating_ips.insert((ns, key.name.clone()));
            }
            InputKind::ServiceChain => {
                self.dirty.chains.insert((ns, key.name.clone()));
            }
            // Cluster-wide policies derive nothing: the route compiler reads them.
            InputKind::AdminNetworkPolicy | InputKind::BaselineAdminNetworkPolicy => {}
        }
    }

    fn mark_services_of_namespace(&mut self, ns: &str) {
        let names: Vec<String> = self
            .inputs_in(InputKind::Service, ns)
            .map(|(k, _)| k.name.clone())
            .collect();
        for name in names {
            self.dirty.services.insert((ns.to_string(), name));
        }
    }

    /// Inputs of one kind in one namespace.
    fn inputs_in<'a>(
        &'a self,
        kind: InputKind,
        ns: &'a str,
    ) -> impl Iterator<Item = (&'a InputKey, &'a InputObject)> + 'a {
        let start = InputKey {
            kind,
            namespace: Some(ns.to_string()),
            name: String::new(),
        };
        self.inputs
            .range(start..)
            .take_while(move |(k, _)| k.kind == kind && k.namespace.as_deref() == Some(ns))
    }

    /// Inputs of one kind.
    fn inputs_of(&self, kind: InputKind) -> impl Iterator<Item = (&InputKey, &InputObject)> {
        let start = InputKey {
            kind,
            namespace: None,
            name: String::new(),
        };
        self.inputs
            .range(start..)
            .take_while(move |(k, _)| k.kind == kind)
    }

    /// Applies a new cluster configuration after checking it can take effect: the pools
    /// must keep every address in use, and the cluster name cannot change under pods.
    fn change_config(&mut self, key: &InputKey, cfg: EffectiveConfig) -> Result<(), FieldError> {
        let object = object_name(key);
        if let Some((other, _)) = self.inputs_of(InputKind::ClusterConfig).find(|(k, _)| *k != key) {
            return Err(FieldError::new(
                &object,
                "metadata.name",
                format!(
                    "the one ClusterConfig of this cluster ({} already exists; edit that one)",
                    other.name
                ),
            )
            .found(&key.name));
        }
        if cfg.cluster_name != self.config.cluster_name {
            let interfaces = self.derived(DerivedKind::Interface).count();
            if interfaces > 0 {
                return Err(FieldError::new(
                    &object,
                    "spec.clusterName",
                    format!(
                        "the current cluster name {:?}: {interfaces} pod interfaces are named after it; delete the pods before renaming the cluster",
                        self.config.cluster_name
                    ),
                )
                .found(&cfg.cluster_name));
            }
        }
        let checks = [
            (
                "spec.podSubnets",
                networks::pod_pool_name(&self.config),
                networks::pod_pool_name(&cfg),
                &cfg.pod_subnets,
            ),
            (
                "spec.serviceSubnets",
                networks::service_pool_name(&self.config),
                networks::service_pool_name(&cfg),
                &cfg.service_subnets,
            ),
            (
                "spec.ipFabricSubnets",
                networks::fabric_pool_name(&self.config),
                networks::fabric_pool_name(&cfg),
                &cfg.ip_fabric_subnets,
            ),
        ];
        for (field, old_name, _, subnets) in &checks {
            if let Some(pool) = self.pools.get(old_name) {
                let mut trial = pool.clone();
                trial.resize(subnets.to_vec()).map_err(|e| {
                    FieldError::new(
                        &object,
                        *field,
                        format!("subnets that keep every address in use ({e})"),
                    )
                })?;
            }
        }
        for (_, old_name, new_name, subnets) in checks {
            if let Some(mut pool) = self.pools.remove(&old_name) {
                // Checked above on a copy.
                let _ = pool.resize(subnets.to_vec());
                self.pools.insert(new_name, pool);
            }
        }
        self.config = cfg;
        self.sync_cluster_pools_unchecked();
        Ok(())
    }

    /// Makes sure the three cluster pools exist with the configured subnets.
    fn sync_cluster_pools_unchecked(&mut self) {
        let cfg = self.config.clone();
        for (name, subnets) in [
            (networks::pod_pool_name(&cfg), &cfg.pod_subnets),
            (networks::service_pool_name(&cfg), &cfg.service_subnets),
            (networks::fabric_pool_name(&cfg), &cfg.ip_fabric_subnets),
        ] {
            match self.pools.get_mut(&name) {
                Some(pool) => {
                    let _ = pool.resize(subnets.clone());
                }
                None => {
                    if let Ok(pool) = Pool::new(&name, subnets.clone()) {
                        self.pools.insert(name, pool);
                    }
                }
            }
        }
    }

    /// Kind-specific validation beyond decoding.
    fn validate(&self, key: &InputKey, object: &InputObject) -> Result<(), FieldError> {
        let name = object_name(key);
        match object {
            InputObject::Namespace(ns) => networks::validate_namespace(&name, ns),
            InputObject::Pod(pod) => pods::validate_pod(&name, pod),
            InputObject::Service(svc) => services::validate_service(self, key, &name, svc),
            InputObject::VirtualNetwork(vn) => networks::validate_virtual_network(self, key, &name, vn),
            InputObject::NetworkAttachmentDefinition(nad) => networks::validate_nad(&name, nad),
            InputObject::FloatingIpPool(pool) => networks::validate_fip_pool(&name, pool),
            InputObject::FloatingIp(fip) => pod_fips::validate_floating_ip(self, key, &name, fip),
            InputObject::ServiceChain(chain) => chains::validate_service_chain(&name, chain),
            InputObject::EndpointSlice(slice) => services::validate_endpoint_slice(&name, slice),
            InputObject::NetworkPolicy(np) => policies::validate_policy(&name, np),
            InputObject::AdminNetworkPolicy(anp) => anp.validate(&name),
            InputObject::BaselineAdminNetworkPolicy(banp) => banp.validate(&name),
            // A BgpPeer is validated when decoded (weft_model::bgp).
            InputObject::ClusterConfig(_) | InputObject::Node(_) | InputObject::BgpPeer(_) => Ok(()),
        }
    }

    /// Recomputes everything marked by [`apply`](Self::apply) and returns the changes
    /// to derived objects, ready to be stored.
    pub fn flush(&mut self) -> Vec<DerivedChange> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut namespaces = dirty.namespaces;
        let mut pods = dirty.pods;
        let mut services = dirty.services;
        let mut policies = dirty.policies;
        let mut floating_ips = dirty.floating_ips;
        if dirty.networks || dirty.everything {
            // A FloatingIp's pool or its network may have appeared, changed or gone.
            for (k, _) in self.inputs_of(InputKind::FloatingIp) {
                floating_ips.insert((k.namespace.clone().unwrap_or_default(), k.name.clone()));
            }
            for d in self.derived(DerivedKind::FloatingIp) {
                if let DerivedObject::FloatingIp(f) = d {
                    floating_ips.insert((f.namespace.clone(), f.name.clone()));
                }
            }
        }
        if dirty.everything {
            namespaces.extend(self.all_namespaces());
            for (kind, set) in [
                (InputKind::Pod, &mut pods),
                (InputKind::Service, &mut services),
                (InputKind::NetworkPolicy, &mut policies),
            ] {
                for (k, _) in self.inputs_of(kind) {
                    set.insert((k.namespace.clone().unwrap_or_default(), k.name.clone()));
                }
            }
            // Derived objects whose input is gone.
            for d in self.derived(DerivedKind::Interface) {
                if let DerivedObject::Interface(i) = d {
                    pods.insert((i.namespace.clone(), i.pod.clone()));
                }
            }
            for d in self.derived(DerivedKind::Service) {
                if let DerivedObject::Service(s) = d {
                    services.insert((s.namespace.clone(), s.name.clone()));
                }
            }
            for d in self.derived(DerivedKind::FirewallPolicy) {
                if let DerivedObject::FirewallPolicy(p) = d {
                    policies.insert((p.namespace.clone(), p.policy.clone()));
                }
            }
            let mut stale = Vec::new();
            for d in self.derived(DerivedKind::Project) {
                if let DerivedObject::Project(p) = d {
                    namespaces.insert(p.namespace.clone());
                    if p.name != weft_model::naming::project_name(&self.config.cluster_name, &p.namespace) {
                        stale.push(p.name.clone());
                    }
                }
            }
            for name in stale {
                self.remove_derived(DerivedKind::Project, &name);
            }
        }
        if dirty.networks || dirty.everything {
            let changed = networks::sync_networks(self);
            // Pods and services whose network appeared, vanished or changed, and every
            // pending object (it may have been waiting for one of them).
            for d in self.derived(DerivedKind::Interface) {
                if let DerivedObject::Interface(i) = d
                    && changed.contains(&i.network)
                {
                    pods.insert((i.namespace.clone(), i.pod.clone()));
                }
            }
            for d in self.derived(DerivedKind::Status) {
                if let DerivedObject::Status(s) = d
                    && let Some((kind, rest)) = s.object.split_once(' ')
                    && let Some((ns, name)) = rest.split_once('/')
                {
                    match kind {
                        "Pod" => {
                            pods.insert((ns.to_string(), name.to_string()));
                        }
                        "Service" => {
                            services.insert((ns.to_string(), name.to_string()));
                        }
                        _ => {}
                    }
                }
            }
            // Services holding floating IPs: their FloatingIpPool or its network may have
            // changed or vanished (those waiting for one are pending, handled above).
            for d in self.derived(DerivedKind::Service) {
                if let DerivedObject::Service(s) = d
                    && !s.floating_ips.is_empty()
                {
                    services.insert((s.namespace.clone(), s.name.clone()));
                }
            }
            // A NetworkAttachmentDefinition or VirtualNetwork may be named by pods of any
            // namespace through k8s.v1.cni.cncf.io/networks or opencontrail.org/network.
            for (k, o) in self.inputs_of(InputKind::Pod) {
                if pods::references_networks(o) {
                    pods.insert((k.namespace.clone().unwrap_or_default(), k.name.clone()));
                }
            }
        }
        for ns in &namespaces {
            if networks::sync_project(self, ns) {
                for (k, _) in self.inputs_in(InputKind::Pod, ns) {
                    pods.insert((ns.clone(), k.name.clone()));
                }
                for (k, _) in self.inputs_in(InputKind::Service, ns) {
                    services.insert((ns.clone(), k.name.clone()));
                }
            }
        }
        let mut pod_ns: BTreeSet<String> = BTreeSet::new();
        for (ns, name) in &pods {
            if pods::sync_pod(self, ns, name) {
                pod_ns.insert(ns.clone());
            }
        }
        // Pods waiting for an address get another try now that others may have freed one.
        let waiting: Vec<(String, String)> = self
            .derived(DerivedKind::Status)
            .filter_map(|d| match d {
                DerivedObject::Status(s)
                    if s.reason.as_deref().is_some_and(|r| r.starts_with("no address")) =>
                {
                    s.object
                        .strip_prefix("Pod ")
                        .and_then(|r| r.split_once('/'))
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                }
                _ => None,
            })
            .filter(|id| !pods.contains(id))
            .collect();
        for (ns, name) in &waiting {
            if pods::sync_pod(self, ns, name) {
                pod_ns.insert(ns.clone());
            }
        }
        // A pod's address change matters to services that select it.
        for ns in pod_ns {
            for (k, _) in self.inputs_in(InputKind::Service, &ns) {
                services.insert((ns.clone(), k.name.clone()));
            }
        }
        for (ns, name) in &services {
            services::sync_service(self, ns, name);
        }
        // Floating IPs of pods: their binding follows the pod's interface, so every one
        // naming a pod recomputed above; and those still without an address (the pool
        // may have room now).
        for (k, o) in self.inputs_of(InputKind::FloatingIp) {
            if let InputObject::FloatingIp(f) = o {
                let ns = k.namespace.clone().unwrap_or_default();
                let pod = (ns.clone(), f.spec.pod.trim().to_string());
                if pods.contains(&pod) || waiting.contains(&pod) {
                    floating_ips.insert((ns, k.name.clone()));
                }
            }
        }
        for d in self.derived(DerivedKind::FloatingIp) {
            if let DerivedObject::FloatingIp(f) = d
                && f.ip.is_none()
            {
                floating_ips.insert((f.namespace.clone(), f.name.clone()));
            }
        }
        for (ns, name) in &floating_ips {
            pod_fips::sync_floating_ip(self, ns, name);
        }
        for (ns, name) in &policies {
            policies::sync_policy(self, ns, name);
        }
        // Service chains: their networks, and the interfaces of their service pods, may
        // have changed with any network or pod (chains are few; recompute them all).
        let mut chains = dirty.chains;
        if dirty.networks || dirty.everything || !pods.is_empty() || !waiting.is_empty() {
            for (k, _) in self.inputs_of(InputKind::ServiceChain) {
                chains.insert((k.namespace.clone().unwrap_or_default(), k.name.clone()));
            }
            for d in self.derived(DerivedKind::ServiceChain) {
                if let DerivedObject::ServiceChain(c) = d {
                    chains.insert((c.namespace.clone(), c.name.clone()));
                }
            }
        }
        for (ns, name) in &chains {
            chains::sync_chain(self, ns, name);
        }
        self.take_changes()
    }

    fn all_namespaces(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .inputs_of(InputKind::Namespace)
            .map(|(k, _)| k.name.clone())
            .collect();
        out.insert("default".into());
        out.insert("kube-system".into());
        out
    }

    /// Collects the net effect of the flush on derived objects.
    fn take_changes(&mut self) -> Vec<DerivedChange> {
        let before = std::mem::take(&mut self.before);
        let mut out = Vec::new();
        for (key, old) in before {
            let new = self.derived.get(&key);
            match (old, new) {
                (Some(o), Some(n)) if &o == n => {}
                (_, Some(n)) => out.push(DerivedChange::Put(n.clone())),
                (Some(_), None) => out.push(DerivedChange::Delete(key.0, key.1)),
                (None, None) => {}
            }
        }
        out
    }

    /// Writes a derived object, remembering its previous value for the change list.
    fn put_derived(&mut self, object: DerivedObject) {
        let key = (object.kind(), object.name());
        if self.derived.get(&key) == Some(&object) {
            return;
        }
        let old = self.derived.insert(key.clone(), object);
        self.before.entry(key).or_insert(old);
    }

    /// Removes a derived object, remembering it for the change list.
    fn remove_derived(&mut self, kind: DerivedKind, name: &str) -> Option<DerivedObject> {
        let key = (kind, name.to_string());
        let old = self.derived.remove(&key);
        if old.is_some() {
            self.before.entry(key).or_insert(old.clone());
        }
        old
    }

    /// Records that an input waits for something, or clears that when `reason` is None.
    fn set_pending(&mut self, key: &InputKey, reason: Option<String>) {
        let name = object_name(key);
        match reason {
            Some(reason) => {
                self.put_derived(DerivedObject::Status(ObjectStatus {
                    object: name,
                    state: ObjectState::Pending,
                    reason: Some(reason),
                }));
            }
            None => {
                self.remove_derived(DerivedKind::Status, &name);
            }
        }
    }

    /// The pool a stored network draws its addresses from.
    fn pool_for_network_mut(&mut self, fq: &str) -> Option<&mut Pool> {
        let ipam = match self.derived.get(&(DerivedKind::Network, fq.to_string())) {
            Some(DerivedObject::Network(n)) => n.ipam.clone(),
            _ => return None,
        };
        self.pools.get_mut(&ipam)
    }

    /// Creates the pool of a network with its own subnets, if it has one.
    fn ensure_network_pool(&mut self, n: &weft_model::VirtualNetworkRecord) -> Result<(), String> {
        if self.pools.contains_key(&n.ipam) {
            return Ok(());
        }
        let pool = Pool::new(&n.ipam, n.subnets.clone()).map_err(|e| e.to_string())?;
        self.pools.insert(n.ipam.clone(), pool);
        Ok(())
    }

    /// Every address in use, with its owner and pool: for consistency checks.
    pub fn allocations(&self) -> Vec<(String, IpAddr, String)> {
        let mut out = Vec::new();
        for (name, pool) in &self.pools {
            for (ip, owner) in pool.allocations() {
                out.push((name.clone(), ip, owner.to_string()));
            }
        }
        out
    }
}

/// Renders an IPAM error for a pending reason.
fn ipam_reason(err: &IpamError) -> String {
    err.to_string()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod chain_tests;
