//! End-to-end tests of [`KubeSource::run`] against a fake Kubernetes API server that
//! speaks the list/watch protocol with real Kubernetes JSON (see `support`): kube-rs'
//! watcher runs unmodified over HTTP, and the tests check the [`KubeEvent`]s that come
//! out — snapshots, changes, bookmarks, `410 Gone` relists, decode errors and CRDs.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use support::{DEADLINE, FakeApiServer};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use weft_kube::{KubeError, KubeEvent, KubeSource};
use weft_model::{InputChange, InputKey, InputKind, InputObject};

/// `KubeSource::run` on a fake server, and the events it sends, sorted by kind.
struct Harness {
    server: FakeApiServer,
    rx: mpsc::Receiver<KubeEvent>,
    /// Events already received while waiting for another kind, per kind, in order.
    pending: HashMap<InputKind, Vec<KubeEvent>>,
    run: JoinHandle<Result<(), KubeError>>,
}

impl Harness {
    fn start(server: FakeApiServer) -> Self {
        let source = KubeSource::from_client(server.client());
        Self::with_source(server, source)
    }

    fn with_source(server: FakeApiServer, source: KubeSource) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let run = tokio::spawn(source.run(tx));
        Self {
            server,
            rx,
            pending: HashMap::new(),
            run,
        }
    }

    /// The next event about `kind`; fails the test after [`DEADLINE`].
    async fn next(&mut self, kind: InputKind) -> KubeEvent {
        if let Some(queue) = self.pending.get_mut(&kind)
            && !queue.is_empty()
        {
            return queue.remove(0);
        }
        let (rx, pending) = (&mut self.rx, &mut self.pending);
        let wait = async {
            loop {
                match rx.recv().await {
                    Some(event) if event.kind() == kind => return event,
                    Some(event) => pending.entry(event.kind()).or_default().push(event),
                    None => panic!("KubeSource::run closed its channel"),
                }
            }
        };
        tokio::time::timeout(DEADLINE, wait).await.unwrap_or_else(|_| {
            panic!(
                "no {kind} event within {DEADLINE:?}; requests: {:#?}",
                self.server.requests()
            )
        })
    }

    async fn snapshot(&mut self, kind: InputKind) -> Vec<InputObject> {
        match self.next(kind).await {
            KubeEvent::Snapshot { kind: k, objects } if k == kind => objects,
            other => panic!("expected a {kind} Snapshot, got {other:?}"),
        }
    }

    async fn change(&mut self, kind: InputKind) -> InputChange {
        match self.next(kind).await {
            KubeEvent::Change(change) => change,
            other => panic!("expected a {kind} Change, got {other:?}"),
        }
    }

    async fn upsert(&mut self, kind: InputKind) -> InputObject {
        match self.change(kind).await {
            InputChange::Upsert(object) => object,
            other => panic!("expected a {kind} Upsert, got {other:?}"),
        }
    }

    async fn watch_error(&mut self, kind: InputKind) -> String {
        match self.next(kind).await {
            KubeEvent::WatchError { kind: k, message } if k == kind => message,
            other => panic!("expected a {kind} WatchError, got {other:?}"),
        }
    }
}

/// The sorted `namespace/name`s of `objects`.
fn names(objects: &[InputObject]) -> Vec<String> {
    let mut names: Vec<String> = objects.iter().map(|o| o.key().qualified_name()).collect();
    names.sort();
    names
}

fn namespace(name: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
           "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
}

fn node(name: &str, ip: &str) -> Value {
    json!({"metadata": {"name": name},
           "spec": {"podCIDR": "10.244.0.0/24"},
           "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]}})
}

fn pod(ns: &str, name: &str, ip: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name},
                     "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1"}]},
        "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "nginx:1.27",
                                                   "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
    })
}

fn service(ns: &str, name: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                 "selector": {"app": name},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}
    })
}

fn endpoint_slice(ns: &str, name: &str, service: &str, ip: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}, "nodeName": "n1"}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    })
}

fn network_policy(ns: &str, name: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": ns},
           "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})
}

fn virtual_network(ns: &str, name: &str, subnet: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": ns, "generation": 1},
           "spec": {"subnets": [subnet]}})
}

#[tokio::test]
async fn initial_list_becomes_one_snapshot_per_kind() {
    let server = FakeApiServer::start().await;
    server.apply("namespaces", namespace("dev"));
    server.apply("namespaces", namespace("prod"));
    server.apply("nodes", node("n1", "192.0.2.10"));
    server.apply("pods", pod("dev", "web", "10.244.0.5"));
    server.apply("pods", pod("prod", "db", "10.244.0.6"));
    server.apply("services", service("dev", "web"));
    server.apply(
        "endpointslices",
        endpoint_slice("dev", "web-x7k2p", "web", "10.244.0.5"),
    );
    let listed_at = server.apply("networkpolicies", network_policy("dev", "deny-all"));
    let mut h = Harness::start(server);

    assert_eq!(names(&h.snapshot(InputKind::Namespace).await), ["dev", "prod"]);
    assert_eq!(names(&h.snapshot(InputKind::Node).await), ["n1"]);
    let pods = h.snapshot(InputKind::Pod).await;
    assert_eq!(names(&pods), ["dev/web", "prod/db"]);
    let Some(InputObject::Pod(web)) = pods.iter().find(|p| p.key().name == "web") else {
        panic!("no Pod web in {pods:?}");
    };
    assert_eq!(
        web.spec.as_ref().map(|s| s.containers[0].name.as_str()),
        Some("app")
    );
    assert_eq!(
        web.status.as_ref().and_then(|s| s.pod_ip.as_deref()),
        Some("10.244.0.5")
    );
    assert!(web.metadata.managed_fields.is_none(), "managedFields are dropped");
    assert_eq!(names(&h.snapshot(InputKind::Service).await), ["dev/web"]);
    let slices = h.snapshot(InputKind::EndpointSlice).await;
    assert_eq!(names(&slices), ["dev/web-x7k2p"]);
    let Some(InputObject::EndpointSlice(slice)) = slices.first() else {
        panic!("{slices:?}")
    };
    assert_eq!(slice.endpoints[0].addresses, ["10.244.0.5"]);
    assert_eq!(
        names(&h.snapshot(InputKind::NetworkPolicy).await),
        ["dev/deny-all"]
    );

    // weft's CRDs and the NAD are not installed on this server: reported, not fatal.
    for kind in [
        InputKind::ClusterConfig,
        InputKind::VirtualNetwork,
        InputKind::FloatingIpPool,
        InputKind::NetworkAttachmentDefinition,
    ] {
        let message = h.watch_error(kind).await;
        assert!(
            message.contains("404") && message.contains("CRD"),
            "{kind}: {message}"
        );
        assert!(
            message.contains(&weft_kube::collection_path(kind)),
            "{kind}: {message}"
        );
    }

    // kube-rs lists in pages of 500. It drops `resourceVersion=0` (the "any" semantic)
    // whenever a page limit is set, so the list is a consistent read, and then watches
    // from the list's resourceVersion with bookmarks.
    let watches = h.server.wait_for_watches("pods", 1).await;
    let list = &h.server.requests_for("pods")[0];
    assert_eq!(list.path, "/api/v1/pods");
    assert!(!list.is_watch());
    assert_eq!(list.param("limit"), Some("500"));
    assert_eq!(list.param("resourceVersion"), None);
    assert_eq!(
        watches[0].param("resourceVersion"),
        Some(listed_at.to_string().as_str())
    );
    assert_eq!(watches[0].param("allowWatchBookmarks"), Some("true"));
    let slice_paths: Vec<String> = h
        .server
        .requests_for("endpointslices")
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert!(
        slice_paths
            .iter()
            .all(|p| p == "/apis/discovery.k8s.io/v1/endpointslices"),
        "{slice_paths:?}"
    );
}

#[tokio::test]
async fn added_modified_and_deleted_become_changes() {
    let server = FakeApiServer::start().await;
    server.apply("namespaces", namespace("dev"));
    let mut h = Harness::start(server);
    assert_eq!(names(&h.snapshot(InputKind::Pod).await), Vec::<String>::new());
    assert_eq!(names(&h.snapshot(InputKind::Namespace).await), ["dev"]);
    h.server.wait_for_watches("pods", 1).await;

    // ADDED
    h.server.apply("pods", pod("dev", "web", "10.244.0.5"));
    let added = h.upsert(InputKind::Pod).await;
    assert_eq!(added.key(), InputKey::namespaced(InputKind::Pod, "dev", "web"));

    // MODIFIED
    let mut changed = pod("dev", "web", "10.244.0.5");
    changed["metadata"]["labels"]["tier"] = "frontend".into();
    let rv = h.server.apply("pods", changed);
    let modified = h.upsert(InputKind::Pod).await;
    assert_eq!(modified.key(), added.key());
    let labels = modified.metadata().labels.clone().unwrap_or_default();
    assert_eq!(labels.get("tier").map(String::as_str), Some("frontend"));
    assert_eq!(
        modified.metadata().resource_version.as_deref(),
        Some(rv.to_string().as_str())
    );

    // DELETED
    h.server.delete("pods", "dev/web");
    assert_eq!(h.change(InputKind::Pod).await, InputChange::Delete(added.key()));

    // A cluster-scoped kind, and one outside the core group.
    h.server.wait_for_watches("namespaces", 1).await;
    h.server.delete("namespaces", "dev");
    assert_eq!(
        h.change(InputKind::Namespace).await,
        InputChange::Delete(InputKey::cluster(InputKind::Namespace, "dev"))
    );
    h.snapshot(InputKind::EndpointSlice).await;
    h.server.wait_for_watches("endpointslices", 1).await;
    h.server.apply(
        "endpointslices",
        endpoint_slice("dev", "web-x7k2p", "web", "10.244.0.5"),
    );
    let slice = h.upsert(InputKind::EndpointSlice).await;
    assert_eq!(
        slice.key(),
        InputKey::namespaced(InputKind::EndpointSlice, "dev", "web-x7k2p")
    );
}

#[tokio::test]
async fn a_paginated_list_is_one_snapshot() {
    let server = FakeApiServer::start().await;
    for i in 0..1201 {
        server.apply("namespaces", namespace(&format!("ns-{i:04}")));
    }
    let mut h = Harness::start(server);
    let namespaces = h.snapshot(InputKind::Namespace).await;
    assert_eq!(namespaces.len(), 1201);
    assert_eq!(names(&namespaces)[1200], "ns-1200");
    let lists: Vec<_> = h
        .server
        .requests_for("namespaces")
        .into_iter()
        .filter(|r| !r.is_watch())
        .collect();
    assert_eq!(lists.len(), 3, "{lists:#?}");
    assert_eq!(lists[0].param("continue"), None);
    assert!(lists[1].param("continue").is_some() && lists[2].param("continue").is_some());
}

#[tokio::test]
async fn bookmark_is_silent_and_the_next_watch_resumes_from_it() {
    let server = FakeApiServer::start().await;
    server.apply("pods", pod("dev", "web", "10.244.0.5"));
    let mut h = Harness::start(server);
    assert_eq!(names(&h.snapshot(InputKind::Pod).await), ["dev/web"]);
    h.server.wait_for_watches("pods", 1).await;

    let bookmark = h.server.bookmark("pods");
    // The server ends the watch (as at timeoutSeconds): kube-rs re-watches from the
    // bookmark's resourceVersion, without a relist.
    h.server.close_watches("pods");
    let watches = h.server.wait_for_watches("pods", 2).await;
    assert_eq!(
        watches[1].param("resourceVersion"),
        Some(bookmark.to_string().as_str())
    );
    let lists = h
        .server
        .requests_for("pods")
        .into_iter()
        .filter(|r| !r.is_watch())
        .count();
    assert_eq!(lists, 1, "a bookmark must not cause a relist");

    // The bookmark produced no event: the next Pod event is this change.
    h.server.apply("pods", pod("dev", "api", "10.244.0.7"));
    let next = h.upsert(InputKind::Pod).await;
    assert_eq!(next.key(), InputKey::namespaced(InputKind::Pod, "dev", "api"));
}

#[tokio::test]
async fn error_410_on_the_watch_relists_and_the_snapshot_drops_objects_deleted_meanwhile() {
    let server = FakeApiServer::start().await;
    server.apply("pods", pod("dev", "web", "10.244.0.5"));
    server.apply("pods", pod("dev", "db", "10.244.0.6"));
    let mut h = Harness::start(server);
    assert_eq!(names(&h.snapshot(InputKind::Pod).await), ["dev/db", "dev/web"]);
    h.server.wait_for_watches("pods", 1).await;

    // Changes whose events the watcher misses, then the server expires the watch with
    // `ERROR` + `Status 410 Expired`.
    h.server.silently("pods", |pods| {
        pods.remove("dev/db");
        let mut cache = pod("dev", "cache", "10.244.0.8");
        cache["metadata"]["resourceVersion"] = "150".into();
        pods.insert("dev/cache".into(), cache);
    });
    h.server.expire("pods");

    // No WatchError for the routine 410; the relist's snapshot is the next Pod event.
    let after = h.snapshot(InputKind::Pod).await;
    assert_eq!(
        names(&after),
        ["dev/cache", "dev/web"],
        "dev/db was deleted during the outage"
    );
    let lists = h
        .server
        .requests_for("pods")
        .into_iter()
        .filter(|r| !r.is_watch())
        .count();
    assert_eq!(lists, 2);

    // And the watch goes on after the relist.
    h.server.wait_for_watches("pods", 2).await;
    h.server.delete("pods", "dev/web");
    assert_eq!(
        h.change(InputKind::Pod).await,
        InputChange::Delete(InputKey::namespaced(InputKind::Pod, "dev", "web"))
    );
}

#[tokio::test]
async fn reconnect_from_a_compacted_resource_version_relists() {
    let server = FakeApiServer::start().await;
    server.apply("pods", pod("dev", "web", "10.244.0.5"));
    let listed_at = server.apply("pods", pod("dev", "db", "10.244.0.6"));
    let mut h = Harness::start(server);
    assert_eq!(names(&h.snapshot(InputKind::Pod).await), ["dev/db", "dev/web"]);
    h.server.wait_for_watches("pods", 1).await;

    // The connection drops; meanwhile dev/web is deleted and etcd compacts.
    h.server.outage("pods", |pods| {
        pods.remove("dev/web");
    });

    let after = h.snapshot(InputKind::Pod).await;
    assert_eq!(names(&after), ["dev/db"]);
    // kube-rs first tried to resume from its old resourceVersion (answered with 410).
    let watches = h.server.wait_for_watches("pods", 2).await;
    assert_eq!(
        watches[1].param("resourceVersion"),
        Some(listed_at.to_string().as_str())
    );
}

#[tokio::test]
async fn malformed_objects_are_reported_by_name_and_the_watch_goes_on() {
    let server = FakeApiServer::start().await;
    server.apply("pods", pod("dev", "web", "10.244.0.5"));
    let mut broken = pod("dev", "broken", "10.244.0.9");
    broken["spec"]["containers"] = "nope".into();
    server.apply("pods", broken);
    let mut h = Harness::start(server);

    // In a list: the bad item is reported, the others still make the snapshot.
    let message = h.watch_error(InputKind::Pod).await;
    assert!(
        message.contains("Pod dev/broken") && message.contains("spec.containers"),
        "{message}"
    );
    assert_eq!(names(&h.snapshot(InputKind::Pod).await), ["dev/web"]);
    h.server.wait_for_watches("pods", 1).await;

    // In a watch event: the same, and later events still flow.
    let mut bad = pod("dev", "bad", "10.244.0.10");
    bad["spec"]["containers"] = "nope".into();
    h.server.apply("pods", bad);
    let message = h.watch_error(InputKind::Pod).await;
    assert!(
        message.contains("Pod dev/bad") && message.contains("spec.containers"),
        "{message}"
    );
    h.server.apply("pods", pod("dev", "good", "10.244.0.11"));
    assert_eq!(
        h.upsert(InputKind::Pod).await.key(),
        InputKey::namespaced(InputKind::Pod, "dev", "good")
    );

    // Deleting an object that never decoded still reaches the consumer.
    h.server.delete("pods", "dev/broken");
    assert_eq!(
        h.change(InputKind::Pod).await,
        InputChange::Delete(InputKey::namespaced(InputKind::Pod, "dev", "broken"))
    );
    // No relist happened because of any of this.
    let lists = h
        .server
        .requests_for("pods")
        .into_iter()
        .filter(|r| !r.is_watch())
        .count();
    assert_eq!(lists, 1);
}

#[tokio::test]
async fn weft_custom_resources_flow_when_their_crd_is_served() {
    let server = FakeApiServer::start().await;
    server.serve("virtualnetworks");
    server.serve("clusterconfigs");
    server.apply("virtualnetworks", virtual_network("dev", "blue", "10.10.0.0/24"));
    server.apply(
        "clusterconfigs",
        json!({"metadata": {"name": "default"}, "spec": {"asn": 64513}}),
    );
    let mut h = Harness::start(server);

    let networks = h.snapshot(InputKind::VirtualNetwork).await;
    assert_eq!(names(&networks), ["dev/blue"]);
    let Some(InputObject::VirtualNetwork(blue)) = networks.first() else {
        panic!("{networks:?}")
    };
    assert_eq!(blue.spec.subnets, ["10.10.0.0/24"]);
    let configs = h.snapshot(InputKind::ClusterConfig).await;
    let Some(InputObject::ClusterConfig(config)) = configs.first() else {
        panic!("{configs:?}")
    };
    assert_eq!(config.spec.asn, 64513);
    assert_eq!(
        configs[0].key(),
        InputKey::cluster(InputKind::ClusterConfig, "default")
    );

    let watches = h.server.wait_for_watches("virtualnetworks", 1).await;
    assert_eq!(watches[0].path, "/apis/weft.dev/v1alpha1/virtualnetworks");
    h.server
        .apply("virtualnetworks", virtual_network("dev", "red", "10.20.0.0/24"));
    let red = h.upsert(InputKind::VirtualNetwork).await;
    assert_eq!(
        red.key(),
        InputKey::namespaced(InputKind::VirtualNetwork, "dev", "red")
    );
    h.server.delete("virtualnetworks", "dev/blue");
    assert_eq!(
        h.change(InputKind::VirtualNetwork).await,
        InputChange::Delete(InputKey::namespaced(InputKind::VirtualNetwork, "dev", "blue"))
    );

    // A spec weft rejects (unknown field) is reported with its field, not applied.
    let mut typo = virtual_network("dev", "green", "10.30.0.0/24");
    typo["spec"]["subnet"] = "10.30.0.0/24".into();
    h.server.apply("virtualnetworks", typo);
    let message = h.watch_error(InputKind::VirtualNetwork).await;
    assert!(
        message.contains("VirtualNetwork dev/green") && message.contains("subnet"),
        "{message}"
    );
}

#[tokio::test]
async fn a_missing_crd_is_retried_with_backoff_not_in_a_hot_loop() {
    let server = FakeApiServer::start().await;
    let mut h = Harness::start(server);
    h.snapshot(InputKind::Pod).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // kube-rs' default backoff: 0.8–1.6 s after the first failure, 1.6–3.2 s after the
    // second, … so within 2.5 s there are two or three attempts, not hundreds.
    let attempts = h.server.requests_for("virtualnetworks").len();
    assert!((2..=3).contains(&attempts), "{attempts} list attempts in 2.5 s");
    // One WatchError per attempt (give the last answer time to arrive).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let attempts_now = h.server.requests_for("virtualnetworks").len();
    let mut reported = 0;
    while let Ok(event) = h.rx.try_recv() {
        h.pending.entry(event.kind()).or_default().push(event);
    }
    for event in h.pending.remove(&InputKind::VirtualNetwork).unwrap_or_default() {
        assert!(matches!(event, KubeEvent::WatchError { .. }), "{event:?}");
        reported += 1;
    }
    assert!(
        (attempts..=attempts_now).contains(&reported),
        "{reported} WatchErrors for {attempts} attempts"
    );

    // Installing the CRD later is picked up by a later retry.
    h.server.serve("virtualnetworks");
    h.server
        .apply("virtualnetworks", virtual_network("dev", "blue", "10.10.0.0/24"));
    let wait = async {
        loop {
            if let KubeEvent::Snapshot { objects, .. } = h.next(InputKind::VirtualNetwork).await {
                return objects;
            }
        }
    };
    let networks = tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .expect("CRD picked up");
    assert_eq!(names(&networks), ["dev/blue"]);
}

#[tokio::test]
async fn run_returns_when_the_receiver_is_dropped() {
    let server = FakeApiServer::start().await;
    let mut h = Harness::start(server);
    h.snapshot(InputKind::Namespace).await;
    let Harness {
        rx,
        run,
        server: _server,
        ..
    } = h;
    drop(rx);
    let result = tokio::time::timeout(DEADLINE, run)
        .await
        .expect("run returned")
        .expect("run did not panic");
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn from_kubeconfig_connects_to_the_named_cluster() {
    let server = FakeApiServer::start().await;
    server.apply("namespaces", namespace("dev"));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("kubeconfig");
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
         clusters:\n- name: fake\n  cluster:\n    server: {}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tester\n\
         users:\n- name: tester\n  user:\n    token: test-token\n",
        server.url()
    );
    std::fs::write(&path, kubeconfig).expect("write kubeconfig");
    let source = KubeSource::from_kubeconfig(Some(&path))
        .await
        .expect("kubeconfig accepted");
    let mut h = Harness::with_source(server, source);
    assert_eq!(names(&h.snapshot(InputKind::Namespace).await), ["dev"]);

    let missing = KubeSource::from_kubeconfig(Some(&dir.path().join("nope"))).await;
    match missing {
        Err(err @ KubeError::Kubeconfig { .. }) => assert!(err.to_string().contains("nope"), "{err}"),
        other => panic!("expected a kubeconfig error, got {other:?}"),
    }
}
