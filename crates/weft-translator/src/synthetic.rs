//! Synthetic clusters for benchmarks and scale tests: `pods` pods spread over
//! `namespaces` namespaces (the first `isolated` of them isolated) and `services`
//! services selecting them, as Kubernetes manifests.

use serde_json::{Value, json};

/// Manifests of a synthetic cluster, namespaces first.
pub fn cluster_manifests(pods: usize, namespaces: usize, isolated: usize, services: usize) -> Vec<Value> {
    let namespaces = namespaces.max(1);
    let mut out = Vec::with_capacity(pods + namespaces + services);
    for n in 0..namespaces {
        let ann = if n < isolated {
            json!({"opencontrail.org/isolation": "true"})
        } else {
            json!({})
        };
        out.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("ns-{n}"), "annotations": ann}}));
    }
    for p in 0..pods {
        out.push(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("pod-{p}"), "namespace": format!("ns-{}", p % namespaces), "labels": {"app": format!("app-{}", p % 20)}},
            "spec": {"nodeName": format!("node-{}", p % 50), "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80}]}]}}));
    }
    for s in 0..services {
        out.push(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("svc-{s}"), "namespace": format!("ns-{}", s % namespaces)},
            "spec": {"selector": {"app": format!("app-{}", s % 20)}, "ports": [{"port": 80, "targetPort": 80}]}}));
    }
    out
}
