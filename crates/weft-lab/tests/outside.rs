//! The lab's outside (`weft lab up --gateway`, issue 6): an external host behind the
//! gateway router reaches a LoadBalancer service on the floating IP the controller gave
//! it from the pool its namespace names (`opencontrail.org/fip-pool`). The controller advertises the FIP /32 over BGP with
//! the backend's node as next hop; FRR's zebra installs it in the gateway's kernel; the
//! node DNATs it to the backend; the reply returns through the node's default route
//! (the gateway).
//!
//! Root and FRR needed (skipped otherwise); the `weft` and `weft-cni` binaries of this
//! workspace; lab `o<pid % 10000><letter>` taken down by a guard; every wait bounded;
//! traffic only between the lab's own namespaces.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{Lab, first_peer, holding_server, require_root, wait_gateway_route};

/// Prefix of this file's lab names.
const LAB_PREFIX: char = 'o';

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use weft_lab::echo::{Proto, whoami_from_netns};

const SCENARIO: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: default
  annotations:
    opencontrail.org/fip-pool: '{"domain":"default-domain","project":"k8s-default","network":"public","name":"pool"}'
---
apiVersion: weft.dev/v1alpha1
kind: VirtualNetwork
metadata: {name: public, namespace: default}
spec: {subnets: [198.51.100.0/24]}
---
apiVersion: weft.dev/v1alpha1
kind: FloatingIpPool
metadata: {name: pool, namespace: default}
spec: {network: public}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec:
  nodeName: node-2
  containers: [{name: c, image: x, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-ext, namespace: default}
spec:
  selector: {app: web}
  externalIPs: [198.51.100.77]
  ports: [{port: 81, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default}
spec: {nodeName: node-1, containers: [{name: c, image: x}]}
"#;

/// The service's floating IP, once the controller has given it one.
fn floating_ip(lab: &Lab) -> Option<IpAddr> {
    let svc = lab.service("default/web");
    svc["floating_ips"].as_array()?.first()?.as_str()?.parse().ok()
}

#[test]
fn an_external_host_reaches_a_load_balancer_service_on_its_floating_ip() {
    require_root!();
    let Some(lab) = Lab::up_with_gateway('a', SCENARIO) else {
        return;
    };
    let fip = floating_ip(&lab).unwrap_or_else(|| panic!("no floating IP: {:#}", lab.service("default/web")));
    assert!(fip.to_string().starts_with("198.51.100."), "{fip}");

    // The gateway learns the FIP with node-2 (the backend's node) as next hop.
    wait_gateway_route(&lab, "192.0.2.12", |ip| ip == fip);

    // The external host reaches the service on the FIP; the backend answers.
    let ext = format!("wl-{}-ext", lab.name);
    let target = SocketAddr::new(fip, 80);
    for _ in 0..5 {
        let who = whoami_from_netns(&ext, target, Proto::Tcp, Duration::from_secs(2))
            .unwrap_or_else(|o| panic!("external host -> {target}: {o:?}"));
        assert_eq!(who, "default/web");
    }
    // A port the service does not have is not open on the FIP (the check can fail).
    assert!(whoami_from_netns(&ext, SocketAddr::new(fip, 81), Proto::Tcp, Duration::from_secs(1)).is_err());

    // A ClusterIP service's external IP inside the pool is a floating IP too (TF §5.3):
    // advertised with the backend's node as next hop, reached from the external host.
    let ext_ip: IpAddr = "198.51.100.77".parse().unwrap();
    wait_gateway_route(&lab, "192.0.2.12", |ip| ip == ext_ip);
    let who = whoami_from_netns(
        &ext,
        SocketAddr::new(ext_ip, 81),
        Proto::Tcp,
        Duration::from_secs(2),
    )
    .unwrap_or_else(|o| panic!("external host -> {ext_ip}:81: {o:?}"));
    assert_eq!(who, "default/web");

    // A pod of the cluster reaches the service on its floating IP as well (translated
    // on the pod's node like the ClusterIP, not sent out to the gateway).
    let client = lab.pod_netns("default/client");
    let who = whoami_from_netns(&client, target, Proto::Tcp, Duration::from_secs(2))
        .unwrap_or_else(|o| panic!("default/client -> {target}: {o:?}"));
    assert_eq!(who, "default/web");
}

const SNAT_SCENARIO: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: default, annotations: {opencontrail.org/ip_fabric_snat: "true"}}
---
apiVersion: v1
kind: Namespace
metadata: {name: iso, annotations: {opencontrail.org/isolation: "true"}}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default}
spec: {nodeName: node-1, containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: iso}
spec: {nodeName: node-1, containers: [{name: c, image: x}]}
"#;

const POD_FIP: &str = r#"
apiVersion: weft.dev/v1alpha1
kind: VirtualNetwork
metadata: {name: public, namespace: default}
spec: {subnets: [198.51.100.0/24]}
---
apiVersion: weft.dev/v1alpha1
kind: FloatingIpPool
metadata: {name: pool, namespace: default}
spec: {network: public}
---
apiVersion: weft.dev/v1alpha1
kind: FloatingIp
metadata: {name: db, namespace: default}
spec: {pool: pool, pod: db}
"#;

fn db_pod(node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: db, namespace: default}}\nspec: {{nodeName: {node}, containers: [{{name: c, image: x, ports: [{{containerPort: 5432}}]}}]}}\n"
    )
}

#[test]
fn a_pods_floating_ip_works_both_ways_and_follows_the_pod_to_another_node() {
    require_root!();
    let Some(lab) = Lab::up_with_gateway('c', &format!("{POD_FIP}---\n{}", db_pod("node-1"))) else {
        return;
    };
    let ext = format!("wl-{}-ext", lab.name);
    let in_pool = |ip: IpAddr| ip.to_string().starts_with("198.51.100.");
    let fip = wait_gateway_route(&lab, "192.0.2.11", in_pool);
    // In: the external host opens a connection to the FIP.
    let who = whoami_from_netns(
        &ext,
        SocketAddr::new(fip, 5432),
        Proto::Tcp,
        Duration::from_secs(2),
    )
    .unwrap_or_else(|o| panic!("external host -> {fip}:5432: {o:?}"));
    assert_eq!(who, "default/db");
    // Out: the pod opens one to the external host, which sees the FIP as the source.
    let server: SocketAddr = "203.0.113.10:9100".parse().unwrap();
    let accepted = holding_server(&ext, server);
    let db_ns = lab.pod_netns("default/db");
    let out = weft_cni::run_in_netns(format!("/run/netns/{db_ns}"), move || {
        std::net::TcpStream::connect_timeout(&server, Duration::from_secs(2))
    })
    .unwrap()
    .expect("pod with a FIP -> external host");
    assert_eq!(
        first_peer(&accepted).map(|p| p.ip()),
        Some(fip),
        "source seen outside"
    );
    drop(out);

    // The pod is re-created on node-2: the FIP's route moves, and it answers there.
    lab.delete("db.yaml", &db_pod("node-1"));
    lab.apply("db.yaml", &db_pod("node-2"));
    let moved = wait_gateway_route(&lab, "192.0.2.12", in_pool);
    assert_eq!(moved, fip, "the same floating IP");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match whoami_from_netns(
            &ext,
            SocketAddr::new(fip, 5432),
            Proto::Tcp,
            Duration::from_secs(1),
        ) {
            Ok(who) => {
                assert_eq!(who, "default/db");
                break;
            }
            Err(o) => assert!(Instant::now() < deadline, "after the move: {o:?}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn pods_of_a_fabric_snat_network_reach_the_outside_as_their_node_and_exhaustion_is_reported() {
    require_root!();
    let Some(lab) = Lab::up_with_gateway('b', SNAT_SCENARIO) else {
        return;
    };
    let ext = format!("wl-{}-ext", lab.name);
    let server: SocketAddr = "203.0.113.10:8080".parse().unwrap();
    let (accepted, _) = holding_server(&ext, server);

    // The default pod network has fabric SNAT: the client gets out, as its node.
    let client_ns = lab.pod_netns("default/client");
    let connect = |netns: &str, timeout: Duration| {
        weft_cni::run_in_netns(format!("/run/netns/{netns}"), move || {
            std::net::TcpStream::connect_timeout(&server, timeout)
        })
        .unwrap()
    };
    let first = connect(&client_ns, Duration::from_secs(2)).expect("SNAT pod -> external host");
    let (node_ns, node_ip) = lab.node(1);
    let conntrack = String::from_utf8(
        std::process::Command::new("ip")
            .args(["netns", "exec", &node_ns, "cat", "/proc/net/nf_conntrack"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let translated = conntrack
        .lines()
        .find(|l| l.contains("dport=8080"))
        .unwrap_or_default()
        .to_string();
    let reply_port: u16 = translated
        .split_whitespace()
        .filter_map(|kv| kv.strip_prefix("dport="))
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no translated entry in {conntrack}"));
    assert!(translated.contains(&format!("dst={node_ip} ")), "{translated}");
    assert!((56000..=57023).contains(&reply_port), "{translated}");
    drop(first);
    // The SNAT pools are kept from the node's own connections.
    let (node1, _) = lab.node(1);
    let reserved = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &node1,
            "cat",
            "/proc/sys/net/ipv4/ip_local_reserved_ports",
        ])
        .output()
        .unwrap();
    let reserved = String::from_utf8_lossy(&reserved.stdout).trim().to_string();
    assert!(
        reserved.contains("56000-58047"),
        "reserved ports on node-1: {reserved:?}"
    );
    // An isolated namespace without the annotation fails fast (no route out).
    let iso = connect(&lab.pod_netns("iso/p"), Duration::from_secs(2));
    assert!(iso.is_err(), "iso/p must not get out: {iso:?}");

    // Exhaustion: hold more connections to one destination than the pool has ports.
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if hard < 4096 {
        eprintln!("SKIPPED (exhaustion part): RLIMIT_NOFILE hard limit {hard} < 4096");
        return;
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    let (held, failed) = weft_cni::run_in_netns(format!("/run/netns/{client_ns}"), move || {
        // A connect that times out on a busy machine is not exhaustion: stop only
        // after three failures in a row (an exhausted pool drops every new SYN).
        let mut held = Vec::new();
        let (mut failed, mut in_a_row) = (0, 0);
        for _ in 0..1100 {
            match std::net::TcpStream::connect_timeout(&server, Duration::from_secs(1)) {
                Ok(s) => {
                    held.push(s);
                    in_a_row = 0;
                }
                Err(_) => {
                    failed += 1;
                    in_a_row += 1;
                }
            }
            if in_a_row >= 3 {
                break;
            }
        }
        (held, failed)
    })
    .unwrap();
    let ok = held.len();
    eprintln!("fabric SNAT: {ok} connections to one destination held before the first of {failed} failures");
    assert!(ok <= 1024, "{ok} connections through a 1024-port pool");
    assert!(failed > 0, "no connection failed after {ok}");
    assert!(accepted.load(std::sync::atomic::Ordering::Relaxed) >= ok.saturating_sub(1));
    // The agent looks every 2 s; the connections stay open meanwhile.
    let file = format!("/run/weft/lab/{}/n1/state/snat.json", lab.name);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap_or_else(|_| "{}".into()))
                .unwrap_or_default();
        let exhausted = report["destinations"].as_array().is_some_and(|d| {
            d.iter()
                .any(|d| d["destination"] == "203.0.113.10" && d["port"] == 8080 && d["exhausted"] == true)
        });
        if exhausted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{file} does not report exhaustion: {report:#}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(held);
    let log = std::fs::read_to_string(format!("/run/weft/lab/{}/n1/agent.log", lab.name)).unwrap();
    assert!(
        log.contains("fabric SNAT port pool exhausted"),
        "agent log lacks the warning"
    );
}

/// TF's pool scopes (reference §5.2), most specific first: the Service's own
/// `opencontrail.org/fip-pool`, then its Namespace's, then ClusterConfig
/// `spec.publicFipPool`. Three LoadBalancer services, one per row, each answered from
/// the external host on a FIP of the pool its row names.
const PRECEDENCE: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: ns-pool
  annotations:
    opencontrail.org/fip-pool: '{"domain":"default-domain","project":"k8s-default","network":"pub-ns","name":"pool-ns"}'
---
apiVersion: v1
kind: Namespace
metadata: {name: ns-plain}
---
apiVersion: weft.dev/v1alpha1
kind: VirtualNetwork
metadata: {name: pub-cluster, namespace: default}
spec: {subnets: [198.18.0.0/24]}
---
apiVersion: weft.dev/v1alpha1
kind: VirtualNetwork
metadata: {name: pub-ns, namespace: default}
spec: {subnets: [198.18.1.0/24]}
---
apiVersion: weft.dev/v1alpha1
kind: VirtualNetwork
metadata: {name: pub-obj, namespace: default}
spec: {subnets: [198.18.2.0/24]}
---
apiVersion: weft.dev/v1alpha1
kind: FloatingIpPool
metadata: {name: pool-cluster, namespace: default}
spec: {network: pub-cluster}
---
apiVersion: weft.dev/v1alpha1
kind: FloatingIpPool
metadata: {name: pool-ns, namespace: default}
spec: {network: pub-ns}
---
apiVersion: weft.dev/v1alpha1
kind: FloatingIpPool
metadata: {name: pool-obj, namespace: default}
spec: {network: pub-obj}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: ns-pool, labels: {app: web}}
spec: {nodeName: node-2, containers: [{name: c, image: x, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: ns-plain, labels: {app: web}}
spec: {nodeName: node-2, containers: [{name: c, image: x, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata:
  name: by-object
  namespace: ns-pool
  annotations:
    opencontrail.org/fip-pool: '{"domain":"default-domain","project":"k8s-default","network":"pub-obj","name":"pool-obj"}'
spec: {type: LoadBalancer, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: by-namespace, namespace: ns-pool}
spec: {type: LoadBalancer, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: by-cluster, namespace: ns-plain}
spec: {type: LoadBalancer, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
"#;

#[test]
fn pool_scopes_pick_the_most_specific_pool_and_each_fip_answers_from_outside() {
    require_root!();
    let Some(lab) = Lab::up_with_gateway('d', PRECEDENCE) else {
        return;
    };
    // No cluster-wide pool yet: the service of the plain namespace waits, visibly.
    assert!(floating_ip_of(&lab, "ns-plain/by-cluster").is_none());
    let note = lab.service("ns-plain/by-cluster")["note"].to_string();
    assert!(note.contains("no floating-IP pool"), "{note}");
    // The cluster-wide pool, added to the lab's own ClusterConfig (router ID and BGP
    // listener as the lab set them).
    let url = lab.status()["controller"]["url"].as_str().unwrap().to_string();
    let out = std::process::Command::new(&lab.weft)
        .args(["--server", &url, "get", "clusterconfig", "-o", "json"])
        .output()
        .unwrap();
    let effective: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listen: SocketAddr = effective["bgp_listen"].as_str().unwrap().parse().unwrap();
    let config = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: ClusterConfig\nmetadata: {{name: default}}\nspec:\n  routerId: {}\n  bgpListenAddress: {}\n  bgpPort: {}\n  publicFipPool: '{{\"domain\":\"default-domain\",\"project\":\"k8s-default\",\"network\":\"pub-cluster\",\"name\":\"pool-cluster\"}}'\n",
        effective["router_id"].as_str().unwrap(),
        listen.ip(),
        listen.port()
    );
    lab.apply("cluster.yaml", &config);

    let ext = format!("wl-{}-ext", lab.name);
    for (service, subnet, backend) in [
        ("ns-pool/by-object", "198.18.2.", "ns-pool/web"),
        ("ns-pool/by-namespace", "198.18.1.", "ns-pool/web"),
        ("ns-plain/by-cluster", "198.18.0.", "ns-plain/web"),
    ] {
        let deadline = Instant::now() + Duration::from_secs(30);
        let fip = loop {
            if let Some(ip) = floating_ip_of(&lab, service) {
                break ip;
            }
            assert!(
                Instant::now() < deadline,
                "{service}: no FIP: {:#}",
                lab.service(service)
            );
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(
            fip.to_string().starts_with(subnet),
            "{service}: {fip} is not from {subnet}0/24"
        );
        wait_gateway_route(&lab, "192.0.2.12", |ip| ip == fip);
        let who = whoami_from_netns(&ext, SocketAddr::new(fip, 80), Proto::Tcp, Duration::from_secs(2))
            .unwrap_or_else(|o| panic!("external host -> {service} on {fip}: {o:?}"));
        assert_eq!(who, backend, "{service}");
    }
}

/// The floating IP of service `ns/name`, once it has one.
fn floating_ip_of(lab: &Lab, key: &str) -> Option<IpAddr> {
    lab.service(key)["floating_ips"]
        .as_array()?
        .first()?
        .as_str()?
        .parse()
        .ok()
}
