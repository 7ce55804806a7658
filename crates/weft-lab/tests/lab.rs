//! End-to-end tests of `weft lab`: real namespaces, the real controller, agents and CNI
//! plugin, traffic between pods.
//!
//! They need root (skipped with a message otherwise) and the `weft` and `weft-cni`
//! binaries of this workspace, built: `cargo nextest run --workspace` builds them; with
//! `cargo test -p weft-lab` run `cargo build -p weft -p weft-cni` first (a test fails
//! with that advice when they are missing or older than the sources). Every test uses
//! its own lab, `t<pid % 10000><letter>`, and a guard that runs `weft lab down` when
//! the test ends, passing or failing; every wait is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{
    Lab, SCENARIO_PODS, WAIT, netns_list, pid_alive, require_root, run, scenario_reachable, weft, workspace,
};

/// Prefix of this file's lab names.
const LAB_PREFIX: char = 't';

const POD_A: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: default}\nspec:\n  nodeName: node-1\n  containers: [{name: c, image: x, ports: [{containerPort: 80}, {containerPort: 8080}]}]\n";
const POD_B: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: default}\nspec:\n  nodeName: node-2\n  containers: [{name: c, image: x, ports: [{containerPort: 80}]}]\n";

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Probes `from -> to` continuously on a thread until stopped; then returns every
/// result in order, for "no lost connection beyond a retry" checks.
struct Prober {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<Vec<bool>>,
}

impl Prober {
    fn start(lab: &Lab, from: &str, to: &str, port: &str) -> Prober {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (weft, name) = (lab.weft.clone(), lab.name.clone());
        let args: Vec<String> = ["lab", "--name", &name, "probe", from, to, port]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let flag = std::sync::Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut results = Vec::new();
            let deadline = Instant::now() + WAIT;
            while !flag.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
                let mut cmd = Command::new(&weft);
                cmd.args(&args);
                let (code, out, _) = run(cmd);
                if code != 0 {
                    eprintln!("background probe failed: {out}");
                }
                results.push(code == 0);
                std::thread::sleep(Duration::from_millis(20));
            }
            results
        });
        Prober { stop, handle }
    }

    /// Stops and checks: enough probes ran and no two failed in a row.
    fn finish(self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let results = self.handle.join().unwrap();
        assert!(results.len() >= 5, "only {} background probes ran", results.len());
        let worst = results.split(|ok| *ok).map(<[bool]>::len).max().unwrap_or(0);
        let failed = results.iter().filter(|ok| !**ok).count();
        assert!(
            worst <= 1,
            "{failed} of {} background probes failed, {worst} in a row",
            results.len()
        );
    }
}

fn scenario() -> Vec<PathBuf> {
    vec![workspace().join("examples/namespaces")]
}

fn two_pods(lab_letter: char) -> Lab {
    let lab = Lab::up(lab_letter, 2, &[]);
    let (code, out, err) = lab.apply_text("pods.yaml", &format!("{POD_A}---\n{POD_B}"));
    assert_eq!(code, 0, "{out}{err}");
    lab
}

#[test]
fn namespace_scenario_matrix_across_nodes() {
    require_root!();
    let lab = Lab::up('a', 2, &scenario());
    let m: Value = serde_json::from_str(&lab.ok(&["matrix", "-o", "json"])).unwrap();
    let cells = m["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 5 * 4, "{m}");
    let reach = |from: &str, to: &str| -> bool {
        let c = cells
            .iter()
            .find(|c| c["from"] == from && c["to"] == to)
            .unwrap_or_else(|| panic!("no cell {from} -> {to}"));
        c["kind"] == "connected"
    };
    // Every ordered pair against the expected matrix (support::scenario_reachable):
    // default <-> non-isolated ns-user across nodes, the isolated namespace only inside
    // itself (not even to pods backing a service it may use), the custom network cut off.
    let mut wrong = Vec::new();
    for from in SCENARIO_PODS {
        for to in SCENARIO_PODS.into_iter().filter(|to| *to != from) {
            let want = scenario_reachable(from, to);
            if reach(from, to) != want {
                wrong.push(format!(
                    "{from} -> {to}: expected {}",
                    if want { "reachable" } else { "blocked" }
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "matrix differs: {wrong:#?}\n{}",
        lab.ok(&["matrix"])
    );

    // UDP across nodes, and the probe's exit codes.
    assert!(lab.probe("default/client", "ns-user/web", "80/udp", 2));
    let (code, out, _) = lab.lab(&["probe", "default/client", "ns-isolated/db-1", "80/tcp"]);
    assert_eq!(code, 1, "{out}");
    // A port nobody serves on a reachable pod: refused, not a timeout.
    let (code, out, _) = lab.lab(&["probe", "default/client", "ns-user/web", "81/tcp"]);
    assert_eq!(code, 1);
    assert!(out.contains("refused"), "{out}");

    // exec runs in the pod and passes the exit code through.
    let status = lab.status();
    let ip = status["pods"]["default/client"]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    let out = lab.ok(&[
        "exec",
        "default/client",
        "--",
        "ip",
        "-o",
        "addr",
        "show",
        "dev",
        "eth0",
    ]);
    assert!(out.contains(&ip), "{out}");
    let (code, _, _) = lab.lab(&["exec", "default/client", "--", "sh", "-c", "exit 3"]);
    assert_eq!(code, 3);

    // Routes: each node has VN tables and rules steering into them.
    let routes = lab.ok(&["routes", "--node", "node-1"]);
    assert!(routes.contains("table 1"), "{routes}");
    assert!(!routes.contains("VN tables: none yet"), "{routes}");
    // Nodes were placed as the manifests say.
    assert_eq!(status["pods"]["ns-user/web"]["node"], "node-2");
    assert_eq!(status["pods"]["default/client"]["node"], "node-1");
}

#[test]
fn pod_delete_and_readd_with_the_same_name() {
    require_root!();
    let lab = two_pods('b');
    assert!(lab.probe("default/a", "default/b", "80/tcp", 2));
    let first = lab.status()["pods"]["default/b"].clone();
    let file = lab.write("b.yaml", POD_B);
    let file = file.display().to_string();
    lab.ok(&["delete", "-f", &file]);
    assert!(lab.status()["pods"].get("default/b").is_none());
    assert!(!netns_list().contains(&first["netns"].as_str().unwrap().to_string()));
    assert!(!pid_alive(first["echoPid"].as_u64().unwrap()));
    // Gone: the old address does not answer.
    let (code, _, _) = lab.lab(&["probe", "default/a", first["ip"].as_str().unwrap(), "80/tcp"]);
    assert_eq!(code, 1);
    // Back with the same name: a new sandbox, reachable again.
    lab.ok(&["apply", "-f", &file]);
    let second = lab.status()["pods"]["default/b"].clone();
    assert_ne!(first["containerId"], second["containerId"]);
    assert!(lab.probe("default/a", "default/b", "80/tcp", 5));
    assert!(lab.probe("default/b", "default/a", "8080/tcp", 5));
    // Applying the same manifest again changes nothing.
    lab.ok(&["apply", "-f", &file]);
    assert_eq!(
        lab.status()["pods"]["default/b"]["containerId"],
        second["containerId"]
    );
}

#[test]
fn agent_restart_keeps_traffic_flowing() {
    require_root!();
    let lab = two_pods('c');
    assert!(lab.probe("default/a", "default/b", "80/tcp", 2));
    // Traffic flows the whole time the agent is stopped and restarted.
    let prober = Prober::start(&lab, "default/a", "default/b", "80/tcp");
    std::thread::sleep(Duration::from_millis(300));
    lab.ok(&["stop", "agent", "--node", "node-2"]);
    assert_eq!(lab.status()["nodes"][1]["agentRunning"], false);
    // The kernel keeps forwarding without the agent.
    for _ in 0..5 {
        assert!(lab.probe("default/a", "default/b", "80/tcp", 1));
        assert!(lab.probe("default/b", "default/a", "80/udp", 1));
    }
    lab.ok(&["start", "agent", "--node", "node-2"]);
    for _ in 0..5 {
        assert!(lab.probe("default/a", "default/b", "80/tcp", 1));
    }
    std::thread::sleep(Duration::from_millis(300));
    prober.finish();
    // The restarted agent still does its job: a new pod on its node.
    let (code, out, err) = lab.apply_text(
        "c.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: c}\nspec: {nodeName: node-2, containers: [{name: c, image: x}]}\n",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(lab.probe("default/a", "default/c", "80/tcp", 5));
}

#[test]
fn controller_down_pods_keep_talking() {
    require_root!();
    let lab = two_pods('d');
    let prober = Prober::start(&lab, "default/b", "default/a", "80/tcp");
    std::thread::sleep(Duration::from_millis(300));
    lab.ok(&["stop", "controller"]);
    assert_eq!(lab.status()["controller"]["running"], false);
    for _ in 0..5 {
        assert!(lab.probe("default/a", "default/b", "80/tcp", 1));
        assert!(lab.probe("default/b", "default/a", "8080/tcp", 1));
    }
    // Changes need the controller: a clear error, not a hang.
    let (code, _, err) = lab.apply_text(
        "c.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: c}\nspec: {containers: [{name: c, image: x}]}\n",
    );
    assert_ne!(code, 0);
    assert!(err.contains("cannot reach the weft controller"), "{err}");
    lab.ok(&["start", "controller"]);
    assert!(lab.probe("default/a", "default/b", "80/tcp", 5));
    std::thread::sleep(Duration::from_millis(300));
    prober.finish();
    let (code, out, err) = lab.apply_text(
        "c.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: c}\nspec: {nodeName: node-2, containers: [{name: c, image: x}]}\n",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(lab.probe("default/a", "default/c", "80/tcp", 10));
}

#[test]
fn cni_del_twice_and_clear_add_errors() {
    require_root!();
    let lab = two_pods('e');
    // DEL twice: both succeed, and the pod is detached.
    for _ in 0..2 {
        let (code, out, err) = lab.lab(&["cni", "default/b", "DEL"]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.trim().is_empty(), "DEL prints nothing: {out}");
    }
    let (code, _, _) = lab.lab(&["probe", "default/a", "default/b", "80/tcp"]);
    assert_eq!(code, 1, "b is detached");
    // Deleting the pod afterwards still works (a third DEL inside).
    lab.ok(&["delete", "-f", &lab.write("b.yaml", POD_B).display().to_string()]);

    // ADD with a malformed config: the CNI decode error, code 6.
    let (code, out, _) = lab.lab(&[
        "cni",
        "default/a",
        "ADD",
        "--config",
        r#"{"cniVersion":"1.1.0","name":"#,
    ]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["code"], 6, "{v}");
    assert!(v["msg"].as_str().unwrap().contains("JSON"), "{v}");
    // A config field of the wrong type: code 7 naming the field.
    let (code, out, _) = lab.lab(&[
        "cni",
        "default/a",
        "ADD",
        "--config",
        r#"{"cniVersion":"1.1.0","name":"weft","type":"weft","addTimeoutSeconds":"soon"}"#,
    ]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["code"], 7, "{v}");
    assert!(v["msg"].as_str().unwrap().contains("addTimeoutSeconds"), "{v}");

    // A pod whose namespace names a network that does not exist: ADD fails with a CNI
    // error naming the pod, and the lab leaves no sandbox behind.
    let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-lost\n  annotations:\n    opencontrail.org/network: \"{'domain': 'default-domain', 'project': 'k8s-ns-lost', 'name': 'vn-missing'}\"\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: lost, namespace: ns-lost}\nspec: {nodeName: node-1, containers: [{name: c, image: x}]}\n";
    let file = lab.write("lost.yaml", text);
    let (code, out, err) = lab.lab(&["apply", "--cni-timeout", "3", "-f", &file.display().to_string()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("CNI ADD failed: code"), "{err}");
    assert!(err.contains("ns-lost/lost"), "{err}");
    assert!(lab.status()["pods"].get("ns-lost/lost").is_none());
    let prefix = format!("wl-{}-p", lab.name);
    let pods: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert_eq!(pods.len(), 1, "only a's sandbox is left: {pods:?}");
    // And the healthy pod was not disturbed by any of it.
    let (code, out, err) = lab.lab(&["cni", "default/a", "CHECK"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn down_removes_everything_even_after_a_crash() {
    require_root!();
    let lab = two_pods('f');
    let status = lab.status();
    let mut pids: Vec<u64> = vec![status["controller"]["pid"].as_u64().unwrap()];
    for n in status["nodes"].as_array().unwrap() {
        pids.push(n["agentPid"].as_u64().unwrap());
    }
    for p in status["pods"].as_object().unwrap().values() {
        pids.push(p["echoPid"].as_u64().unwrap());
    }
    assert_eq!(pids.len(), 5);
    assert!(pids.iter().all(|p| pid_alive(*p)));
    // As if `weft lab` had died before recording anything: no state.json.
    let dir = PathBuf::from("/run/weft/lab").join(&lab.name);
    std::fs::remove_file(dir.join("state.json")).unwrap();
    let out = lab.ok(&["down"]);
    let _ = out;
    let prefix = format!("wl-{}-", lab.name);
    let left: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    let alive: Vec<&u64> = pids.iter().filter(|p| pid_alive(**p)).collect();
    assert!(alive.is_empty(), "processes left: {alive:?}");
    assert!(!dir.exists(), "{} left", dir.display());
    // Twice is fine.
    lab.ok(&["down"]);
    // Commands on a lab that is down say so.
    let (code, _, err) = lab.lab(&["matrix"]);
    assert_eq!(code, 1);
    assert!(err.contains("is not up"), "{err}");
}

/// Echo server and probes between two namespaces joined by a veth: the lab's workload
/// without a controller or agent.
#[test]
fn echo_and_probe_between_namespaces() {
    require_root!();
    let name = Lab::name('g');
    let lab = Lab {
        name: name.clone(),
        weft: weft(),
    };
    lab.lab(&["down"]);
    let (a, b) = (format!("wl-{name}-pa"), format!("wl-{name}-pb"));
    let ip = |args: &[&str]| {
        let mut c = Command::new("ip");
        c.args(args);
        let (code, _, err) = run(c);
        assert_eq!(code, 0, "ip {args:?}: {err}");
    };
    ip(&["netns", "add", &a]);
    ip(&["netns", "add", &b]);
    ip(&[
        "-n", &a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &b,
    ]);
    ip(&["-n", &a, "addr", "add", "10.99.0.1/24", "dev", "eth0"]);
    ip(&["-n", &b, "addr", "add", "10.99.0.2/24", "dev", "eth0"]);
    for ns in [&a, &b] {
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    // The echo server, as the lab runs it in a pod (killed by `down` through the netns).
    let ready = std::env::temp_dir().join(format!("weft-lab-echo-{name}.ready"));
    let _ = std::fs::remove_file(&ready);
    let mut child = Command::new("ip")
        .args(["netns", "exec", &b])
        .arg(&lab.weft)
        .args(["lab", "echo", "--tcp", "80", "--udp", "80", "--ready-file"])
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "echo server not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Duration::from_secs(1);
    let to = |p: u16| std::net::SocketAddr::from(([10, 99, 0, 2], p));
    use weft_lab::echo::{ProbeKind, Proto, probe_from_netns};
    let o = probe_from_netns(&a, to(80), Proto::Tcp, t);
    assert_eq!(o.kind, ProbeKind::Connected, "{o:?}");
    let o = probe_from_netns(&a, to(80), Proto::Udp, t);
    assert_eq!(o.kind, ProbeKind::Connected, "{o:?}");
    let o = probe_from_netns(&a, to(81), Proto::Tcp, t);
    assert_eq!(o.kind, ProbeKind::Refused, "{o:?}");
    let o = probe_from_netns(&a, to(81), Proto::Udp, t);
    assert_eq!(o.kind, ProbeKind::Refused, "{o:?}");
    // No route at all.
    let o = probe_from_netns(
        &a,
        std::net::SocketAddr::from(([10, 98, 0, 1], 80)),
        Proto::Tcp,
        t,
    );
    assert_eq!(o.kind, ProbeKind::Unreachable, "{o:?}");
    // Silently dropped: a timeout within the bound.
    ip(&["-n", &b, "link", "set", "eth0", "down"]);
    let started = Instant::now();
    let o = probe_from_netns(&a, to(80), Proto::Tcp, t);
    assert!(
        matches!(o.kind, ProbeKind::Timeout | ProbeKind::Unreachable),
        "{o:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&ready);
    // `down` finds these namespaces by their prefix although no lab state exists.
    lab.ok(&["down"]);
    assert!(!netns_list().iter().any(|n| n.starts_with(&format!("wl-{name}-"))));
}

/// Processes whose command line contains `needle` (not this test).
fn processes_naming(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok() && n != me)
        })
        .filter_map(|e| {
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let line = String::from_utf8_lossy(&raw).replace('\0', " ");
            line.contains(needle)
                .then(|| format!("{}: {line}", e.file_name().to_string_lossy()))
        })
        .collect()
}

/// `weft lab bench throughput` for 1 s per path: every path moves bytes, and nothing of
/// the bench (lab, namespaces, processes) is left. No figure is checked.
#[test]
fn throughput_bench_moves_bytes_and_leaves_nothing() {
    require_root!();
    let mut cmd = Command::new(weft());
    cmd.args(["lab", "bench", "throughput", "--seconds", "1", "-o", "json"]);
    let (code, out, err) = run(cmd);
    assert_eq!(code, 0, "bench throughput failed:\n{out}\n{err}");
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let paths = report["paths"].as_array().unwrap();
    let kinds: Vec<&str> = paths.iter().map(|p| p["path"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["weft", "hand-vxlan", "bare-veth"], "{report}");
    for p in paths {
        assert!(p["bytes"].as_u64().unwrap() > 0, "{p}");
    }
    // The weft pods' MTU, as the brief of the comparison says.
    assert_eq!(paths[0]["mtu"], 1450, "{report}");
    let lab = report["lab"].as_str().unwrap();
    let ours: Vec<String> = report["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    assert!(ours.len() >= 7, "{report}");
    let prefix = format!("wl-{lab}-");
    let left: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&prefix) || ours.contains(n))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    let dir = format!("/run/weft/lab/{lab}");
    assert!(!Path::new(&dir).exists(), "{dir} left");
    let procs = processes_naming(&format!("{dir}/"));
    assert!(procs.is_empty(), "processes left: {procs:?}");
}

/// `weft lab bench --pods 4` on a 2-node lab prints the three figures over every pod
/// and removes its pods. No figure is checked.
#[test]
fn pod_bench_reports_and_cleans_up() {
    require_root!();
    let lab = Lab::up('h', 2, &[]);
    let out = lab.ok(&["bench", "--pods", "4"]);
    for line in [
        "CNI ADD (plugin run)",
        "CNI DEL (plugin run)",
        "apply -> first probe (x-node)",
    ] {
        let l = out
            .lines()
            .find(|l| l.starts_with(line))
            .unwrap_or_else(|| panic!("no {line:?} in:\n{out}"));
        assert!(l.contains("n=4 "), "{l}");
    }
    let status = lab.status();
    let left: Vec<&String> = status["pods"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("weft-bench/"))
        .collect();
    assert!(left.is_empty(), "bench pods left: {left:?}");
    let bench_ns = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&format!("wl-{}-p", lab.name)))
        .count();
    assert_eq!(bench_ns, 0, "pod namespaces left");
}

/// `weft explain`'s verdict equals what `weft lab probe` observes, for every ordered
/// pair of pods and for every pod to every service VIP in the namespace scenario.
#[test]
fn explain_agrees_with_probes() {
    require_root!();
    let lab = Lab::up('x', 2, &scenario());
    let status = lab.status();
    let url = status["controller"]["url"]
        .as_str()
        .expect("controller url")
        .to_string();
    let pods: Vec<String> = status["pods"]
        .as_object()
        .expect("pods")
        .keys()
        .cloned()
        .collect();
    let services: Vec<String> = {
        let mut cmd = Command::new(&lab.weft);
        cmd.args(["--server", &url, "get", "services", "-o", "json"]);
        let (code, out, err) = run(cmd);
        assert_eq!(code, 0, "{err}");
        let list: Value = serde_json::from_str(&out).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["object"]["vip"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(services.len(), 2);
    let mut checked = 0;
    for from in &pods {
        let targets = pods
            .iter()
            .filter(|p| *p != from)
            .cloned()
            .chain(services.iter().cloned());
        for to in targets {
            let mut cmd = Command::new(&lab.weft);
            cmd.args(["--server", &url, "explain", from, "->", &format!("{to}:80/tcp")]);
            let (code, out, err) = run(cmd);
            assert!(
                code == 0 || code == 1,
                "explain {from} -> {to} failed: {out}{err}"
            );
            let explained = code == 0;
            let observed = lab.probe(from, &to, "80/tcp", if explained { 3 } else { 0 });
            assert_eq!(
                explained, observed,
                "explain and probe disagree for {from} -> {to}:\n{out}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 5 * 4 + 5 * 2);
}
