//! Service chaining (issue 6): traffic between a left and a right virtual network is
//! steered through forwarding pods in order, both ways; a hop that filters shows the
//! order; the chain's ports refuse other traffic; a deleted hop drops the traffic or is
//! bypassed as `onFailure` says.
//!
//! The hops are lab forwarder pods (`lab.weft.dev/forwarder`): IPv4 forwarding on in
//! their namespace, `Ip: ForwDatagrams` of their `/proc/net/snmp` counting what entered
//! their forwarding path, and `lab.weft.dev/forwarder-drop` an nftables drop rule with
//! a counter in their forward hook.
//!
//! Root needed (skipped otherwise); the `weft` and `weft-cni` binaries of this
//! workspace; lab `c<pid % 10000><letter>` taken down by a guard; traffic only between
//! the lab's own namespaces.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{Lab, require_root};

/// Prefix of this file's lab names.
const LAB_PREFIX: char = 'c';

/// Two networks, a client on each (different nodes), two forwarders (one per node) with
/// net1 in vn-left and net2 in vn-right; fw2 drops tcp/8081.
const NETWORKS_AND_PODS: &str = r#"
apiVersion: weft.dev/v1alpha1
kind: VirtualNetwork
metadata: {name: vn-left, namespace: default}
spec: {subnets: [10.10.10.0/24]}
---
apiVersion: weft.dev/v1alpha1
kind: VirtualNetwork
metadata: {name: vn-right, namespace: default}
spec: {subnets: [20.20.20.0/24]}
---
apiVersion: v1
kind: Pod
metadata:
  name: left
  namespace: default
  annotations: {opencontrail.org/network: "{'domain': 'default-domain', 'project': 'k8s-default', 'name': 'vn-left'}"}
spec: {nodeName: node-1, containers: [{name: c, image: x, ports: [{containerPort: 80}, {containerPort: 8081}, {containerPort: 8082}]}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: right
  namespace: default
  annotations: {opencontrail.org/network: "{'domain': 'default-domain', 'project': 'k8s-default', 'name': 'vn-right'}"}
spec: {nodeName: node-2, containers: [{name: c, image: x, ports: [{containerPort: 80}, {containerPort: 8081}, {containerPort: 8082}]}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: fw1
  namespace: default
  annotations: {k8s.v1.cni.cncf.io/networks: "vn-left,vn-right", lab.weft.dev/forwarder: "true"}
spec: {nodeName: node-1, containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: fw2
  namespace: default
  annotations: {k8s.v1.cni.cncf.io/networks: "vn-left,vn-right", lab.weft.dev/forwarder: "true", lab.weft.dev/forwarder-drop: "tcp/8081"}
spec: {nodeName: node-2, containers: [{name: c, image: x}]}
"#;

fn chain(on_failure: &str, ports: &str) -> String {
    format!(
        r#"
apiVersion: weft.dev/v1alpha1
kind: ServiceChain
metadata: {{name: web, namespace: default}}
spec:
  leftNetwork: vn-left
  rightNetwork: vn-right
  services: [{{pod: fw1}}, {{pod: fw2}}]
  onFailure: {on_failure}
  ports: {ports}
"#
    )
}

/// Packets pod `pod` has forwarded (`Ip: ForwDatagrams` in its namespace).
fn forwarded(lab: &Lab, pod: &str) -> u64 {
    let snmp = lab.ok(&["exec", pod, "--", "cat", "/proc/net/snmp"]);
    weft_lab::pods::forwarded_datagrams(&snmp).unwrap_or_else(|| panic!("{pod}: {snmp}"))
}

/// Packets pod `pod`'s `lab.weft.dev/forwarder-drop` rules dropped.
fn dropped(lab: &Lab, pod: &str) -> u64 {
    let table = lab.ok(&["exec", pod, "--", "nft", "list", "table", "inet", "lab-forwarder"]);
    weft_lab::pods::dropped_packets(&table)
}

fn ip_of(lab: &Lab, pod: &str) -> String {
    support::pod_ip(lab, pod).to_string()
}

#[test]
fn traffic_crosses_the_hops_in_order_both_ways() {
    require_root!();
    let lab = Lab::up_text('a', NETWORKS_AND_PODS);
    lab.wait();
    let (left, right) = (ip_of(&lab, "default/left"), ip_of(&lab, "default/right"));
    assert!(
        left.starts_with("10.10.10.") && right.starts_with("20.20.20."),
        "{left} {right}"
    );
    // Without a chain the two networks are not connected.
    assert!(!lab.probe("default/left", &right, "80/tcp", 0), "no chain yet");

    lab.apply("chain.yaml", &chain("Drop", "[]"));
    let (fw1, fw2) = (forwarded(&lab, "default/fw1"), forwarded(&lab, "default/fw2"));
    assert!(
        lab.probe("default/left", &right, "80/tcp", 20),
        "left -> right through the chain"
    );
    let (fw1_after, fw2_after) = (forwarded(&lab, "default/fw1"), forwarded(&lab, "default/fw2"));
    assert!(
        fw1_after > fw1 && fw2_after > fw2,
        "both hops forward: fw1 {fw1} -> {fw1_after}, fw2 {fw2} -> {fw2_after}"
    );
    assert!(
        lab.probe("default/right", &left, "80/tcp", 20),
        "right -> left through the chain"
    );
    assert!(forwarded(&lab, "default/fw1") > fw1_after && forwarded(&lab, "default/fw2") > fw2_after);

    // Order: fw2 drops tcp/8081. Left to right, fw1 forwards the SYN before fw2 drops it;
    // right to left, fw2 drops it first and fw1 never sees it.
    let (fw1, fw2_dropped) = (forwarded(&lab, "default/fw1"), dropped(&lab, "default/fw2"));
    assert!(
        !lab.probe("default/left", &right, "8081/tcp", 0),
        "fw2 drops tcp/8081"
    );
    assert!(
        forwarded(&lab, "default/fw1") > fw1,
        "fw1 comes first from the left"
    );
    assert!(dropped(&lab, "default/fw2") > fw2_dropped, "then fw2 drops it");
    // (A retransmitted SYN of the last probe must not land in the next count.)
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (fw1, fw2_dropped) = (forwarded(&lab, "default/fw1"), dropped(&lab, "default/fw2"));
    assert!(
        !lab.probe("default/right", &left, "8081/tcp", 0),
        "fw2 drops tcp/8081"
    );
    assert!(
        dropped(&lab, "default/fw2") > fw2_dropped,
        "fw2 comes first from the right"
    );
    assert_eq!(forwarded(&lab, "default/fw1"), fw1, "and fw1 never sees it");
    assert!(
        lab.probe("default/left", &right, "8082/tcp", 20),
        "other ports pass"
    );

    // The chain's ports: only tcp/80 now; tcp/8082 is refused both ways.
    lab.apply("chain.yaml", &chain("Drop", "[{protocol: TCP, port: 80}]"));
    assert!(
        lab.probe("default/left", &right, "80/tcp", 20),
        "tcp/80 is carried"
    );
    assert!(
        !lab.probe("default/left", &right, "8082/tcp", 0),
        "tcp/8082 is not"
    );
    assert!(
        !lab.probe("default/right", &left, "8082/tcp", 0),
        "nor from the right"
    );
    lab.apply("chain.yaml", &chain("Drop", "[]"));

    // fw2 is deleted: with Drop the traffic stops.
    let fw2_pod = NETWORKS_AND_PODS
        .split("---")
        .find(|d| d.contains("name: fw2"))
        .unwrap()
        .to_string();
    lab.delete("fw2.yaml", &fw2_pod);
    assert!(
        !lab.probe("default/left", &right, "80/tcp", 0),
        "Drop: a hop is gone"
    );
    assert!(!lab.probe("default/right", &left, "80/tcp", 0), "Drop: both ways");
    // With Bypass it goes through the hop that is left, and tcp/8081 passes now.
    lab.apply("chain.yaml", &chain("Bypass", "[]"));
    let fw1 = forwarded(&lab, "default/fw1");
    assert!(
        lab.probe("default/left", &right, "8081/tcp", 20),
        "Bypass: through fw1 only"
    );
    assert!(
        lab.probe("default/right", &left, "80/tcp", 20),
        "Bypass: both ways"
    );
    assert!(forwarded(&lab, "default/fw1") > fw1, "fw1 still forwards");
    // fw2 comes back: the chain is whole again (and drops tcp/8081 again).
    lab.apply("fw2.yaml", &fw2_pod);
    assert!(lab.probe("default/left", &right, "80/tcp", 20), "whole again");
    assert!(
        !lab.probe("default/left", &right, "8081/tcp", 0),
        "fw2 filters again"
    );
    // fw2's filter changes (the lab re-creates the pod): tcp/8082 is dropped instead.
    lab.apply("fw2.yaml", &fw2_pod.replace("tcp/8081", "tcp/8082"));
    assert!(
        lab.probe("default/left", &right, "8081/tcp", 20),
        "8081 passes now"
    );
    assert!(
        !lab.probe("default/left", &right, "8082/tcp", 0),
        "8082 is dropped"
    );

    // The chain is deleted: the networks are apart again.
    lab.delete("chain.yaml", &chain("Bypass", "[]"));
    assert!(
        !lab.probe("default/left", &right, "80/tcp", 0),
        "no chain, no route"
    );
}

#[test]
fn bypass_with_no_hop_left_connects_the_networks_directly() {
    require_root!();
    let lab = Lab::up_text('b', NETWORKS_AND_PODS);
    lab.wait();
    let right = ip_of(&lab, "default/right");
    let text = r#"
apiVersion: weft.dev/v1alpha1
kind: ServiceChain
metadata: {name: solo, namespace: default}
spec: {leftNetwork: vn-left, rightNetwork: vn-right, services: [{pod: gone}], onFailure: Bypass}
"#;
    lab.apply("solo.yaml", text);
    let (fw1, fw2) = (forwarded(&lab, "default/fw1"), forwarded(&lab, "default/fw2"));
    assert!(lab.probe("default/left", &right, "80/tcp", 20), "direct");
    assert_eq!(
        (forwarded(&lab, "default/fw1"), forwarded(&lab, "default/fw2")),
        (fw1, fw2),
        "no forwarder is in this chain"
    );
    // Drop instead: refused.
    lab.apply("solo.yaml", &text.replace("Bypass", "Drop"));
    assert!(
        !lab.probe("default/left", &right, "80/tcp", 0),
        "Drop with no hop"
    );
}
