//! Agent tests without the kernel: the CNI answers, persistence and the controller
//! follower. No test here runs a reconcile (that would program the test machine's own
//! namespace); kernel behaviour is covered by `tests/kernel.rs` in private namespaces.

use std::collections::VecDeque;
use std::sync::Mutex as StdMutex;

use futures::future::BoxFuture;
use weft_cni::agent_proto::{AttachedRequest, DelRequest};
use weft_model::ids::{MacAddr, Vni};
use weft_model::node::{vn_table, vtep_mac};

use super::*;
use crate::watch::StateStream;

fn config(dir: &Path) -> AgentConfig {
    AgentConfig {
        node: "n1".into(),
        state_dir: dir.to_path_buf(),
        netns: None,
        resync: Duration::from_secs(30),
        attach_wait: Duration::from_millis(1),
    }
}

fn iface(pod: &str, if_name: &str, primary: bool) -> LocalInterface {
    LocalInterface {
        namespace: "dev".into(),
        pod: pod.into(),
        pod_uid: String::new(),
        interface: if_name.into(),
        network: "default-domain:k8s-dev:net".into(),
        table: vn_table(Vni(5)),
        vni: Vni(5),
        ip: "10.47.255.252".parse().unwrap(),
        prefix_len: 12,
        gateway: Some("10.47.255.254".parse().unwrap()),
        mac: MacAddr([2, 0, 0, 0, 0, 1]),
        primary,
        floating_ips: Vec::new(),
    }
}

fn state(revision: u64, interfaces: Vec<LocalInterface>) -> NodeState {
    NodeState {
        node: "n1".into(),
        revision,
        underlay_ip: Some("192.0.2.1".parse().unwrap()),
        vtep_mac: vtep_mac("n1"),
        peers: vec![],
        networks: vec![],
        interfaces,
        services: vec![],
        service_routes: vec![],
        warnings: vec![],
        policies: vec![],
    }
}

fn add(pod: &str) -> AgentRequest {
    AgentRequest::Add(AddRequest {
        container_id: "cid".into(),
        netns: "/var/run/netns/x".into(),
        if_name: "eth0".into(),
        pod_namespace: "dev".into(),
        pod_name: pod.into(),
        pod_uid: String::new(),
    })
}

#[test]
fn primary_interface_gets_a_host_prefix_and_a_default_route() {
    let cfg = interface_config(&iface("web", "eth0", true));
    assert_eq!(cfg.address.to_string(), "10.47.255.252/32");
    assert_eq!(cfg.gateway, Some("10.47.255.254".parse().unwrap()));
    assert_eq!(cfg.mac.as_deref(), Some("02:00:00:00:00:01"));
    assert_eq!(cfg.mtu, Some(1450));
    assert_eq!(
        cfg.routes,
        vec![RouteConfig {
            dst: "0.0.0.0/0".parse().unwrap(),
            gw: Some("10.47.255.254".parse().unwrap())
        }]
    );
}

#[test]
fn secondary_interface_gets_its_subnet_via_the_gateway() {
    let cfg = interface_config(&iface("web", "net1", false));
    assert_eq!(cfg.address.to_string(), "10.47.255.252/32");
    assert_eq!(cfg.gateway, None);
    assert_eq!(
        cfg.routes,
        vec![RouteConfig {
            dst: "10.32.0.0/12".parse().unwrap(),
            gw: Some("10.47.255.254".parse().unwrap())
        }]
    );
}

#[tokio::test]
async fn add_is_try_again_until_the_state_has_the_pod() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::open(config(dir.path())).unwrap();

    let err = agent.handle_cni(add("web")).await.unwrap_err();
    assert_eq!(err.code, 11);
    assert_eq!(err.msg, "pod dev/web has no interface on node n1 yet");
    assert!(err.details.contains("no state"), "{}", err.details);
    let status = agent.handle_cni(AgentRequest::Status).await.unwrap_err();
    assert_eq!(status.code, 50);

    agent.set_node_state(state(1, vec![])).await.unwrap();
    let err = agent.handle_cni(add("web")).await.unwrap_err();
    assert_eq!(err.code, 11);
    assert!(err.details.contains("revision 1"), "{}", err.details);
    agent.handle_cni(AgentRequest::Status).await.unwrap();

    agent
        .set_node_state(state(
            2,
            vec![iface("web", "eth0", true), iface("web", "net1", false)],
        ))
        .await
        .unwrap();
    let AgentReply::Add(reply) = agent.handle_cni(add("web")).await.unwrap() else {
        panic!("expected an add reply")
    };
    let names: Vec<&str> = reply.interfaces.iter().map(|i| i.if_name.as_str()).collect();
    assert_eq!(names, vec!["eth0", "net1"]);
    assert_eq!(reply.interfaces[0].address.to_string(), "10.47.255.252/32");
}

#[tokio::test]
async fn state_for_another_node_is_refused_and_equal_state_is_no_change() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::open(config(dir.path())).unwrap();
    let mut other = state(1, vec![]);
    other.node = "n2".into();
    assert!(matches!(
        agent.set_node_state(other).await,
        Err(UpdateError::WrongNode { .. })
    ));
    assert!(agent.set_node_state(state(1, vec![])).await.unwrap());
    let generation = agent.generation();
    assert!(!agent.set_node_state(state(1, vec![])).await.unwrap());
    assert_eq!(agent.generation(), generation);
}

#[tokio::test]
async fn state_and_attachments_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let agent = Agent::open(config(dir.path())).unwrap();
        agent
            .set_node_state(state(4, vec![iface("web", "eth0", true)]))
            .await
            .unwrap();
        agent
            .handle_cni(AgentRequest::Attached(AttachedRequest {
                container_id: "cid".into(),
                if_name: "eth0".into(),
                host_if_name: "weft0123456789".into(),
                pod_namespace: "dev".into(),
                pod_name: "web".into(),
                pod_uid: String::new(),
            }))
            .await
            .unwrap();
    }
    let agent = Agent::open(config(dir.path())).unwrap();
    assert_eq!(agent.revision(), 4);
    assert_eq!(agent.attachments()["dev/web/eth0"].host_if_name, "weft0123456789");
    agent.handle_cni(AgentRequest::Status).await.unwrap();
    agent.handle_cni(add("web")).await.unwrap();

    agent
        .handle_cni(AgentRequest::Del(DelRequest {
            container_id: "cid".into(),
            if_name: "eth0".into(),
            host_if_name: String::new(),
            netns: String::new(),
            pod_namespace: String::new(),
            pod_name: String::new(),
            pod_uid: String::new(),
        }))
        .await
        .unwrap();
    drop(agent);
    let agent = Agent::open(config(dir.path())).unwrap();
    assert!(agent.attachments().is_empty());
}

#[tokio::test]
async fn another_nodes_saved_state_is_ignored_and_corrupt_attachments_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateDir::open(dir.path()).unwrap();
    let mut other = state(9, vec![]);
    other.node = "elsewhere".into();
    store.save_node_state(&other).unwrap();
    let agent = Agent::open(config(dir.path())).unwrap();
    assert_eq!(agent.node_state(), None);
    drop(agent);

    std::fs::write(dir.path().join(crate::state_dir::ATTACHMENTS_FILE), b"[1,2").unwrap();
    let err = Agent::open(config(dir.path())).unwrap_err();
    assert!(err.to_string().contains("attachments.json"), "{err}");
}

#[tokio::test]
async fn attached_without_pod_fields_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::open(config(dir.path())).unwrap();
    let err = agent
        .handle_cni(AgentRequest::Attached(AttachedRequest {
            container_id: "cid".into(),
            if_name: "eth0".into(),
            host_if_name: "weft0123456789".into(),
            pod_namespace: String::new(),
            pod_name: String::new(),
            pod_uid: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code, codes::AGENT_PROTOCOL);
}

/// One scripted connection: `Err` = connect fails, `Ok(items)` = a stream of those items.
type Connection = Result<Vec<Result<NodeState, String>>, String>;

/// Each `watch` call pops one scripted connection: `Err` = connect fails, `Ok(items)` =
/// a stream of those items (ending after them).
struct Scripted {
    connections: StdMutex<VecDeque<Connection>>,
    afters: StdMutex<Vec<u64>>,
}

impl StateSource for Scripted {
    fn watch<'a>(&'a self, _node: &'a str, after: u64) -> BoxFuture<'a, Result<StateStream, anyhow::Error>> {
        Box::pin(async move {
            self.afters.lock().unwrap().push(after);
            let next = self.connections.lock().unwrap().pop_front();
            match next {
                Some(Ok(items)) => Ok(futures::stream::iter(
                    items.into_iter().map(|i| i.map_err(anyhow::Error::msg)),
                )
                .boxed()),
                Some(Err(e)) => Err(anyhow::Error::msg(e)),
                // Script exhausted: a watch that never yields.
                None => Ok(futures::stream::pending().boxed()),
            }
        })
    }

    fn describe(&self) -> String {
        "scripted".into()
    }
}

#[tokio::test]
async fn follower_reconnects_from_the_last_revision_and_keeps_state_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::open(config(dir.path())).unwrap();
    let source = Arc::new(Scripted {
        connections: StdMutex::new(VecDeque::from(vec![
            Err("connection refused".to_string()),
            Ok(vec![Ok(state(5, vec![])), Err("stream broken".to_string())]),
            Err("connection refused".to_string()),
            Ok(vec![Ok(state(6, vec![iface("web", "eth0", true)]))]),
        ])),
        afters: StdMutex::new(Vec::new()),
    });
    struct Shared(Arc<Scripted>);
    impl StateSource for Shared {
        fn watch<'a>(
            &'a self,
            node: &'a str,
            after: u64,
        ) -> BoxFuture<'a, Result<StateStream, anyhow::Error>> {
            self.0.watch(node, after)
        }
        fn describe(&self) -> String {
            self.0.describe()
        }
    }
    let task = tokio::spawn(agent.clone().follow_controller(Shared(Arc::clone(&source))));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while source.afters.lock().unwrap().len() < 5 {
        assert!(tokio::time::Instant::now() < deadline, "follower stalled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    assert_eq!(*source.afters.lock().unwrap(), vec![0, 0, 5, 5, 6]);
    assert_eq!(agent.revision(), 6);
    // Persisted too.
    let reloaded = Agent::open(config(dir.path())).unwrap();
    assert_eq!(reloaded.revision(), 6);
}

#[tokio::test]
async fn start_up_drops_attachments_whose_veth_vanished() {
    let dir = tempfile::tempdir().unwrap();
    let sys = tempfile::tempdir().unwrap();
    let agent = Agent::open(config(dir.path())).unwrap();
    for (pod, host) in [("a", "weftaaa"), ("b", "weftbbb")] {
        let mut data = agent.data();
        data.attachments.insert(
            format!("dev/{pod}/eth0"),
            crate::attachment::Attachment {
                container_id: format!("c-{pod}"),
                if_name: "eth0".into(),
                host_if_name: host.into(),
            },
        );
    }
    // No sysfs (no `lo`): no evidence, nothing dropped.
    assert_eq!(agent.prune_vanished_veths(sys.path()).await, 0);
    std::fs::write(sys.path().join("lo"), "").unwrap();
    std::fs::write(sys.path().join("weftaaa"), "").unwrap();
    assert_eq!(agent.prune_vanished_veths(sys.path()).await, 1);
    let left: Vec<String> = agent.attachments().keys().cloned().collect();
    assert_eq!(left, vec!["dev/a/eth0".to_string()]);
    // Saved: a restarted agent loads the pruned set.
    drop(agent);
    let again = Agent::open(config(dir.path())).unwrap();
    assert_eq!(again.attachments().keys().cloned().collect::<Vec<_>>(), left);
}
