//! `ServiceChain` objects (reference §11; see [`weft_model::chain`]).
//!
//! Validation, then translation into a [`ServiceChainRecord`]: the left and right
//! networks resolved to FQ names the way `k8s.v1.cni.cncf.io/networks` resolves them (a
//! NetworkAttachmentDefinition, else a VirtualNetwork, by `name` or `namespace/name`),
//! one VNI per routing instance between consecutive hops (TF's hidden service routing
//! instances; allocated from the network VNI space, owned by the chain and held while it
//! exists, so a restarted controller keeps them), and, for people, which service pods
//! are missing right now. The chain waits (pending) while a network is missing.

use weft_model::input::is_dns_subdomain;
use weft_model::node::{L4Protocol, PolicyPort};
use weft_model::{
    ChainHop, DerivedKind, DerivedObject, FieldError, InputKey, InputKind, InputObject, ServiceChain,
    ServiceChainRecord, Vni,
};

use crate::Translator;

/// Most service pods one chain may have.
pub const MAX_CHAIN_HOPS: usize = 16;

/// Longest Linux interface name (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

/// VNI allocator owner of the routing instance after hop `gap` of a chain.
pub(crate) fn vni_owner(ns: &str, name: &str, gap: usize) -> String {
    format!("ServiceChain {ns}/{name} instance {}", gap + 1)
}

fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn valid_network_name(name: &str) -> bool {
    match name.split_once('/') {
        Some((ns, n)) => weft_model::input::is_dns_label(ns) && is_dns_subdomain(n),
        None => is_dns_subdomain(name),
    }
}

/// Checks a ServiceChain's fields; the error names the field and what was expected.
pub fn validate_service_chain(object: &str, chain: &ServiceChain) -> Result<(), FieldError> {
    let spec = &chain.spec;
    for (field, value) in [
        ("spec.leftNetwork", &spec.left_network),
        ("spec.rightNetwork", &spec.right_network),
    ] {
        if !valid_network_name(value.trim()) {
            return Err(FieldError::new(
                object,
                field,
                "the name of a VirtualNetwork or NetworkAttachmentDefinition, as name or namespace/name",
            )
            .found(value));
        }
    }
    if spec.left_network.trim() == spec.right_network.trim() {
        return Err(FieldError::new(
            object,
            "spec.rightNetwork",
            "a network other than spec.leftNetwork (a chain joins two networks)",
        )
        .found(&spec.right_network));
    }
    if spec.services.is_empty() || spec.services.len() > MAX_CHAIN_HOPS {
        return Err(FieldError::new(
            object,
            "spec.services",
            format!("a list of 1 to {MAX_CHAIN_HOPS} service pods, in order from left to right"),
        )
        .found(spec.services.len().to_string()));
    }
    for (i, s) in spec.services.iter().enumerate() {
        if !is_dns_subdomain(s.pod.trim()) {
            return Err(FieldError::new(
                object,
                format!("spec.services[{i}].pod"),
                "the name of a Pod in the chain's namespace",
            )
            .found(&s.pod));
        }
        if spec.services[..i].iter().any(|o| o.pod.trim() == s.pod.trim()) {
            return Err(FieldError::new(
                object,
                format!("spec.services[{i}].pod"),
                "a pod not already in the chain (each service pod is one hop)",
            )
            .found(&s.pod));
        }
        for (field, ifname) in [
            ("leftInterface", &s.left_interface),
            ("rightInterface", &s.right_interface),
        ] {
            if !valid_ifname(ifname) {
                return Err(FieldError::new(
                    object,
                    format!("spec.services[{i}].{field}"),
                    "the name of one of the pod's interfaces, such as net1 (at most 15 letters, digits, '-', '_' or '.')",
                )
                .found(ifname));
            }
        }
        if s.left_interface == s.right_interface {
            return Err(FieldError::new(
                object,
                format!("spec.services[{i}].rightInterface"),
                "an interface other than leftInterface (traffic enters on one side and leaves on the other)",
            )
            .found(&s.right_interface));
        }
    }
    chain_ports(object, chain).map(|_| ())
}

/// The chain's `spec.ports` as policy ports (validated).
fn chain_ports(object: &str, chain: &ServiceChain) -> Result<Vec<PolicyPort>, FieldError> {
    let mut out = Vec::new();
    for (i, p) in chain.spec.ports.iter().enumerate() {
        let protocol = match p.protocol.as_deref() {
            None => L4Protocol::Tcp,
            Some(name) => L4Protocol::from_kubernetes(name).ok_or_else(|| {
                FieldError::new(object, format!("spec.ports[{i}].protocol"), "TCP, UDP or SCTP").found(name)
            })?,
        };
        let (first, last) = match (p.port, p.end_port) {
            (None, None) => (1, u16::MAX),
            (Some(0), _) => {
                return Err(FieldError::new(
                    object,
                    format!("spec.ports[{i}].port"),
                    "a port from 1 to 65535",
                )
                .found("0"));
            }
            (Some(port), None) => (port, port),
            (Some(port), Some(end)) if end >= port => (port, end),
            (Some(port), Some(end)) => {
                return Err(FieldError::new(
                    object,
                    format!("spec.ports[{i}].endPort"),
                    format!("a port not below spec.ports[{i}].port ({port})"),
                )
                .found(end.to_string()));
            }
            (None, Some(end)) => {
                return Err(FieldError::new(
                    object,
                    format!("spec.ports[{i}].endPort"),
                    "no endPort without port (a range starts at port)",
                )
                .found(end.to_string()));
            }
        };
        out.push(PolicyPort {
            protocol,
            first,
            last,
        });
    }
    Ok(out)
}

/// Resolves a chain's network reference to an FQ name, or says what it waits for.
fn resolve_network(t: &Translator, ns: &str, field: &str, reference: &str) -> Result<String, String> {
    let (rns, name) = reference.trim().split_once('/').unwrap_or((ns, reference.trim()));
    let Some(fq) = crate::pods::attachment_network(t, rns, name)? else {
        return Err(format!(
            "waiting for NetworkAttachmentDefinition or VirtualNetwork {rns}/{name} ({field})"
        ));
    };
    if t.network(&fq).is_none() {
        return Err(format!("waiting for network {fq} ({field})"));
    }
    Ok(fq)
}

/// Why hop `hop` of `record` cannot carry traffic now, if it cannot.
fn hop_missing(t: &Translator, record: &ServiceChainRecord, hop: &ChainHop) -> Option<String> {
    let pod_key = InputKey::namespaced(InputKind::Pod, &record.namespace, &hop.pod);
    if !t.inputs.contains_key(&pod_key) {
        return Some(format!("Pod {}/{} does not exist", record.namespace, hop.pod));
    }
    for (side, ifname, network) in [
        ("left", &hop.left_interface, &record.left_network),
        ("right", &hop.right_interface, &record.right_network),
    ] {
        let key = record.interface_key(&hop.pod, ifname);
        match t.derived.get(&(DerivedKind::Interface, key)) {
            Some(DerivedObject::Interface(i)) if &i.network != network => {
                return Some(format!(
                    "Pod {}/{}: {side} interface {ifname} is on network {}, not {network}",
                    record.namespace, hop.pod, i.network
                ));
            }
            Some(DerivedObject::Interface(i)) if i.node.is_none() => {
                return Some(format!(
                    "Pod {}/{} is not scheduled on a node yet",
                    record.namespace, hop.pod
                ));
            }
            Some(DerivedObject::Interface(_)) => {}
            _ => {
                let why = t
                    .pending_reason(&pod_key)
                    .map(|r| format!(" (the pod is pending: {r})"))
                    .unwrap_or_default();
                return Some(format!(
                    "Pod {}/{} has no {side} interface {ifname}{why}",
                    record.namespace, hop.pod
                ));
            }
        }
    }
    None
}

/// Recomputes the record of ServiceChain `ns/name` (or removes it and frees its VNIs
/// when the input is gone).
pub fn sync_chain(t: &mut Translator, ns: &str, name: &str) {
    let key = InputKey::namespaced(InputKind::ServiceChain, ns, name);
    let record_name = format!("{ns}/{name}");
    let old = match t.derived.get(&(DerivedKind::ServiceChain, record_name.clone())) {
        Some(DerivedObject::ServiceChain(c)) => Some(c.clone()),
        _ => None,
    };
    let chain = match t.inputs.get(&key) {
        Some(InputObject::ServiceChain(c)) => c.as_ref().clone(),
        _ => {
            if let Some(old) = old {
                for vni in &old.hop_vnis {
                    t.vnis.release(vni.0);
                }
                t.remove_derived(DerivedKind::ServiceChain, &record_name);
            }
            t.set_pending(&key, None);
            return;
        }
    };
    let object = key.to_string();
    let networks = resolve_network(t, ns, "spec.leftNetwork", &chain.spec.left_network).and_then(|left| {
        resolve_network(t, ns, "spec.rightNetwork", &chain.spec.right_network).map(|right| (left, right))
    });
    // Two names of one network (`left` and `ns/left`, or a NAD whose annotation names
    // the other side) pass the field check but join nothing: wait for a fix.
    let networks = networks.and_then(|(left, right)| {
        if left == right {
            Err(format!(
                "spec.leftNetwork and spec.rightNetwork are both network {left}; a chain joins two networks"
            ))
        } else {
            Ok((left, right))
        }
    });
    let (left, right) = match networks {
        Ok(pair) => pair,
        Err(reason) => {
            if let Some(old) = old {
                for vni in &old.hop_vnis {
                    t.vnis.release(vni.0);
                }
                t.remove_derived(DerivedKind::ServiceChain, &record_name);
            }
            t.set_pending(&key, Some(reason));
            return;
        }
    };
    let ports = match chain_ports(&object, &chain) {
        Ok(p) => p,
        Err(e) => {
            t.set_pending(&key, Some(e.to_string()));
            return;
        }
    };
    let hops: Vec<ChainHop> = chain
        .spec
        .services
        .iter()
        .map(|s| ChainHop {
            pod: s.pod.trim().to_string(),
            left_interface: s.left_interface.clone(),
            right_interface: s.right_interface.clone(),
        })
        .collect();
    // One VNI per gap; keep the ones held, allocate or free the difference.
    let gaps = hops.len().saturating_sub(1);
    let mut hop_vnis: Vec<Vni> = old.as_ref().map(|o| o.hop_vnis.clone()).unwrap_or_default();
    while hop_vnis.len() > gaps {
        if let Some(v) = hop_vnis.pop() {
            t.vnis.release(v.0);
        }
    }
    let held = hop_vnis.len();
    while hop_vnis.len() < gaps {
        match t.vnis.allocate(&vni_owner(ns, name, hop_vnis.len())) {
            Ok(v) => hop_vnis.push(Vni(v)),
            Err(e) => {
                for v in hop_vnis.drain(held..) {
                    t.vnis.release(v.0);
                }
                t.set_pending(
                    &key,
                    Some(format!("no VNI for the chain's routing instances: {e}")),
                );
                return;
            }
        }
    }
    let mut record = ServiceChainRecord {
        namespace: ns.to_string(),
        name: name.to_string(),
        left_network: left,
        right_network: right,
        hops,
        hop_vnis,
        ports,
        on_failure: chain.spec.on_failure,
        missing: Vec::new(),
    };
    record.missing = record
        .hops
        .iter()
        .filter_map(|h| hop_missing(t, &record, h))
        .collect();
    t.put_derived(DerivedObject::ServiceChain(record));
    t.set_pending(&key, None);
}
