//! ServiceChain translation: validation by field, network resolution, one VNI per gap
//! between hops (held across unrelated changes and restore, freed on delete), pending
//! reasons and the `missing` list.

use serde_json::json;
use weft_model::node::{L4Protocol, PolicyPort};
use weft_model::{
    ChainFailure, ChainHop, DerivedKind, DerivedObject, InputChange, InputKey, InputKind, InputObject,
    ServiceChainRecord, Vni,
};

use super::*;

const LEFT: &str = "default-domain:k8s-default:k8s-left-pod-network";
const RIGHT: &str = "default-domain:k8s-default:k8s-right-pod-network";

fn obj(v: serde_json::Value) -> InputObject {
    InputObject::from_value(v).expect("valid test object")
}

fn up(t: &mut Translator, v: serde_json::Value) -> ApplyAction {
    t.apply(InputChange::Upsert(obj(v))).expect("accepted")
}

fn nad(ns: &str, name: &str, cidr: &str) -> serde_json::Value {
    json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
           "metadata": {"name": name, "namespace": ns, "annotations": {"opencontrail.org/cidr": cidr}},
           "spec": {"config": "{\"cniVersion\":\"0.3.1\",\"type\":\"weft\"}"}})
}

fn pod(ns: &str, name: &str, networks: Option<&str>) -> serde_json::Value {
    let annotations = match networks {
        Some(n) => json!({"k8s.v1.cni.cncf.io/networks": n}),
        None => json!({}),
    };
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns, "annotations": annotations},
           "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "x"}]}})
}

fn chain(ns: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ServiceChain",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn services(pods: &[&str]) -> serde_json::Value {
    pods.iter().map(|p| json!({"pod": p})).collect()
}

fn chain_key(ns: &str, name: &str) -> InputKey {
    InputKey::namespaced(InputKind::ServiceChain, ns, name)
}

fn record(t: &Translator, ns: &str, name: &str) -> Option<ServiceChainRecord> {
    match t.derived_object(DerivedKind::ServiceChain, &format!("{ns}/{name}")) {
        Some(DerivedObject::ServiceChain(c)) => Some(c.clone()),
        _ => None,
    }
}

fn network_vnis(t: &Translator) -> Vec<u32> {
    t.derived(DerivedKind::Network)
        .filter_map(|d| match d {
            DerivedObject::Network(n) => Some(n.vni.0),
            _ => None,
        })
        .collect()
}

fn stored(t: &Translator) -> (Vec<InputObject>, Vec<DerivedObject>) {
    let inputs = t.inputs().cloned().collect();
    let derived = DerivedKind::ALL
        .iter()
        .flat_map(|k| t.derived(*k).cloned().collect::<Vec<_>>())
        .collect();
    (inputs, derived)
}

/// The left and right networks and three service pods with an interface in each.
fn with_hops(t: &mut Translator) {
    up(t, nad("default", "left", "10.10.10.0/24"));
    up(t, nad("default", "right", "10.20.20.0/24"));
    for p in ["fw1", "fw2", "fw3"] {
        up(t, pod("default", p, Some("left,right")));
    }
}

#[test]
fn one_hop_chain_resolves_networks_and_needs_no_vni() {
    let mut t = Translator::new();
    with_hops(&mut t);
    up(
        &mut t,
        chain(
            "default",
            "fw",
            json!({"leftNetwork": "left", "rightNetwork": "default/right", "services": services(&["fw1"]),
                   "ports": [{"port": 443}, {"protocol": "UDP", "port": 5000, "endPort": 5010}, {"protocol": "SCTP"}]}),
        ),
    );
    let vnis_before = t.vnis.in_use();
    let changes = t.flush();
    assert!(
        changes
            .iter()
            .any(|c| matches!(c, DerivedChange::Put(DerivedObject::ServiceChain(_)))),
        "{changes:?}"
    );
    let r = record(&t, "default", "fw").expect("record");
    assert_eq!(r.namespace, "default");
    assert_eq!(r.name, "fw");
    assert_eq!(r.left_network, LEFT);
    assert_eq!(r.right_network, RIGHT);
    assert_eq!(
        r.hops,
        vec![ChainHop {
            pod: "fw1".into(),
            left_interface: "net1".into(),
            right_interface: "net2".into(),
        }]
    );
    assert!(r.hop_vnis.is_empty(), "one hop, no gap: {:?}", r.hop_vnis);
    assert_eq!(
        r.ports,
        vec![
            PolicyPort {
                protocol: L4Protocol::Tcp,
                first: 443,
                last: 443
            },
            PolicyPort {
                protocol: L4Protocol::Udp,
                first: 5000,
                last: 5010
            },
            PolicyPort {
                protocol: L4Protocol::Sctp,
                first: 1,
                last: u16::MAX
            },
        ]
    );
    assert_eq!(r.on_failure, ChainFailure::Drop);
    assert!(r.missing.is_empty(), "{:?}", r.missing);
    assert_eq!(t.pending_reason(&chain_key("default", "fw")), None);
    // Only the networks hold VNIs (the flush made the two NAD networks).
    assert_eq!(t.vnis.in_use() as usize, network_vnis(&t).len());
    assert!(t.vnis.in_use() >= vnis_before);
    assert!(t.flush().is_empty(), "a second flush changes nothing");
}

#[test]
fn two_hop_chain_gets_one_vni_of_its_own() {
    let mut t = Translator::new();
    with_hops(&mut t);
    up(
        &mut t,
        chain(
            "default",
            "fw",
            json!({"leftNetwork": "left", "rightNetwork": "right", "onFailure": "Bypass",
                   "services": [{"pod": "fw1"}, {"pod": "fw2", "leftInterface": "net1", "rightInterface": "net2"}]}),
        ),
    );
    t.flush();
    let r = record(&t, "default", "fw").expect("record");
    assert_eq!(r.hops.len(), 2);
    assert_eq!(r.hop_vnis.len(), 1);
    assert_eq!(r.on_failure, ChainFailure::Bypass);
    let vni = r.hop_vnis[0].0;
    assert!(
        !network_vnis(&t).contains(&vni),
        "gap VNI {vni} collides with a network"
    );
    assert_eq!(t.vnis.owner(vni), Some("ServiceChain default/fw instance 1"));
    assert_eq!(
        r.instance_name(0),
        "default-domain:k8s-default:service-chain-default.fw-1"
    );
    // Three hops: a second gap VNI; back to two: the second one is freed, the first kept.
    up(
        &mut t,
        chain(
            "default",
            "fw",
            json!({"leftNetwork": "left", "rightNetwork": "right", "services": services(&["fw1", "fw2", "fw3"])}),
        ),
    );
    t.flush();
    let r3 = record(&t, "default", "fw").expect("record");
    assert_eq!(r3.hop_vnis.len(), 2);
    assert_eq!(r3.hop_vnis[0], Vni(vni));
    let second = r3.hop_vnis[1].0;
    assert_ne!(second, vni);
    assert_eq!(t.vnis.owner(second), Some("ServiceChain default/fw instance 2"));
    up(
        &mut t,
        chain(
            "default",
            "fw",
            json!({"leftNetwork": "left", "rightNetwork": "right", "services": services(&["fw1", "fw3"])}),
        ),
    );
    t.flush();
    let r2 = record(&t, "default", "fw").expect("record");
    assert_eq!(r2.hop_vnis, vec![Vni(vni)]);
    assert_eq!(t.vnis.owner(second), None, "the dropped gap's VNI is freed");
}

#[test]
fn chain_vnis_are_stable_across_unrelated_changes_and_restore() {
    let mut t = Translator::new();
    with_hops(&mut t);
    up(
        &mut t,
        chain(
            "default",
            "fw",
            json!({"leftNetwork": "left", "rightNetwork": "right", "services": services(&["fw1", "fw2", "fw3"])}),
        ),
    );
    t.flush();
    let first = record(&t, "default", "fw").expect("record");
    assert_eq!(first.hop_vnis.len(), 2);
    // Unrelated: a pod, a namespace, another network.
    up(&mut t, pod("default", "web", None));
    up(&mut t, nad("default", "other", "10.30.30.0/24"));
    up(
        &mut t,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dev"}}),
    );
    t.flush();
    assert_eq!(record(&t, "default", "fw").expect("record"), first);
    assert!(t.flush().is_empty());
    // Restore from what a store holds: same record, nothing to change.
    let (inputs, derived) = stored(&t);
    let (mut r, notes) = Translator::restore(inputs, derived);
    assert!(notes.is_empty(), "{notes:?}");
    for (gap, vni) in first.hop_vnis.iter().enumerate() {
        let owner = format!("ServiceChain default/fw instance {}", gap + 1);
        assert_eq!(r.vnis.owner(vni.0), Some(owner.as_str()));
    }
    assert!(r.flush().is_empty(), "restore + resync must not change anything");
    assert_eq!(record(&r, "default", "fw").expect("record"), first);
    // New allocations after restore do not reuse the chain's VNIs.
    up(&mut r, nad("default", "late", "10.40.40.0/24"));
    up(
        &mut r,
        chain(
            "default",
            "fw2",
            json!({"leftNetwork": "left", "rightNetwork": "other", "services": [
                {"pod": "fw1", "leftInterface": "net1", "rightInterface": "net3"},
                {"pod": "fw2", "leftInterface": "net1", "rightInterface": "net3"}]}),
        ),
    );
    r.flush();
    let other = record(&r, "default", "fw2").expect("second chain");
    let mut all = network_vnis(&r);
    all.extend(first.hop_vnis.iter().map(|v| v.0));
    all.extend(other.hop_vnis.iter().map(|v| v.0));
    let distinct: std::collections::BTreeSet<u32> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "VNIs collide: {all:?}");
}

#[test]
fn restore_with_two_chains_claiming_one_vni_keeps_the_first_owner() {
    let mut t = Translator::new();
    with_hops(&mut t);
    for name in ["a", "b"] {
        up(
            &mut t,
            chain(
                "default",
                name,
                json!({"leftNetwork": "left", "rightNetwork": "right", "services": services(&["fw1", "fw2"])}),
            ),
        );
    }
    t.flush();
    let a = record(&t, "default", "a").expect("a");
    let (inputs, mut derived) = stored(&t);
    // Corrupt: b claims a's VNI.
    for d in &mut derived {
        if let DerivedObject::ServiceChain(c) = d
            && c.name == "b"
        {
            c.hop_vnis = a.hop_vnis.clone();
        }
    }
    let (mut r, notes) = Translator::restore(inputs, derived);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("default/b"), "{notes:?}");
    let vni = a.hop_vnis[0].0;
    assert_eq!(
        r.vnis.owner(vni),
        Some("ServiceChain default/a instance 1"),
        "dropping b must not free a's VNI"
    );
    r.flush();
    let a2 = record(&r, "default", "a").expect("a");
    let b2 = record(&r, "default", "b").expect("b recomputed");
    assert_eq!(a2.hop_vnis, a.hop_vnis);
    assert_ne!(b2.hop_vnis, a2.hop_vnis, "two chains share a VNI");
    assert_eq!(r.vnis.owner(vni), Some("ServiceChain default/a instance 1"));
    assert_eq!(
        r.vnis.owner(b2.hop_vnis[0].0),
        Some("ServiceChain default/b instance 1")
    );
}

#[test]
fn deleting_the_chain_frees_its_vnis() {
    let mut t = Translator::new();
    with_hops(&mut t);
    up(
        &mut t,
        chain(
            "default",
            "fw",
            json!({"leftNetwork": "left", "rightNetwork": "right", "services": services(&["fw1", "fw2", "fw3"])}),
        ),
    );
    t.flush();
    let vnis = record(&t, "default", "fw").expect("record").hop_vnis;
    assert_eq!(vnis.len(), 2);
    let in_use = t.vnis.in_use();
    let action = t
        .apply(InputChange::Delete(chain_key("default", "fw")))
        .expect("ok");
    assert_eq!(action, ApplyAction::Deleted);
    let changes = t.flush();
    assert_eq!(
        changes,
        vec![DerivedChange::Delete(
            DerivedKind::ServiceChain,
            "default/fw".into()
        )]
    );
    assert!(record(&t, "default", "fw").is_none());
    for v in &vnis {
        assert_eq!(t.vnis.owner(v.0), None, "VNI {} still held", v.0);
    }
    assert_eq!(t.vnis.in_use(), in_use - 2);
    // The freed VNIs are handed out again.
    up(&mut t, nad("default", "next", "10.50.50.0/24"));
    t.flush();
    let DerivedObject::Network(n) = t
        .derived_object(
            DerivedKind::Network,
            "default-domain:k8s-default:k8s-next-pod-network",
        )
        .expect("network")
    else {
        panic!()
    };
    assert!(vnis.contains(&n.vni), "{:?} not reused: {}", vnis, n.vni.0);
}

#[test]
fn invalid_specs_are_refused_by_field_and_nothing_changes() {
    let mut t = Translator::new();
    with_hops(&mut t);
    let good = json!({"leftNetwork": "left", "rightNetwork": "right", "services": services(&["fw1"])});
    up(&mut t, chain("default", "fw", good.clone()));
    t.flush();
    let before_record = record(&t, "default", "fw").expect("record");
    let before_inputs: Vec<InputObject> = t.inputs().cloned().collect();
    let with = |patch: serde_json::Value| {
        let mut spec = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                spec.as_object_mut().unwrap().remove(k);
            } else {
                spec[k] = v.clone();
            }
        }
        spec
    };
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (with(json!({"leftNetwork": null})), "spec.leftNetwork"),
        (with(json!({"leftNetwork": "Not_A_Name"})), "spec.leftNetwork"),
        (with(json!({"rightNetwork": ""})), "spec.rightNetwork"),
        (with(json!({"rightNetwork": "left"})), "spec.rightNetwork"),
        (with(json!({"services": []})), "spec.services"),
        (with(json!({"services": null})), "spec.services"),
        (
            with(json!({"services": [{"pod": "fw1"}, {"pod": "fw1"}]})),
            "spec.services[1].pod",
        ),
        (
            with(json!({"services": [{"pod": "Bad Pod"}]})),
            "spec.services[0].pod",
        ),
        (
            with(json!({"services": [{"pod": "fw1", "leftInterface": "net2"}]})),
            "spec.services[0].rightInterface",
        ),
        (
            with(json!({"services": [{"pod": "fw1", "rightInterface": "a-very-long-ifname"}]})),
            "spec.services[0].rightInterface",
        ),
        (
            with(json!({"ports": [{"protocol": "ICMP", "port": 1}]})),
            "spec.ports[0].protocol",
        ),
        (
            with(json!({"ports": [{"port": 80}, {"protocol": "HTTP"}]})),
            "spec.ports[1].protocol",
        ),
        (
            with(json!({"ports": [{"port": 90, "endPort": 80}]})),
            "spec.ports[0].endPort",
        ),
        (with(json!({"ports": [{"endPort": 80}]})), "spec.ports[0].endPort"),
        (with(json!({"ports": [{"port": 0}]})), "spec.ports[0].port"),
    ];
    for (spec, field) in cases {
        for name in ["fw", "new"] {
            let err = t
                .apply(InputChange::Upsert(obj(chain("default", name, spec.clone()))))
                .expect_err(&format!("{spec} must be refused"));
            assert_eq!(err.field, field, "{spec}: {err}");
            assert_eq!(err.object, format!("ServiceChain default/{name}"), "{err}");
        }
    }
    let many: Vec<String> = (0..=crate::chains::MAX_CHAIN_HOPS)
        .map(|i| format!("p{i}"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let err = t
        .apply(InputChange::Upsert(obj(chain(
            "default",
            "fw",
            with(json!({"services": services(&many)})),
        ))))
        .unwrap_err();
    assert_eq!(err.field, "spec.services");
    // Unknown onFailure and unknown fields are refused when decoding, by field.
    let err =
        InputObject::from_value(chain("default", "fw", with(json!({"onFailure": "Retry"})))).unwrap_err();
    assert_eq!(err.field, "spec.onFailure", "{err}");
    let err = InputObject::from_value(chain("default", "fw", with(json!({"leftNet": "x"})))).unwrap_err();
    assert!(err.field.starts_with("spec"), "{err}");
    // Nothing changed.
    assert_eq!(t.inputs().cloned().collect::<Vec<_>>(), before_inputs);
    assert!(t.flush().is_empty());
    assert_eq!(record(&t, "default", "fw"), Some(before_record));
    assert!(record(&t, "default", "new").is_none());
}

#[test]
fn chain_waits_for_its_networks() {
    let mut t = Translator::new();
    up(&mut t, nad("default", "left", "10.10.10.0/24"));
    up(&mut t, pod("default", "fw1", Some("left")));
    up(
        &mut t,
        chain(
            "default",
            "fw",
            json!({"leftNetwork": "left", "rightNetwork": "dev/right", "services": services(&["fw1", "fw2"])}),
        ),
    );
    let in_use = {
        t.flush();
        t.vnis.in_use()
    };
    assert!(record(&t, "default", "fw").is_none());
    let reason = t
        .pending_reason(&chain_key("default", "fw"))
        .expect("pending")
        .to_string();
    assert!(reason.starts_with("waiting for"), "{reason}");
    assert!(
        reason.contains("dev/right") && reason.contains("spec.rightNetwork"),
        "{reason}"
    );
    assert_eq!(
        in_use as usize,
        network_vnis(&t).len(),
        "a pending chain holds no VNI"
    );
    // The network appears (a VirtualNetwork in dev): the chain is translated.
    up(
        &mut t,
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "VirtualNetwork",
               "metadata": {"name": "right", "namespace": "dev"}, "spec": {"subnets": ["10.20.20.0/24"]}}),
    );
    t.flush();
    let r = record(&t, "default", "fw").expect("record");
    assert_eq!(r.right_network, "default-domain:k8s-dev:right");
    assert_eq!(r.left_network, LEFT);
    assert_eq!(r.hop_vnis.len(), 1);
    assert_eq!(t.pending_reason(&chain_key("default", "fw")), None);
    // It goes away again: pending, the record removed and its VNI freed.
    t.apply(InputChange::Delete(InputKey::namespaced(
        InputKind::VirtualNetwork,
        "dev",
        "right",
    )))
    .unwrap();
    t.flush();
    assert!(record(&t, "default", "fw").is_none());
    assert!(
        t.pending_reason(&chain_key("default", "fw"))
            .is_some_and(|r| r.contains("waiting for")),
        "{:?}",
        t.pending_reason(&chain_key("default", "fw"))
    );
    assert_eq!(t.vnis.owner(r.hop_vnis[0].0), None);
}

#[test]
fn chain_whose_two_names_are_one_network_is_not_translated() {
    let mut t = Translator::new();
    with_hops(&mut t);
    // `left` and `default/left` pass the field check but are the same network.
    up(
        &mut t,
        chain(
            "default",
            "fw",
            json!({"leftNetwork": "left", "rightNetwork": "default/left", "services": services(&["fw1", "fw2"])}),
        ),
    );
    t.flush();
    assert!(
        record(&t, "default", "fw").is_none(),
        "{:?}",
        record(&t, "default", "fw")
    );
    let reason = t
        .pending_reason(&chain_key("default", "fw"))
        .expect("pending")
        .to_string();
    assert!(reason.contains(LEFT), "{reason}");
    assert_eq!(t.vnis.in_use() as usize, network_vnis(&t).len());
}

#[test]
fn missing_lists_absent_pods_and_interfaces() {
    let mut t = Translator::new();
    up(&mut t, nad("default", "left", "10.10.10.0/24"));
    up(&mut t, nad("default", "right", "10.20.20.0/24"));
    // fw1 is whole; fw2 has only a left interface; fw3 does not exist; fw4 names an
    // interface it does not have; fw5 has its interfaces the wrong way round.
    up(&mut t, pod("default", "fw1", Some("left,right")));
    up(&mut t, pod("default", "fw2", Some("left")));
    up(&mut t, pod("default", "fw4", Some("left,right")));
    up(&mut t, pod("default", "fw5", Some("right,left")));
    up(
        &mut t,
        chain(
            "default",
            "fw",
            json!({"leftNetwork": "left", "rightNetwork": "right", "services": [
                {"pod": "fw1"}, {"pod": "fw2"}, {"pod": "fw3"},
                {"pod": "fw4", "rightInterface": "net7"}, {"pod": "fw5"}]}),
        ),
    );
    t.flush();
    let r = record(&t, "default", "fw").expect("a chain with missing hops is still recorded");
    assert_eq!(r.hop_vnis.len(), 4);
    assert_eq!(r.missing.len(), 4, "{:?}", r.missing);
    assert!(
        r.missing[0].contains("default/fw2") && r.missing[0].contains("right interface net2"),
        "{:?}",
        r.missing
    );
    assert!(
        r.missing[1].contains("default/fw3") && r.missing[1].contains("does not exist"),
        "{:?}",
        r.missing
    );
    assert!(
        r.missing[2].contains("default/fw4") && r.missing[2].contains("net7"),
        "{:?}",
        r.missing
    );
    assert!(
        r.missing[3].contains("default/fw5") && r.missing[3].contains(RIGHT),
        "{:?}",
        r.missing
    );
    assert!(!r.missing.iter().any(|m| m.contains("fw1")));
    // The chain is not pending for missing hops: it is translated.
    assert_eq!(t.pending_reason(&chain_key("default", "fw")), None);
    // fw3 appears and fw2 gets its second interface: only fw4 and fw5 stay missing.
    up(&mut t, pod("default", "fw3", Some("left,right")));
    up(&mut t, pod("default", "fw2", Some("left,right")));
    t.flush();
    let r = record(&t, "default", "fw").expect("record");
    assert_eq!(r.missing.len(), 2, "{:?}", r.missing);
    assert!(r.missing[0].contains("fw4") && r.missing[1].contains("fw5"));
    // A hop's pod deleted: missing again, record otherwise unchanged.
    t.apply(InputChange::Delete(InputKey::namespaced(
        InputKind::Pod,
        "default",
        "fw1",
    )))
    .unwrap();
    t.flush();
    let r2 = record(&t, "default", "fw").expect("record");
    assert!(r2.missing[0].contains("fw1") && r2.missing[0].contains("does not exist"));
    assert_eq!(r2.hop_vnis, r.hop_vnis);
}

#[test]
fn unscheduled_service_pod_is_missing() {
    let mut t = Translator::new();
    up(&mut t, nad("default", "left", "10.10.10.0/24"));
    up(&mut t, nad("default", "right", "10.20.20.0/24"));
    let mut p = pod("default", "fw1", Some("left,right"));
    p["spec"].as_object_mut().unwrap().remove("nodeName");
    up(&mut t, p);
    up(
        &mut t,
        chain(
            "default",
            "fw",
            json!({"leftNetwork": "left", "rightNetwork": "right", "services": services(&["fw1"])}),
        ),
    );
    t.flush();
    let r = record(&t, "default", "fw").expect("record");
    assert_eq!(r.missing.len(), 1, "{:?}", r.missing);
    assert!(r.missing[0].contains("default/fw1"), "{:?}", r.missing);
}
