//! Pods → interface attachments (TF: virtual-machine + one VMI and instance-ip per
//! network; reference §2.1, §2.3, §10). Network selection order: pod annotation
//! `opencontrail.org/network`, namespace annotation, isolated namespace network, the
//! cluster default pod network; extra interfaces from `k8s.v1.cni.cncf.io/networks`.

use k8s_openapi::api::core::v1::Pod;
use weft_model::naming::{ANNOTATION_NETWORK, ANNOTATION_NETWORKS};
use weft_model::{
    DerivedKind, DerivedObject, FieldError, InputKey, InputKind, InputObject, InterfaceAttachment, MacAddr,
};

use crate::annotations::{parse_network_ref, parse_network_selections};
use crate::networks::{attachment_network_fq, custom_network_fq};
use crate::{Translator, ipam_reason};

/// The IPAM owner string of a pod interface.
pub fn interface_owner(ns: &str, pod: &str, interface: &str) -> String {
    format!("Pod {ns}/{pod} {interface}")
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// Checks a pod's network annotations.
pub fn validate_pod(object: &str, pod: &Pod) -> Result<(), FieldError> {
    if let Some(v) = annotation(pod, ANNOTATION_NETWORK) {
        parse_network_ref(object, ANNOTATION_NETWORK, v)?;
    }
    if let Some(v) = annotation(pod, ANNOTATION_NETWORKS) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let selections = parse_network_selections(object, ns, v)?;
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in selections.iter().enumerate() {
            let ifname = s.interface.clone().unwrap_or_else(|| format!("net{}", i + 1));
            if ifname == "eth0" || !names.insert(ifname.clone()) || ifname.len() > 15 {
                return Err(FieldError::new(
                    object,
                    format!("metadata.annotations[\"{ANNOTATION_NETWORKS}\"][{i}].interface"),
                    "a unique interface name of at most 15 characters other than eth0",
                )
                .found(ifname));
            }
        }
    }
    Ok(())
}

/// True if the pod names networks explicitly (so network changes may affect it).
pub fn references_networks(object: &InputObject) -> bool {
    match object {
        InputObject::Pod(p) => {
            annotation(p, ANNOTATION_NETWORK).is_some() || annotation(p, ANNOTATION_NETWORKS).is_some()
        }
        _ => false,
    }
}

/// Interfaces a pod should have: `(interface name, network FQ name)`, or why it waits.
fn desired_interfaces(t: &Translator, key: &InputKey, pod: &Pod) -> Result<Vec<(String, String)>, String> {
    let ns = key.namespace.as_deref().unwrap_or("default");
    let object = key.to_string();
    let Some(project) = t.project(ns) else {
        return Err(format!("waiting for Namespace {ns}"));
    };
    let primary = match annotation(pod, ANNOTATION_NETWORK) {
        Some(v) => parse_network_ref(&object, ANNOTATION_NETWORK, v).map_err(|e| e.to_string())?,
        None => project.pod_network.clone(),
    };
    if t.network(&primary).is_none() {
        return Err(format!(
            "waiting for VirtualNetwork {primary} (named by {ANNOTATION_NETWORK} on the pod or its namespace); create it with kind: VirtualNetwork"
        ));
    }
    let mut out = vec![("eth0".to_string(), primary)];
    if let Some(v) = annotation(pod, ANNOTATION_NETWORKS) {
        let selections = parse_network_selections(&object, ns, v).map_err(|e| e.to_string())?;
        for (i, s) in selections.iter().enumerate() {
            let ifname = s.interface.clone().unwrap_or_else(|| format!("net{}", i + 1));
            let Some(fq) = attachment_network(t, &s.namespace, &s.name)? else {
                return Err(format!(
                    "waiting for NetworkAttachmentDefinition or VirtualNetwork {}/{} (listed in {ANNOTATION_NETWORKS})",
                    s.namespace, s.name
                ));
            };
            if t.network(&fq).is_none() {
                return Err(format!(
                    "waiting for network {fq} (from {}/{} in {ANNOTATION_NETWORKS}); a NetworkAttachmentDefinition needs {} or {ANNOTATION_NETWORK}",
                    s.namespace,
                    s.name,
                    weft_model::naming::ANNOTATION_CIDR
                ));
            }
            out.push((ifname, fq));
        }
    }
    Ok(out)
}

/// Releases `ip` from whichever pool holds it for `owner`.
pub(crate) fn release_owned(t: &mut Translator, ip: std::net::IpAddr, owner: &str) {
    for pool in t.pools.values_mut() {
        if pool.owner(ip) == Some(owner) {
            pool.release(ip);
            return;
        }
    }
}

/// Recomputes one pod's interfaces; returns true if any address changed.
pub fn sync_pod(t: &mut Translator, ns: &str, name: &str) -> bool {
    let key = InputKey::namespaced(InputKind::Pod, ns, name);
    let prefix = format!("{ns}/{name}/");
    let existing: Vec<InterfaceAttachment> = t
        .derived
        .range((DerivedKind::Interface, prefix.clone())..)
        .take_while(|((k, n), _)| *k == DerivedKind::Interface && n.starts_with(&prefix))
        .filter_map(|(_, d)| {
            if let DerivedObject::Interface(i) = d {
                Some(i.clone())
            } else {
                None
            }
        })
        .collect();
    let pod = match t.inputs.get(&key) {
        Some(InputObject::Pod(p)) => Some(p.as_ref().clone()),
        _ => None,
    };
    let running = pod.as_ref().filter(|p| {
        let host_network = p.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
        let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
        !host_network && phase != "Succeeded" && phase != "Failed"
    });
    let desired = match running {
        None => Ok(Vec::new()),
        Some(p) => desired_interfaces(t, &key, p),
    };
    let (wanted, mut pending) = match desired {
        Ok(list) => (list, None),
        Err(reason) => (Vec::new(), Some(reason)),
    };
    let mut changed = false;
    // Interfaces no longer wanted.
    for old in &existing {
        if !wanted.iter().any(|(ifname, _)| *ifname == old.interface) {
            release_owned(t, old.ip, &interface_owner(ns, name, &old.interface));
            t.remove_derived(DerivedKind::Interface, &format!("{ns}/{name}/{}", old.interface));
            changed = true;
        }
    }
    let (uid, node) = match &pod {
        Some(p) => (
            p.metadata.uid.clone().unwrap_or_default(),
            p.spec.as_ref().and_then(|s| s.node_name.clone()),
        ),
        None => (String::new(), None),
    };
    for (ifname, fq) in &wanted {
        let owner = interface_owner(ns, name, ifname);
        let Some(network) = t.network(fq).cloned() else {
            continue;
        };
        let old = existing.iter().find(|i| &i.interface == ifname);
        let keep =
            old.filter(|o| t.pools.get(&network.ipam).and_then(|p| p.owner(o.ip)) == Some(owner.as_str()));
        let ip = match keep {
            Some(o) => o.ip,
            None => {
                if let Some(o) = old {
                    release_owned(t, o.ip, &owner);
                }
                let Some(pool) = t.pools.get_mut(&network.ipam) else {
                    continue;
                };
                match pool.allocate(&owner) {
                    Ok(ip) => {
                        changed = true;
                        ip
                    }
                    Err(e) => {
                        if old.is_some() {
                            t.remove_derived(DerivedKind::Interface, &format!("{ns}/{name}/{ifname}"));
                        }
                        pending.get_or_insert_with(|| {
                            format!("no address for {ifname} on {fq}: {}", ipam_reason(&e))
                        });
                        continue;
                    }
                }
            }
        };
        let Some(pool) = t.pools.get(&network.ipam) else {
            continue;
        };
        let subnet = pool.subnet_of(ip);
        let record = InterfaceAttachment {
            namespace: ns.to_string(),
            pod: name.to_string(),
            pod_uid: uid.clone(),
            node: node.clone(),
            interface: ifname.clone(),
            network: fq.clone(),
            ip,
            prefix_len: subnet.map(|s| s.prefix_len()).unwrap_or(32),
            gateway: subnet.and_then(weft_ipam::gateway),
            mac: MacAddr::derived_from(&format!("{owner} {uid}")),
            primary: ifname == "eth0",
        };
        t.put_derived(DerivedObject::Interface(record));
    }
    t.set_pending(&key, if pod.is_some() { pending } else { None });
    changed
}

/// The FQ name of the network that `namespace/name` attaches to: a
/// NetworkAttachmentDefinition of that name (its `opencontrail.org/network`, else a
/// network of its own), else a VirtualNetwork; `None` when neither exists yet. An error
/// names a malformed annotation.
pub(crate) fn attachment_network(
    t: &Translator,
    namespace: &str,
    name: &str,
) -> Result<Option<String>, String> {
    let nad_key = InputKey::namespaced(InputKind::NetworkAttachmentDefinition, namespace, name);
    let vn_key = InputKey::namespaced(InputKind::VirtualNetwork, namespace, name);
    Ok(match t.inputs.get(&nad_key) {
        Some(InputObject::NetworkAttachmentDefinition(nad)) => {
            let anns = nad.metadata.annotations.as_ref();
            Some(match anns.and_then(|a| a.get(ANNOTATION_NETWORK)) {
                Some(r) => parse_network_ref(&nad_key.to_string(), ANNOTATION_NETWORK, r)
                    .map_err(|e| e.to_string())?,
                None => attachment_network_fq(&t.config, namespace, name),
            })
        }
        _ if t.inputs.contains_key(&vn_key) => Some(custom_network_fq(&t.config, &vn_key)),
        _ => None,
    })
}
