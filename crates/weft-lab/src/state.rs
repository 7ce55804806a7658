//! `state.json`: what a lab made (nodes, controller, pods, pids), written atomically
//! after every change so that a later command, or `down` after a crash, knows it.
//! Changes are serialised by an exclusive `flock` on `<state dir>/lock`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::names::LabName;

/// Everything a lab knows about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabState {
    /// Lab name.
    pub name: String,
    /// The `weft` binary the lab runs (agents, echo servers, controller).
    pub weft_bin: PathBuf,
    /// The CNI plugin binary, or `None` when `weft lab cni-plugin` stands in for it.
    #[serde(default)]
    pub cni_bin: Option<PathBuf>,
    /// The underlay namespace.
    pub underlay_ns: String,
    /// Nodes, in index order.
    pub nodes: Vec<NodeRecord>,
    /// The controller.
    pub controller: ControllerRecord,
    /// Pods by `namespace/pod`.
    #[serde(default)]
    pub pods: BTreeMap<String, PodRecord>,
    /// Counter for container ids (a re-added pod gets a new sandbox id).
    #[serde(default)]
    pub next_sandbox: u64,
    /// The gateway router and external host, with `up --gateway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<crate::gateway::GatewayRecord>,
}

/// One node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// 1-based index.
    pub index: usize,
    /// Kubernetes node name (`node-<index>`).
    pub name: String,
    /// Its network namespace.
    pub netns: String,
    /// Underlay address.
    pub underlay_ip: String,
    /// The agent's CNI socket.
    pub agent_socket: PathBuf,
    /// The agent's state directory.
    pub agent_state_dir: PathBuf,
    /// Agent log file.
    pub agent_log: PathBuf,
    /// Agent pid, while it runs.
    #[serde(default)]
    pub agent_pid: Option<u32>,
}

/// The controller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControllerRecord {
    /// HTTP URL (host namespace), for `weft --server`.
    pub url: String,
    /// `--listen` address.
    pub listen: String,
    /// Unix socket the agents use.
    pub socket: PathBuf,
    /// Store directory.
    pub data_dir: PathBuf,
    /// Log file.
    pub log: PathBuf,
    /// Serves on the unix socket too (always, except for `up --no-agents`).
    #[serde(default)]
    pub unix: bool,
    /// Pid, while it runs.
    #[serde(default)]
    pub pid: Option<u32>,
}

/// One pod sandbox.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRecord {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Node name.
    pub node: String,
    /// Node index.
    pub node_index: usize,
    /// The pod's network namespace.
    pub netns: String,
    /// CNI container id of the sandbox.
    pub container_id: String,
    /// eth0 address from the CNI result (without prefix length).
    #[serde(default)]
    pub ip: Option<String>,
    /// Ports the echo server listens on (TCP and UDP each).
    pub ports: Vec<u16>,
    /// Echo server pid.
    #[serde(default)]
    pub echo_pid: Option<u32>,
    /// The CNI ADD result.
    #[serde(default)]
    pub cni_result: serde_json::Value,
    /// How long CNI ADD took (ms).
    #[serde(default)]
    pub cni_add_ms: f64,
    /// Secondary interfaces (`net1`, `net2` …: `k8s.v1.cni.cncf.io/networks`), attached
    /// after eth0 by one CNI ADD each, as Multus does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secondary: Vec<SecondaryInterface>,
    /// What Multus would write into the pod's `k8s.v1.cni.cncf.io/network-status`
    /// annotation: one entry per interface (network name, interface, ips, mac, default).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub network_status: serde_json::Value,
    /// A forwarder pod (`lab.weft.dev/forwarder`): the `protocol/port`s it drops (empty:
    /// forwards everything); `None` for an ordinary pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarder_drops: Option<Vec<String>>,
}

/// One secondary interface of a lab pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecondaryInterface {
    /// Interface name in the pod.
    pub if_name: String,
    /// FQ name of its network.
    pub network: String,
    /// Its address (without prefix length).
    pub ip: Option<String>,
    /// The CNI ADD result.
    pub cni_result: serde_json::Value,
}

impl PodRecord {
    /// `namespace/pod`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.pod)
    }
}

/// Path of `state.json`.
pub fn state_file(lab: &LabName) -> PathBuf {
    lab.state_dir().join("state.json")
}

impl LabState {
    /// Reads the lab's state; a clear error when the lab is not up.
    pub fn load(lab: &LabName) -> Result<LabState> {
        let path = state_file(lab);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "lab {lab} is not up (no {}); start it with `weft lab up --name {lab}`",
                path.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))
    }

    /// Writes the state atomically (temp file + rename).
    pub fn save(&self, lab: &LabName) -> Result<()> {
        let path = state_file(lab);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).context("encoding the lab state")?;
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))
    }

    /// Node by index.
    pub fn node(&self, index: usize) -> Result<&NodeRecord> {
        self.nodes
            .iter()
            .find(|n| n.index == index)
            .with_context(|| format!("lab {} has no node {index}", self.name))
    }

    /// Node index by Kubernetes name.
    pub fn node_by_name(&self, name: &str) -> Option<usize> {
        self.nodes.iter().find(|n| n.name == name).map(|n| n.index)
    }

    /// A pod by `NS/POD`.
    pub fn pod(&self, key: &str) -> Result<&PodRecord> {
        let (ns, pod) = crate::names::split_pod(key)?;
        self.pods.get(&format!("{ns}/{pod}")).with_context(|| {
            format!(
                "lab {} has no pod {ns}/{pod} (pods: {})",
                self.name,
                self.pods.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }
}

/// An exclusive lock on a lab's state (held until dropped).
#[derive(Debug)]
pub struct LabLock {
    _lock: Flock<File>,
}

impl LabLock {
    /// Takes the lock, creating the state directory if needed. Waits for another
    /// `weft lab` command working on the same lab.
    pub fn acquire(lab: &LabName) -> Result<LabLock> {
        let dir = lab.state_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        lock_file(&dir.join("lock"))
    }

    /// Takes the lock of a lab that is up; an error (and nothing created) otherwise.
    pub fn acquire_existing(lab: &LabName) -> Result<LabLock> {
        if !state_file(lab).exists() {
            // The same message as a failed load.
            LabState::load(lab)?;
        }
        LabLock::acquire(lab)
    }
}

fn lock_file(path: &Path) -> Result<LabLock> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let lock = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(LabLock { _lock: lock })
}
