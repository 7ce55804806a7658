//! `FloatingIp` objects: floating IPs of pods (reference §5.1–§5.2).
//!
//! TF allocates floating IPs automatically only for Services and Ingresses; a pod gets
//! one when asked: a floating-ip created in a pool and referenced to the pod's VMI,
//! 1:1 NAT between it and the pod's address in both directions. Here a `FloatingIp`
//! names its FloatingIpPool (`spec.pool`), the pod (`spec.pod`, same namespace) and
//! interface (`spec.interface`, default `eth0`), and optionally a fixed address
//! (`spec.address`). The address comes from the pool network's IPAM with the
//! [`floating_ip_owner`] of the object, through the allocation [`crate::fips`] uses
//! for services, and is recorded on the [`FloatingIpRecord`] so a restarted
//! controller re-reserves it.
//!
//! Address and binding are separate, as in TF where the floating-ip object outlives
//! the VMIs it points at: the address is held while the FloatingIp exists (freed when
//! it is deleted or its pool or `spec.address` changes); the binding is recomputed
//! whenever the pod is, so a pod deleted and re-created — on any node — gets the same
//! floating IP on its new interface.

use std::net::IpAddr;

use weft_model::input::{is_dns_label, is_dns_subdomain};
use weft_model::{
    DerivedKind, DerivedObject, FieldError, FloatingIp, FloatingIpRecord, InputKey, InputKind, InputObject,
};

use crate::Translator;
use crate::fips;
use crate::pods::release_owned;

/// IPAM owner string of a FloatingIp's address.
pub fn floating_ip_owner(ns: &str, name: &str) -> String {
    format!("FloatingIp {ns}/{name}")
}

/// Longest Linux interface name (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

/// Checks a FloatingIp: pool and pod names, interface name, and `spec.address` (an
/// address, inside the pool's ranges when the pool is known now; otherwise that is
/// checked when it appears and reported as a pending reason).
pub fn validate_floating_ip(
    t: &Translator,
    key: &InputKey,
    object: &str,
    fip: &FloatingIp,
) -> Result<(), FieldError> {
    let ns = key.namespace.as_deref().unwrap_or("default");
    let spec = &fip.spec;
    let pool = spec.pool.trim();
    let pool_ok = match pool.split_once('/') {
        Some((pns, name)) => is_dns_label(pns) && is_dns_subdomain(name),
        None => is_dns_subdomain(pool),
    };
    if !pool_ok {
        return Err(FieldError::new(
            object,
            "spec.pool",
            "the name of a FloatingIpPool in the same namespace, or namespace/name",
        )
        .found(&spec.pool));
    }
    if !is_dns_subdomain(spec.pod.trim()) {
        return Err(
            FieldError::new(object, "spec.pod", "the name of a Pod in the same namespace").found(&spec.pod),
        );
    }
    if let Some(ifname) = &spec.interface {
        let ok = !ifname.is_empty()
            && ifname.len() <= MAX_IFNAME
            && ifname
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !ok {
            return Err(FieldError::new(
                object,
                "spec.interface",
                "the name of one of the pod's interfaces, such as eth0 or net1 (at most 15 letters, digits, '-', '_' or '.')",
            )
            .found(ifname));
        }
    }
    if let Some(text) = &spec.address {
        let ip: IpAddr = text
            .trim()
            .parse()
            .map_err(|_| FieldError::new(object, "spec.address", "an IP address").found(text))?;
        let (pool_ns, pool_name) = spec.pool_key(ns);
        if let Ok(pool) = fips::resolve_named(t, pool_ns, pool_name)
            && !pool.covers(ip)
        {
            return Err(FieldError::new(
                object,
                "spec.address",
                format!(
                    "an address inside floating-IP pool {} ({})",
                    pool.key,
                    pool.ranges_text()
                ),
            )
            .found(ip));
        }
    }
    Ok(())
}

/// Recomputes one FloatingIp: keeps or allocates its address, then binds it to the
/// pod's interface if that exists and is scheduled. Without an input the record goes
/// and the address is freed.
pub(crate) fn sync_floating_ip(t: &mut Translator, ns: &str, name: &str) {
    let key = InputKey::namespaced(InputKind::FloatingIp, ns, name);
    let record_name = format!("{ns}/{name}");
    let owner = floating_ip_owner(ns, name);
    let old_ip = match t.derived.get(&(DerivedKind::FloatingIp, record_name.clone())) {
        Some(DerivedObject::FloatingIp(f)) => f.ip.map(|ip| (ip, f.pool.clone(), f.network.clone())),
        _ => None,
    };
    let release_old = |t: &mut Translator, keep: Option<IpAddr>| {
        if let Some((ip, _, _)) = &old_ip
            && Some(*ip) != keep
        {
            release_owned(t, *ip, &owner);
        }
    };
    let spec = match t.inputs.get(&key) {
        Some(InputObject::FloatingIp(f)) => f.spec.clone(),
        _ => {
            release_old(t, None);
            t.remove_derived(DerivedKind::FloatingIp, &record_name);
            t.set_pending(&key, None);
            return;
        }
    };
    let (pool_ns, pool_name) = spec.pool_key(ns);
    let mut record = FloatingIpRecord {
        namespace: ns.to_string(),
        name: name.to_string(),
        ip: None,
        pool: format!("{pool_ns}/{pool_name}"),
        network: None,
        pod: spec.pod.trim().to_string(),
        interface: spec.interface().to_string(),
        fixed_ip: None,
        node: None,
        note: None,
    };
    let wanted: Option<IpAddr> = spec.address.as_deref().and_then(|a| a.trim().parse().ok());
    let allocated = match fips::resolve_named(t, pool_ns, pool_name) {
        Err(reason) => {
            release_old(t, None);
            Err(reason)
        }
        Ok(pool) => {
            let fq = pool.network.fq_name.clone();
            record.network = Some(fq.clone());
            // Kept while the pool, its network and the request stay the same.
            let kept = old_ip
                .as_ref()
                .filter(|(_, p, n)| *p == pool.key && n.as_deref() == Some(fq.as_str()))
                .map(|(ip, _, _)| *ip)
                .filter(|ip| {
                    pool.covers(*ip)
                        && wanted.is_none_or(|w| w == *ip)
                        && t.pools.get(&pool.network.ipam).and_then(|p| p.owner(*ip)) == Some(owner.as_str())
                });
            release_old(t, kept);
            let result = match kept {
                Some(ip) => Ok(ip),
                None => match t.pools.get_mut(&pool.network.ipam) {
                    None => Err(format!("no IPAM {} for network {fq}", pool.network.ipam)),
                    Some(ipam) => pool.take(ipam, wanted, "spec.address", &owner),
                },
            };
            result.map_err(|reason| format!("FloatingIpPool {}: {reason}", pool.key))
        }
    };
    let ip = match allocated {
        Ok(ip) => ip,
        Err(reason) => {
            let reason = format!("no floating IP: {reason}");
            record.note = Some(format!("{reason}; not bound"));
            t.put_derived(DerivedObject::FloatingIp(record));
            t.set_pending(&key, Some(reason));
            return;
        }
    };
    record.ip = Some(ip);
    match binding(t, ns, &record, ip) {
        Ok((fixed_ip, node)) => {
            record.fixed_ip = Some(fixed_ip);
            record.node = Some(node);
        }
        Err(note) => record.note = Some(note),
    }
    t.put_derived(DerivedObject::FloatingIp(record));
    t.set_pending(&key, None);
}

/// The interface address and node the floating IP `ip` of `r` binds to, or why it is
/// not bound (a note, not a pending reason: TF keeps an unassociated floating IP).
fn binding(t: &Translator, ns: &str, r: &FloatingIpRecord, ip: IpAddr) -> Result<(IpAddr, String), String> {
    let pod_key = InputKey::namespaced(InputKind::Pod, ns, &r.pod);
    if !t.inputs.contains_key(&pod_key) {
        return Err(format!(
            "not bound: Pod {ns}/{} does not exist; {ip} stays allocated and binds when the pod is created",
            r.pod
        ));
    }
    let iface = match t.derived.get(&(DerivedKind::Interface, r.interface_key())) {
        Some(DerivedObject::Interface(i)) => i,
        _ => {
            let prefix = format!("{ns}/{}/", r.pod);
            let others: Vec<&str> = t
                .derived
                .range((DerivedKind::Interface, prefix.clone())..)
                .take_while(|((k, n), _)| *k == DerivedKind::Interface && n.starts_with(&prefix))
                .filter_map(|(_, d)| match d {
                    DerivedObject::Interface(i) => Some(i.interface.as_str()),
                    _ => None,
                })
                .collect();
            let why = match t.pending_reason(&pod_key) {
                Some(reason) => format!("the pod is pending ({reason})"),
                None if others.is_empty() => "it has none (host network, or finished)".to_string(),
                None => format!("its interfaces are {}", others.join(", ")),
            };
            return Err(format!(
                "not bound: Pod {ns}/{} has no interface {}: {why}",
                r.pod, r.interface
            ));
        }
    };
    let Some(node) = iface.node.clone() else {
        return Err(format!(
            "not bound: Pod {ns}/{} is not scheduled on a node yet",
            r.pod
        ));
    };
    if ip.is_ipv4() != iface.ip.is_ipv4() {
        return Err(format!(
            "not bound: floating IP {ip} and {} of {} are of different IP families",
            iface.ip,
            r.interface_key()
        ));
    }
    Ok((iface.ip, node))
}
