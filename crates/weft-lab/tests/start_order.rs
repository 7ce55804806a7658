//! Start-order independence and faults (issue 7, "Converges in any order"): randomized
//! runs bring a lab's controller, agents and pods up in random orders — agents before
//! the controller, pods applied while their node's agent is down (CNI ADD must fail
//! cleanly; the test retries like a kubelet) — and kill components (SIGKILL by pid, or
//! `weft lab stop`) at random points, also in the middle of an apply or a delete of many
//! pods (so during CNI ADD/DEL), then restart them. Afterwards the seed-002 scenario's
//! reachability matrix must be the expected one and IPAM must hold exactly one address
//! per pod (no duplicate, no leak).
//!
//! Runs as root only (skips otherwise). `WEFT_SEED=N` replays one run; `WEFT_LONG=1`
//! makes 50 runs instead of 3. The seed of a failing run is printed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Lab, SCENARIO_PODS, netns_list, require_root, scenario_reachable, workspace};

const LAB_PREFIX: char = 'o';

/// Pods applied (and deleted again) in bulk while components are killed.
const CHURN_PODS: usize = 12;

/// Attempts of a kubelet-like retry of apply/delete (about 1 s apart).
const RETRIES: usize = 40;

/// SplitMix64: small, seedable, good enough to pick orders and delays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// A lab component the test stops and starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comp {
    Controller,
    Agent(usize),
}

impl Comp {
    fn start_args(self) -> Vec<String> {
        match self {
            Comp::Controller => vec!["start".into(), "controller".into()],
            Comp::Agent(i) => vec!["start".into(), "agent".into(), "--node".into(), i.to_string()],
        }
    }
    fn stop_args(self) -> Vec<String> {
        let mut a = self.start_args();
        a[0] = "stop".into();
        a
    }
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The recorded pid of a component (whether alive or not).
fn pid_of(lab: &Lab, c: Comp) -> Option<u64> {
    let s = lab.status();
    match c {
        Comp::Controller => s["controller"]["pid"].as_u64(),
        Comp::Agent(i) => s["nodes"][i - 1]["agentPid"].as_u64(),
    }
}

fn sigkill(pid: u64) {
    let (_, _, _) = support::run({
        let mut c = Command::new("kill");
        c.args(["-KILL", &pid.to_string()]);
        c
    });
}

/// Kills `c`: SIGKILL by pid (no chance to clean up) or `weft lab stop` (SIGTERM).
/// `hard_only` when the lab lock may be held (a lab command runs): stop would wait.
fn kill(lab: &Lab, c: Comp, rng: &mut Rng, hard_only: bool, log: &mut Vec<String>) {
    if hard_only || rng.chance(60) {
        if let Some(pid) = pid_of(lab, c) {
            sigkill(pid);
            log.push(format!("SIGKILL {c:?} (pid {pid})"));
        }
    } else {
        lab.ok(&args(&c.stop_args()));
        log.push(format!("stop {c:?}"));
    }
}

fn start(lab: &Lab, c: Comp, log: &mut Vec<String>) {
    // The pid may still be recorded after a SIGKILL; start checks liveness itself.
    lab.ok(&args(&c.start_args()));
    log.push(format!("start {c:?}"));
}

fn churn_yaml() -> String {
    (0..CHURN_PODS)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: churn-{i}, namespace: default, labels: {{app: churn}}}}\n\
                 spec:\n  containers: [{{name: c, image: weft/echo, ports: [{{containerPort: 80}}]}}]\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// `weft lab <verb> -f <file>` as a child process (to kill components while it runs).
fn spawn_lab(lab: &Lab, verb: &str, file: &str) -> Child {
    let mut cmd = Command::new(&lab.weft);
    cmd.args(["lab", "--name", &lab.name, verb, "-f", file]);
    if verb == "apply" {
        cmd.args(["--cni-timeout", "5"]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weft lab")
}

/// Waits for a child (bounded); (exit code, stdout+stderr).
fn finish(mut child: Child) -> (i32, String) {
    let deadline = Instant::now() + support::WAIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a weft lab command did not finish within {:?}", support::WAIT);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// After a failed apply the lab must be clean: every pod namespace that exists belongs
/// to a recorded pod, and every recorded pod runs its echo server or is marked as not
/// attached (a sandbox whose CNI DEL still has to be retried).
fn assert_no_orphan_sandboxes(lab: &Lab, context: &str) {
    let status = lab.status();
    let recorded: BTreeSet<String> = status["pods"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|p| p["netns"].as_str().map(str::to_string))
        .collect();
    let prefix = format!("wl-{}-p", lab.name);
    let orphans: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&prefix) && !recorded.contains(n))
        .collect();
    assert!(
        orphans.is_empty(),
        "{context}: pod namespaces the lab does not know: {orphans:?}"
    );
}

/// Retries `weft lab <verb> -f file` as a kubelet would until it succeeds.
fn until_ok(lab: &Lab, verb: &str, file: &str, log: &mut Vec<String>) {
    let mut last = String::new();
    for attempt in 0..RETRIES {
        let (code, out) = finish(spawn_lab(lab, verb, file));
        if code == 0 {
            if attempt > 0 {
                log.push(format!("{verb} succeeded on attempt {}", attempt + 1));
            }
            return;
        }
        assert_no_orphan_sandboxes(lab, &format!("after a failed {verb}"));
        last = out;
        std::thread::sleep(Duration::from_millis(1000));
    }
    panic!("weft lab {verb} -f {file} failed {RETRIES} times; last output:\n{last}");
}

/// GET `path` from the controller (plain HTTP/1.0, so no chunked body).
fn http_get(url: &str, path: &str) -> Value {
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "GET {path}: {head}\n{body}"
    );
    serde_json::from_str(body).unwrap()
}

/// IPAM: the store is consistent, the controller holds exactly one address per pod the
/// lab runs and it is the address CNI gave the pod, no address twice.
fn check_ipam(lab: &Lab) -> Vec<String> {
    let status = lab.status();
    let url = status["controller"]["url"].as_str().unwrap().to_string();
    let mut problems = Vec::new();
    let report = http_get(&url, "/v1/consistency");
    for p in report["problems"].as_array().unwrap() {
        problems.push(format!("consistency: {p}"));
    }
    let lab_pods: BTreeMap<String, String> = status["pods"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, p)| (k.clone(), p["ip"].as_str().unwrap_or("-").to_string()))
        .collect();
    let ifaces = http_get(&url, "/v1/derived/interfaces");
    let mut held: BTreeMap<String, String> = BTreeMap::new();
    let mut ips = BTreeSet::new();
    for i in ifaces.as_array().unwrap() {
        let o = &i["object"];
        let key = format!(
            "{}/{}",
            o["namespace"].as_str().unwrap(),
            o["pod"].as_str().unwrap()
        );
        let ip = o["ip"].as_str().unwrap().to_string();
        if !ips.insert(ip.clone()) {
            problems.push(format!("address {ip} held twice (again by {key})"));
        }
        held.insert(key, ip);
    }
    if held != lab_pods {
        problems.push(format!(
            "controller's interfaces {held:?} differ from the lab's pods {lab_pods:?}"
        ));
    }
    // The agents' side: each node's saved attachments are exactly the sandboxes the lab
    // runs there (no attachment left behind by an interrupted ADD or a lost DEL).
    for node in status["nodes"].as_array().unwrap() {
        let name = node["name"].as_str().unwrap();
        let file = PathBuf::from(node["agentStateDir"].as_str().unwrap()).join("attachments.json");
        let saved: Value = std::fs::read_to_string(&file)
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap_or(Value::Null);
        let attached: BTreeMap<String, String> = saved
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, a)| {
                let pod = k.strip_suffix("/eth0").unwrap_or(k).to_string();
                (pod, a["containerId"].as_str().unwrap_or("-").to_string())
            })
            .collect();
        let expected: BTreeMap<String, String> = status["pods"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, p)| p["node"] == name)
            .map(|(k, p)| (k.clone(), p["containerId"].as_str().unwrap().to_string()))
            .collect();
        if attached != expected {
            problems.push(format!(
                "agent of {name} holds attachments {attached:?}, the lab runs {expected:?}"
            ));
        }
    }
    let pods_in_pools: u64 = http_get(&url, "/v1/status")["pools"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] != "k8s-service-ipam")
        .map(|p| p["in_use"].as_u64().unwrap())
        .sum();
    if pods_in_pools != lab_pods.len() as u64 {
        problems.push(format!(
            "pools hold {pods_in_pools} pod addresses for {} pods",
            lab_pods.len()
        ));
    }
    problems
}

/// Cells of the scenario matrix that differ from the expected one.
fn matrix_diff(lab: &Lab) -> Vec<String> {
    let m: Value = serde_json::from_str(&lab.ok(&["matrix", "-o", "json"])).unwrap();
    let mut wrong = Vec::new();
    for from in SCENARIO_PODS {
        for to in SCENARIO_PODS.iter().filter(|t| **t != from) {
            let cell = m["cells"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["from"] == from && c["to"] == *to);
            let got = cell.is_some_and(|c| c["kind"] == "connected");
            if got != scenario_reachable(from, to) {
                wrong.push(format!(
                    "{from} -> {to}: {}",
                    cell.map_or("missing".into(), |c| c.to_string())
                ));
            }
        }
    }
    wrong
}

/// Kills a random component while `weft lab <verb>` of many pods runs, restarts it,
/// then retries the command until it succeeds.
fn fault_during(lab: &Lab, verb: &str, file: &str, rng: &mut Rng, log: &mut Vec<String>) {
    let mut child = spawn_lab(lab, verb, file);
    std::thread::sleep(Duration::from_millis(rng.below(900)));
    let running = child.try_wait().unwrap().is_none();
    log.push(format!(
        "{verb} of {CHURN_PODS} pods {}",
        if running {
            "still running: fault mid-way"
        } else {
            "already done: fault after it"
        }
    ));
    let victim = match rng.below(4) {
        0 => None, // the "kubelet" itself (the lab command), mid-CNI call
        1 => Some(Comp::Controller),
        n => Some(Comp::Agent(n as usize - 1)),
    };
    match victim {
        None => {
            sigkill(u64::from(child.id()));
            log.push(format!("SIGKILL weft lab {verb}"));
        }
        // The lab command holds the lab lock: kill by pid, restart once it is done.
        Some(c) => kill(lab, c, rng, true, log),
    }
    let (code, _) = finish(child);
    log.push(format!("{verb} under fault exited {code}"));
    if let Some(c) = victim {
        start(lab, c, log);
    }
    until_ok(lab, verb, file, log);
}

/// A 2-node lab without pods, run by `weft` (checked once per test: the long mode
/// outlasts edits of the sources by others).
fn lab_up(letter: char, weft: &std::path::Path) -> Lab {
    let lab = Lab {
        name: Lab::name(letter),
        weft: weft.to_path_buf(),
    };
    lab.lab(&["down"]);
    lab.ok(&["up", "--nodes", "2"]);
    lab
}

fn one_run(seed: u64, letter: char, weft: &std::path::Path) {
    let mut rng = Rng(seed);
    let mut log: Vec<String> = Vec::new();
    let lab = lab_up(letter, weft);
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Everything down, then up again in a random order; the scenario is applied
        // at a random point once the controller runs (the API server must be there
        // for pods to exist), possibly before the agents.
        let mut comps = vec![Comp::Controller, Comp::Agent(1), Comp::Agent(2)];
        rng.shuffle(&mut comps);
        for c in comps.clone() {
            kill(&lab, c, &mut rng, false, &mut log);
        }
        rng.shuffle(&mut comps);
        let ctl = comps.iter().position(|c| *c == Comp::Controller).unwrap();
        let apply_after = ctl + rng.below((comps.len() - ctl) as u64) as usize;
        let scenario = workspace().join("examples/namespaces").display().to_string();
        for (i, c) in comps.iter().enumerate() {
            start(&lab, *c, &mut log);
            if i == apply_after && i + 1 < comps.len() {
                // An agent is still down (each node has scenario pods): its pods' CNI
                // ADD must fail cleanly; the apply is retried once all run.
                let (code, out) = finish(spawn_lab(&lab, "apply", &scenario));
                log.push(format!("apply with an agent down exited {code}"));
                assert_ne!(code, 0, "apply succeeded although an agent is down:\n{out}");
                assert_no_orphan_sandboxes(&lab, "apply with an agent down");
            }
        }
        until_ok(&lab, "apply", &scenario, &mut log);

        // Faults in the middle of bulk CNI ADDs and DELs.
        let churn: PathBuf = lab.write("churn.yaml", &churn_yaml());
        let churn = churn.display().to_string();
        fault_during(&lab, "apply", &churn, &mut rng, &mut log);
        // A random restart between the two phases.
        if rng.chance(50) {
            let c = [Comp::Controller, Comp::Agent(1), Comp::Agent(2)][rng.below(3) as usize];
            kill(&lab, c, &mut rng, false, &mut log);
            std::thread::sleep(Duration::from_millis(rng.below(1000)));
            start(&lab, c, &mut log);
        }
        fault_during(&lab, "delete", &churn, &mut rng, &mut log);

        lab.wait();
        // Converged means the matrix is the expected one; allow the data plane a few
        // settle rounds (bounded) only for the first probes after the last restart.
        let mut wrong = matrix_diff(&lab);
        for _ in 0..2 {
            if wrong.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_secs(2));
            lab.wait();
            wrong = matrix_diff(&lab);
        }
        assert!(
            wrong.is_empty(),
            "matrix differs: {wrong:#?}\n{}",
            lab.ok(&["matrix"])
        );
        let ipam = check_ipam(&lab);
        assert!(ipam.is_empty(), "IPAM: {ipam:#?}");
    }));
    if let Err(e) = run {
        eprintln!(
            "start-order run failed; replay with WEFT_SEED={seed}\nsteps:\n  {}",
            log.join("\n  ")
        );
        std::panic::resume_unwind(e);
    }
    eprintln!("seed {seed}: ok\n  {}", log.join("\n  "));
}

#[test]
fn converges_in_any_order() {
    require_root!();
    let seeds: Vec<u64> = match std::env::var("WEFT_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(s) => vec![s],
        None => {
            let base = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            let runs = if std::env::var_os("WEFT_LONG").is_some() {
                50
            } else {
                3
            };
            (0..runs).map(|i| base.wrapping_add(i * 7919)).collect()
        }
    };
    let weft = support::weft();
    for (i, seed) in seeds.iter().enumerate() {
        eprintln!("run {}/{} seed {seed}", i + 1, seeds.len());
        one_run(*seed, 'a', &weft);
    }
}
