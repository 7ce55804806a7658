//! Node state over the API: the controller on a memory store, served on TCP and on a
//! Unix socket, read with the agents' client (`NodeStateClient`).

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use tokio::time::timeout;
use weft_api::Controller;
use weft_api::client::ClientError;
use weft_api::node_client::NodeStateClient;
use weft_api::types::{ApplyRequest, NodeWatchLine};
use weft_model::node::{NextHop, NodeState};
use weft_model::{DerivedKind, DerivedObject, InputKind};

const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(1500);

async fn controller() -> Arc<Controller> {
    let store: Arc<dyn weft_store::ConfigStore> = Arc::new(weft_store::MemoryStore::new());
    Controller::open(store, "memory").await.expect("open")
}

async fn apply(c: &Controller, objects: Vec<Value>) -> u64 {
    let report = c
        .apply(ApplyRequest::from_objects("test", objects), false)
        .await
        .expect("apply");
    assert_eq!(report.errors(), 0, "{report:#?}");
    report.revision
}

fn node(name: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
           "status": {"addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}]}})
}

fn pod(ns: &str, name: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
           "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}})
}

fn isolated_namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "annotations": {"opencontrail.org/isolation": "true"}}})
}

/// Serves the controller on 127.0.0.1:0 and on a Unix socket in `dir`, with the given
/// heartbeat; returns the two client URLs.
async fn serve_both(c: &Arc<Controller>, dir: &tempfile::TempDir, heartbeat: Duration) -> (String, String) {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let socket = dir.path().join("api.sock");
    let unix = tokio::net::UnixListener::bind(&socket).expect("bind unix");
    let router = weft_api::server::router_with_heartbeat(c.clone(), heartbeat);
    tokio::spawn(axum::serve(tcp, router.clone()).into_future());
    tokio::spawn(axum::serve(unix, router).into_future());
    (format!("http://{addr}"), format!("unix:{}", socket.display()))
}

/// What `compile_node_state` gives on the controller's objects, read back through the
/// public API.
async fn expected_state(c: &Controller, node: &str) -> NodeState {
    let networks: Vec<_> = c
        .derived(DerivedKind::Network, None)
        .await
        .into_iter()
        .filter_map(|d| match d {
            DerivedObject::Network(n) => Some(n),
            _ => None,
        })
        .collect();
    let interfaces: Vec<_> = c
        .derived(DerivedKind::Interface, None)
        .await
        .into_iter()
        .filter_map(|d| match d {
            DerivedObject::Interface(i) => Some(i),
            _ => None,
        })
        .collect();
    let services: Vec<_> = c
        .derived(DerivedKind::Service, None)
        .await
        .into_iter()
        .filter_map(|d| match d {
            DerivedObject::Service(s) => Some(s),
            _ => None,
        })
        .collect();
    let nodes: Vec<k8s_openapi::api::core::v1::Node> = c
        .inputs(InputKind::Node, None)
        .await
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("node"))
        .collect();
    let floating_ips: Vec<_> = c
        .derived(DerivedKind::FloatingIp, None)
        .await
        .into_iter()
        .filter_map(|d| match d {
            DerivedObject::FloatingIp(f) => Some(f),
            _ => None,
        })
        .collect();
    let mut state = weft_routing::compile_node_state_with_services(
        node,
        c.revision(),
        &networks,
        &interfaces,
        &services,
        &nodes,
    );
    weft_routing::add_floating_ips(&mut state, &floating_ips);
    state
}

async fn next_state<S>(stream: &mut S) -> NodeState
where
    S: Stream<Item = Result<NodeState, ClientError>> + Unpin,
{
    timeout(WAIT, stream.next())
        .await
        .expect("a state within the wait")
        .expect("stream still open")
        .expect("a state, not an error")
}

async fn assert_quiet<S>(stream: &mut S)
where
    S: Stream<Item = Result<NodeState, ClientError>> + Unpin,
{
    if let Ok(item) = timeout(QUIET, stream.next()).await {
        panic!("expected nothing, got {item:?}");
    }
}

fn local_keys(s: &NodeState) -> Vec<String> {
    s.interfaces.iter().map(|i| i.key()).collect()
}

fn route_count(s: &NodeState) -> usize {
    s.networks.iter().map(|n| n.routes.len()).sum()
}

#[tokio::test]
async fn state_over_tcp_and_unix_equals_the_compiler_output() {
    let c = controller().await;
    apply(
        &c,
        vec![
            node("node-1", "192.0.2.11"),
            node("node-2", "192.0.2.12"),
            isolated_namespace("iso"),
            pod("default", "a", "node-1"),
            pod("default", "b", "node-2"),
            pod("iso", "x", "node-1"),
            pod("iso", "y", "node-2"),
        ],
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (tcp, unix) = serve_both(&c, &dir, Duration::from_secs(10)).await;
    let expected = expected_state(&c, "node-1").await;
    assert_eq!(c.node_state("node-1").await, expected);
    assert_eq!(expected.networks.len(), 2, "{expected:#?}");
    assert_eq!(route_count(&expected), 4);
    assert_eq!(expected.peers.len(), 1);
    assert_eq!(expected.underlay_ip, Some("192.0.2.11".parse().expect("ip")));
    assert!(expected.warnings.is_empty(), "{:?}", expected.warnings);
    for url in [&tcp, &unix, &unix.replace("unix:", "unix://")] {
        let client = NodeStateClient::new(url).expect("client");
        let got = timeout(WAIT, client.state("node-1"))
            .await
            .expect("in time")
            .expect("state");
        assert_eq!(got, expected, "over {url}");
        let text = timeout(WAIT, client.routes_text("node-1"))
            .await
            .expect("in time")
            .expect("routes");
        assert!(text.contains("encap vxlan id"), "{text}");
        assert!(text.contains("dev <local default/a/eth0>"), "{text}");
    }
    // An unknown node: an empty state with a warning, not an error.
    let client = NodeStateClient::new(&tcp).expect("client");
    let ghost = timeout(WAIT, client.state("ghost"))
        .await
        .expect("in time")
        .expect("state");
    assert!(ghost.networks.is_empty());
    assert!(
        ghost.warnings.iter().any(|w| w.contains("ghost")),
        "{:?}",
        ghost.warnings
    );
}

/// A FloatingIp bound to a pod shows on that pod's local interface in its node's
/// state, and moves with the pod.
#[tokio::test]
async fn pod_floating_ip_is_on_the_local_interface_of_its_node() {
    let c = controller().await;
    apply(
        &c,
        vec![
            node("node-1", "192.0.2.11"),
            node("node-2", "192.0.2.12"),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "public"}}),
            json!({"apiVersion": "weft.dev/v1alpha1", "kind": "VirtualNetwork",
                   "metadata": {"name": "ext", "namespace": "public"},
                   "spec": {"subnets": ["203.0.113.0/24"]}}),
            json!({"apiVersion": "weft.dev/v1alpha1", "kind": "FloatingIpPool",
                   "metadata": {"name": "pool", "namespace": "public"}, "spec": {"network": "ext"}}),
            pod("default", "web", "node-1"),
            json!({"apiVersion": "weft.dev/v1alpha1", "kind": "FloatingIp",
                   "metadata": {"name": "web-fip", "namespace": "default"},
                   "spec": {"pool": "public/pool", "pod": "web", "address": "203.0.113.7"}}),
        ],
    )
    .await;
    let fips_on = |s: &NodeState| -> Vec<String> {
        s.interfaces
            .iter()
            .filter(|l| l.pod == "web")
            .flat_map(|l| l.floating_ips.iter().map(|ip| ip.to_string()))
            .collect()
    };
    let one = c.node_state("node-1").await;
    assert_eq!(fips_on(&one), ["203.0.113.7"], "{one:#?}");
    assert_eq!(one.interfaces, expected_state(&c, "node-1").await.interfaces);
    // The pod re-created on node-2: the floating IP follows it.
    c.apply(
        ApplyRequest::from_objects("test", vec![pod("default", "web", "node-1")]),
        true,
    )
    .await
    .expect("delete");
    apply(&c, vec![pod("default", "web", "node-2")]).await;
    assert!(fips_on(&c.node_state("node-1").await).is_empty());
    assert_eq!(fips_on(&c.node_state("node-2").await), ["203.0.113.7"]);
}

#[tokio::test]
async fn watch_sends_changes_of_this_node_only_and_resumes_without_duplicates() {
    let c = controller().await;
    apply(
        &c,
        vec![
            node("node-1", "192.0.2.11"),
            node("node-2", "192.0.2.12"),
            pod("default", "a", "node-1"),
            pod("default", "b", "node-2"),
        ],
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (tcp, unix) = serve_both(&c, &dir, Duration::from_secs(10)).await;
    for (round, url) in [tcp, unix].into_iter().enumerate() {
        let client = NodeStateClient::new(&url).expect("client");
        let mut stream = Box::pin(
            timeout(WAIT, client.watch("node-1", 0))
                .await
                .expect("in time")
                .expect("watch"),
        );
        let first = next_state(&mut stream).await;
        assert_eq!(first, c.node_state("node-1").await);

        // A new pod on this node: a new state with it.
        let new_pod = format!("c{round}");
        apply(&c, vec![pod("default", &new_pod, "node-1")]).await;
        let second = next_state(&mut stream).await;
        assert!(second.revision > first.revision);
        assert!(
            local_keys(&second).contains(&format!("default/{new_pod}/eth0")),
            "{second:#?}"
        );

        // An isolated namespace with a pod on the other node touches none of node-1's
        // tables: nothing is sent.
        let iso = format!("iso{round}");
        let unrelated = apply(&c, vec![isolated_namespace(&iso), pod(&iso, "x", "node-2")]).await;
        assert!(unrelated > second.revision);
        assert_eq!(
            second.networks,
            c.node_state("node-1").await.networks,
            "the unrelated change must not change node-1's tables"
        );
        assert_quiet(&mut stream).await;

        // A remote pod in a network node-1 has changes its routes.
        let remote = format!("r{round}");
        apply(&c, vec![pod("default", &remote, "node-2")]).await;
        let third = next_state(&mut stream).await;
        assert_eq!(route_count(&third), route_count(&second) + 1);
        let remote_ip = c
            .derived(DerivedKind::Interface, Some("default"))
            .await
            .into_iter()
            .find_map(|d| match d {
                DerivedObject::Interface(i) if i.pod == remote => Some(i.ip),
                _ => None,
            })
            .expect("remote interface");
        assert!(
            third
                .networks
                .iter()
                .flat_map(|n| &n.routes)
                .any(|r| r.prefix.addr() == remote_ip
                    && matches!(&r.next_hop, NextHop::Remote { node, .. } if node == "node-2"))
        );
        drop(stream);

        // Reconnecting with the last revision seen: nothing new, so nothing is sent …
        let mut resumed = Box::pin(client.watch("node-1", third.revision).await.expect("watch"));
        assert_quiet(&mut resumed).await;
        drop(resumed);
        // … but a change made while disconnected is.
        let missed = format!("m{round}");
        apply(&c, vec![pod("default", &missed, "node-1")]).await;
        let mut resumed = Box::pin(client.watch("node-1", third.revision).await.expect("watch"));
        let fourth = next_state(&mut resumed).await;
        assert!(local_keys(&fourth).contains(&format!("default/{missed}/eth0")));
        assert_eq!(fourth, c.node_state("node-1").await);
        assert_quiet(&mut resumed).await;
    }
}

#[tokio::test]
async fn watch_stream_is_ndjson_with_heartbeats() {
    let c = controller().await;
    apply(
        &c,
        vec![node("node-1", "192.0.2.11"), pod("default", "a", "node-1")],
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (tcp, unix) = serve_both(&c, &dir, Duration::from_millis(100)).await;

    let response = timeout(WAIT, reqwest::get(format!("{tcp}/v1/nodes/node-1/watch")))
        .await
        .expect("in time")
        .expect("get");
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-ndjson")
    );
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let lines = timeout(WAIT, async {
        loop {
            let chunk = body.next().await.expect("more").expect("chunk");
            text.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if text.ends_with('\n') && lines.len() >= 3 {
                return lines;
            }
        }
    })
    .await
    .expect("three lines in time");
    let decoded: Vec<NodeWatchLine> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert!(matches!(&decoded[0], NodeWatchLine::State(s) if s.node == "node-1"));
    let revision = c.revision();
    assert_eq!(lines[1], format!("{{\"heartbeat\":{revision}}}"));
    assert_eq!(decoded[2], NodeWatchLine::Heartbeat { heartbeat: revision });

    // Heartbeats keep a client with a short idle timeout happy: no error, no state.
    let client = NodeStateClient::new(&unix)
        .expect("client")
        .with_idle_timeout(Duration::from_millis(400));
    let mut stream = Box::pin(client.watch("node-1", 0).await.expect("watch"));
    next_state(&mut stream).await;
    assert_quiet(&mut stream).await;
}

#[tokio::test]
async fn silent_stream_yields_an_error_and_shutdown_ends_streams() {
    let c = controller().await;
    apply(
        &c,
        vec![node("node-1", "192.0.2.11"), pod("default", "a", "node-1")],
    )
    .await;
    // Default heartbeat (10 s) against a 300 ms idle timeout: the client gives up.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(weft_api::server::serve(c.clone(), listener, async move {
        let _ = stopped.await;
    }));
    let client = NodeStateClient::new(&url)
        .expect("client")
        .with_idle_timeout(Duration::from_millis(300));
    let mut silent = Box::pin(client.watch("node-1", 0).await.expect("watch"));
    next_state(&mut silent).await;
    let err = timeout(WAIT, silent.next())
        .await
        .expect("in time")
        .expect("an item")
        .expect_err("an error");
    assert!(matches!(err, ClientError::StreamBroken { .. }), "{err}");
    assert!(timeout(WAIT, silent.next()).await.expect("in time").is_none());

    // A graceful shutdown ends open watches instead of waiting for them forever.
    let patient = NodeStateClient::new(&url).expect("client");
    let mut open = Box::pin(patient.watch("node-1", 0).await.expect("watch"));
    next_state(&mut open).await;
    stop.send(()).expect("server running");
    timeout(WAIT, server)
        .await
        .expect("server stops in time")
        .expect("join")
        .expect("serve");
    let end = timeout(WAIT, open.next())
        .await
        .expect("in time")
        .expect("an item");
    assert!(matches!(end, Err(ClientError::StreamBroken { .. })), "{end:?}");

    // Nothing listens any more: a prompt, clear error.
    let err = timeout(WAIT, patient.state("node-1"))
        .await
        .expect("in time")
        .expect_err("unreachable");
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
    let missing = NodeStateClient::new("unix:/nonexistent/weft.sock").expect("client");
    let err = timeout(WAIT, missing.state("node-1"))
        .await
        .expect("in time")
        .expect_err("no socket");
    assert!(err.to_string().contains("/nonexistent/weft.sock"), "{err}");
}
