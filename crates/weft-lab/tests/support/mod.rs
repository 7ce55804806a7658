//! Harness shared by the lab's end-to-end tests: root check, the workspace's freshly
//! built `weft` binary, bounded command runs, and a [`Lab`] guard that takes its lab
//! down whatever happens. Each test file sets its own lab-name prefix so labs of
//! different test binaries never collide.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

/// Bound on one lab command.
pub const WAIT: Duration = Duration::from_secs(180);

/// Bound on the agents enforcing a change (`weft lab wait --timeout`), seconds.
pub const CONVERGE_SECS: u64 = 30;

/// True when running as root with iproute2 and nft available.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        })
        .and_then(|u| u.parse::<u32>().ok())
        == Some(0)
        && Command::new("ip").arg("-V").output().is_ok()
        && Command::new("nft").arg("--version").output().is_ok()
}

/// Skips the test (with a message) unless [`is_root`].
macro_rules! require_root {
    () => {
        if !support::is_root() {
            eprintln!("skipping: needs root, iproute2 and nft (builds a lab of network namespaces)");
            return;
        }
    };
}
pub(crate) use require_root;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn newest_source(dir: &Path, newest: &mut SystemTime) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            newest_source(&p, newest);
        } else if p.extension().is_some_and(|x| x == "rs")
            && let Ok(m) = e.metadata().and_then(|m| m.modified())
            && m > *newest
        {
            *newest = m;
        }
    }
}

/// The workspace crates `krate` depends on (its `[dependencies]`), transitively.
pub fn crate_closure(krate: &str, seen: &mut Vec<String>) {
    if seen.iter().any(|s| s == krate) {
        return;
    }
    seen.push(krate.to_string());
    let toml = std::fs::read_to_string(workspace().join("crates").join(krate).join("Cargo.toml"))
        .unwrap_or_default();
    let mut in_deps = false;
    for line in toml.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps
            && let Some(dep) = line
                .strip_suffix(".workspace = true")
                .filter(|d| d.starts_with("weft-"))
        {
            crate_closure(dep, seen);
        }
    }
}

/// `target/<profile>/weft`, checked to exist, to be fresh, and to have the agent.
pub fn weft() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = std::env::var_os("WEFT_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| exe.parent().unwrap().parent().unwrap().to_path_buf());
    let weft = dir.join("weft");
    let cni = dir.join("weft-cni");
    let advice = "build them first: cargo build -p weft -p weft-cni (or run cargo nextest run --workspace)";
    assert!(
        weft.is_file() && cni.is_file(),
        "{} or {} missing; {advice}",
        weft.display(),
        cni.display()
    );
    // Each binary against the sources it is built from: its crate (weft-cli is package
    // `weft`) and the workspace crates that crate depends on.
    for (bin, krate) in [(&weft, "weft-cli"), (&cni, "weft-cni")] {
        let mut crates = Vec::new();
        crate_closure(krate, &mut crates);
        let mut newest = SystemTime::UNIX_EPOCH;
        for c in &crates {
            newest_source(&workspace().join("crates").join(c).join("src"), &mut newest);
        }
        let built = std::fs::metadata(bin).and_then(|m| m.modified()).unwrap();
        assert!(
            built >= newest,
            "{} is older than the sources; {advice}",
            bin.display()
        );
    }
    weft
}

/// Runs a command with a bound; (exit code, stdout, stderr).
pub fn run(mut cmd: Command) -> (i32, String, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = format!("{cmd:?}");
    let mut child = cmd.spawn().expect("spawn");
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{shown} did not finish within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn netns_list() -> Vec<String> {
    let (_, out, _) = run({
        let mut c = Command::new("ip");
        c.args(["netns", "list"]);
        c
    });
    out.lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

pub fn pid_alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next())
                .is_some_and(|st| st != "Z")
        })
        .unwrap_or(false)
}

/// One lab, taken down when dropped.
pub struct Lab {
    /// Lab name (`<prefix><pid % 10000><letter>`).
    pub name: String,
    /// The `weft` binary.
    pub weft: PathBuf,
}

impl Lab {
    /// The lab name for `letter` in this test binary.
    pub fn name(letter: char) -> String {
        format!("{}{}{letter}", super::LAB_PREFIX, std::process::id() % 10000)
    }

    /// A lab with `nodes` nodes and the given manifest files applied.
    pub fn up(letter: char, nodes: usize, files: &[PathBuf]) -> Lab {
        let lab = Lab {
            name: Lab::name(letter),
            weft: weft(),
        };
        // Leftovers of an earlier run with the same pid are not ours to keep.
        lab.lab(&["down"]);
        let mut args = vec!["up".to_string(), "--nodes".into(), nodes.to_string()];
        for f in files {
            args.push("-f".into());
            args.push(f.display().to_string());
        }
        let (code, out, err) = lab.lab(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(code, 0, "lab up failed:\n{out}\n{err}");
        lab
    }

    /// A two-node lab with `manifests` (YAML text) applied.
    pub fn up_text(letter: char, manifests: &str) -> Lab {
        let lab = Lab {
            name: Lab::name(letter),
            weft: weft(),
        };
        lab.lab(&["down"]);
        let file = lab.write("up.yaml", manifests);
        let (code, out, err) = lab.lab(&["up", "--nodes", "2", "-f", &file.display().to_string()]);
        assert_eq!(code, 0, "lab up failed:\n{out}\n{err}");
        lab
    }

    /// A two-node lab with a gateway router and external host (`weft lab up --gateway`)
    /// and `manifests` (YAML text) applied and enforced; `None` (the test skips, with a
    /// message) when FRR is not installed.
    pub fn up_with_gateway(letter: char, manifests: &str) -> Option<Lab> {
        if !Path::new("/usr/lib/frr/bgpd").is_file() {
            eprintln!("SKIPPED: FRR is not installed (scripts/install-deps installs it)");
            return None;
        }
        let lab = Lab {
            name: Lab::name(letter),
            weft: weft(),
        };
        lab.lab(&["down"]);
        let file = lab.write("gateway.yaml", manifests);
        lab.ok(&["up", "--gateway", "-f", &file.display().to_string()]);
        lab.wait();
        Some(lab)
    }

    /// Runs `weft lab --name <lab> ARGS`.
    pub fn lab(&self, args: &[&str]) -> (i32, String, String) {
        let mut cmd = Command::new(&self.weft);
        cmd.args(["lab", "--name", &self.name]).args(args);
        run(cmd)
    }

    /// Like [`Lab::lab`], asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.lab(args);
        assert_eq!(code, 0, "weft lab {args:?} failed:\n{out}\n{err}");
        out
    }

    /// `weft lab status -o json`.
    pub fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["status", "-o", "json"])).unwrap()
    }

    /// Probe, allowing `retries` extra attempts (100 ms apart) before calling it failed.
    pub fn probe(&self, from: &str, to: &str, port: &str, retries: usize) -> bool {
        for attempt in 0..=retries {
            let (code, out, err) = self.lab(&["probe", from, to, port]);
            if code == 0 {
                return true;
            }
            eprintln!("probe {from} -> {to} {port} attempt {attempt}: {out}{err}");
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Writes `text` to a file in this lab's temp dir.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let dir = self.temp_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        file
    }

    fn temp_dir(&self) -> PathBuf {
        std::env::temp_dir().join(format!("weft-lab-test-{}", self.name))
    }

    /// `weft lab apply -f` of `text`, returning the outcome.
    pub fn apply_text(&self, name: &str, text: &str) -> (i32, String, String) {
        let file = self.write(name, text);
        self.lab(&["apply", "-f", &file.display().to_string()])
    }

    /// `weft lab apply -f` of `text`, asserting success, then [`Lab::wait`].
    pub fn apply(&self, name: &str, text: &str) {
        let file = self.write(name, text);
        self.ok(&["apply", "-f", &file.display().to_string()]);
        self.wait();
    }

    /// `weft lab delete -f` of `text`, asserting success, then [`Lab::wait`].
    pub fn delete(&self, name: &str, text: &str) {
        let file = self.write(name, text);
        self.ok(&["delete", "-f", &file.display().to_string()]);
        self.wait();
    }

    /// `weft lab wait`: returns once every agent enforces the controller's current
    /// state in its kernel (bounded by [`CONVERGE_SECS`]), so a probe after it sees
    /// the change without retries.
    pub fn wait(&self) {
        self.ok(&["wait", "--timeout", &CONVERGE_SECS.to_string()]);
    }

    /// The network namespace of pod `ns/name`.
    pub fn pod_netns(&self, pod: &str) -> String {
        self.status()["pods"][pod]["netns"]
            .as_str()
            .unwrap_or_else(|| panic!("no pod {pod}"))
            .to_string()
    }

    /// (netns, underlay address) of node `index` (1-based).
    pub fn node(&self, index: usize) -> (String, IpAddr) {
        let s = self.status();
        let n = &s["nodes"][index - 1];
        (
            n["netns"].as_str().unwrap().to_string(),
            n["underlayIp"].as_str().unwrap().parse().unwrap(),
        )
    }

    /// `weft get services -o json` (or the table with `table`), against the lab's
    /// controller.
    pub fn get_services(&self, json: bool) -> String {
        let url = self.status()["controller"]["url"].as_str().unwrap().to_string();
        let mut cmd = Command::new(&self.weft);
        cmd.args(["--server", &url, "get", "services"]);
        if json {
            cmd.args(["-o", "json"]);
        }
        let (code, out, err) = run(cmd);
        assert_eq!(code, 0, "weft get services: {out}{err}");
        out
    }

    /// The stored service `ns/name`.
    pub fn service(&self, key: &str) -> Value {
        let all: Value = serde_json::from_str(&self.get_services(true)).unwrap();
        all.as_array()
            .unwrap()
            .iter()
            .map(|o| o["object"].clone())
            .find(|o| {
                format!(
                    "{}/{}",
                    o["namespace"].as_str().unwrap(),
                    o["name"].as_str().unwrap()
                ) == key
            })
            .unwrap_or_else(|| panic!("no service {key} in {all}"))
    }

    pub fn vip(&self, key: &str) -> IpAddr {
        self.service(key)["vip"].as_str().unwrap().parse().unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let (code, out, err) = self.lab(&["down"]);
        if code != 0 {
            eprintln!("weft lab down --name {} failed: {out}{err}", self.name);
        }
        let _ = std::fs::remove_dir_all(self.temp_dir());
    }
}

/// The pods of the seed-002 scenario (`examples/namespaces`).
pub const SCENARIO_PODS: [&str; 5] = [
    "default/client",
    "ns-user/web",
    "ns-isolated/db-1",
    "ns-isolated/db-2",
    "ns-custom/app",
];

/// Expected 80/tcp reachability between the scenario's pods (`from` != `to`): default
/// and the non-isolated ns-user reach each other; the isolated namespace talks only to
/// itself; the custom network is cut off both ways.
pub fn scenario_reachable(from: &str, to: &str) -> bool {
    let open = ["default/client", "ns-user/web"];
    let isolated = ["ns-isolated/db-1", "ns-isolated/db-2"];
    (open.contains(&from) && open.contains(&to)) || (isolated.contains(&from) && isolated.contains(&to))
}

/// The address of pod `ns/name` in `lab` (from `weft lab status`).
pub fn pod_ip(lab: &Lab, pod: &str) -> IpAddr {
    let status = lab.status();
    status["pods"][pod]["ip"]
        .as_str()
        .and_then(|s| s.split('/').next()?.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no address for {pod} in lab {}: {:#}",
                lab.name, status["pods"][pod]
            )
        })
}

/// Output of `ip -n NETNS ARGS…`.
pub fn ip_in(netns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["-n", netns])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Waits (at most 30 s) until the gateway of `lab` (`weft lab up --gateway`) has a /32
/// route via `hop` to an address `wanted` accepts; that address.
pub fn wait_gateway_route(lab: &Lab, hop: &str, wanted: impl Fn(IpAddr) -> bool) -> IpAddr {
    let gw = format!("wl-{}-gw", lab.name);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let routes = ip_in(&gw, &["route", "show"]);
        let found = routes
            .lines()
            .filter(|l| l.contains(&format!("via {hop} ")))
            .filter_map(|l| l.split_whitespace().next()?.parse::<IpAddr>().ok())
            .find(|ip| wanted(*ip));
        if let Some(ip) = found {
            return ip;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway of lab {} has no wanted route via {hop}:\n{routes}",
            lab.name
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Connections accepted by a [`holding_server`], and the first peers' addresses.
pub type Accepted = (
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::Mutex<Vec<std::net::SocketAddr>>>,
);

/// A TCP server in namespace `netns` on `addr` that accepts and holds every connection
/// (a thread of the test; it ends with the test process): how many, and who (the first
/// 16 peers).
pub fn holding_server(netns: &str, addr: std::net::SocketAddr) -> Accepted {
    let path = format!("/run/netns/{netns}");
    let listener = weft_cni::run_in_netns(&path, move || std::net::TcpListener::bind(addr))
        .unwrap()
        .unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let peers: std::sync::Arc<std::sync::Mutex<Vec<std::net::SocketAddr>>> = Default::default();
    let (count, seen) = (accepted.clone(), peers.clone());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            if let Ok(peer) = s.peer_addr()
                && let Ok(mut p) = seen.lock()
                && p.len() < 16
            {
                p.push(peer);
            }
            held.push(s);
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    (accepted, peers)
}

/// Waits (at most 5 s) for the first peer a [`holding_server`] accepted.
pub fn first_peer(accepted: &Accepted) -> Option<std::net::SocketAddr> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(p) = accepted.1.lock().unwrap().first() {
            return Some(*p);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
