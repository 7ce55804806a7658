//! End-to-end tests of the real `weft-cni` binary, run exactly as a container runtime
//! runs it (env vars + config on stdin), against a fake agent on a temp unix socket.
//!
//! Kernel tests need root; without it they print a message and pass. Every test makes
//! its own uniquely named namespaces: pod namespaces `weftcni-<pid>-<n>` and a
//! `weftcni-host-<pid>-<n>` namespace that plays the node's root namespace (the plugin
//! runs inside it via `ip netns exec`), so no veth ever lands in the machine's real
//! root namespace. A guard deletes them all on drop, on success and on failure.

// Test helpers outside #[test] functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weft_cni::agent_proto::{
    AddReply, AgentError, AgentReply, AgentRequest, Empty, InterfaceConfig, RouteConfig,
};
use weft_cni::link::host_if_name;

const BIN: &str = env!("CARGO_BIN_EXE_weft-cni");
const WAIT: Duration = Duration::from_secs(60);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn next_id() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
        && Command::new("ip").arg("-V").output().is_ok()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipping: needs root and iproute2 (creates network namespaces)");
            return;
        }
    };
}

/// Runs a command to completion with a bound; returns (status code, stdout, stderr).
fn run_bounded(mut cmd: Command, stdin: &[u8]) -> (i32, String, String) {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin);
    }
    let deadline = Instant::now() + WAIT;
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("command {cmd:?} did not finish within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ip(args: &[&str]) -> String {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    let (code, out, err) = run_bounded(cmd, b"");
    assert_eq!(code, 0, "ip {args:?} failed: {err}");
    out
}

fn ip_json(args: &[&str]) -> Value {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    let out = ip(&full);
    serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out }).expect("ip -j output")
}

/// Fake agent: answers `add` from a per-pod table, records every request.
#[derive(Default)]
struct AgentState {
    pods: HashMap<String, Result<AddReply, AgentError>>,
    attached_error: Option<AgentError>,
    requests: Vec<AgentRequest>,
}

struct FakeAgent {
    socket: PathBuf,
    state: Arc<Mutex<AgentState>>,
    _rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl FakeAgent {
    fn start() -> FakeAgent {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("agent.sock");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let state = Arc::new(Mutex::new(AgentState::default()));
        let listener = {
            let _guard = rt.enter();
            tokio::net::UnixListener::bind(&socket).expect("bind")
        };
        let st = Arc::clone(&state);
        rt.spawn(weft_cni::serve_agent_requests(
            listener,
            move |req: AgentRequest| {
                let st = Arc::clone(&st);
                async move {
                    let mut st = st.lock().unwrap();
                    st.requests.push(req.clone());
                    match req {
                        AgentRequest::Add(a) => st
                            .pods
                            .get(&a.pod_name)
                            .cloned()
                            .unwrap_or_else(|| {
                                Err(AgentError::new(11, format!("pod {} unknown", a.pod_name)))
                            })
                            .map(AgentReply::Add),
                        AgentRequest::Attached(_) => match &st.attached_error {
                            Some(e) => Err(e.clone()),
                            None => Ok(AgentReply::Empty(Empty {})),
                        },
                        AgentRequest::Del(_) | AgentRequest::Status => Ok(AgentReply::Empty(Empty {})),
                    }
                }
            },
        ));
        FakeAgent {
            socket,
            state,
            _rt: rt,
            _dir: dir,
        }
    }

    fn set_pod(&self, pod: &str, reply: Result<AddReply, AgentError>) {
        self.state.lock().unwrap().pods.insert(pod.to_string(), reply);
    }

    fn ops(&self) -> Vec<(String, String)> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .map(|r| {
                let who = match r {
                    AgentRequest::Add(a) => a.container_id.clone(),
                    AgentRequest::Attached(a) => format!("{}:{}", a.container_id, a.host_if_name),
                    AgentRequest::Del(d) => d.container_id.clone(),
                    AgentRequest::Status => String::new(),
                };
                (r.op().to_string(), who)
            })
            .collect()
    }
}

fn pod_reply(address: &str, mac: &str) -> AddReply {
    AddReply {
        interfaces: vec![InterfaceConfig {
            if_name: "eth0".into(),
            network: "default-domain:k8s-default:k8s-default-pod-network".into(),
            address: address.parse().unwrap(),
            gateway: Some("10.47.255.254".parse().unwrap()),
            mac: Some(mac.into()),
            routes: vec![
                RouteConfig {
                    dst: "0.0.0.0/0".parse().unwrap(),
                    gw: Some("10.47.255.254".parse().unwrap()),
                },
                RouteConfig {
                    dst: "10.96.0.0/12".parse().unwrap(),
                    gw: Some("10.47.255.254".parse().unwrap()),
                },
            ],
            mtu: Some(1450),
        }],
        dns: None,
    }
}

/// One test's namespaces and agent; deletes every namespace on drop.
struct Lab {
    host: String,
    pods: Vec<String>,
    agent: FakeAgent,
}

impl Lab {
    fn new() -> Lab {
        let host = format!("weftcni-host-{}", next_id());
        let lab = Lab {
            host,
            pods: Vec::new(),
            agent: FakeAgent::start(),
        };
        ip(&["netns", "add", &lab.host]);
        ip(&["-n", &lab.host, "link", "set", "lo", "up"]);
        lab
    }

    fn pod_ns(&mut self) -> String {
        let name = format!("weftcni-{}", next_id());
        ip(&["netns", "add", &name]);
        self.pods.push(name.clone());
        name
    }

    fn conf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "weft-test",
            "type": "weft",
            "agentSocket": self.agent.socket,
            "addTimeoutSeconds": 1,
        })
    }

    /// Runs the plugin inside the lab's host namespace, like a runtime would.
    fn cni(&self, command: &str, cid: &str, netns: &str, pod: &str, conf: &Value) -> (i32, Value) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.host, BIN]);
        cni_env(&mut cmd, command, cid, netns, pod);
        let (code, out, err) = run_bounded(cmd, conf.to_string().as_bytes());
        if !err.is_empty() {
            eprintln!("weft-cni {command} stderr: {err}");
        }
        let value = if out.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&out)
                .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {out:?}; stderr {err}"))
        };
        (code, value)
    }

    fn add(&self, cid: &str, netns: &str, pod: &str, version: &str) -> Value {
        let (code, out) = self.cni("ADD", cid, netns, pod, &self.conf(version));
        assert_eq!(code, 0, "ADD failed: {out}");
        out
    }

    fn host_links(&self) -> Vec<String> {
        ip_json(&["-n", &self.host, "link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(str::to_string))
            .collect()
    }

    fn host_sysctl(&self, ifname: &str, key: &str) -> String {
        ip(&[
            "netns",
            "exec",
            &self.host,
            "cat",
            &format!("/proc/sys/net/ipv4/conf/{ifname}/{key}"),
        ])
        .trim()
        .to_string()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.pods.iter().chain(std::iter::once(&self.host)) {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "del", ns])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = cmd.status();
        }
    }
}

fn netns_path(name: &str) -> String {
    format!("/var/run/netns/{name}")
}

fn cni_env(cmd: &mut Command, command: &str, cid: &str, netns: &str, pod: &str) {
    cmd.env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=dev;K8S_POD_NAME={pod};K8S_POD_UID=uid-{pod};K8S_POD_INFRA_CONTAINER_ID={cid}"),
        );
    if !netns.is_empty() {
        cmd.env("CNI_NETNS", netns);
    }
}

/// Runs the binary directly (no namespaces needed) with the given env and stdin.
fn plain(envs: &[(&str, &str)], stdin: &str) -> (i32, Value) {
    let mut cmd = Command::new(BIN);
    cmd.env_clear();
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let (code, out, err) = run_bounded(cmd, stdin.as_bytes());
    let value = if out.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out:?} {err}"))
    };
    (code, value)
}

fn cid() -> String {
    format!(
        "c{:x}{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

#[test]
fn add_result_and_kernel_state_per_version() {
    require_root!();
    let mut lab = Lab::new();
    for (n, version) in ["1.0.0", "1.1.0", "0.3.1"].into_iter().enumerate() {
        let ns = lab.pod_ns();
        let pod = format!("web{n}");
        let addr = format!("10.47.255.{}/12", 250 - n);
        let mac = format!("02:00:00:00:00:{:02x}", n + 1);
        lab.agent.set_pod(&pod, Ok(pod_reply(&addr, &mac)));
        let cid = cid();
        let host = host_if_name(&cid, "eth0");
        let res = lab.add(&cid, &netns_path(&ns), &pod, version);

        // Result JSON.
        assert_eq!(res["cniVersion"], version);
        assert_eq!(res["interfaces"][0]["name"], host.as_str());
        assert!(res["interfaces"][0].get("sandbox").is_none());
        assert_eq!(res["interfaces"][1]["name"], "eth0");
        assert_eq!(res["interfaces"][1]["mac"], mac.as_str());
        assert_eq!(res["interfaces"][1]["sandbox"], netns_path(&ns).as_str());
        assert_eq!(res["ips"][0]["address"], addr.as_str());
        assert_eq!(res["ips"][0]["gateway"], "10.47.255.254");
        assert_eq!(res["ips"][0]["interface"], 1);
        let routes = res["routes"].as_array().unwrap();
        assert_eq!(routes.len(), 2, "default route merged: {routes:?}");
        assert_eq!(routes[0], json!({"dst": "0.0.0.0/0", "gw": "10.47.255.254"}));
        match version {
            "1.1.0" => {
                assert_eq!(res["interfaces"][1]["mtu"], 1450);
                assert!(res["ips"][0].get("version").is_none());
            }
            "1.0.0" => {
                assert!(res["interfaces"][1].get("mtu").is_none());
                assert!(res["ips"][0].get("version").is_none());
            }
            _ => assert_eq!(res["ips"][0]["version"], "4"),
        }

        // Pod side in the kernel.
        let link = &ip_json(&["-n", &ns, "addr", "show", "dev", "eth0"])[0];
        assert_eq!(link["address"], mac.as_str());
        assert_eq!(link["mtu"], 1450);
        assert!(link["flags"].as_array().unwrap().contains(&json!("UP")), "{link}");
        let ipv4 = link["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["family"] == "inet")
            .unwrap();
        assert_eq!(
            format!("{}/{}", ipv4["local"].as_str().unwrap(), ipv4["prefixlen"]),
            addr
        );
        let default = ip_json(&["-n", &ns, "route", "show", "default"]);
        assert_eq!(default[0]["gateway"], "10.47.255.254", "{default}");
        assert_eq!(default[0]["dev"], "eth0");
        let svc = ip_json(&["-n", &ns, "route", "show", "10.96.0.0/12"]);
        assert_eq!(svc[0]["gateway"], "10.47.255.254", "{svc}");

        // Host side.
        let hl = &ip_json(&["-n", &lab.host, "-d", "link", "show", "dev", &host])[0];
        assert_eq!(hl["ifalias"], format!("weft:{cid}:eth0").as_str());
        assert_eq!(hl["linkinfo"]["info_kind"], "veth");
        assert!(hl["flags"].as_array().unwrap().contains(&json!("UP")), "{hl}");
        assert_eq!(lab.host_sysctl(&host, "proxy_arp"), "1");
        assert_eq!(lab.host_sysctl(&host, "forwarding"), "1");

        // Agent saw add then attached with the host interface name.
        let ops = lab.agent.ops();
        assert!(ops.contains(&("add".into(), cid.clone())));
        assert!(
            ops.contains(&("attached".into(), format!("{cid}:{host}"))),
            "{ops:?}"
        );
    }
}

#[test]
fn traffic_flows_between_two_pods() {
    require_root!();
    let mut lab = Lab::new();
    let (ns_a, ns_b) = (lab.pod_ns(), lab.pod_ns());
    lab.agent
        .set_pod("a", Ok(pod_reply("10.47.255.252/12", "02:00:00:00:0a:01")));
    lab.agent
        .set_pod("b", Ok(pod_reply("10.47.255.251/12", "02:00:00:00:0b:01")));
    let (cid_a, cid_b) = (cid(), cid());
    lab.add(&cid_a, &netns_path(&ns_a), "a", "1.1.0");
    lab.add(&cid_b, &netns_path(&ns_b), "b", "1.1.0");
    // What the agent will do: a /32 to each pod's host veth.
    ip(&[
        "-n",
        &lab.host,
        "route",
        "add",
        "10.47.255.252/32",
        "dev",
        &host_if_name(&cid_a, "eth0"),
    ]);
    ip(&[
        "-n",
        &lab.host,
        "route",
        "add",
        "10.47.255.251/32",
        "dev",
        &host_if_name(&cid_b, "eth0"),
    ]);

    // A TCP echo between the pods, sockets opened inside their namespaces.
    let listener = weft_cni::run_in_netns(netns_path(&ns_b), || TcpListener::bind("10.47.255.251:0"))
        .unwrap()
        .unwrap();
    let server_addr: SocketAddr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let server = std::thread::spawn(move || -> std::io::Result<SocketAddr> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match listener.accept() {
                Ok((mut s, peer)) => {
                    s.set_nonblocking(false)?;
                    s.set_read_timeout(Some(Duration::from_secs(10)))?;
                    let mut buf = [0u8; 4];
                    s.read_exact(&mut buf)?;
                    s.write_all(b"pong")?;
                    return Ok(peer);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    });
    let mut stream = weft_cni::run_in_netns(netns_path(&ns_a), || {
        TcpStream::connect_timeout(&server_addr, Duration::from_secs(10))
    })
    .unwrap()
    .expect("pod A connects to pod B through the host namespace");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(b"ping").unwrap();
    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"pong");
    let peer = server.join().unwrap().unwrap();
    assert_eq!(
        peer.ip().to_string(),
        "10.47.255.252",
        "source address is pod A's"
    );
}

#[test]
fn host_prefix_address_reaches_its_gateway_on_link() {
    require_root!();
    let mut lab = Lab::new();
    let ns = lab.pod_ns();
    let mut reply = pod_reply("10.47.255.252/32", "02:00:00:00:00:01");
    reply.interfaces[0].gateway = Some("169.254.1.1".parse().unwrap());
    reply.interfaces[0].routes.clear();
    lab.agent.set_pod("web", Ok(reply));
    let res = lab.add(&cid(), &netns_path(&ns), "web", "1.1.0");
    assert_eq!(res["routes"], json!([{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]));
    let gw = ip_json(&["-n", &ns, "route", "show", "169.254.1.1"]);
    assert_eq!(gw[0]["scope"], "link", "{gw}");
    let default = ip_json(&["-n", &ns, "route", "show", "default"]);
    assert_eq!(default[0]["gateway"], "169.254.1.1", "{default}");
}

#[test]
fn del_twice_succeeds_and_removes_the_veth() {
    require_root!();
    let mut lab = Lab::new();
    let ns = lab.pod_ns();
    lab.agent
        .set_pod("web", Ok(pod_reply("10.47.255.252/12", "02:00:00:00:00:01")));
    let cid = cid();
    let host = host_if_name(&cid, "eth0");
    lab.add(&cid, &netns_path(&ns), "web", "1.0.0");
    assert!(lab.host_links().contains(&host));
    for _ in 0..2 {
        let (code, out) = lab.cni("DEL", &cid, &netns_path(&ns), "web", &lab.conf("1.0.0"));
        assert_eq!(code, 0, "{out}");
        assert_eq!(out, Value::Null, "DEL prints nothing on success");
    }
    assert!(!lab.host_links().contains(&host));
    assert!(
        ip_json(&["-n", &ns, "link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["ifname"] != "eth0")
    );
    assert!(lab.agent.ops().contains(&("del".into(), cid)));
}

#[test]
fn del_without_agent_socket_succeeds() {
    require_root!();
    let mut lab = Lab::new();
    let ns = lab.pod_ns();
    lab.agent
        .set_pod("web", Ok(pod_reply("10.47.255.252/12", "02:00:00:00:00:01")));
    let cid = cid();
    lab.add(&cid, &netns_path(&ns), "web", "1.1.0");
    let mut conf = lab.conf("1.1.0");
    conf["agentSocket"] = json!("/run/weft/definitely-not-here.sock");
    let (code, out) = lab.cni("DEL", &cid, &netns_path(&ns), "web", &conf);
    assert_eq!(code, 0, "{out}");
    assert!(!lab.host_links().contains(&host_if_name(&cid, "eth0")));
}

#[test]
fn del_after_netns_is_gone_succeeds() {
    require_root!();
    let mut lab = Lab::new();
    let ns = lab.pod_ns();
    lab.agent
        .set_pod("web", Ok(pod_reply("10.47.255.252/12", "02:00:00:00:00:01")));
    let cid = cid();
    lab.add(&cid, &netns_path(&ns), "web", "1.1.0");
    ip(&["netns", "del", &ns]);
    let (code, out) = lab.cni("DEL", &cid, &netns_path(&ns), "web", &lab.conf("1.1.0"));
    assert_eq!(code, 0, "{out}");
    // And with no CNI_NETNS at all (allowed on DEL).
    let (code, out) = lab.cni("DEL", &cid, "", "web", &lab.conf("1.1.0"));
    assert_eq!(code, 0, "{out}");
    assert!(!lab.host_links().contains(&host_if_name(&cid, "eth0")));
}

#[test]
fn add_with_malformed_json_is_code_6() {
    let (code, out) = plain(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
        ],
        r#"{"cniVersion":"1.0.0","name":"#,
    );
    assert_eq!(code, 1);
    assert_eq!(out["code"], 6, "{out}");
    assert!(out["msg"].as_str().unwrap().contains("JSON"));
    assert_eq!(out["cniVersion"], "1.1.0");
}

#[test]
fn add_with_wrong_field_type_names_the_field() {
    let (code, out) = plain(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
        ],
        r#"{"cniVersion":"1.0.0","name":"weft","type":"weft","addTimeoutSeconds":"soon"}"#,
    );
    assert_eq!(code, 1);
    assert_eq!(out["code"], 7, "{out}");
    assert!(
        out["msg"].as_str().unwrap().contains("addTimeoutSeconds"),
        "{out}"
    );
    assert_eq!(out["cniVersion"], "1.0.0");
}

#[test]
fn add_without_cni_netns_is_code_4() {
    let (code, out) = plain(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=dev;K8S_POD_NAME=web"),
        ],
        r#"{"cniVersion":"1.0.0","name":"weft","type":"weft"}"#,
    );
    assert_eq!(code, 1);
    assert_eq!(out["code"], 4, "{out}");
    assert!(out["msg"].as_str().unwrap().contains("CNI_NETNS"), "{out}");
}

#[test]
fn add_with_unsupported_version_is_code_1() {
    let (code, out) = plain(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/x"),
            ("CNI_IFNAME", "eth0"),
        ],
        r#"{"cniVersion":"0.2.0","name":"weft","type":"weft"}"#,
    );
    assert_eq!(code, 1);
    assert_eq!(out["code"], 1, "{out}");
}

#[test]
fn add_when_agent_refuses_leaves_nothing_behind() {
    require_root!();
    let mut lab = Lab::new();
    let ns = lab.pod_ns();
    // Error on `add` (retried while "try again later", bounded by addTimeoutSeconds=1).
    lab.agent.set_pod(
        "web",
        Err(AgentError {
            code: 11,
            msg: "pod dev/web has no interface yet".into(),
            details: "waiting".into(),
        }),
    );
    let cid1 = cid();
    let started = Instant::now();
    let (code, out) = lab.cni("ADD", &cid1, &netns_path(&ns), "web", &lab.conf("1.0.0"));
    assert_eq!(code, 1);
    assert_eq!(out["code"], 11, "{out}");
    assert_eq!(out["msg"], "pod dev/web has no interface yet");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        lab.agent
            .ops()
            .iter()
            .filter(|(op, c)| op == "add" && *c == cid1)
            .count()
            >= 2,
        "retried"
    );
    assert!(!lab.host_links().iter().any(|l| l.starts_with("weft")));

    // A weft-specific agent error is passed through unchanged.
    lab.agent.set_pod(
        "web",
        Err(AgentError {
            code: 120,
            msg: "no such network".into(),
            details: String::new(),
        }),
    );
    let (_, out) = lab.cni("ADD", &cid1, &netns_path(&ns), "web", &lab.conf("1.0.0"));
    assert_eq!(out["code"], 120, "{out}");

    // Error on `attached`, after the veth was built: ADD must undo it.
    lab.agent
        .set_pod("web", Ok(pod_reply("10.47.255.252/12", "02:00:00:00:00:01")));
    lab.state_attached_error(Some(AgentError::new(11, "agent busy")));
    let cid2 = cid();
    let (code, out) = lab.cni("ADD", &cid2, &netns_path(&ns), "web", &lab.conf("1.0.0"));
    assert_eq!(code, 1);
    assert_eq!(out["code"], 11, "{out}");
    assert!(
        !lab.host_links().iter().any(|l| l.starts_with("weft")),
        "veth undone: {:?}",
        lab.host_links()
    );
    assert!(
        ip_json(&["-n", &ns, "link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["ifname"] != "eth0")
    );
    assert!(
        lab.agent.ops().contains(&("del".into(), cid2.clone())),
        "agent told to forget"
    );

    // DEL still works afterwards, and a retried ADD succeeds.
    let (code, _) = lab.cni("DEL", &cid2, &netns_path(&ns), "web", &lab.conf("1.0.0"));
    assert_eq!(code, 0);
    lab.state_attached_error(None);
    lab.add(&cid2, &netns_path(&ns), "web", "1.0.0");
}

impl Lab {
    fn state_attached_error(&self, e: Option<AgentError>) {
        self.agent.state.lock().unwrap().attached_error = e;
    }
}

#[test]
fn add_twice_is_refused_without_breaking_the_first() {
    require_root!();
    let mut lab = Lab::new();
    let ns = lab.pod_ns();
    lab.agent
        .set_pod("web", Ok(pod_reply("10.47.255.252/12", "02:00:00:00:00:01")));
    let cid = cid();
    let first = lab.add(&cid, &netns_path(&ns), "web", "1.1.0");
    let (code, out) = lab.cni("ADD", &cid, &netns_path(&ns), "web", &lab.conf("1.1.0"));
    assert_eq!(code, 1);
    assert_eq!(out["code"], 106, "{out}");
    let mut conf = lab.conf("1.1.0");
    conf["prevResult"] = first;
    let (code, out) = lab.cni("CHECK", &cid, &netns_path(&ns), "web", &conf);
    assert_eq!(code, 0, "first attachment intact: {out}");
}

#[test]
fn version_output() {
    let (code, out) = plain(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.0.0"}"#);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        json!({"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]})
    );
}

#[test]
fn status_with_and_without_agent() {
    let agent = FakeAgent::start();
    let conf = |sock: &Path, v: &str| {
        json!({"cniVersion": v, "name": "weft", "type": "weft", "agentSocket": sock}).to_string()
    };
    let (code, out) = plain(&[("CNI_COMMAND", "STATUS")], &conf(&agent.socket, "1.1.0"));
    assert_eq!((code, &out), (0, &Value::Null));
    assert!(agent.ops().contains(&("status".into(), String::new())));

    let missing = agent.socket.with_file_name("missing.sock");
    let (code, out) = plain(&[("CNI_COMMAND", "STATUS")], &conf(&missing, "1.1.0"));
    assert_eq!(code, 1);
    assert_eq!(out["code"], 50, "{out}");

    let (_, out) = plain(&[("CNI_COMMAND", "STATUS")], &conf(&agent.socket, "1.0.0"));
    assert_eq!(out["code"], 1, "STATUS needs 1.1.0: {out}");
}

#[test]
fn gc_removes_stale_veths_and_keeps_valid_ones() {
    require_root!();
    let mut lab = Lab::new();
    let (ns_a, ns_b) = (lab.pod_ns(), lab.pod_ns());
    lab.agent
        .set_pod("a", Ok(pod_reply("10.47.255.252/12", "02:00:00:00:0a:01")));
    lab.agent
        .set_pod("b", Ok(pod_reply("10.47.255.251/12", "02:00:00:00:0b:01")));
    let (cid_a, cid_b) = (cid(), cid());
    lab.add(&cid_a, &netns_path(&ns_a), "a", "1.1.0");
    lab.add(&cid_b, &netns_path(&ns_b), "b", "1.1.0");
    // A weft-named veth weft did not make (no alias): GC must leave it alone.
    ip(&[
        "-n",
        &lab.host,
        "link",
        "add",
        "weftforeign0",
        "type",
        "veth",
        "peer",
        "name",
        "xforeign0",
    ]);

    let mut conf = lab.conf("1.1.0");
    conf["cni.dev/valid-attachments"] = json!([{"containerID": cid_a, "ifname": "eth0"}]);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.host, BIN])
        .env("CNI_COMMAND", "GC")
        .env("CNI_PATH", "/opt/cni/bin");
    let (code, out, err) = run_bounded(cmd, conf.to_string().as_bytes());
    assert_eq!(code, 0, "{out} {err}");

    let links = lab.host_links();
    assert!(links.contains(&host_if_name(&cid_a, "eth0")), "{links:?}");
    assert!(!links.contains(&host_if_name(&cid_b, "eth0")), "{links:?}");
    assert!(links.contains(&"weftforeign0".to_string()), "{links:?}");
    assert!(lab.agent.ops().contains(&("del".into(), cid_b)));

    // GC without the attachments list is a config error, below 1.1.0 a version error.
    let (code, out) = lab.cni("GC", "x", "", "a", &lab.conf("1.1.0"));
    assert_eq!((code, out["code"].clone()), (1, json!(7)), "{out}");
    let (_, out) = lab.cni("GC", "x", "", "a", &lab.conf("1.0.0"));
    assert_eq!(out["code"], 1, "{out}");
}

#[test]
fn check_passes_then_fails_when_the_address_is_gone() {
    require_root!();
    let mut lab = Lab::new();
    let ns = lab.pod_ns();
    lab.agent
        .set_pod("web", Ok(pod_reply("10.47.255.252/12", "02:00:00:00:00:01")));
    let cid = cid();
    let prev = lab.add(&cid, &netns_path(&ns), "web", "1.0.0");
    let mut conf = lab.conf("1.0.0");
    conf["prevResult"] = prev;
    let (code, out) = lab.cni("CHECK", &cid, &netns_path(&ns), "web", &conf);
    assert_eq!(code, 0, "{out}");

    ip(&["-n", &ns, "addr", "del", "10.47.255.252/12", "dev", "eth0"]);
    let (code, out) = lab.cni("CHECK", &cid, &netns_path(&ns), "web", &conf);
    assert_eq!(code, 1);
    assert_eq!(out["code"], 104, "{out}");
    assert!(out["msg"].as_str().unwrap().contains("10.47.255.252/12"), "{out}");

    // No prevResult: config error.
    let (_, out) = lab.cni("CHECK", &cid, &netns_path(&ns), "web", &lab.conf("1.0.0"));
    assert_eq!(out["code"], 7, "{out}");
    // Interface gone entirely.
    let (_, out) = lab.cni("DEL", &cid, &netns_path(&ns), "web", &lab.conf("1.0.0"));
    assert_eq!(out, Value::Null);
    let (_, out) = lab.cni("CHECK", &cid, &netns_path(&ns), "web", &conf);
    assert_eq!(out["code"], 104, "{out}");
    assert!(out["msg"].as_str().unwrap().contains("missing"), "{out}");
}
