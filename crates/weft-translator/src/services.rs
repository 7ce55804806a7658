//! Services → TF native load balancers (reference §7.1–§7.3): the VIP is the ClusterIP in
//! the namespace's service network (allocated here when the manifest has none, as the
//! API server would), ports with their target ports, NodePorts, and backends from
//! EndpointSlices — or from the selector when no EndpointSlice exists, which is what a
//! cluster without an endpoints controller (the lab) needs.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ContainerPort, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use weft_model::derived::BackendRecord;
use weft_model::{
    DerivedKind, DerivedObject, FieldError, InputKey, InputKind, InputObject, ServicePortRecord,
    ServiceRecord,
};

use crate::fips::{self, NO_POOL_NOTE, fip_owner};
use crate::networks::validate_fip_pool_annotation;
use crate::pods::release_owned;
use crate::{NODE_PORT_RANGE, Translator, ipam_reason};

/// IPAM owner string of a service VIP (and holder of its NodePorts).
pub fn service_owner(ns: &str, name: &str) -> String {
    format!("Service {ns}/{name}")
}

/// True if `name` is a valid IANA service name (named ports).
pub fn is_port_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

fn requested_cluster_ip(svc: &Service) -> Option<&str> {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .filter(|ip| !ip.is_empty() && *ip != "None")
}

fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// Checks a Service: type, ClusterIP inside the service subnets and free, ports.
pub fn validate_service(
    t: &Translator,
    key: &InputKey,
    object: &str,
    svc: &Service,
) -> Result<(), FieldError> {
    let Some(spec) = &svc.spec else {
        return Err(FieldError::new(object, "spec", "a service spec with ports"));
    };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&kind) {
        return Err(FieldError::new(
            object,
            "spec.type",
            "one of ClusterIP, NodePort, LoadBalancer, ExternalName",
        )
        .found(kind));
    }
    let owner = service_owner(key.namespace.as_deref().unwrap_or("default"), &key.name);
    if let Some(text) = requested_cluster_ip(svc) {
        let ip: IpAddr = text.parse().map_err(|_| {
            FieldError::new(object, "spec.clusterIP", "an IP address, \"None\" or nothing").found(text)
        })?;
        if !t.config.in_service_range(ip) {
            let ranges: Vec<String> = t.config.service_subnets.iter().map(|n| n.to_string()).collect();
            return Err(FieldError::new(
                object,
                "spec.clusterIP",
                format!(
                    "an address inside weft's service subnets {} (ClusterConfig spec.serviceSubnets); the Kubernetes API server and weft disagree on the service range",
                    ranges.join(", ")
                ),
            )
            .found(ip));
        }
        for pool in t.pools.values() {
            if let Some(other) = pool.owner(ip)
                && other != owner
            {
                return Err(FieldError::new(
                    object,
                    "spec.clusterIP",
                    format!("an address not in use ({ip} belongs to {other})"),
                )
                .found(ip));
            }
        }
    }
    let ports = spec.ports.as_deref().unwrap_or_default();
    if ports.is_empty() && kind != "ExternalName" && !is_headless(svc) {
        return Err(FieldError::new(object, "spec.ports", "at least one port"));
    }
    for (i, p) in ports.iter().enumerate() {
        let field = |f: &str| format!("spec.ports[{i}].{f}");
        if !(1..=65535).contains(&p.port) {
            return Err(FieldError::new(object, field("port"), "a port from 1 to 65535").found(p.port));
        }
        let proto = p.protocol.as_deref().unwrap_or("TCP");
        if !["TCP", "UDP", "SCTP"].contains(&proto) {
            return Err(FieldError::new(object, field("protocol"), "TCP, UDP or SCTP").found(proto));
        }
        if ports.len() > 1 && p.name.as_deref().is_none_or(str::is_empty) {
            return Err(FieldError::new(
                object,
                field("name"),
                "a name: every port of a multi-port service needs one",
            ));
        }
        match &p.target_port {
            Some(IntOrString::Int(n)) if !(1..=65535).contains(n) => {
                return Err(FieldError::new(
                    object,
                    field("targetPort"),
                    "a port from 1 to 65535 or a port name",
                )
                .found(n));
            }
            Some(IntOrString::String(s)) if !is_port_name(s) && s.parse::<u16>().is_err() => {
                return Err(FieldError::new(
                    object,
                    field("targetPort"),
                    "a port number or an IANA port name (lowercase, at most 15 characters)",
                )
                .found(s));
            }
            _ => {}
        }
        if let Some(np) = p.node_port {
            let np_ok = u16::try_from(np).ok().filter(|n| NODE_PORT_RANGE.contains(n));
            let Some(np) = np_ok else {
                return Err(FieldError::new(
                    object,
                    field("nodePort"),
                    format!("a port in {}-{}", NODE_PORT_RANGE.start(), NODE_PORT_RANGE.end()),
                )
                .found(np));
            };
            if kind == "ClusterIP" {
                return Err(
                    FieldError::new(object, field("nodePort"), "no nodePort on a ClusterIP service")
                        .found(np),
                );
            }
            if let Some(other) = t.node_ports.get(&np)
                && other != &owner
            {
                return Err(FieldError::new(
                    object,
                    field("nodePort"),
                    format!("a NodePort not in use ({np} belongs to {other})"),
                )
                .found(np));
            }
        }
    }
    for (i, ip) in spec
        .external_ips
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if ip.parse::<IpAddr>().is_err() {
            return Err(FieldError::new(object, format!("spec.externalIPs[{i}]"), "an IP address").found(ip));
        }
    }
    if let Some(text) = spec.load_balancer_ip.as_deref().filter(|s| !s.trim().is_empty()) {
        let ip: IpAddr = text
            .trim()
            .parse()
            .map_err(|_| FieldError::new(object, "spec.loadBalancerIP", "an IP address").found(text))?;
        // Checked against the pool when the pool is known now; otherwise when it appears.
        if kind == "LoadBalancer"
            && let Some(chosen) =
                fips::chosen_ref(t, key.namespace.as_deref().unwrap_or("default"), &key.name, svc)
            && let Ok(pool) = fips::resolve(t, &chosen.pool)
            && !pool.covers(ip)
        {
            return Err(FieldError::new(
                object,
                "spec.loadBalancerIP",
                format!(
                    "an address inside floating-IP pool {} ({}), chosen by {}",
                    pool.key,
                    pool.ranges_text(),
                    chosen.scope
                ),
            )
            .found(ip));
        }
    }
    if let Some(aff) = spec.session_affinity.as_deref()
        && aff != "None"
        && aff != "ClientIP"
    {
        return Err(FieldError::new(object, "spec.sessionAffinity", "None or ClientIP").found(aff));
    }
    validate_fip_pool_annotation(object, &svc.metadata)
}

/// Checks an EndpointSlice's addresses.
pub fn validate_endpoint_slice(object: &str, slice: &EndpointSlice) -> Result<(), FieldError> {
    let kind = slice.address_type.as_str();
    if !["IPv4", "IPv6", "FQDN"].contains(&kind) {
        return Err(FieldError::new(object, "addressType", "IPv4, IPv6 or FQDN").found(kind));
    }
    if kind == "FQDN" {
        return Ok(());
    }
    for (i, e) in slice.endpoints.iter().enumerate() {
        for (j, a) in e.addresses.iter().enumerate() {
            if a.parse::<IpAddr>().is_err() {
                return Err(FieldError::new(
                    object,
                    format!("endpoints[{i}].addresses[{j}]"),
                    format!("an {kind} address"),
                )
                .found(a));
            }
        }
    }
    Ok(())
}

fn labels_match(selector: &BTreeMap<String, String>, labels: Option<&BTreeMap<String, String>>) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn backends(t: &Translator, ns: &str, name: &str, svc: &Service) -> (Vec<BackendRecord>, String) {
    let mut out = Vec::new();
    let mut any_slice = false;
    for (_, o) in t.inputs_in(InputKind::EndpointSlice, ns) {
        let InputObject::EndpointSlice(slice) = o else {
            continue;
        };
        let owner = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"));
        if owner.map(String::as_str) != Some(name) || slice.address_type == "FQDN" {
            continue;
        }
        any_slice = true;
        // The slice's ports are the resolved target ports, named like the service's.
        let slice_ports: BTreeMap<String, u16> = slice
            .ports
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter_map(|p| {
                let port = p.port.and_then(|n| u16::try_from(n).ok()).filter(|n| *n != 0)?;
                Some((p.name.clone().unwrap_or_default(), port))
            })
            .collect();
        for e in &slice.endpoints {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            let pod = e
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| {
                    r.name
                        .as_ref()
                        .map(|n| format!("{}/{}", r.namespace.as_deref().unwrap_or(ns), n))
                });
            for a in &e.addresses {
                if let Ok(ip) = a.parse() {
                    out.push(BackendRecord {
                        pod: pod.clone(),
                        ip,
                        node: e.node_name.clone(),
                        ready,
                        target_ports: slice_ports.clone(),
                    });
                }
            }
        }
    }
    if any_slice {
        out.sort_by_key(|a| a.ip);
        out.dedup_by(|a, b| a.ip == b.ip);
        return (out, "endpointslices".into());
    }
    let selector = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    if selector.is_empty() {
        return (out, "none".into());
    }
    for (k, o) in t.inputs_in(InputKind::Pod, ns) {
        let InputObject::Pod(pod) = o else { continue };
        if !labels_match(&selector, pod.metadata.labels.as_ref()) {
            continue;
        }
        let Some(DerivedObject::Interface(i)) = t
            .derived
            .get(&(DerivedKind::Interface, format!("{ns}/{}/eth0", k.name)))
        else {
            continue;
        };
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .is_none_or(|c| c.status == "True");
        out.push(BackendRecord {
            pod: Some(format!("{ns}/{}", k.name)),
            ip: i.ip,
            node: i.node.clone(),
            ready,
            target_ports: resolve_target_ports(svc, pod),
        });
    }
    (out, "selector".into())
}

/// The target port of every service port on `pod`: a number as it is, a name looked
/// up in the pod's containerPorts (same protocol). Ports whose name the pod does not
/// declare are left out: that pod does not serve them.
pub fn resolve_target_ports(svc: &Service, pod: &Pod) -> BTreeMap<String, u16> {
    let mut out = BTreeMap::new();
    let container_ports: Vec<&ContainerPort> = pod
        .spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .flat_map(|c| c.ports.as_deref().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    for p in svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default()
    {
        let protocol = p.protocol.as_deref().unwrap_or("TCP");
        let resolved = match &p.target_port {
            None => u16::try_from(p.port).ok(),
            Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
            Some(IntOrString::String(s)) => match s.parse::<u16>() {
                Ok(n) => Some(n),
                Err(_) => container_ports
                    .iter()
                    .find(|c| {
                        c.name.as_deref() == Some(s.as_str())
                            && c.protocol.as_deref().unwrap_or("TCP") == protocol
                    })
                    .and_then(|c| u16::try_from(c.container_port).ok()),
            },
        };
        if let Some(n) = resolved.filter(|n| *n != 0) {
            out.insert(p.name.clone().unwrap_or_default(), n);
        }
    }
    out
}

fn release_node_ports(t: &mut Translator, owner: &str, keep: &[u16]) {
    t.node_ports.retain(|port, o| o != owner || keep.contains(port));
}

/// Recomputes one service.
pub fn sync_service(t: &mut Translator, ns: &str, name: &str) {
    let key = InputKey::namespaced(InputKind::Service, ns, name);
    let record_name = format!("{ns}/{name}");
    let owner = service_owner(ns, name);
    let old = match t.derived.get(&(DerivedKind::Service, record_name.clone())) {
        Some(DerivedObject::Service(s)) => Some(s.clone()),
        _ => None,
    };
    let svc = match t.inputs.get(&key) {
        Some(InputObject::Service(s)) => Some(s.as_ref().clone()),
        _ => None,
    };
    let spec_type = svc
        .as_ref()
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.type_.clone())
        .unwrap_or_else(|| "ClusterIP".into());
    let fip_owner = fip_owner(ns, name);
    let drop_it = |t: &mut Translator| {
        if let Some(o) = &old {
            if let Some(vip) = o.vip {
                release_owned(t, vip, &owner);
            }
            for ip in &o.floating_ips {
                release_owned(t, *ip, &fip_owner);
            }
            t.remove_derived(DerivedKind::Service, &record_name);
        }
        release_node_ports(t, &owner, &[]);
    };
    let Some(svc) = svc.filter(|_| spec_type != "ExternalName") else {
        drop_it(t);
        t.set_pending(&key, None);
        return;
    };
    let Some(project) = t.project(ns).cloned() else {
        drop_it(t);
        t.set_pending(&key, Some(format!("waiting for Namespace {ns}")));
        return;
    };
    let Some(network) = t.network(&project.service_network).cloned() else {
        drop_it(t);
        t.set_pending(
            &key,
            Some(format!("waiting for network {}", project.service_network)),
        );
        return;
    };
    let mut pending = None;
    // The VIP.
    let wanted: Option<IpAddr> = requested_cluster_ip(&svc).and_then(|s| s.parse().ok());
    let headless = is_headless(&svc);
    let pool_owns = |t: &Translator, ip: IpAddr| {
        t.pools.get(&network.ipam).and_then(|p| p.owner(ip)) == Some(owner.as_str())
    };
    let old_vip = old.as_ref().and_then(|o| o.vip);
    let vip = if headless {
        if let Some(v) = old_vip {
            release_owned(t, v, &owner);
        }
        None
    } else {
        match (wanted, old_vip) {
            (Some(w), Some(o)) if w == o && pool_owns(t, o) => Some(o),
            (None, Some(o)) if pool_owns(t, o) => Some(o),
            (w, o) => {
                if let Some(o) = o {
                    release_owned(t, o, &owner);
                }
                let result = match t.pools.get_mut(&network.ipam) {
                    None => Err(format!(
                        "no IPAM {} for network {}",
                        network.ipam, network.fq_name
                    )),
                    Some(pool) => match w {
                        Some(ip) => pool.reserve(ip, &owner).map(|_| ip).map_err(|e| ipam_reason(&e)),
                        None => pool.allocate(&owner).map_err(|e| ipam_reason(&e)),
                    },
                };
                match result {
                    Ok(ip) => Some(ip),
                    Err(reason) => {
                        pending = Some(format!("no VIP: {reason}"));
                        None
                    }
                }
            }
        }
    };
    // Ports and NodePorts.
    let spec = svc.spec.clone().unwrap_or_default();
    let wants_node_ports = spec_type == "NodePort" || spec_type == "LoadBalancer";
    let mut ports = Vec::new();
    let mut kept = Vec::new();
    for p in spec.ports.as_deref().unwrap_or_default() {
        let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        let port = u16::try_from(p.port).unwrap_or(0);
        let pname = p.name.clone().unwrap_or_default();
        let target_port = match &p.target_port {
            Some(IntOrString::Int(n)) => n.to_string(),
            Some(IntOrString::String(s)) => s.clone(),
            None => port.to_string(),
        };
        let node_port = if wants_node_ports {
            let requested = p.node_port.and_then(|n| u16::try_from(n).ok());
            let previous = old
                .as_ref()
                .and_then(|o| {
                    o.ports
                        .iter()
                        .find(|q| q.port == port && q.protocol == protocol && q.name == pname)
                })
                .and_then(|q| q.node_port)
                .filter(|n| t.node_ports.get(n) == Some(&owner));
            let chosen = requested
                .or(previous)
                .or_else(|| NODE_PORT_RANGE.clone().find(|n| !t.node_ports.contains_key(n)));
            match chosen {
                Some(n) => {
                    t.node_ports.insert(n, owner.clone());
                    kept.push(n);
                    Some(n)
                }
                None => {
                    pending.get_or_insert_with(|| "no free NodePort in 30000-32767".into());
                    None
                }
            }
        } else {
            None
        };
        ports.push(ServicePortRecord {
            name: pname,
            protocol,
            port,
            target_port,
            node_port,
        });
    }
    release_node_ports(t, &owner, &kept);
    let (backends, backends_from) = backends(t, ns, name, &svc);
    // Floating IPs (TF §5.3): a LoadBalancer always asks; a ClusterIP service with
    // external IPs asks for them; a NodePort service has none (kube-proxy's business).
    let fip = match spec_type.as_str() {
        "LoadBalancer" => sync_floating_ip(t, ns, name, &svc, old.as_ref(), true),
        "ClusterIP" if !headless => sync_floating_ip(t, ns, name, &svc, old.as_ref(), false),
        _ => {
            release_floating_ips(t, old.as_ref(), &fip_owner, &[]);
            FipOutcome::default()
        }
    };
    if let Some(reason) = fip.pending {
        pending.get_or_insert(reason);
    }
    let note = match spec_type.as_str() {
        _ if headless => Some("headless service: no VIP (TF ignores headless services)".to_string()),
        _ => fip.note,
    };
    let record = ServiceRecord {
        namespace: ns.to_string(),
        name: name.to_string(),
        service_type: spec_type,
        vip,
        network: network.fq_name.clone(),
        ports,
        session_affinity: spec.session_affinity.clone().unwrap_or_else(|| "None".into()),
        external_ips: spec.external_ips.clone().unwrap_or_default(),
        backends,
        backends_from,
        note,
        floating_ips: fip.ips,
        fip_pool: fip.pool,
        fip_network: fip.network,
    };
    t.put_derived(DerivedObject::Service(record));
    t.set_pending(&key, pending);
}

/// What the floating-IP step decided for one LoadBalancer service.
#[derive(Default)]
struct FipOutcome {
    ips: Vec<IpAddr>,
    pool: Option<String>,
    network: Option<String>,
    note: Option<String>,
    pending: Option<String>,
}

/// Releases the service's previous floating IPs, except those in `keep`.
fn release_floating_ips(t: &mut Translator, old: Option<&ServiceRecord>, owner: &str, keep: &[IpAddr]) {
    for ip in old.map(|o| o.floating_ips.as_slice()).unwrap_or_default() {
        if !keep.contains(ip) {
            release_owned(t, *ip, owner);
        }
    }
}

/// Chooses the pool of a service and keeps or allocates its floating IPs (reference
/// §5.2–§5.3): a LoadBalancer gets `spec.loadBalancerIP` when set, else one FIP per
/// `spec.externalIPs` entry inside the pool, else one address of the pool; any other
/// service with `spec.externalIPs` gets one FIP per entry inside the pool (an entry
/// outside it stays a plain external IP: DNAT on every node, not advertised). An
/// address already held is kept as long as the pool and the request stay the same.
fn sync_floating_ip(
    t: &mut Translator,
    ns: &str,
    name: &str,
    svc: &Service,
    old: Option<&ServiceRecord>,
    load_balancer: bool,
) -> FipOutcome {
    let owner = fip_owner(ns, name);
    let spec = svc.spec.as_ref();
    let external: Vec<IpAddr> = spec
        .and_then(|s| s.external_ips.as_deref())
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    if !load_balancer && external.is_empty() {
        release_floating_ips(t, old, &owner, &[]);
        return FipOutcome::default();
    }
    let Some(chosen) = fips::chosen_ref(t, ns, name, svc) else {
        release_floating_ips(t, old, &owner, &[]);
        return FipOutcome {
            note: load_balancer.then(|| NO_POOL_NOTE.to_string()),
            ..FipOutcome::default()
        };
    };
    let pool = match fips::resolve(t, &chosen.pool) {
        Ok(pool) => pool,
        Err(reason) => {
            release_floating_ips(t, old, &owner, &[]);
            let reason = format!("no floating IP: {reason} (pool named by {})", chosen.scope);
            return FipOutcome {
                note: Some(if load_balancer {
                    format!("{reason}; behaves as NodePort meanwhile")
                } else {
                    format!("{reason}; external IPs are translated on every node, not advertised")
                }),
                pending: load_balancer.then_some(reason),
                ..FipOutcome::default()
            };
        }
    };
    // What is asked for: given addresses (with the field that asked), or one of the pool.
    let load_balancer_ip: Option<IpAddr> = spec
        .and_then(|s| s.load_balancer_ip.as_deref())
        .and_then(|s| s.trim().parse().ok());
    let (inside, outside): (Vec<IpAddr>, Vec<IpAddr>) = external.iter().partition(|ip| pool.covers(**ip));
    let wanted: Vec<(Option<IpAddr>, &str)> = match load_balancer_ip {
        Some(ip) if load_balancer => vec![(Some(ip), "spec.loadBalancerIP")],
        _ if !inside.is_empty() => inside.iter().map(|ip| (Some(*ip), "spec.externalIPs")).collect(),
        _ if load_balancer => vec![(None, "")],
        _ => {
            release_floating_ips(t, old, &owner, &[]);
            return FipOutcome {
                note: Some(format!(
                    "external IPs {} are outside floating-IP pool {} ({}): translated on every node, not advertised",
                    show_ips(&outside),
                    pool.key,
                    pool.ranges_text()
                )),
                ..FipOutcome::default()
            };
        }
    };
    let fq = pool.network.fq_name.clone();
    let same_pool = old.is_some_and(|o| {
        o.fip_pool.as_deref() == Some(pool.key.as_str()) && o.fip_network.as_deref() == Some(fq.as_str())
    });
    let held = |t: &Translator, ip: IpAddr| {
        same_pool
            && pool.covers(ip)
            && old.is_some_and(|o| o.floating_ips.contains(&ip))
            && t.pools.get(&pool.network.ipam).and_then(|p| p.owner(ip)) == Some(owner.as_str())
    };
    // Keep what is still asked for; an automatic one keeps the first address held.
    let kept: Vec<IpAddr> = match wanted.as_slice() {
        [(None, _)] => old
            .and_then(|o| o.floating_ips.first().copied())
            .filter(|ip| held(t, *ip))
            .into_iter()
            .collect(),
        _ => wanted
            .iter()
            .filter_map(|(ip, _)| *ip)
            .filter(|ip| held(t, *ip))
            .collect(),
    };
    release_floating_ips(t, old, &owner, &kept);
    let mut ips = Vec::new();
    let mut problems = Vec::new();
    for (ip, field) in &wanted {
        if let Some(k) = kept.iter().find(|k| ip.is_none_or(|w| w == **k)) {
            ips.push(*k);
            continue;
        }
        let taken = match t.pools.get_mut(&pool.network.ipam) {
            None => Err(format!("no IPAM {} for network {fq}", pool.network.ipam)),
            Some(ipam) => pool.take(ipam, *ip, field, &owner),
        };
        match taken {
            Ok(ip) => ips.push(ip),
            Err(reason) => problems.push(reason),
        }
    }
    let mut note = if ips.is_empty() {
        None
    } else {
        Some(format!(
            "floating IP{} {} from FloatingIpPool {} (network {}), pool named by {}",
            if ips.len() == 1 { "" } else { "s" },
            show_ips(&ips),
            pool.key,
            pool.network.fq_name,
            chosen.scope
        ))
    };
    if !outside.is_empty() {
        let text = format!(
            "external IPs {} are outside the pool: translated on every node, not advertised",
            show_ips(&outside)
        );
        note = Some(note.map_or(text.clone(), |n| format!("{n}; {text}")));
    }
    let pending = (!problems.is_empty()).then(|| {
        format!(
            "no floating IP from FloatingIpPool {}: {}",
            pool.key,
            problems.join("; ")
        )
    });
    if let Some(p) = &pending {
        let tail = if load_balancer && ips.is_empty() {
            "; behaves as NodePort meanwhile"
        } else {
            ""
        };
        note = Some(note.map_or(format!("{p}{tail}"), |n| format!("{n}; {p}")));
    }
    FipOutcome {
        pool: (!ips.is_empty()).then(|| pool.key.clone()),
        network: (!ips.is_empty()).then_some(fq),
        ips,
        note,
        pending,
    }
}

/// Addresses as `a, b`.
fn show_ips(ips: &[IpAddr]) -> String {
    ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}
