//! Building and tearing down a lab: underlay, nodes, controller, agents; `down`; the
//! start/stop of single components; `status`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use weft_api::client::ApiClient;
use weft_api::types::{ApplyRequest, ManifestDocument};

use crate::Progress;
use crate::names::{self, LabName};
use crate::state::{ControllerRecord, LabLock, LabState, NodeRecord};
use crate::sys;

/// Bound on the controller's start.
const CONTROLLER_READY: Duration = Duration::from_secs(30);
/// Bound on an agent's start.
const AGENT_READY: Duration = Duration::from_secs(30);
/// How long a process gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// The binaries a lab runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `weft`.
    pub weft: PathBuf,
    /// `weft-cni`, when found.
    pub cni: Option<PathBuf>,
}

/// Finds `weft` and `weft-cni`: in `$WEFT_BIN_DIR` if set, else next to the running
/// executable (or one level up, for test executables in `target/*/deps`).
pub fn locate_binaries() -> Result<Binaries> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("WEFT_BIN_DIR") {
        dirs.push(PathBuf::from(d));
    }
    let exe = std::env::current_exe().context("finding the running executable")?;
    if let Some(dir) = exe.parent() {
        dirs.push(dir.to_path_buf());
        if let Some(up) = dir.parent() {
            dirs.push(up.to_path_buf());
        }
    }
    let find = |name: &str| dirs.iter().map(|d| d.join(name)).find(|p| p.is_file());
    let weft = find("weft").with_context(|| {
        format!(
            "cannot find the `weft` binary in {} (set WEFT_BIN_DIR)",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    // Prefer the plugin next to the chosen `weft`.
    let cni = weft
        .parent()
        .map(|d| d.join("weft-cni"))
        .filter(|p| p.is_file())
        .or_else(|| find("weft-cni"));
    Ok(Binaries { weft, cni })
}

/// Checks that `weft` has what the lab needs (the agent, the controller's unix socket).
async fn check_capabilities(weft: &Path) -> Result<()> {
    let help = |args: &'static [&'static str]| async move {
        let mut cmd = tokio::process::Command::new(weft);
        cmd.args(args);
        let out = sys::run_bounded(&mut cmd, b"", Duration::from_secs(20)).await?;
        anyhow::Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let top = help(&["--help"]).await?;
    if !top.lines().any(|l| l.trim_start().starts_with("agent ")) {
        bail!(
            "{} has no `agent` subcommand: this build of weft cannot run a node agent, so it cannot run a lab",
            weft.display()
        );
    }
    let controller = help(&["controller", "--help"]).await?;
    if !controller.contains("--listen-unix") {
        bail!(
            "{} controller has no --listen-unix: agents in node namespaces could not reach it",
            weft.display()
        );
    }
    Ok(())
}

/// Options of `up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Manifests to apply once the lab runs.
    pub files: Vec<String>,
    /// Documents to apply after the files (e.g. a compiled-in scenario).
    pub documents: Vec<ManifestDocument>,
    /// Namespace for objects that name none.
    pub namespace: Option<String>,
    /// CNI ADD bound.
    pub cni_timeout: u64,
    /// Build nodes and the controller but start no agents (pods cannot be attached).
    pub no_agents: bool,
    /// Objects applied with the Node objects, before any manifest (a federated
    /// cluster's ClusterConfig and BgpPeer).
    pub cluster_objects: Vec<serde_json::Value>,
    /// Join this underlay namespace (another lab's bridge) as cluster number `.1`
    /// instead of making one: the second cluster of `up --clusters 2`.
    pub join_underlay: Option<(String, usize)>,
    /// Build a gateway router and external host ([`crate::gateway`]) peering with this
    /// many clusters (this lab being cluster 1); `None`: no gateway.
    pub gateway: Option<usize>,
    /// Peer with an existing gateway through this relay port (a second cluster).
    pub gateway_relay: Option<u16>,
}

impl Default for UpOptions {
    /// Two nodes with agents, no manifests, a 30 s CNI bound, one cluster, no gateway.
    fn default() -> Self {
        UpOptions {
            nodes: 2,
            files: Vec::new(),
            documents: Vec::new(),
            namespace: None,
            cni_timeout: 30,
            no_agents: false,
            cluster_objects: Vec::new(),
            join_underlay: None,
            gateway: None,
            gateway_relay: None,
        }
    }
}

/// A name `<prefix><n>` for a throw-away lab (benchmarks), `n` from this process id,
/// skipping names of labs that exist (they may be another run's: never touched).
pub async fn free_lab_name(prefix: &str) -> Result<LabName> {
    let pid = std::process::id();
    for k in 0..50 {
        let lab = LabName::new(&format!("{prefix}{}", (pid + k) % 1000))?;
        if !exists(&lab).await {
            return Ok(lab);
        }
    }
    bail!("no free lab name {prefix}<n> near {prefix}{}", pid % 1000)
}

/// Runs `measure` in a throw-away lab named from `prefix` ([`free_lab_name`]) and takes
/// the lab down afterwards — also on error or Ctrl-C. For the benchmarks.
pub async fn in_throwaway_lab<T, F, Fut>(
    what: &str,
    prefix: &str,
    progress: &Progress,
    measure: F,
) -> Result<T>
where
    F: FnOnce(LabName) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    if !sys::is_root() {
        bail!("weft lab bench {what} needs root: it builds a lab of network namespaces");
    }
    let lab = free_lab_name(prefix).await?;
    let outcome = tokio::select! {
        r = measure(lab.clone()) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    progress.step("removing the bench's lab");
    let down = down(&lab, &Progress::quiet()).await;
    let report = outcome?;
    down?;
    Ok(report)
}

/// True when anything of lab `lab` exists (state dir or a namespace).
pub async fn exists(lab: &LabName) -> bool {
    if crate::state::state_file(lab).exists() {
        return true;
    }
    let prefix = lab.prefix();
    sys::netns_list()
        .await
        .map(|l| l.iter().any(|n| n.starts_with(&prefix)))
        .unwrap_or(false)
}

/// `weft lab up`: builds the lab, then applies the manifests. Returns whether every
/// manifest applied cleanly.
pub async fn up(lab: &LabName, opts: &UpOptions, progress: &Progress) -> Result<bool> {
    if !sys::is_root() {
        bail!("weft lab needs root: it creates network namespaces, links and processes (try sudo)");
    }
    if !(1..=names::MAX_NODES).contains(&opts.nodes) {
        bail!("--nodes must be 1 to {}, found {}", names::MAX_NODES, opts.nodes);
    }
    if exists(lab).await {
        bail!(
            "lab {lab} already exists (state in {} or namespaces {}*); remove it with `weft lab down --name {lab}`",
            lab.state_dir().display(),
            lab.prefix()
        );
    }
    let _lock = LabLock::acquire(lab)?;
    let bins = locate_binaries()?;
    if !opts.no_agents {
        check_capabilities(&bins.weft).await?;
    }
    if bins.cni.is_none() {
        progress.step(&format!(
            "note: no weft-cni next to {}; the plugin runs as `weft lab cni-plugin` (same code). \
             Build it with `cargo build -p weft-cni` to use the real binary",
            bins.weft.display()
        ));
    }
    build(lab, opts, &bins, progress).await.map_err(|e| {
        e.context(format!(
            "lab {lab} is only partly built (logs in {}); `weft lab down --name {lab}` removes it",
            lab.state_dir().display()
        ))
    })
}

async fn build(lab: &LabName, opts: &UpOptions, bins: &Binaries, progress: &Progress) -> Result<bool> {
    let dir = lab.state_dir();
    let mut state = LabState {
        name: lab.to_string(),
        weft_bin: bins.weft.clone(),
        cni_bin: bins.cni.clone(),
        underlay_ns: lab.underlay_ns(),
        controller: ControllerRecord {
            socket: dir.join("controller.sock"),
            data_dir: dir.join("store"),
            log: dir.join("controller.log"),
            unix: !opts.no_agents,
            ..Default::default()
        },
        ..Default::default()
    };
    state.save(lab)?;

    progress.step(&format!(
        "lab {lab}: underlay bridge in {}, {} node(s)",
        state.underlay_ns, opts.nodes
    ));
    let cluster = match &opts.join_underlay {
        Some((ns, cluster)) => {
            state.underlay_ns = ns.clone();
            *cluster
        }
        None => 1,
    };
    let ul = state.underlay_ns.clone();
    if opts.join_underlay.is_none() {
        sys::ip(&["netns", "add", &ul]).await?;
        sys::ip(&["-n", &ul, "link", "set", "lo", "up"]).await?;
        sys::ip(&["-n", &ul, "link", "add", "br0", "type", "bridge"]).await?;
        sys::ip(&["-n", &ul, "link", "set", "br0", "up"]).await?;
    }
    for i in 1..=opts.nodes {
        let node = make_node(lab, i, &ul, cluster).await?;
        state.nodes.push(node);
        state.save(lab)?;
    }

    let mut cluster_objects = opts.cluster_objects.clone();
    if let Some(clusters) = opts.gateway {
        let gw = crate::gateway::build(lab, &ul, clusters, crate::federation::asn, &bins.weft).await?;
        progress.step(&format!(
            "gateway router {} (FRR, AS {}, {}) and external host {} ({})",
            gw.netns,
            crate::gateway::GATEWAY_ASN,
            crate::gateway::GATEWAY_UNDERLAY_IP,
            gw.external_netns,
            crate::gateway::EXTERNAL_HOST_IP
        ));
        if cluster_objects.is_empty() {
            // BGP needs a router ID; a manifest's own ClusterConfig replaces this one.
            // Its listener stays on the machine's loopback (a free port), never :179.
            cluster_objects.push(serde_json::json!({
                "apiVersion": "weft.dev/v1alpha1", "kind": "ClusterConfig", "metadata": {"name": "default"},
                "spec": {"routerId": "10.255.0.1", "bgpListenAddress": "127.0.0.1", "bgpPort": free_port()?}}));
        }
        cluster_objects.push(crate::gateway::peer_object(gw.relay_ports[0]));
        state.gateway = Some(gw);
        state.save(lab)?;
    }
    if let Some(port) = opts.gateway_relay {
        crate::gateway::route_nodes_via_gateway(lab).await?;
        cluster_objects.push(crate::gateway::peer_object(port));
    }

    start_controller(lab, &mut state, progress).await?;
    state.save(lab)?;

    let client = ApiClient::new(&state.controller.url);
    let nodes: Vec<ManifestDocument> = cluster_objects
        .iter()
        .map(|o| ManifestDocument {
            source: format!("lab {lab} cluster settings"),
            object: o.clone(),
        })
        .chain(state.nodes.iter().map(|n| ManifestDocument {
            source: format!("lab {lab} node {}", n.index),
            object: node_manifest(lab, n),
        }))
        .collect();
    let report = client
        .apply(&ApplyRequest {
            documents: nodes,
            namespace: None,
        })
        .await
        .context("registering the lab's nodes")?;
    if report.errors() > 0 {
        bail!(
            "the controller refused the lab's Node objects: {:?}",
            report.results
        );
    }
    progress.step(&format!("{} Node object(s) registered", state.nodes.len()));

    if opts.no_agents {
        progress.step("no agents started (--no-agents)");
        return Ok(true);
    }
    for i in 1..=opts.nodes {
        start_agent(&mut state, i)?;
        state.save(lab)?;
    }
    let waits = state.nodes.iter().map(|n| wait_agent(n.clone(), progress));
    for r in futures::future::join_all(waits).await {
        r?;
    }

    let mut ok = true;
    if !opts.files.is_empty() {
        ok = crate::pods::apply(
            lab,
            &mut state,
            &opts.files,
            opts.namespace.as_deref(),
            opts.cni_timeout,
            progress,
        )
        .await?;
    }
    if !opts.documents.is_empty() {
        ok &= crate::pods::apply_docs(
            lab,
            &mut state,
            opts.documents.clone(),
            opts.namespace.as_deref(),
            opts.cni_timeout,
            progress,
        )
        .await?;
    }
    progress.step(&format!(
        "lab {lab} is up: controller {}; try `weft --server {} get pods` or `weft lab matrix --name {lab}`",
        state.controller.url, state.controller.url
    ));
    Ok(ok)
}

fn node_manifest(lab: &LabName, n: &NodeRecord) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": n.name, "labels": {"weft.dev/lab": lab.as_str()}},
        "status": {"addresses": [
            {"type": "InternalIP", "address": n.underlay_ip},
            {"type": "Hostname", "address": n.name},
        ]}
    })
}

/// Node `i` of cluster `cluster` (1 unless the lab is a second federated cluster, whose
/// nodes take 192.0.2.111 and up and bridge ports `c2n<i>` on the shared underlay).
async fn make_node(lab: &LabName, i: usize, ul: &str, cluster: usize) -> Result<NodeRecord> {
    let ns = lab.node_ns(i);
    let (port, underlay_ip) = if cluster == 1 {
        (format!("n{i}"), names::underlay_ip(i))
    } else {
        (
            format!("c{cluster}n{i}"),
            names::underlay_ip(100 * (cluster - 1) + i),
        )
    };
    let addr = format!("{underlay_ip}/{}", names::UNDERLAY_PREFIX_LEN);
    sys::ip(&["netns", "add", &ns]).await?;
    sys::ip(&["-n", &ns, "link", "set", "lo", "up"]).await?;
    // Created inside the node namespace, peer straight into the underlay: nothing of the
    // lab ever appears in the machine's own namespace.
    sys::ip(&[
        "-n", &ns, "link", "add", "ul0", "type", "veth", "peer", "name", &port, "netns", ul,
    ])
    .await?;
    sys::ip(&["-n", ul, "link", "set", &port, "master", "br0", "up"]).await?;
    sys::ip(&["-n", &ns, "addr", "add", &addr, "dev", "ul0"]).await?;
    sys::ip(&["-n", &ns, "link", "set", "ul0", "up"]).await?;
    sys::write_sysctl_in(&ns, "net/ipv4/ip_forward", "1")?;
    let dir = lab.node_dir(i);
    let state_dir = dir.join("state");
    std::fs::create_dir_all(&state_dir).with_context(|| format!("creating {}", state_dir.display()))?;
    Ok(NodeRecord {
        index: i,
        name: names::node_name(i),
        netns: ns,
        underlay_ip,
        agent_socket: dir.join("agent.sock"),
        agent_state_dir: state_dir,
        agent_log: dir.join("agent.log"),
        agent_pid: None,
    })
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr().context("finding a free port")?.port())
}

/// Starts the controller (same port and store as before when restarting) and waits
/// until it answers.
pub async fn start_controller(lab: &LabName, state: &mut LabState, progress: &Progress) -> Result<()> {
    let start = Instant::now();
    if state.controller.listen.is_empty() {
        state.controller.listen = format!("127.0.0.1:{}", free_port()?);
        state.controller.url = format!("http://{}", state.controller.listen);
    }
    let c = state.controller.clone();
    let _ = std::fs::remove_file(&c.socket);
    let mut args: Vec<String> = vec![
        "controller".into(),
        "--data-dir".into(),
        c.data_dir.display().to_string(),
        "--listen".into(),
        c.listen.clone(),
    ];
    let unix = state.controller.unix;
    if unix {
        args.extend(["--listen-unix".into(), c.socket.display().to_string()]);
    }
    let pid = sys::spawn_detached(&state.weft_bin, &args, &[("WEFT_LOG", "info")], &c.log)?;
    state.controller.pid = Some(pid);
    state.save(lab)?;
    let client = ApiClient::new(&c.url);
    let deadline = Instant::now() + CONTROLLER_READY;
    loop {
        if client.status().await.is_ok() && (!unix || c.socket.exists()) {
            break;
        }
        if !sys::alive(pid) {
            state.controller.pid = None;
            bail!(
                "the controller exited during start-up; last lines of {}:\n{}",
                c.log.display(),
                sys::log_tail(&c.log, 15)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the controller did not answer at {} within {CONTROLLER_READY:?}; last lines of {}:\n{}",
                c.url,
                c.log.display(),
                sys::log_tail(&c.log, 15)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let via_unix = if unix {
        format!(" and unix:{}", c.socket.display())
    } else {
        String::new()
    };
    progress.step(&format!(
        "controller ready at {}{via_unix} in {:.1}s",
        c.url,
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Starts node `index`'s agent inside the node namespace (no wait).
pub fn start_agent(state: &mut LabState, index: usize) -> Result<()> {
    let controller = format!("unix:{}", state.controller.socket.display());
    let weft = state.weft_bin.display().to_string();
    let node = state
        .nodes
        .iter_mut()
        .find(|n| n.index == index)
        .with_context(|| format!("no node {index}"))?;
    let _ = std::fs::remove_file(&node.agent_socket);
    let args: Vec<String> = vec![
        "netns".into(),
        "exec".into(),
        node.netns.clone(),
        weft,
        "agent".into(),
        "--node".into(),
        node.name.clone(),
        "--controller".into(),
        controller,
        "--cni-socket".into(),
        node.agent_socket.display().to_string(),
        "--state-dir".into(),
        node.agent_state_dir.display().to_string(),
    ];
    let pid = sys::spawn_detached(Path::new("ip"), &args, &[("WEFT_LOG", "info")], &node.agent_log)?;
    node.agent_pid = Some(pid);
    Ok(())
}

/// Waits until node's agent answers `status` on its socket.
pub async fn wait_agent(node: NodeRecord, progress: &Progress) -> Result<()> {
    let start = Instant::now();
    let client = weft_cni::AgentClient::new(&node.agent_socket)
        .with_timeouts(Duration::from_secs(1), Duration::from_secs(2));
    let deadline = Instant::now() + AGENT_READY;
    loop {
        let last = match client.status().await {
            Ok(()) => break,
            Err(e) => e.to_string(),
        };
        if node.agent_pid.is_some_and(|p| !sys::alive(p)) {
            bail!(
                "the agent of {} exited during start-up; last lines of {}:\n{}",
                node.name,
                node.agent_log.display(),
                sys::log_tail(&node.agent_log, 15)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the agent of {} was not ready within {AGENT_READY:?} ({last}); last lines of {}:\n{}",
                node.name,
                node.agent_log.display(),
                sys::log_tail(&node.agent_log, 15)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress.step(&format!(
        "{} ({}, {}): agent ready in {:.1}s",
        node.name,
        node.netns,
        node.underlay_ip,
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// `weft lab down`: ends every process of the lab, deletes its namespaces and state
/// directory. Works from `state.json` and, for what a crash left unrecorded, from the
/// names alone. Idempotent.
pub async fn down(lab: &LabName, progress: &Progress) -> Result<()> {
    if !sys::is_root() {
        bail!("weft lab down needs root (it deletes network namespaces and ends processes)");
    }
    let dir = lab.state_dir();
    let prefix = lab.prefix();
    let namespaces: Vec<String> = sys::netns_list()
        .await?
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    // Every process: recorded pids, processes in the lab's namespaces, and processes
    // whose command line names the lab's state directory (the controller, agents).
    let mut pids: Vec<u32> = Vec::new();
    if let Ok(state) = LabState::load(lab) {
        pids.extend(state.controller.pid);
        pids.extend(state.nodes.iter().filter_map(|n| n.agent_pid));
        pids.extend(state.pods.values().filter_map(|p| p.echo_pid));
        // A recorded pid may have been reused by an unrelated process since.
        pids.retain(|p| sys::cmdline(*p).is_some_and(|c| c.contains("weft")));
    }
    for ns in &namespaces {
        pids.extend(sys::netns_pids(ns).await);
    }
    // Only weft's own processes: a `tail -f` of a lab log is not the lab's to end.
    pids.extend(
        sys::processes_matching(&format!("{}/", dir.display()))
            .into_iter()
            .filter(|p| {
                sys::cmdline(*p)
                    .and_then(|c| c.split(' ').next().map(str::to_string))
                    .is_some_and(|argv0| argv0.ends_with("/weft") || argv0 == "weft")
            }),
    );
    pids.sort_unstable();
    pids.dedup();
    pids.retain(|p| *p != std::process::id());
    let stuck = sys::terminate(&pids, TERM_GRACE).await;
    if !stuck.is_empty() {
        bail!("could not end processes {stuck:?} of lab {lab}");
    }
    for ns in &namespaces {
        // Pods first would be nicer, but deleting a namespace removes its links too.
        if let Err(e) = sys::ip(&["netns", "del", ns]).await
            && sys::netns_exists(ns)
        {
            return Err(e);
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    progress.step(&format!(
        "lab {lab} is down: {} process(es) ended, {} namespace(s) deleted",
        pids.len(),
        namespaces.len()
    ));
    Ok(())
}

/// Which component `stop`/`start` act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Component {
    /// The controller.
    Controller,
    /// One node's agent (`--node`).
    Agent,
}

/// `weft lab stop`.
pub async fn stop(lab: &LabName, what: Component, node: Option<&str>, progress: &Progress) -> Result<()> {
    let _lock = LabLock::acquire_existing(lab)?;
    let mut state = LabState::load(lab)?;
    let (pid, label) = match what {
        Component::Controller => (state.controller.pid.take(), "controller".to_string()),
        Component::Agent => {
            let i = names::parse_node(node.unwrap_or(""), state.nodes.len())?;
            let n = state
                .nodes
                .iter_mut()
                .find(|n| n.index == i)
                .with_context(|| format!("no node {i}"))?;
            (n.agent_pid.take(), format!("agent of {}", n.name))
        }
    };
    state.save(lab)?;
    match pid.filter(|p| sys::alive(*p)) {
        Some(p) => {
            let stuck = sys::terminate(&[p], TERM_GRACE).await;
            if !stuck.is_empty() {
                bail!("could not stop the {label} (pid {p})");
            }
            progress.step(&format!("{label} stopped (pid {p})"));
        }
        None => progress.step(&format!("{label} was not running")),
    }
    Ok(())
}

/// `weft lab start`: starts a stopped component again and waits until it is ready.
pub async fn start(lab: &LabName, what: Component, node: Option<&str>, progress: &Progress) -> Result<()> {
    let _lock = LabLock::acquire_existing(lab)?;
    let mut state = LabState::load(lab)?;
    match what {
        Component::Controller => {
            if state.controller.pid.is_some_and(sys::alive) {
                bail!("the controller of lab {lab} is already running");
            }
            start_controller(lab, &mut state, progress).await?;
        }
        Component::Agent => {
            let i = names::parse_node(node.unwrap_or(""), state.nodes.len())?;
            if state.node(i)?.agent_pid.is_some_and(sys::alive) {
                bail!("the agent of {} is already running", state.node(i)?.name);
            }
            start_agent(&mut state, i)?;
            state.save(lab)?;
            wait_agent(state.node(i)?.clone(), progress).await?;
        }
    }
    state.save(lab)
}

/// `weft lab status`: the lab's components and pods, and whether they run.
pub fn status(lab: &LabName, json: bool) -> Result<()> {
    let state = LabState::load(lab)?;
    let live = |p: Option<u32>| p.is_some_and(sys::alive);
    if json {
        let mut v = serde_json::to_value(&state)?;
        v["controller"]["running"] = live(state.controller.pid).into();
        if let Some(nodes) = v["nodes"].as_array_mut() {
            for (n, rec) in nodes.iter_mut().zip(&state.nodes) {
                n["agentRunning"] = live(rec.agent_pid).into();
            }
        }
        if let Some(pods) = v["pods"].as_object_mut() {
            for (k, p) in pods.iter_mut() {
                let pid = state.pods.get(k).and_then(|r| r.echo_pid);
                p["echoRunning"] = live(pid).into();
            }
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let word = |b: bool| if b { "running" } else { "STOPPED" };
    println!("lab {}  (state {})", state.name, lab.state_dir().display());
    println!(
        "controller  {}  {}  log {}",
        state.controller.url,
        word(live(state.controller.pid)),
        state.controller.log.display()
    );
    for n in &state.nodes {
        println!(
            "{:<10}  {}  {:<12}  agent {}  log {}",
            n.name,
            n.netns,
            n.underlay_ip,
            word(live(n.agent_pid)),
            n.agent_log.display()
        );
    }
    for p in state.pods.values() {
        println!(
            "pod {:<28} {:<7} {:<16} {}  echo {:?} {}",
            p.key(),
            p.node,
            p.ip.clone().unwrap_or_else(|| "-".into()),
            p.netns,
            p.ports,
            word(live(p.echo_pid))
        );
    }
    Ok(())
}
