//! Floating IPs of LoadBalancer services (reference §5.2–§5.3), and the pool
//! resolution and allocation that `FloatingIp` objects of pods share with them
//! ([`crate::pod_fips`]).
//!
//! The pool comes from the most specific of three scopes: the `opencontrail.org/fip-pool`
//! annotation on the Service, the same annotation on its Namespace, then ClusterConfig
//! `spec.publicFipPool`. A reference's project `<cluster>-<ns>` is namespace `<ns>`,
//! its network a VirtualNetwork and its name a FloatingIpPool there. Addresses come from
//! the IPAM pool of that network (restricted to the FloatingIpPool's `spec.subnets`
//! when given), so they never collide with pod addresses or other floating IPs, and
//! they are recorded on the [`ServiceRecord`](weft_model::ServiceRecord) so a
//! restarted controller re-reserves them.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use weft_ipam::Pool;
use weft_model::naming::ANNOTATION_FIP_POOL;
use weft_model::{FipPoolRef, FloatingIpPool, InputKey, InputKind, InputObject, VirtualNetworkRecord};

use crate::Translator;
use crate::annotations::annotation_field;
use crate::networks::custom_network_fq;

/// IPAM owner string of a service's floating IPs (distinct from its VIP's owner).
pub fn fip_owner(ns: &str, name: &str) -> String {
    format!("Service {ns}/{name} floating-ip")
}

/// Text of a LoadBalancer's note when no scope names a pool.
pub const NO_POOL_NOTE: &str = "no floating-IP pool: set opencontrail.org/fip-pool on the Service or Namespace, or ClusterConfig spec.publicFipPool; behaves as NodePort meanwhile (reachable on every node's address)";

/// A pool reference and the scope it came from, in words.
pub(crate) struct ChosenRef {
    /// The reference.
    pub pool: FipPoolRef,
    /// Where it was found, e.g. `annotation opencontrail.org/fip-pool on the Service`.
    pub scope: String,
}

/// A FloatingIpPool resolved to its network and address ranges.
pub(crate) struct ResolvedPool {
    /// `namespace/name` of the FloatingIpPool.
    pub key: String,
    /// The pool's network.
    pub network: VirtualNetworkRecord,
    /// Where addresses may come from: the pool's `spec.subnets`, or its network's subnets.
    pub ranges: Vec<IpNet>,
    /// True when `ranges` is the pool's own restriction.
    pub restricted: bool,
}

fn annotation_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<&str> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_FIP_POOL))
        .map(String::as_str)
}

/// The pool reference a Service in `ns` uses, most specific scope first: the Service's
/// annotation, its Namespace's, then the cluster's `spec.publicFipPool`. Annotations
/// were validated on apply; an unparsable one is skipped.
pub(crate) fn chosen_ref(t: &Translator, ns: &str, name: &str, svc: &Service) -> Option<ChosenRef> {
    let field = annotation_field(ANNOTATION_FIP_POOL);
    let object = format!("Service {ns}/{name}");
    if let Some(text) = annotation_of(&svc.metadata)
        && let Ok(pool) = FipPoolRef::parse(&object, &field, text)
    {
        return Some(ChosenRef {
            pool,
            scope: format!("annotation {ANNOTATION_FIP_POOL} on the Service"),
        });
    }
    let ns_key = InputKey::cluster(InputKind::Namespace, ns);
    if let Some(InputObject::Namespace(n)) = t.inputs.get(&ns_key)
        && let Some(text) = annotation_of(&n.metadata)
        && let Ok(pool) = FipPoolRef::parse(&ns_key.to_string(), &field, text)
    {
        return Some(ChosenRef {
            pool,
            scope: format!("annotation {ANNOTATION_FIP_POOL} on Namespace {ns}"),
        });
    }
    t.config.public_fip_pool.clone().map(|pool| ChosenRef {
        pool,
        scope: "ClusterConfig spec.publicFipPool".to_string(),
    })
}

fn show(nets: &[IpNet]) -> String {
    nets.iter().map(IpNet::to_string).collect::<Vec<_>>().join(", ")
}

/// Finds the FloatingIpPool and network a reference names, or says what is missing.
pub(crate) fn resolve(t: &Translator, r: &FipPoolRef) -> Result<ResolvedPool, String> {
    let cluster = &t.config.cluster_name;
    let Some(ns) = r.namespace(cluster) else {
        return Err(format!(
            "floating-IP pool {r} does not exist: weft pools live in domain default-domain, project {cluster}-<namespace>"
        ));
    };
    let pool_key = InputKey::namespaced(InputKind::FloatingIpPool, ns, &r.name);
    let Some(InputObject::FloatingIpPool(pool)) = t.inputs.get(&pool_key) else {
        return Err(format!(
            "floating-IP pool {r} does not exist: waiting for FloatingIpPool {ns}/{}",
            r.name
        ));
    };
    if pool.spec.network != r.network {
        return Err(format!(
            "floating-IP pool {r} does not exist: FloatingIpPool {ns}/{} is on VirtualNetwork {}, not {}",
            r.name, pool.spec.network, r.network
        ));
    }
    resolve_pool(t, ns, &r.name, pool, &format!("floating-IP pool {r}"))
}

/// Finds FloatingIpPool `ns`/`name` (as a `FloatingIp` names it) and its network, or
/// says what is missing.
pub(crate) fn resolve_named(t: &Translator, ns: &str, name: &str) -> Result<ResolvedPool, String> {
    let pool_key = InputKey::namespaced(InputKind::FloatingIpPool, ns, name);
    let Some(InputObject::FloatingIpPool(pool)) = t.inputs.get(&pool_key) else {
        return Err(format!("waiting for FloatingIpPool {ns}/{name}"));
    };
    resolve_pool(t, ns, name, pool, &format!("FloatingIpPool {ns}/{name}"))
}

/// The network and ranges of FloatingIpPool `ns`/`name`; `what` names the pool in errors.
fn resolve_pool(
    t: &Translator,
    ns: &str,
    name: &str,
    pool: &FloatingIpPool,
    what: &str,
) -> Result<ResolvedPool, String> {
    let vn_key = InputKey::namespaced(InputKind::VirtualNetwork, ns, &pool.spec.network);
    let fq = custom_network_fq(&t.config, &vn_key);
    let Some(network) = t.network(&fq).cloned() else {
        return Err(format!(
            "the network of {what} does not exist: waiting for VirtualNetwork {ns}/{}",
            pool.spec.network
        ));
    };
    let mut ranges = Vec::new();
    for (i, text) in pool.spec.subnets.iter().enumerate() {
        let Ok(net) = text.trim().parse::<IpNet>() else {
            continue; // validated on apply
        };
        if !network.subnets.iter().any(|n| n.contains(&net)) {
            return Err(format!(
                "FloatingIpPool {ns}/{name}: spec.subnets[{i}] {net} is not inside the subnets of network {fq} ({})",
                show(&network.subnets)
            ));
        }
        ranges.push(net);
    }
    let restricted = !ranges.is_empty();
    if !restricted {
        ranges = network.subnets.clone();
    }
    Ok(ResolvedPool {
        key: format!("{ns}/{name}"),
        network,
        ranges,
        restricted,
    })
}

impl ResolvedPool {
    /// True if `ip` may be handed out from this pool.
    pub fn covers(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|n| n.contains(&ip))
    }

    /// The ranges in words, for errors and notes.
    pub fn ranges_text(&self) -> String {
        show(&self.ranges)
    }

    /// Takes `wanted` (if given; `field` names where it was asked for, for the error)
    /// or the next free address of the ranges for `owner`.
    pub fn take(
        &self,
        pool: &mut Pool,
        wanted: Option<IpAddr>,
        field: &str,
        owner: &str,
    ) -> Result<IpAddr, String> {
        if let Some(ip) = wanted {
            if !self.covers(ip) {
                return Err(format!(
                    "{field} {ip} is outside floating-IP pool {} ({})",
                    self.key,
                    self.ranges_text()
                ));
            }
            return pool.reserve(ip, owner).map(|_| ip).map_err(|e| e.to_string());
        }
        if !self.restricted {
            return pool.allocate(owner).map_err(|e| e.to_string());
        }
        // A restricted pool: the first free address from the top of each range, as the
        // IPAM hands them out. At most `in_use` taken addresses and the subnet's four
        // reserved ones can come before a free one, which bounds the walk.
        let budget = pool.in_use() as u128 + 5;
        for net in &self.ranges {
            let top = match net.broadcast() {
                IpAddr::V4(a) => u128::from(u32::from(a)),
                IpAddr::V6(a) => u128::from(a),
            };
            let bottom = match net.network() {
                IpAddr::V4(a) => u128::from(u32::from(a)),
                IpAddr::V6(a) => u128::from(a),
            };
            let mut value = top;
            let mut steps = 0u128;
            while value >= bottom && steps < budget {
                let ip = match net {
                    IpNet::V4(_) => u32::try_from(value).map(|v| IpAddr::V4(v.into())).ok(),
                    IpNet::V6(_) => Some(IpAddr::V6(value.into())),
                };
                if let Some(ip) = ip
                    && pool.owner(ip).is_none()
                    && pool.reserve(ip, owner).is_ok()
                {
                    return Ok(ip);
                }
                steps += 1;
                let Some(next) = value.checked_sub(1) else { break };
                value = next;
            }
        }
        Err(format!(
            "floating-IP pool {} has no free address in {}",
            self.key,
            self.ranges_text()
        ))
    }
}
