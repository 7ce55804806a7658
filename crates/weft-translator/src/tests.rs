//! Translator scenarios: TF naming and isolation, IPAM, pending reasons, restore.

use std::collections::BTreeSet;

use serde_json::json;
use weft_model::{DerivedKind, DerivedObject, InputChange, InputKey, InputKind, InputObject};

use super::*;

fn obj(v: serde_json::Value) -> InputObject {
    InputObject::from_value(v).expect("valid test object")
}

fn up(t: &mut Translator, v: serde_json::Value) -> ApplyAction {
    t.apply(InputChange::Upsert(obj(v))).expect("accepted")
}

fn ns(name: &str, annotations: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "annotations": annotations}})
}

fn pod(ns: &str, name: &str, annotations: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns, "annotations": annotations, "labels": {"app": name}},
           "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80}]}]}})
}

fn interface(t: &Translator, ns: &str, pod: &str, ifname: &str) -> Option<weft_model::InterfaceAttachment> {
    match t.derived_object(DerivedKind::Interface, &format!("{ns}/{pod}/{ifname}")) {
        Some(DerivedObject::Interface(i)) => Some(i.clone()),
        _ => None,
    }
}

fn service(t: &Translator, ns: &str, name: &str) -> Option<weft_model::ServiceRecord> {
    match t.derived_object(DerivedKind::Service, &format!("{ns}/{name}")) {
        Some(DerivedObject::Service(s)) => Some(s.clone()),
        _ => None,
    }
}

fn assert_no_duplicate_addresses(t: &Translator) {
    let mut seen = BTreeSet::new();
    for d in t.derived(DerivedKind::Interface) {
        if let DerivedObject::Interface(i) = d {
            assert!(seen.insert(i.ip), "duplicate address {}", i.ip);
        }
    }
    for d in t.derived(DerivedKind::Service) {
        if let DerivedObject::Service(s) = d
            && let Some(v) = s.vip
        {
            assert!(seen.insert(v), "duplicate VIP {v}");
        }
        if let DerivedObject::Service(s) = d {
            for f in &s.floating_ips {
                assert!(seen.insert(*f), "duplicate floating IP {f}");
            }
        }
    }
    for d in t.derived(DerivedKind::FloatingIp) {
        if let DerivedObject::FloatingIp(f) = d
            && let Some(ip) = f.ip
        {
            assert!(
                seen.insert(ip),
                "duplicate floating IP {ip} of FloatingIp {}",
                f.name
            );
        }
    }
    // Every allocation in the pools belongs to a stored object and vice versa.
    assert_eq!(
        t.allocations().len(),
        seen.len(),
        "pool allocations and stored objects disagree"
    );
}

#[test]
fn default_namespace_pod_gets_tf_addressing() {
    let mut t = Translator::new();
    up(&mut t, pod("default", "web", json!({})));
    t.flush();
    let i = interface(&t, "default", "web", "eth0").expect("interface");
    assert_eq!(i.network, "default-domain:k8s-default:k8s-default-pod-network");
    assert_eq!(i.ip.to_string(), "10.47.255.252");
    assert_eq!(i.gateway.map(|g| g.to_string()).as_deref(), Some("10.47.255.254"));
    assert_eq!(i.prefix_len, 12);
    assert_eq!(i.node.as_deref(), Some("node-1"));
    let DerivedObject::Project(p) = t
        .derived_object(DerivedKind::Project, "k8s-default")
        .expect("project")
    else {
        panic!()
    };
    assert!(!p.isolated);
    let nets: Vec<String> = t.derived(DerivedKind::Network).map(|d| d.name()).collect();
    assert_eq!(
        nets,
        vec![
            "default-domain:k8s-default:k8s-default-pod-network",
            "default-domain:k8s-default:k8s-default-service-network"
        ]
    );
}

#[test]
fn isolation_matrix_of_networks() {
    let mut t = Translator::new();
    up(&mut t, ns("shared", json!({})));
    up(
        &mut t,
        ns("secure", json!({"opencontrail.org/isolation": "true"})),
    );
    up(&mut t, pod("shared", "a", json!({})));
    up(&mut t, pod("secure", "b", json!({})));
    t.flush();
    let a = interface(&t, "shared", "a", "eth0").expect("a");
    let b = interface(&t, "secure", "b", "eth0").expect("b");
    assert_eq!(a.network, "default-domain:k8s-default:k8s-default-pod-network");
    assert_eq!(b.network, "default-domain:k8s-secure:k8s-secure-pod-network");
    // Flat-subnet IPAM: unique addresses across networks.
    assert_ne!(a.ip, b.ip);
    let DerivedObject::Network(n) = t
        .derived_object(
            DerivedKind::Network,
            "default-domain:k8s-secure:k8s-secure-pod-network",
        )
        .expect("net")
    else {
        panic!()
    };
    assert!(
        n.connected_networks
            .contains(&"default-domain:k8s-secure:k8s-secure-service-network".to_string())
    );
    assert!(
        n.connected_networks
            .contains(&"default-domain:k8s-default:k8s-default-service-network".to_string())
    );
    assert!(
        !n.connected_networks
            .contains(&"default-domain:k8s-default:k8s-default-pod-network".to_string())
    );
    let vnis: BTreeSet<u32> = t
        .derived(DerivedKind::Network)
        .filter_map(|d| {
            if let DerivedObject::Network(n) = d {
                Some(n.vni.0)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(vnis.len(), 4, "every network has its own VNI");
}

#[test]
fn custom_network_waits_then_attaches() {
    let mut t = Translator::new();
    up(&mut t, ns("dev", json!({})));
    let ann = json!({"opencontrail.org/network": "{'domain': 'default-domain', 'project': 'k8s-dev', 'name': 'blue'}"});
    up(&mut t, pod("dev", "p", ann));
    t.flush();
    assert!(interface(&t, "dev", "p", "eth0").is_none());
    let key = InputKey::namespaced(InputKind::Pod, "dev", "p");
    let reason = t.pending_reason(&key).expect("pending");
    assert!(reason.contains("default-domain:k8s-dev:blue"), "{reason}");
    up(
        &mut t,
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "VirtualNetwork",
                       "metadata": {"name": "blue", "namespace": "dev"}, "spec": {"subnets": ["192.168.50.0/24"]}}),
    );
    t.flush();
    let i = interface(&t, "dev", "p", "eth0").expect("attached");
    assert_eq!(i.network, "default-domain:k8s-dev:blue");
    assert_eq!(i.ip.to_string(), "192.168.50.252");
    assert!(t.pending_reason(&key).is_none());
    assert_no_duplicate_addresses(&t);
}

#[test]
fn apply_twice_is_unchanged_and_delete_frees_the_address() {
    let mut t = Translator::new();
    assert_eq!(up(&mut t, pod("default", "a", json!({}))), ApplyAction::Created);
    assert_eq!(up(&mut t, pod("default", "a", json!({}))), ApplyAction::Unchanged);
    t.flush();
    assert!(t.flush().is_empty(), "a second flush changes nothing");
    let ip = interface(&t, "default", "a", "eth0").expect("a").ip;
    let action = t
        .apply(InputChange::Delete(InputKey::namespaced(
            InputKind::Pod,
            "default",
            "a",
        )))
        .expect("ok");
    assert_eq!(action, ApplyAction::Deleted);
    let changes = t.flush();
    assert!(
        changes
            .iter()
            .any(|c| matches!(c, DerivedChange::Delete(DerivedKind::Interface, n) if n == "default/a/eth0"))
    );
    assert!(t.allocations().iter().all(|(_, a, _)| *a != ip));
    let again = t
        .apply(InputChange::Delete(InputKey::namespaced(
            InputKind::Pod,
            "default",
            "a",
        )))
        .expect("ok");
    assert_eq!(again, ApplyAction::NotFound);
}

#[test]
fn thousand_pods_unique_and_restore_is_exact() {
    let mut t = Translator::new();
    for n in 0..20 {
        let iso = if n % 5 == 0 {
            json!({"opencontrail.org/isolation": "true"})
        } else {
            json!({})
        };
        up(&mut t, ns(&format!("ns{n}"), iso));
    }
    for p in 0..1000 {
        up(&mut t, pod(&format!("ns{}", p % 20), &format!("p{p}"), json!({})));
    }
    for s in 0..50 {
        up(
            &mut t,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("s{s}"), "namespace": format!("ns{}", s % 20)},
                            "spec": {"selector": {"app": format!("p{s}")}, "ports": [{"port": 80}]}}),
        );
    }
    let changes = t.flush();
    assert!(changes.len() > 1000);
    assert_no_duplicate_addresses(&t);
    // Restore from what a store would hold, then a full resync changes nothing.
    let inputs: Vec<InputObject> = t.inputs().cloned().collect();
    let derived: Vec<DerivedObject> = DerivedKind::ALL
        .iter()
        .flat_map(|k| t.derived(*k).cloned().collect::<Vec<_>>())
        .collect();
    let (mut r, notes) = Translator::restore(inputs, derived.clone());
    assert!(notes.is_empty(), "{notes:?}");
    assert!(r.flush().is_empty(), "restore + resync must not change anything");
    // New allocations after restore do not collide.
    up(&mut r, pod("ns1", "late", json!({})));
    r.flush();
    assert_no_duplicate_addresses(&r);
}

#[test]
fn restore_drops_duplicates_and_reallocates() {
    let mut t = Translator::new();
    up(&mut t, pod("default", "a", json!({})));
    up(&mut t, pod("default", "b", json!({})));
    t.flush();
    let mut derived: Vec<DerivedObject> = DerivedKind::ALL
        .iter()
        .flat_map(|k| t.derived(*k).cloned().collect::<Vec<_>>())
        .collect();
    // Corrupt: give b the same address as a.
    let a_ip = interface(&t, "default", "a", "eth0").expect("a").ip;
    for d in &mut derived {
        if let DerivedObject::Interface(i) = d
            && i.pod == "b"
        {
            i.ip = a_ip;
        }
    }
    let (mut r, notes) = Translator::restore(t.inputs().cloned().collect(), derived);
    assert_eq!(notes.len(), 1, "{notes:?}");
    r.flush();
    assert_no_duplicate_addresses(&r);
    assert!(interface(&r, "default", "b", "eth0").is_some());
}

#[test]
fn full_subnet_is_a_per_pod_pending_reason() {
    let mut t = Translator::new();
    up(
        &mut t,
        ns(
            "tiny",
            json!({"opencontrail.org/network": "{\"domain\":\"default-domain\",\"project\":\"k8s-tiny\",\"name\":\"small\"}"}),
        ),
    );
    up(
        &mut t,
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "VirtualNetwork",
                       "metadata": {"name": "small", "namespace": "tiny"}, "spec": {"subnets": ["192.168.9.0/29"]}}),
    );
    for p in 0..6 {
        up(&mut t, pod("tiny", &format!("p{p}"), json!({})));
    }
    t.flush();
    let attached = (0..6)
        .filter(|p| interface(&t, "tiny", &format!("p{p}"), "eth0").is_some())
        .count();
    // /29: 8 addresses minus network, broadcast, gateway, DNS = 4.
    assert_eq!(attached, 4);
    let pending: Vec<String> = (0..6)
        .filter_map(|p| {
            t.pending_reason(&InputKey::namespaced(InputKind::Pod, "tiny", &format!("p{p}")))
                .map(str::to_string)
        })
        .collect();
    assert_eq!(pending.len(), 2);
    assert!(pending[0].contains("192.168.9.0/29"), "{}", pending[0]);
    // Freeing one lets a waiting pod in.
    t.apply(InputChange::Delete(InputKey::namespaced(
        InputKind::Pod,
        "tiny",
        "p0",
    )))
    .expect("ok");
    t.flush();
    let attached = (1..6)
        .filter(|p| interface(&t, "tiny", &format!("p{p}"), "eth0").is_some())
        .count();
    assert_eq!(attached, 4);
    assert_no_duplicate_addresses(&t);
}

#[test]
fn subnet_change_with_allocations_is_refused_by_name() {
    let mut t = Translator::new();
    up(&mut t, pod("default", "a", json!({})));
    t.flush();
    let err = t
        .apply(InputChange::Upsert(obj(
            json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ClusterConfig",
            "metadata": {"name": "default"}, "spec": {"podSubnets": ["10.200.0.0/16"]}}),
        )))
        .unwrap_err();
    assert_eq!(err.field, "spec.podSubnets");
    let text = err.to_string();
    assert!(
        text.contains("10.32.0.0/12") && text.contains("default/a"),
        "{text}"
    );
    // Adding a subnet is fine.
    up(
        &mut t,
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ClusterConfig",
        "metadata": {"name": "default"}, "spec": {"podSubnets": ["10.32.0.0/12", "10.200.0.0/16"]}}),
    );
    t.flush();
    assert!(interface(&t, "default", "a", "eth0").is_some());
}

#[test]
fn cluster_config_renames_everything_when_empty() {
    let mut t = Translator::new();
    up(
        &mut t,
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ClusterConfig",
        "metadata": {"name": "default"}, "spec": {"clusterName": "blue", "podSubnets": ["10.1.0.0/16"], "serviceSubnets": ["10.2.0.0/16"]}}),
    );
    up(&mut t, pod("default", "a", json!({})));
    t.flush();
    let i = interface(&t, "default", "a", "eth0").expect("a");
    assert_eq!(i.network, "default-domain:blue-default:blue-default-pod-network");
    assert_eq!(i.ip.to_string(), "10.1.255.252");
    assert!(
        t.derived(DerivedKind::Network)
            .all(|d| d.name().contains(":blue-"))
    );
}

#[test]
fn cluster_route_targets_federate_only_the_shared_default_networks() {
    let mut t = Translator::new();
    up(
        &mut t,
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ClusterConfig", "metadata": {"name": "default"},
               "spec": {"asn": 64513, "routeTargets": {"import": ["target:64512:100"], "export": ["target:64513:100"]}}}),
    );
    up(&mut t, ns("iso", json!({"opencontrail.org/isolation": "true"})));
    t.flush();
    let mut shared = 0;
    for d in t.derived(DerivedKind::Network) {
        let DerivedObject::Network(n) = d else { continue };
        let own = format!("target:64513:{}", n.vni.0);
        if n.origin == "cluster" {
            shared += 1;
            assert_eq!(
                n.import_targets,
                vec![own.clone(), "target:64512:100".into()],
                "{}",
                n.fq_name
            );
            assert_eq!(
                n.export_targets,
                vec![own, "target:64513:100".into()],
                "{}",
                n.fq_name
            );
        } else {
            assert_eq!(n.import_targets, vec![own.clone()], "{}", n.fq_name);
            assert_eq!(n.export_targets, vec![own], "{}", n.fq_name);
        }
    }
    assert_eq!(shared, 2, "the default pod and service networks");
}

#[test]
fn service_vip_rules() {
    let mut t = Translator::new();
    up(&mut t, pod("default", "web", json!({})));
    up(
        &mut t,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                       "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
    );
    t.flush();
    let s = service(&t, "default", "web").expect("service");
    assert_eq!(s.vip.map(|v| v.to_string()).as_deref(), Some("10.111.255.252"));
    assert_eq!(s.backends.len(), 1);
    assert_eq!(s.backends_from, "selector");
    assert_eq!(s.ports[0].target_port, "8080");
    // A ClusterIP outside the service range names both ranges.
    let err = t
        .apply(InputChange::Upsert(obj(
            json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "x", "namespace": "default"},
            "spec": {"clusterIP": "172.20.0.10", "ports": [{"port": 80}]}}),
        )))
        .unwrap_err();
    assert_eq!(err.field, "spec.clusterIP");
    assert!(err.to_string().contains("10.96.0.0/12") && err.to_string().contains("172.20.0.10"));
    // A ClusterIP already used names the owner.
    let err = t
        .apply(InputChange::Upsert(obj(
            json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "y", "namespace": "default"},
            "spec": {"clusterIP": "10.111.255.252", "ports": [{"port": 80}]}}),
        )))
        .unwrap_err();
    assert!(err.to_string().contains("Service default/web"), "{err}");
    // A fixed ClusterIP inside the range is honoured.
    up(
        &mut t,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dns", "namespace": "kube-system"},
                       "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 53, "protocol": "UDP"}]}}),
    );
    t.flush();
    assert_eq!(
        service(&t, "kube-system", "dns")
            .and_then(|s| s.vip)
            .map(|v| v.to_string())
            .as_deref(),
        Some("10.96.0.10")
    );
    assert_no_duplicate_addresses(&t);
}

#[test]
fn endpoint_slices_win_over_selector_and_node_ports_are_unique() {
    let mut t = Translator::new();
    up(
        &mut t,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "default"},
                       "spec": {"type": "NodePort", "selector": {"app": "a"}, "ports": [{"port": 80}]}}),
    );
    up(
        &mut t,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "b", "namespace": "default"},
                       "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}),
    );
    up(
        &mut t,
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                       "metadata": {"name": "a-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "a"}},
                       "addressType": "IPv4",
                       "endpoints": [{"addresses": ["10.47.0.9"], "conditions": {"ready": false}, "nodeName": "n2"}]}),
    );
    t.flush();
    let a = service(&t, "default", "a").expect("a");
    let b = service(&t, "default", "b").expect("b");
    assert_eq!(a.backends_from, "endpointslices");
    assert!(!a.backends[0].ready);
    assert_ne!(a.ports[0].node_port, b.ports[0].node_port);
    assert!(b.note.as_deref().is_some_and(|n| n.contains("NodePort")));
}

#[test]
fn named_target_ports_resolve_from_slices_and_pods() {
    let mut t = Translator::new();
    // Selector backends: the named targetPort is looked up in each pod's containerPorts.
    up(
        &mut t,
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "w1", "namespace": "default", "labels": {"app": "w"}},
               "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "x",
                        "ports": [{"name": "web", "containerPort": 8080}, {"name": "dns", "containerPort": 5353, "protocol": "UDP"}]}]}}),
    );
    up(
        &mut t,
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "w2", "namespace": "default", "labels": {"app": "w"}},
               "spec": {"nodeName": "node-2", "containers": [{"name": "c", "image": "x",
                        "ports": [{"name": "web", "containerPort": 9090}]}]}}),
    );
    up(
        &mut t,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "w", "namespace": "default"},
               "spec": {"selector": {"app": "w"}, "ports": [
                   {"name": "http", "port": 80, "targetPort": "web"},
                   {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"},
                   {"name": "plain", "port": 81, "targetPort": 81}]}}),
    );
    t.flush();
    let w = service(&t, "default", "w").expect("w");
    assert_eq!(w.backends.len(), 2);
    let w1 = w
        .backends
        .iter()
        .find(|b| b.pod.as_deref() == Some("default/w1"))
        .expect("w1");
    let w2 = w
        .backends
        .iter()
        .find(|b| b.pod.as_deref() == Some("default/w2"))
        .expect("w2");
    assert_eq!(w1.target_ports.get("http"), Some(&8080));
    assert_eq!(w1.target_ports.get("dns"), Some(&5353));
    assert_eq!(w1.target_ports.get("plain"), Some(&81));
    assert_eq!(w2.target_ports.get("http"), Some(&9090));
    assert_eq!(
        w2.target_ports.get("dns"),
        None,
        "w2 declares no UDP port named dns"
    );
    // EndpointSlice backends: the slice's ports are the resolved numbers.
    up(
        &mut t,
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": "w-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "w"}},
               "addressType": "IPv4",
               "ports": [{"name": "http", "port": 7070, "protocol": "TCP"}],
               "endpoints": [{"addresses": ["10.47.0.9"], "nodeName": "node-2"}]}),
    );
    t.flush();
    let w = service(&t, "default", "w").expect("w");
    assert_eq!(w.backends_from, "endpointslices");
    assert_eq!(w.backends[0].target_ports.get("http"), Some(&7070));
}

#[test]
fn multus_interfaces() {
    let mut t = Translator::new();
    up(
        &mut t,
        json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "left", "namespace": "default", "annotations": {"opencontrail.org/cidr": "10.10.10.0/24"}},
        "spec": {"config": "{\"cniVersion\":\"0.3.1\",\"type\":\"weft\"}"}}),
    );
    up(
        &mut t,
        pod("default", "fw", json!({"k8s.v1.cni.cncf.io/networks": "left"})),
    );
    t.flush();
    let n1 = interface(&t, "default", "fw", "net1").expect("net1");
    assert_eq!(n1.network, "default-domain:k8s-default:k8s-left-pod-network");
    assert_eq!(n1.ip.to_string(), "10.10.10.252");
    assert_eq!(n1.gateway.map(|g| g.to_string()).as_deref(), Some("10.10.10.254"));
    assert!(!n1.primary);
    assert!(interface(&t, "default", "fw", "eth0").expect("eth0").primary);
}

#[test]
fn bad_annotations_are_refused_and_nothing_changes() {
    let mut t = Translator::new();
    let err = t
        .apply(InputChange::Upsert(obj(ns(
            "x",
            json!({"opencontrail.org/isolation": "maybe"}),
        ))))
        .unwrap_err();
    assert_eq!(err.object, "Namespace x");
    assert!(err.field.contains("opencontrail.org/isolation"));
    let err = t
        .apply(InputChange::Upsert(obj(pod(
            "default",
            "p",
            json!({"opencontrail.org/network": "{oops"}),
        ))))
        .unwrap_err();
    assert!(err.field.contains("opencontrail.org/network"));
    assert_eq!(t.inputs().count(), 0);
}

#[test]
fn isolation_toggle_keeps_the_address() {
    let mut t = Translator::new();
    up(&mut t, ns("dev", json!({})));
    up(&mut t, pod("dev", "a", json!({})));
    t.flush();
    let before = interface(&t, "dev", "a", "eth0").expect("a");
    up(&mut t, ns("dev", json!({"opencontrail.org/isolation": "true"})));
    t.flush();
    let after = interface(&t, "dev", "a", "eth0").expect("a");
    assert_eq!(after.network, "default-domain:k8s-dev:k8s-dev-pod-network");
    assert_eq!(before.ip, after.ip, "same flat pod IPAM: address kept");
    assert_no_duplicate_addresses(&t);
}

#[test]
fn policies_get_sequences_in_creation_order() {
    let mut t = Translator::new();
    for name in ["b", "a"] {
        up(
            &mut t,
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "egress": [{}]}}),
        );
    }
    t.flush();
    let seq: Vec<(String, u32)> = t
        .derived(DerivedKind::FirewallPolicy)
        .filter_map(|d| {
            if let DerivedObject::FirewallPolicy(p) = d {
                Some((p.policy.clone(), p.sequence))
            } else {
                None
            }
        })
        .collect();
    assert_eq!(seq, vec![("a".to_string(), 2), ("b".to_string(), 1)]);
    let DerivedObject::FirewallPolicy(p) = t
        .derived_object(DerivedKind::FirewallPolicy, "k8s-default-b")
        .expect("b")
    else {
        panic!()
    };
    assert_eq!(p.policy_types, vec!["Ingress", "Egress"]);
    assert_eq!(p.pod_selector, "app=web");
    let err = t
        .apply(InputChange::Upsert(obj(json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "bad", "namespace": "default"},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}]}}))))
        .unwrap_err();
    assert_eq!(err.field, "spec.ingress[0].from[0].ipBlock.except[0]");
}

// ---- Floating IPs of LoadBalancer services (reference §5.2–§5.3) ----

/// `opencontrail.org/fip-pool` value naming pool `name` on network `net` in namespace `public`.
fn fip_ref(net: &str, name: &str) -> String {
    format!(r#"{{"domain":"default-domain","project":"k8s-public","network":"{net}","name":"{name}"}}"#)
}

/// Namespace `public` with three public networks and a pool on each:
/// ext/pool 203.0.113.0/24, ext2/pool2 198.51.100.0/24, ext3/pool3 192.0.2.0/24.
fn public_pools(t: &mut Translator) {
    up(t, ns("public", json!({})));
    for (net, pool, cidr) in [
        ("ext", "pool", "203.0.113.0/24"),
        ("ext2", "pool2", "198.51.100.0/24"),
        ("ext3", "pool3", "192.0.2.0/24"),
    ] {
        up(
            t,
            json!({"apiVersion": "weft.dev/v1alpha1", "kind": "VirtualNetwork",
                   "metadata": {"name": net, "namespace": "public"}, "spec": {"subnets": [cidr]}}),
        );
        up(t, fip_pool_object(pool, net, json!([])));
    }
}

fn fip_pool_object(name: &str, net: &str, subnets: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "weft.dev/v1alpha1", "kind": "FloatingIpPool",
           "metadata": {"name": name, "namespace": "public"}, "spec": {"network": net, "subnets": subnets}})
}

fn lb(ns: &str, name: &str, annotations: serde_json::Value, lb_ip: Option<&str>) -> serde_json::Value {
    let mut spec = json!({"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"port": 80}]});
    if let Some(ip) = lb_ip {
        spec["loadBalancerIP"] = json!(ip);
    }
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": ns, "annotations": annotations}, "spec": spec})
}

fn cluster_pool(pool: Option<&str>) -> serde_json::Value {
    let mut spec = json!({});
    if let Some(p) = pool {
        spec["publicFipPool"] = json!(p);
    }
    json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ClusterConfig", "metadata": {"name": "default"}, "spec": spec})
}

fn fip(t: &Translator, ns: &str, name: &str) -> Option<std::net::IpAddr> {
    service(t, ns, name).and_then(|s| s.floating_ips.first().copied())
}

fn fip_allocations(t: &Translator) -> Vec<(std::net::IpAddr, String)> {
    t.allocations()
        .into_iter()
        .filter(|(_, _, owner)| owner.ends_with("floating-ip"))
        .map(|(_, ip, owner)| (ip, owner))
        .collect()
}

fn in_net(ip: Option<std::net::IpAddr>, net: &str) -> bool {
    let net: ipnet::IpNet = net.parse().unwrap();
    ip.is_some_and(|ip| net.contains(&ip))
}

#[test]
fn fip_pool_scope_precedence() {
    let mut t = Translator::new();
    public_pools(&mut t);
    up(&mut t, cluster_pool(Some(&fip_ref("ext3", "pool3"))));
    up(
        &mut t,
        ns(
            "a",
            json!({"opencontrail.org/fip-pool": fip_ref("ext2", "pool2")}),
        ),
    );
    up(&mut t, ns("b", json!({})));
    // (namespace, service annotation, expected range, expected scope in the note)
    let table = [
        (
            "a",
            Some(fip_ref("ext", "pool")),
            "203.0.113.0/24",
            "on the Service",
        ),
        ("a", None, "198.51.100.0/24", "on Namespace a"),
        ("b", None, "192.0.2.0/24", "ClusterConfig spec.publicFipPool"),
        (
            "b",
            Some(fip_ref("ext", "pool")),
            "203.0.113.0/24",
            "on the Service",
        ),
    ];
    for (i, (namespace, ann, _, _)) in table.iter().enumerate() {
        let anns = match ann {
            Some(r) => json!({"opencontrail.org/fip-pool": r}),
            None => json!({}),
        };
        up(&mut t, lb(namespace, &format!("s{i}"), anns, None));
    }
    t.flush();
    for (i, (namespace, _, range, scope)) in table.iter().enumerate() {
        let s = service(&t, namespace, &format!("s{i}")).expect("service");
        assert!(in_net(s.floating_ips.first().copied(), range), "s{i}: {s:?}");
        let note = s.note.clone().unwrap_or_default();
        assert!(note.contains(scope), "s{i}: {note}");
        assert!(s.fip_network.is_some());
        assert!(
            t.pending_reason(&InputKey::namespaced(
                InputKind::Service,
                namespace,
                &format!("s{i}")
            ))
            .is_none()
        );
    }
    let s1 = service(&t, "a", "s1").expect("s1");
    assert_eq!(s1.fip_pool.as_deref(), Some("public/pool2"));
    assert_eq!(s1.fip_network.as_deref(), Some("default-domain:k8s-public:ext2"));
    // The namespace annotation removed: s1 falls back to the cluster pool.
    up(&mut t, ns("a", json!({})));
    t.flush();
    assert!(
        in_net(fip(&t, "a", "s1"), "192.0.2.0/24"),
        "{:?}",
        service(&t, "a", "s1")
    );
    // No scope at all: no floating IP, a note saying how to get one, not an error state.
    t.apply(InputChange::Delete(InputKey::cluster(
        InputKind::ClusterConfig,
        "default",
    )))
    .expect("ok");
    t.flush();
    let s2 = service(&t, "b", "s2").expect("s2");
    assert!(s2.floating_ips.is_empty());
    assert_eq!(s2.fip_pool, None);
    assert_eq!(s2.note.as_deref(), Some(fips::NO_POOL_NOTE));
    assert!(
        s2.note
            .as_deref()
            .is_some_and(|n| n.contains("behaves as NodePort"))
    );
    assert!(
        t.pending_reason(&InputKey::namespaced(InputKind::Service, "b", "s2"))
            .is_none()
    );
    // Only the two services with a Service annotation keep an address.
    assert_eq!(fip_allocations(&t).len(), 2, "{:?}", fip_allocations(&t));
    // Annotating the namespace afterwards gives its pool-less service an address.
    up(
        &mut t,
        ns(
            "b",
            json!({"opencontrail.org/fip-pool": fip_ref("ext2", "pool2")}),
        ),
    );
    t.flush();
    assert!(
        in_net(fip(&t, "b", "s2"), "198.51.100.0/24"),
        "{:?}",
        service(&t, "b", "s2")
    );
    assert!(
        in_net(fip(&t, "b", "s3"), "203.0.113.0/24"),
        "the Service's own pool still wins"
    );
    assert_no_duplicate_addresses(&t);
}

#[test]
fn fip_missing_pool_is_pending_until_it_appears() {
    let mut t = Translator::new();
    up(&mut t, ns("public", json!({})));
    up(
        &mut t,
        lb(
            "default",
            "web",
            json!({"opencontrail.org/fip-pool": fip_ref("ext", "pool")}),
            None,
        ),
    );
    t.flush();
    let key = InputKey::namespaced(InputKind::Service, "default", "web");
    let reason = t.pending_reason(&key).expect("pending").to_string();
    assert!(reason.contains("default-domain:k8s-public:ext:pool"), "{reason}");
    assert!(reason.contains("FloatingIpPool public/pool"), "{reason}");
    let s = service(&t, "default", "web").expect("record exists, as NodePort");
    assert!(s.floating_ips.is_empty());
    assert!(s.ports[0].node_port.is_some());
    // The pool appears, but its network does not exist yet.
    up(&mut t, fip_pool_object("pool", "ext", json!([])));
    t.flush();
    let reason = t.pending_reason(&key).expect("pending").to_string();
    assert!(reason.contains("VirtualNetwork public/ext"), "{reason}");
    up(
        &mut t,
        json!({"apiVersion": "weft.dev/v1alpha1", "kind": "VirtualNetwork",
               "metadata": {"name": "ext", "namespace": "public"}, "spec": {"subnets": ["203.0.113.0/24"]}}),
    );
    t.flush();
    assert!(t.pending_reason(&key).is_none());
    assert_eq!(
        fip(&t, "default", "web").map(|i| i.to_string()).as_deref(),
        Some("203.0.113.252")
    );
    // A pool on another network than the reference names is no match.
    up(&mut t, fip_pool_object("pool", "other", json!([])));
    t.flush();
    let reason = t.pending_reason(&key).expect("pending").to_string();
    assert!(reason.contains("VirtualNetwork other, not ext"), "{reason}");
    assert!(fip(&t, "default", "web").is_none());
    assert!(fip_allocations(&t).is_empty());
}

#[test]
fn external_ips_inside_the_pool_become_floating_ips() {
    let addr = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let mut t = Translator::new();
    public_pools(&mut t);
    let mut svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "ext", "namespace": "default"},
        "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}],
                 "externalIPs": ["203.0.113.7", "203.0.113.8", "198.51.100.9"]}});
    // No pool anywhere: plain external IPs, nothing allocated, nothing pending.
    up(&mut t, svc.clone());
    t.flush();
    let s = service(&t, "default", "ext").expect("service");
    assert!(s.floating_ips.is_empty() && s.note.is_none(), "{s:?}");
    assert!(fip_allocations(&t).is_empty());
    // With the cluster's pool: one FIP per external IP inside it (TF §5.3); the one
    // outside stays a plain external IP, and the note says so.
    up(&mut t, cluster_pool(Some(&fip_ref("ext", "pool"))));
    t.flush();
    let s = service(&t, "default", "ext").expect("service");
    assert_eq!(s.floating_ips, vec![addr("203.0.113.7"), addr("203.0.113.8")]);
    assert_eq!(s.fip_pool.as_deref(), Some("public/pool"));
    let note = s.note.clone().unwrap_or_default();
    assert!(
        note.contains("198.51.100.9") && note.contains("not advertised"),
        "{note}"
    );
    assert_eq!(fip_allocations(&t).len(), 2);
    // One removed: its address is freed, the other kept.
    svc["spec"]["externalIPs"] = json!(["203.0.113.8"]);
    up(&mut t, svc.clone());
    t.flush();
    assert_eq!(
        service(&t, "default", "ext").unwrap().floating_ips,
        vec![addr("203.0.113.8")]
    );
    assert_eq!(fip_allocations(&t).len(), 1);
    // A LoadBalancer asking for an external IP another service holds: pending, naming it.
    let mut web = lb("default", "web", json!({}), None);
    web["spec"]["externalIPs"] = json!(["203.0.113.8"]);
    up(&mut t, web.clone());
    t.flush();
    let key = InputKey::namespaced(InputKind::Service, "default", "web");
    let reason = t.pending_reason(&key).expect("pending").to_string();
    assert!(reason.contains("Service default/ext"), "{reason}");
    assert!(fip(&t, "default", "web").is_none());
    // Its own external IP: that one, not an automatic address.
    web["spec"]["externalIPs"] = json!(["203.0.113.30"]);
    up(&mut t, web.clone());
    t.flush();
    assert_eq!(fip(&t, "default", "web"), Some(addr("203.0.113.30")));
    assert!(t.pending_reason(&key).is_none());
    // Without external IPs: one automatic address, the requested one freed.
    web["spec"]["externalIPs"] = json!([]);
    up(&mut t, web);
    t.flush();
    let auto = fip(&t, "default", "web").expect("automatic fip");
    assert!(in_net(Some(auto), "203.0.113.0/24"));
    assert_eq!(fip_allocations(&t).len(), 2, "ext's .8 and web's automatic one");
    // A NodePort service with external IPs gets no FIP (kube-proxy's business in TF);
    // turning the ClusterIP service into one frees its address.
    svc["spec"]["type"] = json!("NodePort");
    up(&mut t, svc);
    t.flush();
    assert!(service(&t, "default", "ext").unwrap().floating_ips.is_empty());
    assert_eq!(fip_allocations(&t).len(), 1);
    assert_no_duplicate_addresses(&t);
}

#[test]
fn fip_load_balancer_ip_inside_outside_and_taken() {
    let mut t = Translator::new();
    public_pools(&mut t);
    up(&mut t, cluster_pool(Some(&fip_ref("ext", "pool"))));
    t.flush();
    up(&mut t, lb("default", "fixed", json!({}), Some("203.0.113.10")));
    t.flush();
    assert_eq!(
        fip(&t, "default", "fixed").map(|i| i.to_string()).as_deref(),
        Some("203.0.113.10")
    );
    // Outside the pool: refused, naming the field and the pool's range.
    let err = t
        .apply(InputChange::Upsert(obj(lb(
            "default",
            "out",
            json!({}),
            Some("198.51.100.7"),
        ))))
        .unwrap_err();
    assert_eq!(err.field, "spec.loadBalancerIP");
    let text = err.to_string();
    assert!(
        text.contains("203.0.113.0/24") && text.contains("public/pool"),
        "{text}"
    );
    assert!(text.contains("198.51.100.7"), "{text}");
    // Not an address at all.
    let err = t
        .apply(InputChange::Upsert(obj(lb(
            "default",
            "bad",
            json!({}),
            Some("nope"),
        ))))
        .unwrap_err();
    assert_eq!(err.field, "spec.loadBalancerIP");
    // Taken by another service: pending, naming the holder; freed later, it gets it.
    up(&mut t, lb("default", "second", json!({}), Some("203.0.113.10")));
    t.flush();
    let key = InputKey::namespaced(InputKind::Service, "default", "second");
    let reason = t.pending_reason(&key).expect("pending").to_string();
    assert!(reason.contains("Service default/fixed"), "{reason}");
    assert!(fip(&t, "default", "second").is_none());
    t.apply(InputChange::Delete(InputKey::namespaced(
        InputKind::Service,
        "default",
        "fixed",
    )))
    .expect("ok");
    t.flush();
    up(
        &mut t,
        lb("default", "second", json!({"touch": "1"}), Some("203.0.113.10")),
    );
    t.flush();
    assert_eq!(
        fip(&t, "default", "second").map(|i| i.to_string()).as_deref(),
        Some("203.0.113.10")
    );
    assert!(t.pending_reason(&key).is_none());
    // Changing loadBalancerIP moves the address and frees the old one.
    up(&mut t, lb("default", "second", json!({}), Some("203.0.113.20")));
    t.flush();
    assert_eq!(
        fip(&t, "default", "second").map(|i| i.to_string()).as_deref(),
        Some("203.0.113.20")
    );
    assert_eq!(fip_allocations(&t).len(), 1);
    assert_no_duplicate_addresses(&t);
}

#[test]
fn fip_is_stable_across_retranslation_and_restore() {
    let mut t = Translator::new();
    public_pools(&mut t);
    up(&mut t, cluster_pool(Some(&fip_ref("ext", "pool"))));
    // A pod on the pool's network takes addresses from the same IPAM.
    let on_ext = json!({"opencontrail.org/network": "{'domain': 'default-domain', 'project': 'k8s-public', 'name': 'ext'}"});
    up(&mut t, pod("public", "p1", on_ext.clone()));
    up(&mut t, lb("default", "web", json!({}), None));
    t.flush();
    let first = fip(&t, "default", "web").expect("fip");
    let pod_ip = interface(&t, "public", "p1", "eth0").expect("p1").ip;
    assert_ne!(first, pod_ip);
    assert!(in_net(Some(first), "203.0.113.0/24"));
    // Re-translation (service edited, everything recomputed) keeps the address.
    up(&mut t, lb("default", "web", json!({"edited": "yes"}), None));
    up(&mut t, pod("public", "p2", on_ext.clone()));
    t.flush();
    // A ClusterConfig edit (same pool, spelled differently) recomputes everything.
    let spaced = fip_ref("ext", "pool").replace(',', ", ");
    up(&mut t, cluster_pool(Some(&spaced)));
    t.flush();
    assert_eq!(fip(&t, "default", "web"), Some(first));
    assert!(t.flush().is_empty(), "a second flush changes nothing");
    // Restore from the store: same address, nothing to change, no collision afterwards.
    let inputs: Vec<InputObject> = t.inputs().cloned().collect();
    let derived: Vec<DerivedObject> = DerivedKind::ALL
        .iter()
        .flat_map(|k| t.derived(*k).cloned().collect::<Vec<_>>())
        .collect();
    let (mut r, notes) = Translator::restore(inputs, derived);
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(
        fip_allocations(&r),
        vec![(first, "Service default/web floating-ip".to_string())],
        "restore re-reserves the floating IP for its service"
    );
    assert!(r.flush().is_empty(), "restore + resync must not change anything");
    assert_eq!(fip(&r, "default", "web"), Some(first));
    up(&mut r, lb("default", "other", json!({}), None));
    up(&mut r, pod("public", "p3", on_ext));
    r.flush();
    let other = fip(&r, "default", "other").expect("other");
    assert_ne!(other, first);
    assert_no_duplicate_addresses(&r);
}

#[test]
fn fip_is_freed_on_delete_type_change_and_pool_change() {
    let mut t = Translator::new();
    public_pools(&mut t);
    let on_pool = json!({"opencontrail.org/fip-pool": fip_ref("ext", "pool")});
    up(&mut t, lb("default", "web", on_pool.clone(), None));
    t.flush();
    let first = fip(&t, "default", "web").expect("fip");
    assert!(in_net(Some(first), "203.0.113.0/24"), "{first}");
    // Pool change: an address from the new pool, the old one freed.
    up(
        &mut t,
        lb(
            "default",
            "web",
            json!({"opencontrail.org/fip-pool": fip_ref("ext2", "pool2")}),
            None,
        ),
    );
    t.flush();
    let second = fip(&t, "default", "web").expect("fip");
    assert!(in_net(Some(second), "198.51.100.0/24"), "{second}");
    assert_eq!(
        fip_allocations(&t),
        vec![(second, "Service default/web floating-ip".to_string())]
    );
    assert_eq!(
        service(&t, "default", "web").and_then(|s| s.fip_pool).as_deref(),
        Some("public/pool2")
    );
    // Type change to NodePort: freed, record without floating IP or LoadBalancer note.
    let mut np = lb("default", "web", on_pool.clone(), None);
    np["spec"]["type"] = json!("NodePort");
    up(&mut t, np);
    t.flush();
    let s = service(&t, "default", "web").expect("web");
    assert!(s.floating_ips.is_empty() && s.fip_pool.is_none() && s.fip_network.is_none());
    assert!(fip_allocations(&t).is_empty());
    // Back to LoadBalancer, then deleted: freed again.
    up(&mut t, lb("default", "web", on_pool, None));
    t.flush();
    assert!(fip(&t, "default", "web").is_some());
    t.apply(InputChange::Delete(InputKey::namespaced(
        InputKind::Service,
        "default",
        "web",
    )))
    .expect("ok");
    t.flush();
    assert!(fip_allocations(&t).is_empty());
    // Its pool deleted: the address is released and the service waits.
    up(
        &mut t,
        lb(
            "default",
            "w2",
            json!({"opencontrail.org/fip-pool": fip_ref("ext", "pool")}),
            None,
        ),
    );
    t.flush();
    assert!(fip(&t, "default", "w2").is_some());
    t.apply(InputChange::Delete(InputKey::namespaced(
        InputKind::FloatingIpPool,
        "public",
        "pool",
    )))
    .expect("ok");
    t.flush();
    assert!(fip(&t, "default", "w2").is_none());
    assert!(fip_allocations(&t).is_empty());
    assert!(
        t.pending_reason(&InputKey::namespaced(InputKind::Service, "default", "w2"))
            .is_some()
    );
}

#[test]
fn fip_pool_subnets_restrict_the_addresses() {
    let mut t = Translator::new();
    public_pools(&mut t);
    up(&mut t, fip_pool_object("pool", "ext", json!(["203.0.113.0/29"])));
    up(&mut t, cluster_pool(Some(&fip_ref("ext", "pool"))));
    for i in 0..4 {
        up(&mut t, lb("default", &format!("s{i}"), json!({}), None));
    }
    t.flush();
    let got: Vec<String> = (0..4)
        .filter_map(|i| fip(&t, "default", &format!("s{i}")).map(|ip| ip.to_string()))
        .collect();
    // 203.0.113.0 is the /24's network address (reserved): .7 down to .1, top first.
    assert_eq!(
        got,
        vec!["203.0.113.7", "203.0.113.6", "203.0.113.5", "203.0.113.4"]
    );
    // A pool restricted outside its network's subnets is a pending reason.
    up(&mut t, fip_pool_object("pool", "ext", json!(["10.250.0.0/29"])));
    up(&mut t, lb("default", "late", json!({}), None));
    t.flush();
    let reason = t
        .pending_reason(&InputKey::namespaced(InputKind::Service, "default", "late"))
        .expect("pending")
        .to_string();
    assert!(reason.contains("spec.subnets[0] 10.250.0.0/29"), "{reason}");
    assert_no_duplicate_addresses(&t);
}

// ---- FloatingIp objects: floating IPs of pods (reference §5.1–§5.2) ----

fn floating_ip(ns: &str, name: &str, pool: &str, pod: &str, address: Option<&str>) -> serde_json::Value {
    let mut spec = json!({"pool": pool, "pod": pod});
    if let Some(a) = address {
        spec["address"] = json!(a);
    }
    json!({"apiVersion": "weft.dev/v1alpha1", "kind": "FloatingIp",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn pod_on(ns: &str, name: &str, node: &str) -> serde_json::Value {
    let mut p = pod(ns, name, json!({}));
    p["spec"]["nodeName"] = json!(node);
    p
}

fn fip_record(t: &Translator, ns: &str, name: &str) -> weft_model::FloatingIpRecord {
    match t.derived_object(DerivedKind::FloatingIp, &format!("{ns}/{name}")) {
        Some(DerivedObject::FloatingIp(f)) => f.clone(),
        other => panic!("no FloatingIp record {ns}/{name}: {other:?}"),
    }
}

/// Addresses held by FloatingIp objects, with their owners.
fn pod_fip_allocations(t: &Translator) -> Vec<(std::net::IpAddr, String)> {
    t.allocations()
        .into_iter()
        .filter(|(_, _, owner)| owner.starts_with("FloatingIp "))
        .map(|(_, ip, owner)| (ip, owner))
        .collect()
}

fn fip_key(ns: &str, name: &str) -> InputKey {
    InputKey::namespaced(InputKind::FloatingIp, ns, name)
}

#[test]
fn pod_fip_is_allocated_from_the_pool_and_bound_to_the_pod() {
    let mut t = Translator::new();
    public_pools(&mut t);
    up(&mut t, pod_on("default", "web", "node-1"));
    up(
        &mut t,
        floating_ip("default", "web-fip", "public/pool", "web", None),
    );
    // Pool named without a namespace: the FloatingIp's own (here `public`).
    up(&mut t, pod_on("public", "db", "node-2"));
    up(&mut t, floating_ip("public", "db-fip", "pool2", "db", None));
    t.flush();
    let web = interface(&t, "default", "web", "eth0").expect("web eth0");
    let f = fip_record(&t, "default", "web-fip");
    assert!(in_net(f.ip, "203.0.113.0/24"), "{f:?}");
    assert_eq!(f.pool, "public/pool");
    assert_eq!(f.network.as_deref(), Some("default-domain:k8s-public:ext"));
    assert_eq!((f.pod.as_str(), f.interface.as_str()), ("web", "eth0"));
    assert_eq!(f.fixed_ip, Some(web.ip));
    assert_eq!(f.node.as_deref(), Some("node-1"));
    assert_eq!(f.note, None);
    assert!(f.binding().is_some());
    assert!(t.pending_reason(&fip_key("default", "web-fip")).is_none());
    let db = fip_record(&t, "public", "db-fip");
    assert_eq!(db.pool, "public/pool2");
    assert!(in_net(db.ip, "198.51.100.0/24"), "{db:?}");
    assert_eq!(db.node.as_deref(), Some("node-2"));
    assert_eq!(
        pod_fip_allocations(&t).into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            (db.ip.unwrap(), "FloatingIp public/db-fip".to_string()),
            (f.ip.unwrap(), "FloatingIp default/web-fip".to_string()),
        ])
    );
    // A second FloatingIp in the same pool gets another address; a second flush is idle.
    up(
        &mut t,
        floating_ip("default", "web-fip2", "public/pool", "web", None),
    );
    t.flush();
    let second = fip_record(&t, "default", "web-fip2");
    assert!(second.ip.is_some() && second.ip != f.ip, "{second:?}");
    assert!(t.flush().is_empty());
    assert_no_duplicate_addresses(&t);
}

#[test]
fn pod_fip_fixed_address_inside_outside_and_taken() {
    let mut t = Translator::new();
    public_pools(&mut t);
    up(&mut t, pod_on("default", "web", "node-1"));
    up(
        &mut t,
        floating_ip("default", "fixed", "public/pool", "web", Some("203.0.113.10")),
    );
    t.flush();
    assert_eq!(
        fip_record(&t, "default", "fixed")
            .ip
            .map(|i| i.to_string())
            .as_deref(),
        Some("203.0.113.10")
    );
    // Outside the pool: refused, naming the object, the field, the pool and its range.
    let err = t
        .apply(InputChange::Upsert(obj(floating_ip(
            "default",
            "out",
            "public/pool",
            "web",
            Some("198.51.100.7"),
        ))))
        .unwrap_err();
    assert_eq!(
        (err.object.as_str(), err.field.as_str()),
        ("FloatingIp default/out", "spec.address")
    );
    let text = err.to_string();
    assert!(
        text.contains("203.0.113.0/24") && text.contains("public/pool") && text.contains("198.51.100.7"),
        "{text}"
    );
    // Malformed fields, each named.
    for (value, field) in [
        (
            floating_ip("default", "bad", "public/pool", "web", Some("nope")),
            "spec.address",
        ),
        (
            floating_ip("default", "bad", "public/pool", "Web_1", None),
            "spec.pod",
        ),
        (floating_ip("default", "bad", "a/b/c", "web", None), "spec.pool"),
        (floating_ip("default", "bad", "", "web", None), "spec.pool"),
        (
            {
                let mut v = floating_ip("default", "bad", "public/pool", "web", None);
                v["spec"]["interface"] = json!("eth0/x");
                v
            },
            "spec.interface",
        ),
    ] {
        let err = t.apply(InputChange::Upsert(obj(value))).unwrap_err();
        assert_eq!(err.field, field, "{err}");
        assert_eq!(err.object, "FloatingIp default/bad");
    }
    assert!(t.input(&fip_key("default", "bad")).is_none(), "nothing recorded");
    // Taken by another FloatingIp: pending, naming the holder; freed, it gets it.
    up(
        &mut t,
        floating_ip("default", "second", "public/pool", "web", Some("203.0.113.10")),
    );
    t.flush();
    let reason = t
        .pending_reason(&fip_key("default", "second"))
        .expect("pending")
        .to_string();
    assert!(reason.contains("FloatingIp default/fixed"), "{reason}");
    let second = fip_record(&t, "default", "second");
    assert_eq!(second.ip, None);
    assert!(
        second.note.as_deref().is_some_and(|n| n.contains("not bound")),
        "{second:?}"
    );
    t.apply(InputChange::Delete(fip_key("default", "fixed")))
        .expect("ok");
    t.flush();
    assert_eq!(
        fip_record(&t, "default", "second")
            .ip
            .map(|i| i.to_string())
            .as_deref(),
        Some("203.0.113.10"),
        "retried without being touched"
    );
    assert!(t.pending_reason(&fip_key("default", "second")).is_none());
    // A pool that does not exist yet: accepted, pending; an address outside it is
    // caught when it appears.
    up(
        &mut t,
        floating_ip("default", "early", "public/later", "web", Some("192.0.2.77")),
    );
    t.flush();
    let reason = t
        .pending_reason(&fip_key("default", "early"))
        .expect("pending")
        .to_string();
    assert!(
        reason.contains("waiting for FloatingIpPool public/later"),
        "{reason}"
    );
    up(&mut t, fip_pool_object("later", "ext", json!([])));
    t.flush();
    let reason = t
        .pending_reason(&fip_key("default", "early"))
        .expect("pending")
        .to_string();
    assert!(
        reason.contains("spec.address 192.0.2.77 is outside floating-IP pool public/later"),
        "{reason}"
    );
    assert_eq!(fip_record(&t, "default", "early").ip, None);
    assert_no_duplicate_addresses(&t);
}

#[test]
fn pod_fip_stays_while_the_pod_is_gone_and_follows_it_to_another_node() {
    let mut t = Translator::new();
    public_pools(&mut t);
    // The FloatingIp first: allocated, not bound, not pending.
    up(
        &mut t,
        floating_ip("default", "web-fip", "public/pool", "web", None),
    );
    t.flush();
    let f = fip_record(&t, "default", "web-fip");
    let ip = f.ip.expect("allocated before the pod exists");
    assert_eq!((f.fixed_ip, f.node.as_deref()), (None, None));
    assert!(
        f.note
            .as_deref()
            .is_some_and(|n| n.contains("Pod default/web does not exist")),
        "{f:?}"
    );
    assert!(t.pending_reason(&fip_key("default", "web-fip")).is_none());
    // The pod appears on node-1: bound.
    up(&mut t, pod_on("default", "web", "node-1"));
    t.flush();
    let first = interface(&t, "default", "web", "eth0").expect("eth0");
    let f = fip_record(&t, "default", "web-fip");
    assert_eq!(f.binding(), Some((ip, first.ip, "node-1")));
    // The pod deleted: unbound, the address kept and still held.
    t.apply(InputChange::Delete(InputKey::namespaced(
        InputKind::Pod,
        "default",
        "web",
    )))
    .expect("ok");
    t.flush();
    let f = fip_record(&t, "default", "web-fip");
    assert_eq!(f.ip, Some(ip));
    assert_eq!((f.fixed_ip, f.node.as_deref()), (None, None));
    assert!(
        f.note.as_deref().is_some_and(|n| n.contains("does not exist")),
        "{f:?}"
    );
    assert_eq!(
        pod_fip_allocations(&t),
        vec![(ip, "FloatingIp default/web-fip".to_string())]
    );
    // Another pod takes the freed pod address meanwhile; the pod comes back on node-2
    // with a new address: the same floating IP binds to the new interface.
    up(&mut t, pod_on("default", "other", "node-1"));
    t.flush();
    up(&mut t, pod_on("default", "web", "node-2"));
    t.flush();
    let second = interface(&t, "default", "web", "eth0").expect("eth0");
    assert_ne!(second.ip, first.ip);
    let f = fip_record(&t, "default", "web-fip");
    assert_eq!(f.binding(), Some((ip, second.ip, "node-2")));
    assert_eq!(f.note, None);
    // Unscheduled, or naming an interface the pod lacks: unbound with a reason.
    let mut unscheduled = pod_on("default", "web", "node-2");
    unscheduled["spec"].as_object_mut().unwrap().remove("nodeName");
    up(&mut t, unscheduled);
    t.flush();
    let f = fip_record(&t, "default", "web-fip");
    assert_eq!(f.binding(), None);
    assert!(
        f.note.as_deref().is_some_and(|n| n.contains("not scheduled")),
        "{f:?}"
    );
    let mut on_net1 = floating_ip("default", "web-fip", "public/pool", "web", None);
    on_net1["spec"]["interface"] = json!("net1");
    up(&mut t, on_net1);
    t.flush();
    let f = fip_record(&t, "default", "web-fip");
    assert_eq!(f.ip, Some(ip), "the interface changed, not the address");
    assert!(
        f.note
            .as_deref()
            .is_some_and(|n| n.contains("no interface net1") && n.contains("eth0")),
        "{f:?}"
    );
    assert_no_duplicate_addresses(&t);
}

#[test]
fn pod_fip_is_freed_on_delete_and_on_pool_or_address_change() {
    let mut t = Translator::new();
    public_pools(&mut t);
    up(&mut t, pod_on("default", "web", "node-1"));
    up(
        &mut t,
        floating_ip("default", "web-fip", "public/pool", "web", None),
    );
    t.flush();
    let first = fip_record(&t, "default", "web-fip").ip.expect("ip");
    // Address change: the fixed one, the old freed.
    up(
        &mut t,
        floating_ip("default", "web-fip", "public/pool", "web", Some("203.0.113.9")),
    );
    t.flush();
    let fixed: std::net::IpAddr = "203.0.113.9".parse().unwrap();
    assert_ne!(first, fixed);
    assert_eq!(fip_record(&t, "default", "web-fip").ip, Some(fixed));
    assert_eq!(
        pod_fip_allocations(&t),
        vec![(fixed, "FloatingIp default/web-fip".to_string())]
    );
    // Pool change: an address of the new pool's network, the old freed.
    up(
        &mut t,
        floating_ip("default", "web-fip", "public/pool2", "web", None),
    );
    t.flush();
    let f = fip_record(&t, "default", "web-fip");
    assert!(in_net(f.ip, "198.51.100.0/24"), "{f:?}");
    assert_eq!(f.network.as_deref(), Some("default-domain:k8s-public:ext2"));
    assert_eq!(pod_fip_allocations(&t).len(), 1);
    assert_eq!(f.binding().map(|b| b.2), Some("node-1"));
    // Its pool deleted: freed and pending; the pool back: allocated again.
    t.apply(InputChange::Delete(InputKey::namespaced(
        InputKind::FloatingIpPool,
        "public",
        "pool2",
    )))
    .expect("ok");
    t.flush();
    assert!(pod_fip_allocations(&t).is_empty());
    assert_eq!(fip_record(&t, "default", "web-fip").ip, None);
    assert!(t.pending_reason(&fip_key("default", "web-fip")).is_some());
    up(&mut t, fip_pool_object("pool2", "ext2", json!([])));
    t.flush();
    assert!(in_net(fip_record(&t, "default", "web-fip").ip, "198.51.100.0/24"));
    // The FloatingIp deleted: record gone, address free, nothing pending.
    t.apply(InputChange::Delete(fip_key("default", "web-fip")))
        .expect("ok");
    let changes = t.flush();
    assert!(
        changes.contains(&DerivedChange::Delete(
            DerivedKind::FloatingIp,
            "default/web-fip".into()
        )),
        "{changes:?}"
    );
    assert!(t.derived(DerivedKind::FloatingIp).next().is_none());
    assert!(pod_fip_allocations(&t).is_empty());
    assert!(t.pending_reason(&fip_key("default", "web-fip")).is_none());
    assert_no_duplicate_addresses(&t);
}

#[test]
fn pod_fip_restore_keeps_the_address_and_the_binding() {
    let mut t = Translator::new();
    public_pools(&mut t);
    up(&mut t, pod_on("default", "web", "node-1"));
    up(
        &mut t,
        floating_ip("default", "bound", "public/pool", "web", None),
    );
    // One without its pod: restored allocated, still unbound.
    up(
        &mut t,
        floating_ip("default", "idle", "public/pool", "gone", None),
    );
    t.flush();
    let bound = fip_record(&t, "default", "bound");
    let idle = fip_record(&t, "default", "idle");
    assert!(bound.binding().is_some() && idle.ip.is_some() && idle.binding().is_none());
    let inputs: Vec<InputObject> = t.inputs().cloned().collect();
    let derived: Vec<DerivedObject> = DerivedKind::ALL
        .iter()
        .flat_map(|k| t.derived(*k).cloned().collect::<Vec<_>>())
        .collect();
    let (mut r, notes) = Translator::restore(inputs, derived);
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(
        pod_fip_allocations(&r),
        pod_fip_allocations(&t),
        "re-reserved for their owners"
    );
    assert!(r.flush().is_empty(), "restore + resync must not change anything");
    assert_eq!(fip_record(&r, "default", "bound"), bound);
    assert_eq!(fip_record(&r, "default", "idle"), idle);
    // New allocations after the restore do not collide with the restored ones.
    up(
        &mut r,
        floating_ip("default", "third", "public/pool", "web", None),
    );
    up(
        &mut r,
        lb(
            "default",
            "svc",
            json!({"opencontrail.org/fip-pool": fip_ref("ext", "pool")}),
            None,
        ),
    );
    r.flush();
    let third = fip_record(&r, "default", "third").ip.expect("ip");
    assert!(third != bound.ip.unwrap() && Some(third) != idle.ip);
    assert_no_duplicate_addresses(&r);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
    /// Random sequences of pod/namespace creations and deletions never produce a
    /// duplicate address, and pools hold exactly the stored objects' addresses.
    #[test]
    fn random_churn_keeps_ipam_consistent(ops in proptest::collection::vec((0u8..4, 0u8..6, 0u8..30), 1..120)) {
        let mut t = Translator::new();
        for (op, n, p) in ops {
            let nsname = format!("n{n}");
            match op {
                0 | 1 => { up(&mut t, pod(&nsname, &format!("p{p}"), json!({}))); }
                2 => { let _ = t.apply(InputChange::Delete(InputKey::namespaced(InputKind::Pod, &nsname, &format!("p{p}")))); }
                _ => {
                    let iso = if p % 2 == 0 { json!({"opencontrail.org/isolation": "true"}) } else { json!({}) };
                    up(&mut t, ns(&nsname, iso));
                }
            }
            if p % 3 == 0 { t.flush(); }
        }
        t.flush();
        assert_no_duplicate_addresses(&t);
    }
}
