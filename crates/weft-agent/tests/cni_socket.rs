//! The agent's CNI socket, driven by the plugin's own client (`weft_cni::AgentClient`),
//! without root: no reconciler runs here (it would program this machine's namespace),
//! so only the answers and the persistence are checked. The kernel side is in
//! `tests/kernel.rs`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use weft_agent::{Agent, AgentConfig};
use weft_cni::agent_proto::{AddRequest, AttachedRequest, DelRequest};
use weft_cni::{AgentCallError, AgentClient};
use weft_model::ids::{MacAddr, Vni};
use weft_model::node::{LocalInterface, NodeState, vn_table, vtep_mac};

fn config(dir: &Path) -> AgentConfig {
    AgentConfig {
        node: "n1".into(),
        state_dir: dir.join("state"),
        netns: None,
        resync: Duration::from_secs(30),
        // Nothing reconciles in this test: do not wait for it.
        attach_wait: Duration::from_millis(1),
    }
}

fn state() -> NodeState {
    NodeState {
        node: "n1".into(),
        revision: 3,
        underlay_ip: Some("192.0.2.1".parse().unwrap()),
        vtep_mac: vtep_mac("n1"),
        peers: vec![],
        networks: vec![],
        interfaces: vec![LocalInterface {
            namespace: "dev".into(),
            pod: "web".into(),
            pod_uid: String::new(),
            interface: "eth0".into(),
            network: "default-domain:k8s-dev:k8s-dev-pod-network".into(),
            table: vn_table(Vni(7)),
            vni: Vni(7),
            ip: "10.47.255.250".parse().unwrap(),
            prefix_len: 12,
            gateway: Some("10.47.255.254".parse().unwrap()),
            mac: MacAddr([2, 0, 0, 0, 0, 0x0a]),
            primary: true,
            floating_ips: Vec::new(),
        }],
        services: vec![],
        service_routes: vec![],
        warnings: vec![],
        policies: vec![],
    }
}

fn add() -> AddRequest {
    AddRequest {
        container_id: "cid1".into(),
        netns: "/var/run/netns/x".into(),
        if_name: "eth0".into(),
        pod_namespace: "dev".into(),
        pod_name: "web".into(),
        pod_uid: String::new(),
    }
}

#[tokio::test]
async fn socket_answers_and_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/agent.sock");
    let agent = Agent::open(config(dir.path())).unwrap();
    let server = agent.serve_cni(&socket).await.unwrap();
    let client = AgentClient::new(&socket);

    // No state yet: ADD is "try again later", STATUS is "not available".
    match client.add(add()).await {
        Err(AgentCallError::Agent(e)) => {
            assert_eq!(e.code, 11);
            assert_eq!(e.msg, "pod dev/web has no interface on node n1 yet");
            assert!(!e.details.is_empty());
        }
        other => panic!("expected code 11, got {other:?}"),
    }
    match client.status().await {
        Err(AgentCallError::Agent(e)) => assert_eq!(e.code, 50),
        other => panic!("expected code 50, got {other:?}"),
    }

    // A second agent cannot steal a live socket.
    let other = Agent::open(config(&dir.path().join("other"))).unwrap();
    assert!(other.serve_cni(&socket).await.is_err());

    agent.set_node_state(state()).await.unwrap();
    client.status().await.unwrap();
    let reply = client.add(add()).await.unwrap();
    let iface = &reply.interfaces[0];
    assert_eq!(iface.if_name, "eth0");
    assert_eq!(iface.address.to_string(), "10.47.255.250/32");
    assert_eq!(iface.gateway, Some("10.47.255.254".parse().unwrap()));
    assert_eq!(iface.mac.as_deref(), Some("02:00:00:00:00:0a"));
    assert_eq!(iface.mtu, Some(1450));
    assert_eq!(iface.routes.len(), 1);
    assert_eq!(iface.routes[0].dst.to_string(), "0.0.0.0/0");

    client
        .attached(AttachedRequest {
            container_id: "cid1".into(),
            if_name: "eth0".into(),
            host_if_name: "weft0011223344".into(),
            pod_namespace: "dev".into(),
            pod_name: "web".into(),
            pod_uid: String::new(),
        })
        .await
        .unwrap();

    // "Restart": a new agent on the same state directory, and the stale socket file.
    server.abort();
    let _ = server.await; // the listener is closed once the task is gone
    drop(agent);
    let agent = Agent::open(config(dir.path())).unwrap();
    let _server = agent.serve_cni(&socket).await.unwrap();
    assert_eq!(agent.revision(), 3);
    assert_eq!(agent.attachments()["dev/web/eth0"].host_if_name, "weft0011223344");
    client.status().await.unwrap();
    client.add(add()).await.unwrap();

    client
        .del(DelRequest {
            container_id: "cid1".into(),
            if_name: "eth0".into(),
            host_if_name: "weft0011223344".into(),
            netns: String::new(),
            pod_namespace: String::new(),
            pod_name: String::new(),
            pod_uid: String::new(),
        })
        .await
        .unwrap();
    assert!(agent.attachments().is_empty());
}
