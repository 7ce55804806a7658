//! Multi-interface pods (issue 6): a pod whose `k8s.v1.cni.cncf.io/networks` names a
//! NetworkAttachmentDefinition gets `eth0` in its primary network and `net1` in the
//! attachment's network, each in its own routing instance. The lab attaches them as
//! Multus would (one CNI ADD per interface) and records the Multus-style network status.
//!
//! Root needed (skipped otherwise); the `weft` and `weft-cni` binaries of this workspace;
//! lab `m<pid % 10000><letter>` taken down by a guard; traffic only between the lab's
//! own namespaces.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{Lab, require_root};

/// Prefix of this file's lab names.
const LAB_PREFIX: char = 'm';

const SCENARIO: &str = r#"
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: blue, namespace: default, annotations: {opencontrail.org/cidr: 192.168.50.0/24}}
spec: {config: '{"cniVersion":"0.3.1","type":"weft"}'}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: default, annotations: {k8s.v1.cni.cncf.io/networks: blue}}
spec: {nodeName: node-1, containers: [{name: c, image: x, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: default, annotations: {k8s.v1.cni.cncf.io/networks: '[{"name":"blue"}]'}}
spec: {nodeName: node-2, containers: [{name: c, image: x, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: default}
spec: {nodeName: node-2, containers: [{name: c, image: x, ports: [{containerPort: 80}]}]}
"#;

#[test]
fn secondary_interfaces_live_in_their_own_network() {
    require_root!();
    let lab = Lab {
        name: Lab::name('a'),
        weft: support::weft(),
    };
    lab.lab(&["down"]);
    let file = lab.write("multus.yaml", SCENARIO);
    lab.ok(&["up", "-f", &file.display().to_string()]);
    lab.wait();
    let status = lab.status();
    let net1 = |pod: &str| -> String {
        let rec = &status["pods"][pod];
        let sec = rec["secondary"]
            .as_array()
            .unwrap_or_else(|| panic!("{pod}: no secondary interfaces: {rec:#}"));
        assert_eq!(sec.len(), 1, "{rec:#}");
        assert_eq!(sec[0]["ifName"], "net1");
        // The Multus-style status: eth0 default, net1 in the attachment's network.
        let ns = rec["network_status"]
            .as_array()
            .or_else(|| rec["networkStatus"].as_array())
            .unwrap();
        assert_eq!(ns.len(), 2, "{rec:#}");
        assert_eq!(ns[0]["interface"], "eth0");
        assert_eq!(ns[0]["default"], true);
        assert_eq!(ns[1]["interface"], "net1");
        assert!(ns[1]["name"].as_str().unwrap().contains("blue"), "{rec:#}");
        sec[0]["ip"].as_str().unwrap().to_string()
    };
    let (a1, b1) = (net1("default/a"), net1("default/b"));
    assert!(
        a1.starts_with("192.168.50.") && b1.starts_with("192.168.50."),
        "{a1} {b1}"
    );
    // The interface exists in the pod, with its address.
    let out = lab.ok(&[
        "exec",
        "default/a",
        "--",
        "ip",
        "-4",
        "-o",
        "addr",
        "show",
        "dev",
        "net1",
    ]);
    assert!(out.contains(&format!("inet {a1}/")), "{out}");
    // net1 to net1 across nodes (the blue network's own VNI); eth0 still works.
    assert!(lab.probe("default/a", &b1, "80/tcp", 20), "a -> b over blue");
    assert!(
        lab.probe("default/a", "default/c", "80/tcp", 20),
        "a -> c over eth0"
    );
    // c is not on blue: its table has no route there.
    assert!(
        !lab.probe("default/c", &a1, "80/tcp", 0),
        "c must not reach a's blue address"
    );
    // Teardown runs DEL for net1 then eth0; the node keeps no veth of the pods.
    lab.ok(&["delete", "-f", &file.display().to_string()]);
    let (node_ns, _) = lab.node(1);
    let links = std::process::Command::new("ip")
        .args(["-n", &node_ns, "-o", "link", "show"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        !links
            .lines()
            .any(|l| l.contains("veth") && l.contains("weft") && !l.contains("weft-")),
        "pod veths left on node-1:\n{links}"
    );
}
