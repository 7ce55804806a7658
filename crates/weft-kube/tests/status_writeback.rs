//! The write side ([`weft_kube::status`]) against the fake API server: the patches kube-rs
//! sends for a LoadBalancer's ingress and a pod's network-status, what the server makes
//! of them, that a second pass on the updated objects sends nothing, and how 404 and 403
//! are handled.

mod support;

use k8s_openapi::api::core::v1::{Pod, Service};
use serde_json::{Value, json};
use support::FakeApiServer;
use weft_kube::status::{NETWORK_STATUS_ANNOTATION, plan};
use weft_kube::{KubeStatusSink, StatusWriter};
use weft_model::{InterfaceAttachment, ServiceRecord};

const POD_NET: &str = "default-domain:k8s-default:k8s-default-pod-network";

fn lb_service() -> Value {
    json!({
        "metadata": {"name": "front", "namespace": "web"},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.20", "ports": [{"port": 80, "protocol": "TCP"}]},
        "status": {"loadBalancer": {}}
    })
}

fn pod() -> Value {
    json!({
        "metadata": {"name": "fw", "namespace": "web", "uid": "u-1",
                     "annotations": {"k8s.v1.cni.cncf.io/networks": "blue", "team": "net"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "x"}]}
    })
}

fn record(fips: &[&str]) -> ServiceRecord {
    serde_json::from_value(json!({
        "namespace": "web", "name": "front", "service_type": "LoadBalancer",
        "network": "default-domain:k8s-default:k8s-default-service-network", "ports": [],
        "session_affinity": "None", "external_ips": [], "backends": [], "backends_from": "selector",
        "floating_ips": fips,
    }))
    .expect("service record")
}

fn attachments(pod: &str) -> Vec<InterfaceAttachment> {
    [
        ("eth0", POD_NET, "10.32.0.5", "02:00:00:00:00:01", true),
        (
            "net1",
            "default-domain:k8s-web:blue",
            "10.1.0.3",
            "02:00:00:00:00:02",
            false,
        ),
    ]
    .into_iter()
    .map(|(ifname, network, ip, mac, primary)| {
        serde_json::from_value(json!({
            "namespace": "web", "pod": pod, "pod_uid": "u-1", "node": "node-1", "interface": ifname,
            "network": network, "ip": ip, "prefix_len": 24, "mac": mac, "primary": primary,
        }))
        .expect("attachment")
    })
    .collect()
}

/// The objects as the server has them now (what the watch would deliver).
fn current(server: &FakeApiServer) -> (Service, Pod) {
    let service = server.object("services", "web/front").expect("service stored");
    let pod = server.object("pods", "web/fw").expect("pod stored");
    (
        serde_json::from_value(service).expect("Service decodes"),
        serde_json::from_value(pod).expect("Pod decodes"),
    )
}

#[tokio::test]
async fn ingress_and_network_status_are_patched_once_then_left_alone() {
    let server = FakeApiServer::start().await;
    server.apply("services", lb_service());
    server.apply("pods", pod());
    let mut writer = StatusWriter::new(KubeStatusSink::new(server.client()));
    let rec = record(&["203.0.113.10"]);
    let ifs = attachments("fw");

    let (service, pod) = current(&server);
    let report = writer.write(plan([&service], [&pod], [&rec], &ifs)).await;
    assert_eq!((report.written, report.failed), (2, 0), "{report:?}");

    let patches = server.patches();
    assert_eq!(patches.len(), 2, "{patches:#?}");
    assert_eq!(patches[0].path, "/api/v1/namespaces/web/services/front/status");
    assert_eq!(patches[0].content_type, "application/merge-patch+json");
    assert_eq!(
        patches[0].body,
        json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}})
    );
    assert_eq!(patches[1].path, "/api/v1/namespaces/web/pods/fw");
    assert_eq!(patches[1].content_type, "application/merge-patch+json");
    let annotations = patches[1].body["metadata"]["annotations"]
        .as_object()
        .expect("annotations in the patch");
    assert_eq!(
        annotations.keys().collect::<Vec<_>>(),
        [NETWORK_STATUS_ANNOTATION],
        "only the one annotation is patched"
    );
    let status: Value = serde_json::from_str(
        annotations[NETWORK_STATUS_ANNOTATION]
            .as_str()
            .expect("annotation is a string"),
    )
    .expect("network-status is JSON");
    assert_eq!(
        status,
        json!([
            {"name": POD_NET, "interface": "eth0", "ips": ["10.32.0.5"], "mac": "02:00:00:00:00:01", "default": true, "dns": {}},
            {"name": "web/blue", "interface": "net1", "ips": ["10.1.0.3"], "mac": "02:00:00:00:00:02", "dns": {}},
        ])
    );

    // The server applied them; other annotations are kept.
    let (service, pod) = current(&server);
    let shown = serde_json::to_value(&service).expect("encode");
    assert_eq!(
        shown["status"]["loadBalancer"]["ingress"],
        json!([{"ip": "203.0.113.10"}])
    );
    let pod_annotations = pod.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(pod_annotations.get("team").map(String::as_str), Some("net"));
    assert!(pod_annotations.contains_key(NETWORK_STATUS_ANNOTATION));

    // The watch delivers the written objects: the next pass has nothing to send.
    assert!(plan([&service], [&pod], [&rec], &ifs).is_empty());
    let report = writer.write(plan([&service], [&pod], [&rec], &ifs)).await;
    assert_eq!(report.written, 0);
    assert_eq!(server.patches().len(), 2);

    // The floating IP goes: the ingress is removed.
    let report = writer.write(plan([&service], [&pod], [&record(&[])], &ifs)).await;
    assert_eq!(report.written, 1);
    assert_eq!(
        server.patches()[2].body,
        json!({"status": {"loadBalancer": {"ingress": null}}})
    );
    let (service, _) = current(&server);
    let shown = serde_json::to_value(&service).expect("encode");
    assert!(
        shown["status"]["loadBalancer"].get("ingress").is_none(),
        "{shown}"
    );
}

#[tokio::test]
async fn gone_objects_are_ignored_and_forbidden_writes_retried() {
    let server = FakeApiServer::start().await;
    server.apply("services", lb_service());
    let mut writer = StatusWriter::new(KubeStatusSink::new(server.client()));
    // A pod the server does not have (deleted meanwhile): 404, not a failure.
    let ghost: Pod = serde_json::from_value(pod()).expect("pod");
    let ifs = attachments("fw");
    let report = writer.write(plan([], [&ghost], [], &ifs)).await;
    assert_eq!((report.gone, report.failed), (1, 0), "{report:?}");

    // No RBAC permission on services/status: a failure, sent again on the next pass.
    server.fail_patches("/api/v1/namespaces/web/services/front/status", 403);
    let service: Service =
        serde_json::from_value(server.object("services", "web/front").expect("stored")).expect("decodes");
    let rec = record(&["203.0.113.10"]);
    let report = writer.write(plan([&service], [], [&rec], [])).await;
    assert_eq!(report.failed, 1, "{report:?}");
    let report = writer.write(plan([&service], [], [&rec], [])).await;
    assert_eq!(report.failed, 1, "{report:?}");
    let sent = server
        .patches()
        .iter()
        .filter(|p| p.path.ends_with("/front/status"))
        .count();
    assert_eq!(sent, 2);
}
