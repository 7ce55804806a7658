//! NetworkPolicies → TF firewall policies `<cluster>-<ns>-<np>` in the cluster's
//! application policy set, in creation order (reference §6.1). This layer validates the
//! policy and records it; compiling it to per-endpoint rules is the policy crate's job.

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use weft_model::config::parse_cidr;
use weft_model::naming;
use weft_model::{
    DerivedKind, DerivedObject, FieldError, FirewallPolicyRecord, InputKey, InputKind, InputObject,
};

use crate::Translator;
use crate::services::is_port_name;

fn validate_selector(object: &str, field: &str, sel: &LabelSelector) -> Result<(), FieldError> {
    for (i, e) in sel
        .match_expressions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let f = format!("{field}.matchExpressions[{i}]");
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(FieldError::new(
                    object,
                    format!("{f}.values"),
                    format!("at least one value for operator {}", e.operator),
                ));
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(FieldError::new(
                    object,
                    format!("{f}.values"),
                    format!("no values for operator {}", e.operator),
                ));
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                return Err(FieldError::new(
                    object,
                    format!("{f}.operator"),
                    "In, NotIn, Exists or DoesNotExist",
                )
                .found(other));
            }
        }
    }
    Ok(())
}

fn validate_peers(object: &str, field: &str, peers: &[NetworkPolicyPeer]) -> Result<(), FieldError> {
    for (i, p) in peers.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if let Some(block) = &p.ip_block {
            if p.pod_selector.is_some() || p.namespace_selector.is_some() {
                return Err(FieldError::new(
                    object,
                    format!("{f}.ipBlock"),
                    "ipBlock alone: it cannot be combined with podSelector or namespaceSelector",
                ));
            }
            let cidr = parse_cidr_loose(object, &format!("{f}.ipBlock.cidr"), &block.cidr)?;
            for (j, e) in block.except.as_deref().unwrap_or_default().iter().enumerate() {
                let ex = parse_cidr_loose(object, &format!("{f}.ipBlock.except[{j}]"), e)?;
                if !cidr.contains(&ex) || ex == cidr {
                    return Err(FieldError::new(
                        object,
                        format!("{f}.ipBlock.except[{j}]"),
                        format!("a strict subnet of {cidr}"),
                    )
                    .found(e));
                }
            }
        }
        if let Some(s) = &p.pod_selector {
            validate_selector(object, &format!("{f}.podSelector"), s)?;
        }
        if let Some(s) = &p.namespace_selector {
            validate_selector(object, &format!("{f}.namespaceSelector"), s)?;
        }
    }
    Ok(())
}

/// Like [`parse_cidr`] but allows /31, /32 host prefixes (an ipBlock may name one host).
fn parse_cidr_loose(object: &str, field: &str, text: &str) -> Result<ipnet::IpNet, FieldError> {
    match text.trim().parse::<ipnet::IpNet>() {
        Ok(net) if net.trunc() == net => Ok(net),
        _ => parse_cidr(object, field, text),
    }
}

fn validate_ports(object: &str, field: &str, ports: &[NetworkPolicyPort]) -> Result<(), FieldError> {
    for (i, p) in ports.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let proto = p.protocol.as_deref().unwrap_or("TCP");
        if !["TCP", "UDP", "SCTP"].contains(&proto) {
            return Err(FieldError::new(object, format!("{f}.protocol"), "TCP, UDP or SCTP").found(proto));
        }
        match &p.port {
            Some(IntOrString::Int(n)) if !(1..=65535).contains(n) => {
                return Err(FieldError::new(
                    object,
                    format!("{f}.port"),
                    "a port from 1 to 65535 or a port name",
                )
                .found(n));
            }
            Some(IntOrString::String(s)) if !is_port_name(s) => {
                return Err(FieldError::new(
                    object,
                    format!("{f}.port"),
                    "a port number or an IANA port name",
                )
                .found(s));
            }
            _ => {}
        }
        if let Some(end) = p.end_port {
            match &p.port {
                Some(IntOrString::Int(start)) if end >= *start && end <= 65535 => {}
                Some(IntOrString::Int(start)) => {
                    return Err(FieldError::new(
                        object,
                        format!("{f}.endPort"),
                        format!("a port from {start} to 65535"),
                    )
                    .found(end));
                }
                _ => {
                    return Err(FieldError::new(
                        object,
                        format!("{f}.endPort"),
                        "endPort only together with a numeric port",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Checks a NetworkPolicy's selectors, ipBlocks, ports and policyTypes.
pub fn validate_policy(object: &str, np: &NetworkPolicy) -> Result<(), FieldError> {
    let Some(spec) = &np.spec else { return Ok(()) };
    validate_selector(
        object,
        "spec.podSelector",
        &spec.pod_selector.clone().unwrap_or_default(),
    )?;
    for (i, t) in spec
        .policy_types
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if t != "Ingress" && t != "Egress" {
            return Err(
                FieldError::new(object, format!("spec.policyTypes[{i}]"), "Ingress or Egress").found(t),
            );
        }
    }
    for (i, r) in spec.ingress.as_deref().unwrap_or_default().iter().enumerate() {
        validate_peers(
            object,
            &format!("spec.ingress[{i}].from"),
            r.from.as_deref().unwrap_or_default(),
        )?;
        validate_ports(
            object,
            &format!("spec.ingress[{i}].ports"),
            r.ports.as_deref().unwrap_or_default(),
        )?;
    }
    for (i, r) in spec.egress.as_deref().unwrap_or_default().iter().enumerate() {
        validate_peers(
            object,
            &format!("spec.egress[{i}].to"),
            r.to.as_deref().unwrap_or_default(),
        )?;
        validate_ports(
            object,
            &format!("spec.egress[{i}].ports"),
            r.ports.as_deref().unwrap_or_default(),
        )?;
    }
    Ok(())
}

/// Renders a label selector the way kubectl does: `app=web,tier in (a,b),!debug`.
pub fn render_selector(sel: &LabelSelector) -> String {
    let mut parts: Vec<String> = sel
        .match_labels
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
        .unwrap_or_default();
    for e in sel.match_expressions.as_deref().unwrap_or_default() {
        let values = e.values.as_deref().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    if parts.is_empty() {
        "(all pods)".into()
    } else {
        parts.join(",")
    }
}

/// Recomputes one NetworkPolicy's firewall-policy record.
pub fn sync_policy(t: &mut Translator, ns: &str, name: &str) {
    let key = InputKey::namespaced(InputKind::NetworkPolicy, ns, name);
    let record_name = naming::firewall_policy_name(&t.config.cluster_name, ns, name);
    let old_sequence = t.derived(DerivedKind::FirewallPolicy).find_map(|d| match d {
        DerivedObject::FirewallPolicy(p) if p.namespace == ns && p.policy == name => {
            Some((p.name.clone(), p.sequence))
        }
        _ => None,
    });
    let np = match t.inputs.get(&key) {
        Some(InputObject::NetworkPolicy(p)) => Some(p.as_ref().clone()),
        _ => None,
    };
    if let Some((old_name, _)) = &old_sequence
        && (np.is_none() || *old_name != record_name)
    {
        t.remove_derived(DerivedKind::FirewallPolicy, old_name);
    }
    let Some(np) = np else {
        t.policy_sequences.remove(&(ns.to_string(), name.to_string()));
        return;
    };
    let spec = np.spec.clone().unwrap_or_default();
    let ingress = spec.ingress.as_deref().unwrap_or_default().len();
    let egress = spec.egress.as_deref().unwrap_or_default().len();
    // Kubernetes default: Ingress always, Egress when egress rules are present.
    let policy_types = match &spec.policy_types {
        Some(t) if !t.is_empty() => t.clone(),
        _ => {
            let mut v = vec!["Ingress".to_string()];
            if spec.egress.is_some() {
                v.push("Egress".into());
            }
            v
        }
    };
    let id = (ns.to_string(), name.to_string());
    let sequence = match t.policy_sequences.get(&id) {
        Some(s) => *s,
        None => {
            let s = t.next_policy_sequence;
            t.next_policy_sequence += 1;
            t.policy_sequences.insert(id, s);
            s
        }
    };
    let record = FirewallPolicyRecord {
        name: record_name,
        namespace: ns.to_string(),
        policy: name.to_string(),
        sequence,
        policy_types,
        pod_selector: render_selector(&spec.pod_selector.clone().unwrap_or_default()),
        ingress_rules: ingress,
        egress_rules: egress,
    };
    t.put_derived(DerivedObject::FirewallPolicy(record));
}
