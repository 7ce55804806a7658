//! Projects and virtual networks (reference §2.1, §3.1–§3.4, §4.2): the shared default
//! pod and service networks, per-namespace networks of isolated namespaces, user
//! VirtualNetworks and NetworkAttachmentDefinition networks, with VNIs, route targets
//! and the network connections TF's default network policies make.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Namespace;
use weft_ipam::Pool;
use weft_model::config::{EffectiveConfig, overlaps, parse_cidr};
use weft_model::derived::NetworkKind;
use weft_model::naming::{
    self, ANNOTATION_CIDR, ANNOTATION_FIP_POOL, ANNOTATION_IP_FABRIC_FORWARDING, ANNOTATION_IP_FABRIC_SNAT,
    ANNOTATION_ISOLATION, ANNOTATION_NETWORK,
};
use weft_model::{
    DerivedKind, DerivedObject, FieldError, FloatingIpPool, InputKey, InputKind, InputObject,
    NetworkAttachmentDefinition, Project, VirtualNetwork, VirtualNetworkRecord, Vni,
};

use crate::Translator;
use crate::annotations::{annotation_field, parse_bool, parse_network_ref};

/// FQ name of the underlay network every pod and service network connects to.
pub const IP_FABRIC_NETWORK: &str = "default-domain:default-project:ip-fabric";

/// Name of the cluster's pod IPAM.
pub fn pod_pool_name(cfg: &EffectiveConfig) -> String {
    naming::pod_ipam(&cfg.cluster_name)
}

/// Name of the cluster's service IPAM.
pub fn service_pool_name(cfg: &EffectiveConfig) -> String {
    naming::service_ipam(&cfg.cluster_name)
}

/// Name of the cluster's ip-fabric IPAM.
pub fn fabric_pool_name(cfg: &EffectiveConfig) -> String {
    naming::ip_fabric_ipam(&cfg.cluster_name)
}

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// Namespace settings read from its annotations.
struct NamespaceSettings {
    isolated: bool,
    custom_network: Option<String>,
    ip_fabric_forwarding: Option<bool>,
    ip_fabric_snat: Option<bool>,
}

fn namespace_settings(object: &str, ns: &Namespace) -> Result<NamespaceSettings, FieldError> {
    let meta = &ns.metadata;
    let isolated = match annotation(meta, ANNOTATION_ISOLATION) {
        Some(v) => parse_bool(object, ANNOTATION_ISOLATION, v)?,
        None => false,
    };
    let custom_network = annotation(meta, ANNOTATION_NETWORK)
        .map(|v| parse_network_ref(object, ANNOTATION_NETWORK, v))
        .transpose()?;
    let ip_fabric_forwarding = annotation(meta, ANNOTATION_IP_FABRIC_FORWARDING)
        .map(|v| parse_bool(object, ANNOTATION_IP_FABRIC_FORWARDING, v))
        .transpose()?;
    let ip_fabric_snat = annotation(meta, ANNOTATION_IP_FABRIC_SNAT)
        .map(|v| parse_bool(object, ANNOTATION_IP_FABRIC_SNAT, v))
        .transpose()?;
    Ok(NamespaceSettings {
        isolated,
        custom_network,
        ip_fabric_forwarding,
        ip_fabric_snat,
    })
}

/// Validates a floating-IP pool reference annotation (`domain/project/network/name`).
pub fn validate_fip_pool_annotation(
    object: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<(), FieldError> {
    if let Some(v) = annotation(meta, ANNOTATION_FIP_POOL) {
        weft_model::FipPoolRef::parse(object, &annotation_field(ANNOTATION_FIP_POOL), v)?;
    }
    Ok(())
}

/// Checks a Namespace's annotations.
pub fn validate_namespace(object: &str, ns: &Namespace) -> Result<(), FieldError> {
    namespace_settings(object, ns)?;
    validate_fip_pool_annotation(object, &ns.metadata)
}

pub use weft_model::config::validate_route_target;

/// Checks a VirtualNetwork: subnets, route targets, VNI uniqueness, and that shrinking
/// its subnets does not strand addresses in use.
pub fn validate_virtual_network(
    t: &Translator,
    key: &InputKey,
    object: &str,
    vn: &VirtualNetwork,
) -> Result<(), FieldError> {
    let mut subnets = Vec::new();
    for (i, s) in vn.spec.subnets.iter().enumerate() {
        let net = parse_cidr(object, &format!("spec.subnets[{i}]"), s)?;
        if let Some((j, other)) = subnets.iter().enumerate().find(|(_, o)| overlaps(o, &net)) {
            return Err(FieldError::new(
                object,
                format!("spec.subnets[{i}]"),
                format!("a subnet that does not overlap spec.subnets[{j}] ({other})"),
            )
            .found(s));
        }
        subnets.push(net);
    }
    if let Some(rts) = &vn.spec.route_targets {
        for (i, rt) in rts.import.iter().enumerate() {
            validate_route_target(object, &format!("spec.routeTargets.import[{i}]"), rt)?;
        }
        for (i, rt) in rts.export.iter().enumerate() {
            validate_route_target(object, &format!("spec.routeTargets.export[{i}]"), rt)?;
        }
    }
    let fq = custom_network_fq(&t.config, key);
    if let Some(vni) = vn.spec.vni {
        if vni == 0 || vni > Vni::MAX {
            return Err(
                FieldError::new(object, "spec.vni", format!("a VNI from 1 to {}", Vni::MAX)).found(vni),
            );
        }
        for d in t.derived(DerivedKind::Network) {
            if let DerivedObject::Network(n) = d
                && n.vni.0 == vni
                && n.fq_name != fq
            {
                return Err(FieldError::new(
                    object,
                    "spec.vni",
                    format!(
                        "a VNI not used by another network ({vni} belongs to {})",
                        n.fq_name
                    ),
                )
                .found(vni));
            }
        }
    }
    if let Some(DerivedObject::Network(existing)) = t.derived.get(&(DerivedKind::Network, fq.clone()))
        && let Some(pool) = t.pools.get(&existing.ipam)
        && existing.ipam == custom_pool_name(&fq)
    {
        let mut trial = pool.clone();
        if subnets.is_empty() {
            if pool.in_use() > 0 {
                return Err(FieldError::new(
                    object,
                    "spec.subnets",
                    format!(
                        "the network's own subnets while {} addresses are in use",
                        pool.in_use()
                    ),
                ));
            }
        } else {
            trial.resize(subnets).map_err(|e| {
                FieldError::new(
                    object,
                    "spec.subnets",
                    format!("subnets that keep every address in use ({e})"),
                )
            })?;
        }
    }
    Ok(())
}

/// Checks a NetworkAttachmentDefinition's TF annotations.
pub fn validate_nad(object: &str, nad: &NetworkAttachmentDefinition) -> Result<(), FieldError> {
    let cidr = annotation(&nad.metadata, ANNOTATION_CIDR);
    let network = annotation(&nad.metadata, ANNOTATION_NETWORK);
    if let Some(c) = cidr {
        parse_cidr(object, &annotation_field(ANNOTATION_CIDR), c)?;
    }
    if let Some(n) = network {
        parse_network_ref(object, ANNOTATION_NETWORK, n)?;
    }
    if cidr.is_some() && network.is_some() {
        return Err(FieldError::new(
            object,
            annotation_field(ANNOTATION_NETWORK),
            format!(
                "either {ANNOTATION_CIDR} (new network) or {ANNOTATION_NETWORK} (existing network), not both"
            ),
        ));
    }
    Ok(())
}

/// Checks a FloatingIpPool.
pub fn validate_fip_pool(object: &str, pool: &FloatingIpPool) -> Result<(), FieldError> {
    if !weft_model::input::is_dns_subdomain(&pool.spec.network) {
        return Err(FieldError::new(
            object,
            "spec.network",
            "the name of a VirtualNetwork in the same namespace",
        )
        .found(&pool.spec.network));
    }
    for (i, s) in pool.spec.subnets.iter().enumerate() {
        parse_cidr(object, &format!("spec.subnets[{i}]"), s)?;
    }
    Ok(())
}

/// FQ name of a user VirtualNetwork: `default-domain:<cluster>-<ns>:<name>`.
pub fn custom_network_fq(cfg: &EffectiveConfig, key: &InputKey) -> String {
    let ns = key.namespace.as_deref().unwrap_or("default");
    naming::fq_name(&naming::project_name(&cfg.cluster_name, ns), &key.name)
}

/// FQ name of the network made for a NetworkAttachmentDefinition with a CIDR.
pub fn attachment_network_fq(cfg: &EffectiveConfig, ns: &str, nad: &str) -> String {
    naming::fq_name(
        &naming::project_name(&cfg.cluster_name, ns),
        &naming::attachment_network(&cfg.cluster_name, nad),
    )
}

/// Pool name of a network with its own subnets.
pub fn custom_pool_name(fq: &str) -> String {
    format!("{fq}-ipam")
}

fn default_targets(cfg: &EffectiveConfig, vni: Vni) -> Vec<String> {
    vec![format!("target:{}:{}", cfg.asn, vni.0)]
}

/// A network as desired, before its VNI is known.
struct DesiredNetwork {
    record: VirtualNetworkRecord,
    fixed_vni: Option<u32>,
    custom_targets: Option<(Vec<String>, Vec<String>)>,
    own_subnets: bool,
}

fn desired_networks(t: &Translator) -> BTreeMap<String, DesiredNetwork> {
    let cfg = &t.config;
    let cluster = &cfg.cluster_name;
    let mut out = BTreeMap::new();
    let pod_pool = pod_pool_name(cfg);
    let service_pool = service_pool_name(cfg);
    let fabric_pool = fabric_pool_name(cfg);
    let default_project = naming::project_name(cluster, "default");
    let default_pod = naming::fq_name(&default_project, &naming::default_pod_network(cluster));
    let default_service = naming::fq_name(&default_project, &naming::default_service_network(cluster));
    let mut add = |fq: String,
                   name: String,
                   project: String,
                   namespace: String,
                   kind: NetworkKind,
                   ipam: String,
                   subnets: Vec<ipnet::IpNet>,
                   connected: Vec<String>,
                   fabric: bool,
                   origin: String,
                   fixed_vni: Option<u32>,
                   custom_targets: Option<(Vec<String>, Vec<String>)>,
                   own_subnets: bool| {
        let record = VirtualNetworkRecord {
            routing_instance: naming::routing_instance(&fq),
            fq_name: fq.clone(),
            name,
            project,
            namespace,
            kind,
            ipam,
            subnets,
            gateway: None,
            vni: Vni(0),
            import_targets: Vec::new(),
            export_targets: Vec::new(),
            connected_networks: connected,
            ip_fabric_forwarding: fabric,
            origin,
        };
        out.insert(
            fq,
            DesiredNetwork {
                record,
                fixed_vni,
                custom_targets,
                own_subnets,
            },
        );
    };
    let pod_subnets = |fabric: bool| {
        if fabric {
            cfg.ip_fabric_subnets.clone()
        } else {
            cfg.pod_subnets.clone()
        }
    };
    let pod_ipam = |fabric: bool| {
        if fabric {
            fabric_pool.clone()
        } else {
            pod_pool.clone()
        }
    };

    // Isolated namespaces: their own pod + service networks.
    let mut isolated_pod_networks = Vec::new();
    for (key, object) in t.inputs_of(InputKind::Namespace) {
        let InputObject::Namespace(ns) = object else {
            continue;
        };
        let Ok(settings) = namespace_settings(&key.to_string(), ns) else {
            continue;
        };
        if !settings.isolated {
            continue;
        }
        let name = &key.name;
        let project = naming::project_name(cluster, name);
        let pod_fq = naming::fq_name(&project, &naming::namespace_pod_network(cluster, name));
        let svc_fq = naming::fq_name(&project, &naming::namespace_service_network(cluster, name));
        let fabric = settings.ip_fabric_forwarding.unwrap_or(cfg.ip_fabric_forwarding);
        isolated_pod_networks.push(pod_fq.clone());
        add(
            pod_fq.clone(),
            naming::namespace_pod_network(cluster, name),
            project.clone(),
            name.clone(),
            NetworkKind::Pod,
            pod_ipam(fabric),
            pod_subnets(fabric),
            vec![
                svc_fq.clone(),
                default_service.clone(),
                IP_FABRIC_NETWORK.to_string(),
            ],
            fabric,
            key.to_string(),
            None,
            None,
            false,
        );
        add(
            svc_fq,
            naming::namespace_service_network(cluster, name),
            project,
            name.clone(),
            NetworkKind::Service,
            service_pool.clone(),
            cfg.service_subnets.clone(),
            vec![pod_fq, IP_FABRIC_NETWORK.to_string()],
            false,
            key.to_string(),
            None,
            None,
            false,
        );
    }
    // The shared networks (TF pre-creates them at start-up).
    let mut svc_connected = vec![default_pod.clone()];
    svc_connected.extend(isolated_pod_networks);
    svc_connected.push(IP_FABRIC_NETWORK.to_string());
    add(
        default_pod.clone(),
        naming::default_pod_network(cluster),
        default_project.clone(),
        "default".into(),
        NetworkKind::Pod,
        pod_ipam(cfg.ip_fabric_forwarding),
        pod_subnets(cfg.ip_fabric_forwarding),
        vec![default_service.clone(), IP_FABRIC_NETWORK.to_string()],
        cfg.ip_fabric_forwarding,
        "cluster".into(),
        None,
        None,
        false,
    );
    add(
        default_service,
        naming::default_service_network(cluster),
        default_project,
        "default".into(),
        NetworkKind::Service,
        service_pool.clone(),
        cfg.service_subnets.clone(),
        svc_connected,
        false,
        "cluster".into(),
        None,
        None,
        false,
    );

    // User VirtualNetworks.
    for (key, object) in t.inputs_of(InputKind::VirtualNetwork) {
        let InputObject::VirtualNetwork(vn) = object else {
            continue;
        };
        let ns = key.namespace.clone().unwrap_or_default();
        let fq = custom_network_fq(cfg, key);
        let subnets: Vec<ipnet::IpNet> = vn.spec.subnets.iter().filter_map(|s| s.parse().ok()).collect();
        let own = !subnets.is_empty();
        let (ipam, subnets) = if own {
            (custom_pool_name(&fq), subnets)
        } else {
            (pod_pool.clone(), cfg.pod_subnets.clone())
        };
        let targets = vn
            .spec
            .route_targets
            .as_ref()
            .map(|r| (r.import.clone(), r.export.clone()));
        add(
            fq,
            key.name.clone(),
            naming::project_name(cluster, &ns),
            ns,
            NetworkKind::Custom,
            ipam,
            subnets,
            Vec::new(),
            vn.spec.ip_fabric_forwarding,
            key.to_string(),
            vn.spec.vni,
            targets,
            own,
        );
    }
    // NetworkAttachmentDefinitions with a CIDR.
    for (key, object) in t.inputs_of(InputKind::NetworkAttachmentDefinition) {
        let InputObject::NetworkAttachmentDefinition(nad) = object else {
            continue;
        };
        let Some(cidr) =
            annotation(&nad.metadata, ANNOTATION_CIDR).and_then(|c| c.trim().parse::<ipnet::IpNet>().ok())
        else {
            continue;
        };
        let ns = key.namespace.clone().unwrap_or_default();
        let fq = attachment_network_fq(cfg, &ns, &key.name);
        add(
            fq.clone(),
            naming::attachment_network(cluster, &key.name),
            naming::project_name(cluster, &ns),
            ns,
            NetworkKind::Attachment,
            custom_pool_name(&fq),
            vec![cidr],
            Vec::new(),
            false,
            key.to_string(),
            None,
            None,
            true,
        );
    }
    out
}

/// Brings the stored networks in line with the inputs; returns the FQ names of networks
/// that appeared, vanished or changed.
pub fn sync_networks(t: &mut Translator) -> BTreeSet<String> {
    let desired = desired_networks(t);
    let mut changed = BTreeSet::new();
    let existing: Vec<VirtualNetworkRecord> = t
        .derived(DerivedKind::Network)
        .filter_map(|d| {
            if let DerivedObject::Network(n) = d {
                Some(n.clone())
            } else {
                None
            }
        })
        .collect();
    for old in &existing {
        if !desired.contains_key(&old.fq_name) {
            t.vnis.release(old.vni.0);
            t.remove_derived(DerivedKind::Network, &old.fq_name);
            release_network_addresses(t, old);
            if old.ipam == custom_pool_name(&old.fq_name) {
                t.pools.remove(&old.ipam);
            }
            changed.insert(old.fq_name.clone());
        }
    }
    for (fq, want) in desired {
        let DesiredNetwork {
            mut record,
            fixed_vni,
            custom_targets,
            own_subnets,
        } = want;
        let old = existing.iter().find(|o| o.fq_name == fq);
        // VNI: keep the one already given unless the user asked for another.
        let vni = match (old, fixed_vni) {
            (Some(o), Some(v)) if o.vni.0 == v => Some(o.vni.0),
            (Some(o), None) => Some(o.vni.0),
            (o, Some(v)) => {
                if let Some(o) = o {
                    t.vnis.release(o.vni.0);
                }
                t.vnis.reserve(v, &format!("network {fq}")).ok().map(|_| v)
            }
            (None, None) => t.vnis.allocate(&format!("network {fq}")).ok(),
        };
        let Some(vni) = vni else { continue };
        record.vni = Vni(vni);
        let (import, export) = custom_targets.unwrap_or_else(|| {
            (
                default_targets(&t.config, record.vni),
                default_targets(&t.config, record.vni),
            )
        });
        record.import_targets = if import.is_empty() {
            default_targets(&t.config, record.vni)
        } else {
            import
        };
        record.export_targets = if export.is_empty() {
            default_targets(&t.config, record.vni)
        } else {
            export
        };
        // The shared default networks also carry the cluster's federation targets.
        if record.origin == "cluster" {
            for (have, extra) in [
                (&mut record.import_targets, &t.config.import_targets),
                (&mut record.export_targets, &t.config.export_targets),
            ] {
                for rt in extra {
                    if !have.contains(rt) {
                        have.push(rt.clone());
                    }
                }
            }
        }
        if own_subnets {
            match t.pools.get_mut(&record.ipam) {
                Some(pool) => {
                    if pool.resize(record.subnets.clone()).is_err() {
                        continue;
                    }
                }
                None => match Pool::new(&record.ipam, record.subnets.clone()) {
                    Ok(pool) => {
                        t.pools.insert(record.ipam.clone(), pool);
                    }
                    Err(_) => continue,
                },
            }
        }
        record.gateway = record.subnets.first().and_then(|s| weft_ipam::gateway(*s));
        if old != Some(&record) {
            if let Some(o) = old
                && o.ipam != record.ipam
            {
                release_network_addresses(t, o);
            }
            changed.insert(fq);
            t.put_derived(DerivedObject::Network(record));
        }
    }
    changed
}

/// Releases the addresses of interfaces and VIPs on a network that is going away or
/// changing pool; the objects are recomputed by the pod and service sync.
fn release_network_addresses(t: &mut Translator, network: &VirtualNetworkRecord) {
    let mut addresses = Vec::new();
    for d in t.derived(DerivedKind::Interface) {
        if let DerivedObject::Interface(i) = d
            && i.network == network.fq_name
        {
            addresses.push(i.ip);
        }
    }
    for d in t.derived(DerivedKind::Service) {
        if let DerivedObject::Service(s) = d
            && s.network == network.fq_name
            && let Some(vip) = s.vip
        {
            addresses.push(vip);
        }
        if let DerivedObject::Service(s) = d
            && s.fip_network.as_deref() == Some(network.fq_name.as_str())
        {
            addresses.extend(s.floating_ips.iter().copied());
        }
    }
    if let Some(pool) = t.pools.get_mut(&network.ipam) {
        for ip in addresses {
            pool.release(ip);
        }
    }
}

/// Recomputes a namespace's project; returns true if its networks changed.
pub fn sync_project(t: &mut Translator, ns: &str) -> bool {
    let cfg = t.config.clone();
    let cluster = &cfg.cluster_name;
    let key = InputKey::cluster(InputKind::Namespace, ns);
    let project_name = naming::project_name(cluster, ns);
    let implicit = ns == "default" || ns == "kube-system";
    let settings = match t.inputs.get(&key) {
        Some(InputObject::Namespace(n)) => namespace_settings(&key.to_string(), n).ok(),
        _ if implicit => Some(NamespaceSettings {
            isolated: false,
            custom_network: None,
            ip_fabric_forwarding: None,
            ip_fabric_snat: None,
        }),
        _ => None,
    };
    let old = t.remove_derived_peek(DerivedKind::Project, &project_name);
    // Remove stale projects named under an old cluster name.
    let Some(settings) = settings else {
        let existed = t.remove_derived(DerivedKind::Project, &project_name).is_some();
        return existed;
    };
    let default_project = naming::project_name(cluster, "default");
    let (pod_network, service_network) = if settings.isolated {
        (
            naming::fq_name(&project_name, &naming::namespace_pod_network(cluster, ns)),
            naming::fq_name(&project_name, &naming::namespace_service_network(cluster, ns)),
        )
    } else {
        (
            naming::fq_name(&default_project, &naming::default_pod_network(cluster)),
            naming::fq_name(&default_project, &naming::default_service_network(cluster)),
        )
    };
    let project = Project {
        name: project_name,
        namespace: ns.to_string(),
        isolated: settings.isolated,
        pod_network: settings.custom_network.clone().unwrap_or(pod_network),
        service_network,
        custom_network: settings.custom_network,
        ip_fabric_forwarding: settings.ip_fabric_forwarding.unwrap_or(cfg.ip_fabric_forwarding),
        ip_fabric_snat: settings.ip_fabric_snat.unwrap_or(cfg.ip_fabric_snat),
    };
    let changed = old.as_ref() != Some(&DerivedObject::Project(project.clone()));
    t.put_derived(DerivedObject::Project(project));
    changed
}

impl Translator {
    fn remove_derived_peek(&self, kind: DerivedKind, name: &str) -> Option<DerivedObject> {
        self.derived.get(&(kind, name.to_string())).cloned()
    }

    /// The project of a namespace, if the namespace exists.
    pub(crate) fn project(&self, ns: &str) -> Option<&Project> {
        let name = naming::project_name(&self.config.cluster_name, ns);
        match self.derived.get(&(DerivedKind::Project, name)) {
            Some(DerivedObject::Project(p)) => Some(p),
            _ => None,
        }
    }

    /// A stored network by FQ name.
    pub(crate) fn network(&self, fq: &str) -> Option<&VirtualNetworkRecord> {
        match self.derived.get(&(DerivedKind::Network, fq.to_string())) {
            Some(DerivedObject::Network(n)) => Some(n),
            _ => None,
        }
    }
}
