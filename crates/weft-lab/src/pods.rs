//! The lab as kubelet and container runtime: manifests go to the controller; every
//! Pod becomes a network namespace attached through the CNI plugin (run inside its
//! node's namespace, as a runtime on that node would) with an echo server on each
//! containerPort.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tokio::sync::{Mutex, Semaphore};
use weft_api::client::ApiClient;
use weft_api::manifest::read_manifests;
use weft_api::types::{ApplyRequest, DocumentResult, ManifestDocument};

use crate::Progress;
use crate::names::{LabName, NETNS_DIR};
use crate::state::{LabLock, LabState, PodRecord};
use crate::sys;

/// Pods attached at the same time.
const PARALLEL_ATTACH: usize = 4;
/// How long the echo server may take to bind.
const ECHO_READY: Duration = Duration::from_secs(10);

/// The CNI network config the lab hands the plugin (stdin).
pub fn cni_config(state: &LabState, node_index: usize, add_timeout: u64) -> Result<Value> {
    let node = state.node(node_index)?;
    let log = node
        .agent_log
        .parent()
        .map(|d| d.join("cni.log"))
        .unwrap_or_default();
    Ok(json!({
        "cniVersion": "1.1.0",
        "name": "weft",
        "type": "weft",
        "agentSocket": node.agent_socket,
        "logFile": log,
        "logLevel": "info",
        "addTimeoutSeconds": add_timeout,
    }))
}

/// What one plugin run printed and exited with.
#[derive(Debug, Clone)]
pub struct CniRun {
    /// Exit code (0 success).
    pub code: i32,
    /// Stdout parsed as JSON (Null when empty, a string when not JSON).
    pub output: Value,
    /// Stderr.
    pub stderr: String,
}

impl CniRun {
    /// The error object's `code: msg (details)`, for messages.
    pub fn error_text(&self) -> String {
        let o = &self.output;
        let mut s = format!(
            "code {}: {}",
            o["code"]
                .as_u64()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "?".into()),
            o["msg"].as_str().unwrap_or("(no message)")
        );
        if let Some(d) = o["details"].as_str().filter(|d| !d.is_empty()) {
            s.push_str(&format!(" ({d})"));
        }
        if o.is_null() || o.is_string() {
            s = format!("exit {}: {} {}", self.code, o, self.stderr.trim());
        }
        s
    }
}

/// Which pod interface a CNI call is for (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`,
/// `CNI_IFNAME`).
#[derive(Debug, Clone, Copy)]
pub struct CniPod<'a> {
    /// Pod namespace.
    pub namespace: &'a str,
    /// Pod name.
    pub name: &'a str,
    /// Interface in the pod.
    pub if_name: &'a str,
}

/// Runs the CNI plugin inside node `node_index`'s namespace with the runtime's
/// environment and `config` on stdin.
pub async fn run_cni(
    state: &LabState,
    node_index: usize,
    command: &str,
    container_id: &str,
    netns: Option<&str>,
    pod: CniPod<'_>,
    config: &[u8],
) -> Result<CniRun> {
    let node = state.node(node_index)?;
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(["netns", "exec", &node.netns]);
    let cni_path = match &state.cni_bin {
        Some(bin) => {
            cmd.arg(bin);
            bin.parent().map(|p| p.display().to_string()).unwrap_or_default()
        }
        None => {
            cmd.arg(&state.weft_bin).args(["lab", "cni-plugin"]);
            String::new()
        }
    };
    cmd.env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_IFNAME", pod.if_name)
        .env("CNI_PATH", cni_path)
        .env(
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={container_id}",
                pod.namespace, pod.name
            ),
        );
    match netns {
        Some(ns) => cmd.env("CNI_NETNS", format!("{NETNS_DIR}/{ns}")),
        None => cmd.env_remove("CNI_NETNS"),
    };
    let out = sys::run_bounded(&mut cmd, config, Duration::from_secs(660)).await?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let output = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok(CniRun {
        code: out.status.code().unwrap_or(-1),
        output,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Attaches the pod's secondary interfaces (those the controller gave it besides eth0,
/// `net1`, `net2` … in order) by one CNI ADD each, as Multus calls its delegates, and
/// records them and the Multus-style network status in `rec`.
async fn attach_secondary(state: &LabState, rec: &mut PodRecord, config: &Value) -> Result<()> {
    let client = weft_api::client::ApiClient::new(&state.controller.url);
    let mut ifaces: Vec<weft_model::InterfaceAttachment> = client
        .derived("interfaces", Some(&rec.namespace))
        .await
        .context("asking the controller for the pod's interfaces")?
        .into_iter()
        .filter_map(|d| match d {
            weft_model::DerivedObject::Interface(i) if i.pod == rec.pod => Some(i),
            _ => None,
        })
        .collect();
    ifaces.sort_by(|a, b| (!a.primary, &a.interface).cmp(&(!b.primary, &b.interface)));
    let mut status = Vec::new();
    for i in &ifaces {
        let result = if i.interface == "eth0" {
            rec.cni_result.clone()
        } else {
            let run = run_cni(
                state,
                rec.node_index,
                "ADD",
                &rec.container_id,
                Some(&rec.netns),
                CniPod {
                    namespace: &rec.namespace,
                    name: &rec.pod,
                    if_name: &i.interface,
                },
                config.to_string().as_bytes(),
            )
            .await?;
            if run.code != 0 {
                bail!("CNI ADD of {} failed: {}", i.interface, run.error_text());
            }
            rec.secondary.push(crate::state::SecondaryInterface {
                if_name: i.interface.clone(),
                network: i.network.clone(),
                ip: Some(i.ip.to_string()),
                cni_result: run.output.clone(),
            });
            run.output
        };
        let mac = result["interfaces"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["sandbox"].is_string()))
            .and_then(|x| x["mac"].as_str())
            .unwrap_or_default()
            .to_string();
        status.push(serde_json::json!({
            "name": i.network,
            "interface": i.interface,
            "ips": [i.ip.to_string()],
            "mac": mac,
            "default": i.primary,
        }));
    }
    rec.network_status = Value::Array(status);
    Ok(())
}

/// A Pod document, as the lab sees it.
#[derive(Debug, Clone)]
struct PodDoc {
    index: usize,
    namespace: String,
    name: String,
    node: Option<String>,
    ports: Vec<u16>,
    /// Asks for secondary interfaces (`k8s.v1.cni.cncf.io/networks`).
    secondary: bool,
    /// A service-chain hop ([`FORWARDER_ANNOTATION`]): forwards between its
    /// interfaces, dropping the listed ports; or why the annotations are refused.
    forwarder: Result<Option<Forwarder>, String>,
}

/// Lab pod annotation `lab.weft.dev/forwarder: "true"`: the pod is a small forwarding
/// appliance, a ServiceChain hop: IPv4 forwarding on in its namespace. Its
/// `/proc/net/snmp` `Ip: ForwDatagrams` counts the packets that entered its forwarding
/// path ([`forwarded_in`]; current kernels count before the forward hook, so what its
/// filter drops is included), the filter's counter what it dropped ([`dropped_in`]).
pub const FORWARDER_ANNOTATION: &str = "lab.weft.dev/forwarder";
/// Lab pod annotation `lab.weft.dev/forwarder-drop: "tcp/8081,udp/53"`: a forwarder
/// drops forwarded packets to these destination ports (an nftables forward-hook rule in
/// the pod), the filtering appliance that shows a chain's order.
pub const FORWARDER_DROP_ANNOTATION: &str = "lab.weft.dev/forwarder-drop";

/// What a forwarder pod does (lab annotations, [`FORWARDER_ANNOTATION`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Forwarder {
    /// (protocol `tcp`/`udp`, destination port) pairs it drops.
    drop: Vec<(String, u16)>,
}

/// Reads the forwarder annotations of a pod; an error names the annotation and what it
/// expected.
fn forwarder_of(annotations: &Value) -> Result<Option<Forwarder>, String> {
    let flag = annotations[FORWARDER_ANNOTATION].as_str();
    let drop = annotations[FORWARDER_DROP_ANNOTATION].as_str();
    match flag {
        None | Some("false") => {
            return match drop {
                Some(_) => Err(format!(
                    "annotation {FORWARDER_DROP_ANNOTATION} needs {FORWARDER_ANNOTATION}: \"true\""
                )),
                None => Ok(None),
            };
        }
        Some("true") => {}
        Some(other) => {
            return Err(format!(
                "annotation {FORWARDER_ANNOTATION}: {other:?}, expected \"true\" or \"false\""
            ));
        }
    }
    let mut out = Vec::new();
    for item in drop
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
    {
        let parsed = item.split_once('/').and_then(|(proto, port)| {
            let proto = proto.to_ascii_lowercase();
            let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
            matches!(proto.as_str(), "tcp" | "udp").then_some((proto, port))
        });
        match parsed {
            Some(p) => out.push(p),
            None => {
                return Err(format!(
                    "annotation {FORWARDER_DROP_ANNOTATION}: {item:?}, expected tcp/PORT or udp/PORT (1-65535), comma-separated"
                ));
            }
        }
    }
    Ok(Some(Forwarder { drop: out }))
}

/// `Ip: ForwDatagrams` of a `/proc/net/snmp` text: the packets that namespace routed
/// on (forwarded, or dropped by its forward hook).
pub fn forwarded_datagrams(snmp: &str) -> Option<u64> {
    let mut ip = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (ip.next()?, ip.next()?);
    let at = names.split_whitespace().position(|n| n == "ForwDatagrams")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// The packets the pod namespace `netns` has forwarded ([`forwarded_datagrams`]).
pub async fn forwarded_in(netns: &str) -> Result<u64> {
    let snmp = sys::ip(&["netns", "exec", netns, "cat", "/proc/net/snmp"]).await?;
    forwarded_datagrams(&snmp).with_context(|| format!("no Ip: ForwDatagrams in {netns}'s /proc/net/snmp"))
}

/// The packets a forwarder's drop rules dropped: the sum of the `counter packets N` of
/// `nft list table inet lab-forwarder` (0 when it has no drop rules).
pub fn dropped_packets(ruleset: &str) -> u64 {
    let words: Vec<&str> = ruleset.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "packets")
        .filter_map(|w| w[1].parse::<u64>().ok())
        .sum()
}

/// The packets the forwarder pod namespace `netns` dropped by its
/// `lab.weft.dev/forwarder-drop` rules ([`dropped_packets`]).
pub async fn dropped_in(netns: &str) -> Result<u64> {
    let tables = sys::ip(&["netns", "exec", netns, "nft", "list", "tables"]).await?;
    if !tables.contains("lab-forwarder") {
        return Ok(0);
    }
    let table = sys::ip(&[
        "netns",
        "exec",
        netns,
        "nft",
        "list",
        "table",
        "inet",
        "lab-forwarder",
    ])
    .await?;
    Ok(dropped_packets(&table))
}

/// Turns the pod's namespace into the forwarder `f` describes.
async fn make_forwarder(netns: &str, f: &Forwarder) -> Result<()> {
    sys::write_sysctl_in(netns, "net/ipv4/ip_forward", "1")?;
    if f.drop.is_empty() {
        return Ok(());
    }
    let mut script = String::from(
        "add table inet lab-forwarder; add chain inet lab-forwarder forward { type filter hook forward priority 0; policy accept; }",
    );
    for (proto, port) in &f.drop {
        script.push_str(&format!(
            "; add rule inet lab-forwarder forward {proto} dport {port} counter drop"
        ));
    }
    sys::ip(&["netns", "exec", netns, "nft", &script])
        .await
        .with_context(|| format!("adding the forwarder's drop rules in {netns}"))?;
    Ok(())
}

impl PodDoc {
    /// What [`PodRecord::forwarder_drops`] records for this pod.
    fn forwarder_drops(&self) -> Option<Vec<String>> {
        match &self.forwarder {
            Ok(Some(f)) => Some(
                f.drop
                    .iter()
                    .map(|(proto, port)| format!("{proto}/{port}"))
                    .collect(),
            ),
            _ => None,
        }
    }
}

fn pod_doc(index: usize, doc: &ManifestDocument, default_ns: &str) -> Option<PodDoc> {
    let o = &doc.object;
    if o["kind"].as_str() != Some("Pod") {
        return None;
    }
    let name = o["metadata"]["name"].as_str()?.to_string();
    let namespace = o["metadata"]["namespace"]
        .as_str()
        .unwrap_or(default_ns)
        .to_string();
    let node = o["spec"]["nodeName"].as_str().map(str::to_string);
    let mut ports = BTreeSet::new();
    for c in o["spec"]["containers"].as_array().into_iter().flatten() {
        for p in c["ports"].as_array().into_iter().flatten() {
            if let Some(port) = p["containerPort"].as_u64().and_then(|p| u16::try_from(p).ok())
                && port != 0
            {
                ports.insert(port);
            }
        }
    }
    if ports.is_empty() {
        ports.insert(80);
    }
    Some(PodDoc {
        index,
        namespace,
        name,
        node,
        ports: ports.into_iter().collect(),
        secondary: o["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"]
            .as_str()
            .is_some_and(|n| !n.trim().is_empty()),
        forwarder: forwarder_of(&o["metadata"]["annotations"]),
    })
}

/// Least-loaded node (fewest pods), lowest index on ties: the lab's scheduler.
fn pick_node(load: &BTreeMap<usize, usize>) -> usize {
    load.iter()
        .min_by_key(|(i, n)| (**n, **i))
        .map(|(i, _)| *i)
        .unwrap_or(1)
}

fn print_result(r: &DocumentResult) {
    let object = r.object.clone().unwrap_or_else(|| r.source.clone());
    match (&r.error, &r.pending) {
        (Some(e), _) => eprintln!("error: {e}"),
        (None, Some(p)) => println!("{object} {} (pending: {p})", r.action),
        (None, None) => println!("{object} {}", r.action),
    }
}

fn read_docs(files: &[String]) -> (Vec<ManifestDocument>, usize) {
    let mut docs = Vec::new();
    let mut errors = 0;
    for d in read_manifests(files) {
        match d {
            Ok(d) => docs.push(d),
            Err(e) => {
                errors += 1;
                eprintln!("error: {e}");
            }
        }
    }
    (docs, errors)
}

/// `weft lab apply` (also the last step of `up`): returns whether everything applied
/// and every pod got its sandbox. The caller holds the lab lock.
pub async fn apply(
    lab: &LabName,
    state: &mut LabState,
    files: &[String],
    namespace: Option<&str>,
    cni_timeout: u64,
    progress: &Progress,
) -> Result<bool> {
    let (docs, failed) = read_docs(files);
    let ok = apply_docs(lab, state, docs, namespace, cni_timeout, progress).await?;
    Ok(ok && failed == 0)
}

/// [`apply`] for documents already read.
pub async fn apply_docs(
    lab: &LabName,
    state: &mut LabState,
    mut docs: Vec<ManifestDocument>,
    namespace: Option<&str>,
    cni_timeout: u64,
    progress: &Progress,
) -> Result<bool> {
    let default_ns = namespace.unwrap_or("default");
    let mut failed = 0;
    // Schedule: pods without spec.nodeName go to the least-loaded node; a pod already in
    // the lab stays where it is.
    let mut load: BTreeMap<usize, usize> = state.nodes.iter().map(|n| (n.index, 0)).collect();
    for p in state.pods.values() {
        *load.entry(p.node_index).or_default() += 1;
    }
    let mut refused = BTreeSet::new();
    let mut pods = Vec::new();
    for (i, doc) in docs.iter_mut().enumerate() {
        let Some(mut p) = pod_doc(i, doc, default_ns) else {
            continue;
        };
        let key = format!("{}/{}", p.namespace, p.name);
        if let Err(e) = &p.forwarder {
            eprintln!("error: {}: pod {key}: {e}", doc.source);
            refused.insert(i);
            continue;
        }
        let existing = state.pods.get(&key).map(|r| r.node.clone());
        let node = match (&p.node, existing) {
            (Some(want), Some(have)) if *want != have => {
                eprintln!(
                    "error: {}: pod {key} runs on {have}; spec.nodeName {want} cannot change (delete it first)",
                    doc.source
                );
                refused.insert(i);
                continue;
            }
            (Some(want), _) => want.clone(),
            (None, Some(have)) => have,
            (None, None) => {
                let idx = pick_node(&load);
                state.node(idx)?.name.clone()
            }
        };
        let Some(idx) = state.node_by_name(&node) else {
            let names: Vec<&str> = state.nodes.iter().map(|n| n.name.as_str()).collect();
            eprintln!(
                "error: {}: pod {key} names spec.nodeName {node}, which is not a node of lab {lab} ({})",
                doc.source,
                names.join(", ")
            );
            refused.insert(i);
            continue;
        };
        if !state.pods.contains_key(&key) {
            *load.entry(idx).or_default() += 1;
        }
        if let Some(spec) = doc.object.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("nodeName".into(), Value::String(node.clone()));
        } else if let Some(obj) = doc.object.as_object_mut() {
            obj.insert("spec".into(), json!({"nodeName": node}));
        }
        p.node = Some(node);
        pods.push((p, idx));
    }
    failed += refused.len();
    let kept: Vec<(usize, ManifestDocument)> = docs
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !refused.contains(i))
        .collect();
    if kept.is_empty() {
        return Ok(failed == 0);
    }
    let client = ApiClient::new(&state.controller.url);
    let report = client
        .apply(&ApplyRequest {
            documents: kept.iter().map(|(_, d)| d.clone()).collect(),
            namespace: namespace.map(str::to_string),
        })
        .await
        .context("applying the manifests to the lab's controller")?;
    for r in report
        .results
        .iter()
        .filter(|r| r.error.is_some() || !progress.is_quiet())
    {
        print_result(r);
    }
    failed += report.errors();
    // Pods the controller accepted.
    let accepted: BTreeSet<usize> = kept
        .iter()
        .zip(&report.results)
        .filter(|(_, r)| r.error.is_none())
        .map(|((i, _), _)| *i)
        .collect();
    let todo: Vec<(PodDoc, usize)> = pods
        .into_iter()
        .filter(|(p, _)| accepted.contains(&p.index))
        .collect();
    if todo.is_empty() {
        return Ok(failed == 0);
    }
    let start = Instant::now();
    progress.step(&format!("attaching {} pod(s) through the CNI plugin", todo.len()));
    let shared = Arc::new(Mutex::new(std::mem::take(state)));
    let sem = Arc::new(Semaphore::new(PARALLEL_ATTACH));
    let mut tasks = Vec::new();
    for (p, idx) in todo {
        let shared = Arc::clone(&shared);
        let sem = Arc::clone(&sem);
        let lab = lab.clone();
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await;
            let key = format!("{}/{}", p.namespace, p.name);
            let r = ensure_pod(&lab, &shared, &p, idx, cni_timeout, &progress).await;
            (key, r)
        }));
    }
    let mut pod_failures = 0;
    for t in tasks {
        match t.await {
            Ok((_, Ok(()))) => {}
            Ok((key, Err(e))) => {
                pod_failures += 1;
                eprintln!("error: pod {key}: {e:#}");
            }
            Err(e) => {
                pod_failures += 1;
                eprintln!("error: a pod task failed: {e}");
            }
        }
    }
    *state = std::mem::take(&mut *shared.lock().await);
    state.save(lab)?;
    progress.step(&format!(
        "pods attached in {:.1}s ({} failed)",
        start.elapsed().as_secs_f64(),
        pod_failures
    ));
    Ok(failed == 0 && pod_failures == 0)
}

/// Creates the pod's sandbox unless an identical one runs already.
async fn ensure_pod(
    lab: &LabName,
    shared: &Mutex<LabState>,
    p: &PodDoc,
    node_index: usize,
    cni_timeout: u64,
    progress: &Progress,
) -> Result<()> {
    let key = format!("{}/{}", p.namespace, p.name);
    let existing = shared.lock().await.pods.get(&key).cloned();
    if let Some(rec) = existing {
        // A changed forwarder setting re-creates the sandbox, like changed ports.
        let intact = sys::netns_exists(&rec.netns)
            && rec.echo_pid.is_some_and(sys::alive)
            && rec.ports == p.ports
            && rec.forwarder_drops == p.forwarder_drops();
        if intact {
            return Ok(());
        }
        let snapshot = shared.lock().await.clone();
        teardown(&snapshot, &rec).await?;
        let mut st = shared.lock().await;
        st.pods.remove(&key);
        st.save(lab)?;
    }
    let start = Instant::now();
    let (snapshot, container_id) = {
        let mut st = shared.lock().await;
        st.next_sandbox += 1;
        let id = format!("wl{}{}x{}", lab, crate::names::short_hash(&key), st.next_sandbox);
        st.save(lab)?;
        (st.clone(), id)
    };
    let netns = lab.pod_ns(&p.namespace, &p.name);
    let mut rec = PodRecord {
        namespace: p.namespace.clone(),
        pod: p.name.clone(),
        node: snapshot.node(node_index)?.name.clone(),
        node_index,
        netns: netns.clone(),
        container_id: container_id.clone(),
        ip: None,
        ports: p.ports.clone(),
        echo_pid: None,
        cni_result: Value::Null,
        cni_add_ms: 0.0,
        secondary: Vec::new(),
        network_status: Value::Null,
        forwarder_drops: p.forwarder_drops(),
    };
    if sys::netns_exists(&netns) {
        // A leftover of an earlier, interrupted attempt.
        sys::ip(&["netns", "del", &netns]).await?;
    }
    sys::ip(&["netns", "add", &netns]).await?;
    {
        let mut st = shared.lock().await;
        st.pods.insert(key.clone(), rec.clone());
        st.save(lab)?;
    }
    let attach = async {
        sys::ip(&["-n", &netns, "link", "set", "lo", "up"]).await?;
        let config = cni_config(&snapshot, node_index, cni_timeout)?;
        let cni_start = Instant::now();
        let run = run_cni(
            &snapshot,
            node_index,
            "ADD",
            &container_id,
            Some(&netns),
            CniPod {
                namespace: &p.namespace,
                name: &p.name,
                if_name: "eth0",
            },
            config.to_string().as_bytes(),
        )
        .await?;
        rec.cni_add_ms = cni_start.elapsed().as_secs_f64() * 1000.0;
        if run.code != 0 {
            bail!("CNI ADD failed: {}", run.error_text());
        }
        let ip = run.output["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .map(str::to_string)
            .with_context(|| format!("CNI ADD result has no ips[0].address: {}", run.output))?;
        rec.ip = Some(ip);
        rec.cni_result = run.output;
        if p.secondary {
            attach_secondary(&snapshot, &mut rec, &config).await?;
        }
        if let Ok(Some(f)) = &p.forwarder {
            make_forwarder(&netns, f).await?;
        }
        rec.echo_pid = Some(start_echo(&snapshot, &rec).await?);
        anyhow::Ok(())
    };
    let outcome = attach.await;
    if let Err(e) = outcome {
        // Leave nothing half-made: DEL (idempotent), then the namespace.
        let _ = teardown(&snapshot, &rec).await;
        let mut st = shared.lock().await;
        st.pods.remove(&key);
        st.save(lab)?;
        return Err(e);
    }
    {
        let mut st = shared.lock().await;
        st.pods.insert(key.clone(), rec.clone());
        st.save(lab)?;
    }
    progress.step(&format!(
        "pod {key} on {}: {} in {} (CNI ADD + echo {:?}) in {:.2}s",
        rec.node,
        rec.ip.as_deref().unwrap_or("?"),
        rec.netns,
        rec.ports,
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}

async fn start_echo(state: &LabState, rec: &PodRecord) -> Result<u32> {
    let dir = crate::names::LabName::new(&state.name)?.state_dir().join("pods");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let ready: PathBuf = dir.join(format!("{}.ready", rec.netns));
    let log = dir.join(format!("{}.log", rec.netns));
    let _ = std::fs::remove_file(&ready);
    let mut args: Vec<String> = vec![
        "netns".into(),
        "exec".into(),
        rec.netns.clone(),
        state.weft_bin.display().to_string(),
        "lab".into(),
        "echo".into(),
        "--tag".into(),
        rec.key(),
        "--ready-file".into(),
        ready.display().to_string(),
    ];
    for p in &rec.ports {
        args.extend(["--tcp".into(), p.to_string(), "--udp".into(), p.to_string()]);
    }
    let pid = sys::spawn_detached(std::path::Path::new("ip"), &args, &[], &log)?;
    let deadline = Instant::now() + ECHO_READY;
    while !ready.exists() {
        if !sys::alive(pid) {
            bail!("the echo server exited: {}", sys::log_tail(&log, 5));
        }
        if Instant::now() > deadline {
            let _ = sys::terminate(&[pid], Duration::from_secs(1)).await;
            bail!("the echo server did not bind its ports within {ECHO_READY:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(pid)
}

/// Removes a pod's sandbox: echo server, CNI DEL, namespace. Idempotent. Returns how
/// long CNI DEL took.
pub async fn teardown(state: &LabState, rec: &PodRecord) -> Result<Duration> {
    if let Some(pid) = rec.echo_pid {
        let stuck = sys::terminate(&[pid], Duration::from_secs(2)).await;
        if !stuck.is_empty() {
            bail!("could not stop the echo server (pid {pid}) of {}", rec.key());
        }
    }
    let config = cni_config(state, rec.node_index, 5)?;
    let netns = sys::netns_exists(&rec.netns).then_some(rec.netns.as_str());
    let del_start = Instant::now();
    // Secondary interfaces first (reverse order), then eth0, as Multus does.
    let names: Vec<&str> = rec
        .secondary
        .iter()
        .rev()
        .map(|s| s.if_name.as_str())
        .chain(["eth0"])
        .collect();
    for if_name in names {
        let run = run_cni(
            state,
            rec.node_index,
            "DEL",
            &rec.container_id,
            netns,
            CniPod {
                namespace: &rec.namespace,
                name: &rec.pod,
                if_name,
            },
            config.to_string().as_bytes(),
        )
        .await?;
        if run.code != 0 {
            bail!(
                "CNI DEL of {} for {} failed: {}",
                if_name,
                rec.key(),
                run.error_text()
            );
        }
    }
    let took = del_start.elapsed();
    for pid in sys::netns_pids(&rec.netns).await {
        let _ = sys::terminate(&[pid], Duration::from_secs(1)).await;
    }
    if sys::netns_exists(&rec.netns) {
        sys::ip(&["netns", "del", &rec.netns]).await?;
    }
    Ok(took)
}

/// `weft lab delete`: tears down the sandboxes of the Pods named (and of every pod in a
/// Namespace named), then deletes the objects from the controller.
pub async fn delete(
    lab: &LabName,
    files: &[String],
    namespace: Option<&str>,
    progress: &Progress,
) -> Result<bool> {
    let _lock = LabLock::acquire_existing(lab)?;
    let mut state = LabState::load(lab)?;
    let (docs, failed) = read_docs(files);
    let ok = delete_docs(lab, &mut state, docs, namespace, progress).await?;
    Ok(ok && failed == 0)
}

/// [`delete`] for documents already read; the caller holds the lab lock.
pub async fn delete_docs(
    lab: &LabName,
    state: &mut LabState,
    docs: Vec<ManifestDocument>,
    namespace: Option<&str>,
    progress: &Progress,
) -> Result<bool> {
    let default_ns = namespace.unwrap_or("default");
    let mut failed = 0;
    let mut doomed: BTreeSet<String> = BTreeSet::new();
    for (i, d) in docs.iter().enumerate() {
        if let Some(p) = pod_doc(i, d, default_ns) {
            doomed.insert(format!("{}/{}", p.namespace, p.name));
        } else if d.object["kind"].as_str() == Some("Namespace")
            && let Some(ns) = d.object["metadata"]["name"].as_str()
        {
            doomed.extend(
                state
                    .pods
                    .values()
                    .filter(|p| p.namespace == ns)
                    .map(PodRecord::key),
            );
        }
    }
    for key in doomed {
        let Some(rec) = state.pods.get(&key).cloned() else {
            continue;
        };
        let start = Instant::now();
        match teardown(state, &rec).await {
            Ok(_) => {
                state.pods.remove(&key);
                state.save(lab)?;
                progress.step(&format!(
                    "pod {key}: sandbox removed (CNI DEL) in {:.2}s",
                    start.elapsed().as_secs_f64()
                ));
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: pod {key}: {e:#}");
            }
        }
    }
    if docs.is_empty() {
        return Ok(failed == 0);
    }
    let client = ApiClient::new(&state.controller.url);
    let report = client
        .delete(&ApplyRequest {
            documents: docs,
            namespace: namespace.map(str::to_string),
        })
        .await
        .context("deleting from the lab's controller")?;
    for r in &report.results {
        print_result(r);
    }
    failed += report.errors();
    Ok(failed == 0)
}

/// `weft lab cni NS/POD COMMAND`: runs the plugin for a lab pod as the runtime would
/// (optionally with another config), prints its output, returns its exit code.
pub async fn cni_command(lab: &LabName, pod: &str, command: &str, config: Option<&str>) -> Result<i32> {
    let state = LabState::load(lab)?;
    let rec = state.pod(pod)?.clone();
    let config = match config {
        Some(c) => c.as_bytes().to_vec(),
        None => {
            let mut c = cni_config(&state, rec.node_index, 30)?;
            if command == "CHECK" {
                c["prevResult"] = rec.cni_result.clone();
            }
            c.to_string().into_bytes()
        }
    };
    let netns = sys::netns_exists(&rec.netns).then_some(rec.netns.as_str());
    let run = run_cni(
        &state,
        rec.node_index,
        command,
        &rec.container_id,
        netns,
        CniPod {
            namespace: &rec.namespace,
            name: &rec.pod,
            if_name: "eth0",
        },
        &config,
    )
    .await?;
    if !run.output.is_null() {
        println!("{}", run.output);
    }
    if !run.stderr.trim().is_empty() {
        eprintln!("{}", run.stderr.trim_end());
    }
    Ok(run.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(v: Value) -> ManifestDocument {
        ManifestDocument {
            source: "t#1".into(),
            object: v,
        }
    }

    #[test]
    fn pod_docs_and_ports() {
        let d = doc(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 8080}, {"containerPort": 80, "protocol": "UDP"}]},
                                    {"name": "d", "ports": [{"containerPort": 80}]}]}}),
        );
        let p = pod_doc(0, &d, "dev").unwrap();
        assert_eq!((p.namespace.as_str(), p.name.as_str()), ("dev", "a"));
        assert_eq!(p.ports, vec![80, 8080]);
        assert_eq!(p.node, None);
        let d = doc(
            json!({"kind": "Pod", "metadata": {"name": "b", "namespace": "x"}, "spec": {"nodeName": "node-2"}}),
        );
        let p = pod_doc(0, &d, "dev").unwrap();
        assert_eq!(p.ports, vec![80], "default port");
        assert_eq!(p.node.as_deref(), Some("node-2"));
        assert!(
            pod_doc(
                0,
                &doc(json!({"kind": "Namespace", "metadata": {"name": "a"}})),
                "d"
            )
            .is_none()
        );
    }

    #[test]
    fn forwarded_datagrams_from_snmp() {
        let snmp = "Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos\nIp: 1 64 10 0 0 7 0\nIcmp: InMsgs\nIcmp: 3\n";
        assert_eq!(forwarded_datagrams(snmp), Some(7));
        assert_eq!(forwarded_datagrams("Ip: Forwarding\nIp: 1\n"), None);
        assert_eq!(forwarded_datagrams(""), None);
    }

    #[test]
    fn dropped_packets_from_the_ruleset() {
        let table = "table inet lab-forwarder {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\t\ttcp dport 8081 counter packets 3 bytes 180 drop\n\t\tudp dport 53 counter packets 2 bytes 90 drop\n\t}\n}\n";
        assert_eq!(dropped_packets(table), 5);
        assert_eq!(dropped_packets(""), 0);
    }

    #[test]
    fn forwarder_annotations() {
        assert_eq!(forwarder_of(&json!({})), Ok(None));
        assert_eq!(forwarder_of(&json!({FORWARDER_ANNOTATION: "false"})), Ok(None));
        assert_eq!(
            forwarder_of(&json!({FORWARDER_ANNOTATION: "true"})),
            Ok(Some(Forwarder { drop: vec![] }))
        );
        assert_eq!(
            forwarder_of(
                &json!({FORWARDER_ANNOTATION: "true", FORWARDER_DROP_ANNOTATION: "TCP/8081, udp/53"})
            ),
            Ok(Some(Forwarder {
                drop: vec![("tcp".into(), 8081), ("udp".into(), 53)]
            }))
        );
        for (flag, drop, expected) in [
            ("yes", "", "expected \"true\" or \"false\""),
            ("true", "tcp/0", "expected tcp/PORT or udp/PORT"),
            ("true", "icmp/1", "expected tcp/PORT or udp/PORT"),
            ("true", "tcp", "expected tcp/PORT or udp/PORT"),
            ("false", "tcp/80", "needs lab.weft.dev/forwarder"),
        ] {
            let err = forwarder_of(&json!({FORWARDER_ANNOTATION: flag, FORWARDER_DROP_ANNOTATION: drop}))
                .unwrap_err();
            assert!(err.contains(expected), "{flag} {drop}: {err}");
        }
    }

    #[test]
    fn scheduler_spreads() {
        let mut load: BTreeMap<usize, usize> = [(1, 0), (2, 0)].into();
        assert_eq!(pick_node(&load), 1);
        load.insert(1, 1);
        assert_eq!(pick_node(&load), 2);
        load.insert(2, 1);
        assert_eq!(pick_node(&load), 1);
    }

    #[test]
    fn cni_error_text() {
        let r = CniRun {
            code: 1,
            output: json!({"cniVersion": "1.1.0", "code": 11, "msg": "not yet", "details": "waiting"}),
            stderr: String::new(),
        };
        assert_eq!(r.error_text(), "code 11: not yet (waiting)");
    }
}
