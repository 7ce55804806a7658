//! The pure decision ([`plan`]) and the writer's memory, without a server.

use std::sync::Mutex;

use serde_json::{Value, json};

use super::*;

fn service(ns: &str, name: &str, type_: &str, ingress: &[&str]) -> Service {
    let ingress: Vec<Value> = ingress.iter().map(|ip| json!({"ip": ip})).collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "resourceVersion": "7"},
        "spec": {"type": type_, "ports": [{"port": 80}]},
        "status": if ingress.is_empty() { json!({"loadBalancer": {}}) } else { json!({"loadBalancer": {"ingress": ingress}}) },
    }))
    .expect("service")
}

fn record(ns: &str, name: &str, type_: &str, fips: &[&str]) -> ServiceRecord {
    serde_json::from_value(json!({
        "namespace": ns, "name": name, "service_type": type_, "network": "default-domain:k8s-default:k8s-default-service-network",
        "ports": [], "session_affinity": "None", "external_ips": [], "backends": [], "backends_from": "selector",
        "floating_ips": fips,
    }))
    .expect("service record")
}

fn pod(ns: &str, name: &str, node: Option<&str>, annotations: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "uid": "u-1", "resourceVersion": "9", "annotations": annotations},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]},
    }))
    .expect("pod")
}

fn attachment(
    ns: &str,
    pod: &str,
    ifname: &str,
    network: &str,
    ip: &str,
    primary: bool,
) -> InterfaceAttachment {
    serde_json::from_value(json!({
        "namespace": ns, "pod": pod, "pod_uid": "u-1", "node": "node-1", "interface": ifname,
        "network": network, "ip": ip, "prefix_len": 24, "mac": if primary { "02:00:00:00:00:01" } else { "02:00:00:00:00:02" },
        "primary": primary,
    }))
    .expect("interface attachment")
}

const POD_NET: &str = "default-domain:k8s-default:k8s-default-pod-network";

#[test]
fn load_balancer_with_floating_ips_gets_ingress() {
    let svc = service("web", "front", "LoadBalancer", &[]);
    let rec = record("web", "front", "LoadBalancer", &["203.0.113.10", "203.0.113.11"]);
    let patches = plan([&svc], [], [&rec], []);
    assert_eq!(
        patches,
        vec![StatusPatch::ServiceIngress {
            namespace: "web".into(),
            name: "front".into(),
            ips: vec![
                "203.0.113.10".parse().expect("ip"),
                "203.0.113.11".parse().expect("ip")
            ],
            resource_version: Some("7".into()),
        }]
    );
    assert_eq!(
        patches[0].body(),
        json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}, {"ip": "203.0.113.11"}]}}})
    );
    assert_eq!(patches[0].target(), "services/web/front");
}

#[test]
fn ingress_is_cleared_when_the_floating_ip_goes_or_the_type_changes() {
    // Pool removed: the record has no floating IPs any more.
    let svc = service("web", "front", "LoadBalancer", &["203.0.113.10"]);
    let rec = record("web", "front", "LoadBalancer", &[]);
    let patches = plan([&svc], [], [&rec], []);
    assert_eq!(patches.len(), 1);
    assert_eq!(
        patches[0].body(),
        json!({"status": {"loadBalancer": {"ingress": null}}})
    );
    // Type changed to ClusterIP, the old ingress still shown.
    let svc = service("web", "front", "ClusterIP", &["203.0.113.10"]);
    let rec = record("web", "front", "ClusterIP", &[]);
    assert_eq!(plan([&svc], [], [&rec], []).len(), 1);
    // Service with no record at all (not translated): cleared too.
    assert_eq!(plan([&svc], [], [], []).len(), 1);
}

#[test]
fn nothing_is_written_when_kubernetes_already_shows_it() {
    let svc = service("web", "front", "LoadBalancer", &["203.0.113.10"]);
    let rec = record("web", "front", "LoadBalancer", &["203.0.113.10"]);
    assert!(plan([&svc], [], [&rec], []).is_empty());
    // No ingress wanted, none shown.
    let plain = service("web", "api", "ClusterIP", &[]);
    assert!(plan([&plain], [], [&record("web", "api", "ClusterIP", &[])], []).is_empty());
    // A pod whose annotation already matches (key order and spacing do not matter).
    let ifs = [attachment("web", "p", "eth0", POD_NET, "10.32.0.5", true)];
    let shown = format!(
        r#"[ {{"dns": {{}}, "default": true, "mac": "02:00:00:00:00:01", "ips": ["10.32.0.5"], "interface": "eth0", "name": "{POD_NET}"}} ]"#
    );
    let p = pod(
        "web",
        "p",
        Some("node-1"),
        json!({NETWORK_STATUS_ANNOTATION: shown}),
    );
    assert!(plan([], [&p], [], &ifs).is_empty());
}

#[test]
fn services_of_another_load_balancer_class_are_left_alone() {
    let mut svc = service("web", "front", "LoadBalancer", &["198.51.100.1"]);
    if let Some(spec) = svc.spec.as_mut() {
        spec.load_balancer_class = Some("metallb.io/metallb".into());
    }
    assert!(plan([&svc], [], [&record("web", "front", "LoadBalancer", &[])], []).is_empty());
}

#[test]
fn two_interface_pod_gets_multus_network_status() {
    let p = pod(
        "web",
        "fw",
        Some("node-1"),
        json!({"k8s.v1.cni.cncf.io/networks": "blue", "other": "kept"}),
    );
    let ifs = [
        attachment(
            "web",
            "fw",
            "net1",
            "default-domain:k8s-web:blue",
            "10.1.0.3",
            false,
        ),
        attachment("web", "fw", "eth0", POD_NET, "10.32.0.5", true),
    ];
    let patches = plan([], [&p], [], &ifs);
    assert_eq!(patches.len(), 1);
    let StatusPatch::PodNetworkStatus { value, .. } = &patches[0] else {
        panic!("expected a pod patch, got {patches:?}");
    };
    let parsed: Value = serde_json::from_str(value).expect("annotation is JSON");
    assert_eq!(
        parsed,
        json!([
            {"name": POD_NET, "interface": "eth0", "ips": ["10.32.0.5"], "mac": "02:00:00:00:00:01", "default": true, "dns": {}},
            {"name": "web/blue", "interface": "net1", "ips": ["10.1.0.3"], "mac": "02:00:00:00:00:02", "dns": {}},
        ])
    );
    // Only that annotation is in the merge patch.
    assert_eq!(
        patches[0].body(),
        json!({"metadata": {"annotations": {NETWORK_STATUS_ANNOTATION: value}}})
    );
    assert_eq!(patches[0].target(), "pods/web/fw");
}

#[test]
fn json_network_request_names_interfaces_and_namespaces() {
    let p = pod(
        "web",
        "fw",
        Some("node-1"),
        json!({"k8s.v1.cni.cncf.io/networks": r#"[{"name": "red", "namespace": "infra", "interface": "left"}]"#}),
    );
    let ifs = [
        attachment("web", "fw", "eth0", POD_NET, "10.32.0.5", true),
        attachment(
            "web",
            "fw",
            "left",
            "default-domain:k8s-infra:red",
            "10.2.0.3",
            false,
        ),
    ];
    let status = network_status(&p, &ifs.iter().collect::<Vec<_>>());
    assert_eq!(status[1]["name"], "infra/red");
    assert_eq!(status[1]["interface"], "left");
}

#[test]
fn unscheduled_terminating_and_interfaceless_pods_are_skipped() {
    let ifs = [attachment("web", "p", "eth0", POD_NET, "10.32.0.5", true)];
    let pending = pod("web", "p", None, json!({}));
    assert!(plan([], [&pending], [], &ifs).is_empty());
    let mut leaving = pod("web", "p", Some("node-1"), json!({}));
    leaving.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    ));
    assert!(plan([], [&leaving], [], &ifs).is_empty());
    let bare = pod("web", "q", Some("node-1"), json!({}));
    assert!(plan([], [&bare], [], &ifs).is_empty());
    // Attachments of an earlier pod with the same name (other uid) are not this pod's.
    let mut reborn = pod("web", "p", Some("node-1"), json!({}));
    reborn.metadata.uid = Some("u-2".into());
    assert!(plan([], [&reborn], [], &ifs).is_empty());
}

/// Records patches; answers with the errors queued per target.
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<StatusPatch>>,
    fail: Mutex<BTreeMap<String, u16>>,
}

impl StatusSink for Recorder {
    async fn send(&self, patch: &StatusPatch) -> Result<(), StatusError> {
        self.sent.lock().expect("lock").push(patch.clone());
        let target = patch.target();
        match self.fail.lock().expect("lock").get(&target) {
            None => Ok(()),
            Some(404) => Err(StatusError::NotFound { target }),
            Some(_) => Err(StatusError::Forbidden {
                target,
                permission: patch.permission(),
                message: "forbidden".into(),
            }),
        }
    }
}

#[tokio::test]
async fn writer_sends_once_per_version_and_retries_failures() {
    let svc = service("web", "front", "LoadBalancer", &[]);
    let rec = record("web", "front", "LoadBalancer", &["203.0.113.10"]);
    let mut writer = StatusWriter::new(Recorder::default());
    let report = writer.write(plan([&svc], [], [&rec], [])).await;
    assert_eq!(report.written, 1);
    // The watch has not delivered the new status yet: same plan, not sent again.
    let report = writer.write(plan([&svc], [], [&rec], [])).await;
    assert_eq!((report.written, report.already_sent), (0, 1));
    // The watch delivers it: nothing planned, nothing sent.
    let shown = service("web", "front", "LoadBalancer", &["203.0.113.10"]);
    assert!(plan([&shown], [], [&rec], []).is_empty());
    assert_eq!(writer.sink().sent.lock().expect("lock").len(), 1);

    // Forbidden: reported as failed and sent again next pass.
    let other = service("web", "other", "LoadBalancer", &[]);
    let rec2 = record("web", "other", "LoadBalancer", &["203.0.113.11"]);
    writer
        .sink()
        .fail
        .lock()
        .expect("lock")
        .insert("services/web/other".into(), 403);
    assert_eq!(writer.write(plan([&other], [], [&rec2], [])).await.failed, 1);
    assert_eq!(writer.write(plan([&other], [], [&rec2], [])).await.failed, 1);
    // 404: the object is gone; not an error, not retried for the same version.
    writer
        .sink()
        .fail
        .lock()
        .expect("lock")
        .insert("services/web/other".into(), 404);
    assert_eq!(writer.write(plan([&other], [], [&rec2], [])).await.gone, 1);
    assert_eq!(
        writer.write(plan([&other], [], [&rec2], [])).await.already_sent,
        1
    );
}
