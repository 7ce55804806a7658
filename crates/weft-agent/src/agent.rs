//! The agent's owner object: the current [`NodeState`] and [`Attachments`] behind one
//! lock, persisted in the [`StateDir`], and the three tasks around them.
//!
//! ```text
//!  controller ──watch──> follow_controller ──set_node_state──┐
//!                                                             ├─> Data {state, attachments, generation}
//!  weft-cni ──unix socket──> serve_cni / handle_cni ──────────┘        │ persist (state dir)
//!                                                                      │ generation bump
//!                                                                      v
//!                              run_reconciler (on every bump, and every resync period)
//!                                 render → dump → diff → apply ──> kernel
//! ```
//!
//! Nothing is programmed before the first state exists (from disk or the controller): a
//! partial state would tear down what a previous agent built (felix waits for "in sync"
//! for the same reason).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use ipnet::IpNet;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_cni::agent_proto::{
    AddReply, AddRequest, AgentError, AgentReply, AgentRequest, Empty, InterfaceConfig, RouteConfig,
};
use weft_cni::spec::codes;
use weft_model::node::{LocalInterface, NodeState};

use crate::attachment::{self, Attachments};
use crate::dataplane::{self, OVERLAY_MTU};
use crate::kernel::{self, ReconcileReport};
use crate::nft;
use crate::state_dir::{StateDir, StateDirError};
use crate::watch::StateSource;

/// How long `attached` waits for the reconcile that programs the new veth, so the pod
/// has its routes when CNI ADD returns (it answers anyway after this).
pub const ATTACH_WAIT: Duration = Duration::from_secs(5);

/// First pause before reconnecting to the controller.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(200);

/// Longest pause between reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Pause before retrying a reconcile that had failures (instead of the full resync).
pub const FAILED_RETRY: Duration = Duration::from_secs(2);

/// Outcome of the agent's last reconcile pass, saved in the state directory
/// ([`crate::state_dir::APPLIED_FILE`]) after every pass. It closes the loop between
/// "the controller has a new state" and "the kernel enforces it": the lab (`weft lab
/// wait`) compares `revision` with the revision of the saved node state and that
/// state with the controller's, and waits for `clean`, so tests wait for convergence
/// instead of sleeping or probing until a timeout.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedStatus {
    /// Revision of the node state the pass programmed.
    pub revision: u64,
    /// Agent generation the pass covered (state and attachment changes).
    pub generation: u64,
    /// Every kernel change and the nftables table were applied.
    pub clean: bool,
    /// Fingerprint of the nftables table the pass left (`None`: no table).
    pub nft_fingerprint: Option<String>,
    /// Why the pass was not clean, if it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The agent's settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// This node's name: whose state to accept and program.
    pub node: String,
    /// Where the state and attachments are persisted.
    pub state_dir: PathBuf,
    /// Network namespace to program (a path such as `/var/run/netns/NAME`); the agent's
    /// own when `None`. Used by the lab and the tests, which run several "nodes" on one
    /// machine.
    pub netns: Option<PathBuf>,
    /// Period of the drift-repairing full reconcile.
    pub resync: Duration,
    /// How long `attached` and `del` wait for the reconcile that programs them
    /// ([`ATTACH_WAIT`] by default).
    pub attach_wait: Duration,
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentStartError {
    /// The state directory could not be opened, or the attachments file is unreadable.
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    /// The `--netns` namespace cannot be opened.
    #[error(transparent)]
    Netns(#[from] weft_cni::NetnsError),
    /// The node name is empty.
    #[error("the node name is empty (set --node or WEFT_NODE)")]
    NoNode,
}

/// Why a state update was refused or only half done.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The state is for another node.
    #[error("received the state of node {got:?}, but this agent is node {expected:?}; ignored")]
    WrongNode {
        /// This agent's node.
        expected: String,
        /// The state's node.
        got: String,
    },
    /// The state is in effect, but could not be saved.
    #[error("the new state is in effect but was not saved: {0}")]
    Persist(#[from] StateDirError),
}

/// Why a reconcile pass did not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Reading the kernel failed (nothing was changed).
    #[error("reading the kernel failed: {0}")]
    Kernel(#[from] weft_cni::link::KernelError),
    /// The target namespace could not be entered.
    #[error(transparent)]
    Netns(#[from] weft_cni::NetnsError),
    /// A netlink socket could not be opened.
    #[error("cannot open a netlink socket: {0}")]
    Socket(io::Error),
    /// The worker thread failed.
    #[error("reconcile worker failed: {0}")]
    Join(String),
}

#[derive(Debug, Default)]
struct Data {
    state: Option<NodeState>,
    attachments: Attachments,
    /// Bumped on every change of `state` or `attachments`.
    generation: u64,
    /// The last controller error, for `status` while there is no state.
    controller_error: Option<String>,
}

struct Inner {
    config: AgentConfig,
    store: StateDir,
    data: Mutex<Data>,
    /// Serialises writes to the state directory, in the order changes happened.
    persist: tokio::sync::Mutex<()>,
    /// Latest generation (sent on every change; the reconciler listens).
    dirty: watch::Sender<u64>,
    /// Generation covered by the last completed reconcile pass.
    done: watch::Sender<u64>,
    /// Serialises passes; holds the netlink handle for the agent's own namespace.
    reconcile: tokio::sync::Mutex<Option<rtnetlink::Handle>>,
    /// Last warnings of the renderer, logged when they change.
    warnings: Mutex<Vec<String>>,
    /// What the last pass left in the nftables table `inet weft`.
    nft_applied: Mutex<nft::Applied>,
    /// The table the last pass left (to diff the next one against).
    nft_previous: Mutex<Option<nft::NftTable>>,
    /// The outcome of the last pass saved in the state directory.
    last_applied: Mutex<Option<AppliedStatus>>,
}

/// The node agent. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("node", &self.inner.config.node)
            .finish()
    }
}

impl Agent {
    /// Opens the state directory and loads the last state and attachments.
    ///
    /// A corrupt or foreign state file is logged and ignored (the controller sends the
    /// state again); a corrupt attachments file is an error, because attachments exist
    /// nowhere else and silently dropping them would cut pods off.
    pub fn open(config: AgentConfig) -> Result<Agent, AgentStartError> {
        if config.node.is_empty() {
            return Err(AgentStartError::NoNode);
        }
        if let Some(ns) = &config.netns {
            weft_cni::Netns::open(ns)?;
        }
        let store = StateDir::open(&config.state_dir)?;
        let attachments = store.load_attachments()?;
        let state = match store.load_node_state() {
            Ok(Some(s)) if s.node == config.node => Some(s),
            Ok(Some(s)) => {
                tracing::warn!(
                    file = %store.path().display(),
                    found = %s.node,
                    node = %config.node,
                    "saved state is for another node; ignoring it"
                );
                None
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "saved state unreadable; waiting for the controller");
                None
            }
        };
        if let Some(s) = &state {
            tracing::info!(
                revision = s.revision,
                "loaded the saved node state; programming it"
            );
        }
        let (dirty, _) = watch::channel(0);
        let (done, _) = watch::channel(0);
        Ok(Agent {
            inner: Arc::new(Inner {
                config,
                store,
                data: Mutex::new(Data {
                    state,
                    attachments,
                    generation: 1,
                    controller_error: None,
                }),
                persist: tokio::sync::Mutex::new(()),
                dirty,
                done,
                reconcile: tokio::sync::Mutex::new(None),
                warnings: Mutex::new(Vec::new()),
                nft_applied: Mutex::new(nft::Applied::Unknown),
                nft_previous: Mutex::new(None),
                last_applied: Mutex::new(None),
            }),
        })
    }

    fn data(&self) -> MutexGuard<'_, Data> {
        // A panic while holding the lock cannot leave `Data` half-updated (every update
        // is a plain assignment), so a poisoned lock is still usable.
        self.inner.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This agent's node name.
    pub fn node(&self) -> &str {
        &self.inner.config.node
    }

    /// The settings.
    pub fn config(&self) -> &AgentConfig {
        &self.inner.config
    }

    /// The current state, if any.
    pub fn node_state(&self) -> Option<NodeState> {
        self.data().state.clone()
    }

    /// The current attachments.
    pub fn attachments(&self) -> Attachments {
        self.data().attachments.clone()
    }

    /// Revision of the current state (0 without one): the `after` of a watch.
    pub fn revision(&self) -> u64 {
        self.data().state.as_ref().map_or(0, |s| s.revision)
    }

    /// The current generation (bumped by every state or attachment change).
    pub fn generation(&self) -> u64 {
        self.data().generation
    }

    /// Makes `state` current (if it differs), saves it and wakes the reconciler.
    /// Returns whether anything changed.
    pub async fn set_node_state(&self, state: NodeState) -> Result<bool, UpdateError> {
        if state.node != self.inner.config.node {
            return Err(UpdateError::WrongNode {
                expected: self.inner.config.node.clone(),
                got: state.node,
            });
        }
        let generation = {
            let mut data = self.data();
            data.controller_error = None;
            if data.state.as_ref() == Some(&state) {
                return Ok(false);
            }
            if let Some(old) = &data.state
                && state.revision < old.revision
            {
                tracing::warn!(
                    old = old.revision,
                    new = state.revision,
                    "the controller's revision went backwards (store reset?); taking its state"
                );
            }
            tracing::info!(
                revision = state.revision,
                networks = state.networks.len(),
                interfaces = state.interfaces.len(),
                peers = state.peers.len(),
                "new node state"
            );
            for w in &state.warnings {
                tracing::warn!(warning = %w, "controller says this node's state is incomplete");
            }
            data.state = Some(state);
            data.generation += 1;
            data.generation
        };
        self.inner.dirty.send_replace(generation);
        self.persist_state().await?;
        Ok(true)
    }

    async fn persist_state(&self) -> Result<(), StateDirError> {
        let _order = self.inner.persist.lock().await;
        let Some(state) = self.node_state() else {
            return Ok(());
        };
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || store.save_node_state(&state))
            .await
            .unwrap_or_else(|e| Err(join_as_io(e)))
    }

    async fn persist_attachments(&self) -> Result<(), StateDirError> {
        let _order = self.inner.persist.lock().await;
        let attachments = self.attachments();
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || store.save_attachments(&attachments))
            .await
            .unwrap_or_else(|e| Err(join_as_io(e)))
    }

    fn bump(&self) -> u64 {
        let generation = {
            let mut data = self.data();
            data.generation += 1;
            data.generation
        };
        self.inner.dirty.send_replace(generation);
        generation
    }

    /// Answers one request of the CNI plugin ([`weft_cni::agent_proto`]).
    pub async fn handle_cni(&self, req: AgentRequest) -> Result<AgentReply, AgentError> {
        match req {
            AgentRequest::Add(add) => self.cni_add(&add).map(AgentReply::Add),
            AgentRequest::Attached(att) => {
                if att.host_if_name.is_empty()
                    || att.host_if_name.len() > 15
                    || att.host_if_name.contains(['/', ' '])
                    || att.pod_name.is_empty()
                    || att.pod_namespace.is_empty()
                    || att.if_name.is_empty()
                {
                    return Err(AgentError {
                        code: codes::AGENT_PROTOCOL,
                        msg: "attached: podNamespace, podName, ifName and a valid hostIfName are required"
                            .to_string(),
                        details: format!("{att:?}"),
                    });
                }
                let (key, changed) = {
                    let mut data = self.data();
                    attachment::record(&mut data.attachments, &att)
                };
                tracing::info!(interface = %key, host_if = %att.host_if_name, changed, "attached");
                if changed {
                    let generation = self.bump();
                    if let Err(e) = self.persist_attachments().await {
                        tracing::error!(error = %e, "cannot save attachments");
                        return Err(AgentError {
                            code: codes::IO_FAILURE,
                            msg: format!("cannot save the attachment of {key}"),
                            details: e.to_string(),
                        });
                    }
                    if !self
                        .wait_reconciled(generation, self.inner.config.attach_wait)
                        .await
                    {
                        tracing::warn!(interface = %key, "routes for the new attachment not programmed yet");
                    }
                }
                Ok(AgentReply::Empty(Empty {}))
            }
            AgentRequest::Del(del) => {
                let removed = {
                    let mut data = self.data();
                    attachment::remove(&mut data.attachments, &del)
                };
                tracing::info!(container = %del.container_id, if_name = %del.if_name, ?removed, "del");
                if !removed.is_empty() {
                    let generation = self.bump();
                    if let Err(e) = self.persist_attachments().await {
                        tracing::error!(error = %e, "cannot save attachments");
                    }
                    self.wait_reconciled(generation, self.inner.config.attach_wait)
                        .await;
                }
                Ok(AgentReply::Empty(Empty {}))
            }
            AgentRequest::Status => {
                let data = self.data();
                if data.state.is_some() {
                    return Ok(AgentReply::Empty(Empty {}));
                }
                Err(AgentError {
                    code: codes::PLUGIN_NOT_AVAILABLE,
                    msg: format!(
                        "weft agent on node {} has no forwarding state yet",
                        self.inner.config.node
                    ),
                    details: match &data.controller_error {
                        Some(e) => format!("waiting for the controller: {e}"),
                        None => "waiting for the first state from the controller".to_string(),
                    },
                })
            }
        }
    }

    fn cni_add(&self, add: &AddRequest) -> Result<AddReply, AgentError> {
        let data = self.data();
        let node = &self.inner.config.node;
        let not_yet = |details: String| AgentError {
            code: codes::TRY_AGAIN_LATER,
            msg: format!(
                "pod {}/{} has no interface on node {node} yet",
                add.pod_namespace, add.pod_name
            ),
            details,
        };
        let Some(state) = &data.state else {
            return Err(not_yet(
                "the agent has no state from the controller yet; retry".to_string(),
            ));
        };
        let pod_ifaces: Vec<&LocalInterface> = state
            .interfaces
            .iter()
            .filter(|i| i.namespace == add.pod_namespace && i.pod == add.pod_name)
            .collect();
        if !pod_ifaces.iter().any(|i| i.interface == add.if_name) {
            return Err(not_yet(format!(
                "state revision {} lists {} interface(s) on this node, none is {}/{}/{}; the controller \
                 adds it once the pod is placed on this node and its network is known",
                state.revision,
                state.interfaces.len(),
                add.pod_namespace,
                add.pod_name,
                add.if_name
            )));
        }
        Ok(AddReply {
            interfaces: pod_ifaces.into_iter().map(interface_config).collect(),
            dns: None,
        })
    }

    /// Binds the CNI socket at `socket` and serves it on a new task.
    ///
    /// A stale socket file from a previous run is replaced; a live one (another agent
    /// answers on it) is an error. The socket is made owner-only (0600).
    pub async fn serve_cni(&self, socket: &Path) -> io::Result<JoinHandle<()>> {
        if let Some(parent) = socket.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)?;
        }
        if socket.exists() {
            if tokio::net::UnixStream::connect(socket).await.is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another agent is already serving {}", socket.display()),
                ));
            }
            std::fs::remove_file(socket)?;
        }
        let listener = tokio::net::UnixListener::bind(socket)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
        }
        tracing::info!(socket = %socket.display(), "serving the CNI plugin");
        let agent = self.clone();
        Ok(tokio::spawn(weft_cni::serve_agent_requests(
            listener,
            move |req| {
                let agent = agent.clone();
                async move { agent.handle_cni(req).await }
            },
        )))
    }

    /// Runs one reconcile pass now (serialised with the reconciler task's passes). Does
    /// nothing before the first state exists.
    pub async fn reconcile_now(&self) -> Result<ReconcileReport, ReconcileError> {
        let mut handle_slot = self.inner.reconcile.lock().await;
        let (generation, state, attachments) = {
            let data = self.data();
            (data.generation, data.state.clone(), data.attachments.clone())
        };
        let Some(state) = state else {
            return Ok(ReconcileReport::default());
        };
        let (desired, mut warnings) = dataplane::render(&state, &attachments);
        let (nft_table, nft_warnings) = nft::render(&state, &attachments);
        warnings.extend(nft_warnings);
        {
            let mut last = self.inner.warnings.lock().unwrap_or_else(|p| p.into_inner());
            if *last != warnings {
                for w in &warnings {
                    tracing::warn!(warning = %w, "part of the state is not programmed");
                }
                *last = warnings;
            }
        }
        let result = match &self.inner.config.netns {
            Some(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    weft_cni::with_netlink_in_netns(&path, |h| async move {
                        kernel::reconcile(&h, &desired).await
                    })
                })
                .await
                .map_err(|e| ReconcileError::Join(e.to_string()))?
                .map_err(ReconcileError::from)
                .and_then(|r| r.map_err(ReconcileError::from))
            }
            None => {
                if handle_slot.is_none() {
                    let (conn, handle, _) = rtnetlink::new_connection().map_err(ReconcileError::Socket)?;
                    tokio::spawn(conn);
                    *handle_slot = Some(handle);
                }
                match handle_slot.as_ref() {
                    Some(h) => kernel::reconcile(h, &desired).await.map_err(ReconcileError::from),
                    None => Err(ReconcileError::Join("no netlink handle".to_string())),
                }
            }
        };
        let result = match result {
            Ok(mut report) => {
                let (outcome, applied) = self.sync_nft(nft_table).await;
                *self.inner.nft_applied.lock().unwrap_or_else(|p| p.into_inner()) = applied;
                match outcome {
                    Ok(changed) => report.nft_changed = changed,
                    Err(e) => report.nft_error = Some(e),
                }
                Ok(report)
            }
            Err(e) => Err(e),
        };
        match &result {
            Ok(report) => {
                if let Some(e) = &report.nft_error {
                    tracing::warn!(error = %e, "nftables table not applied; retrying later");
                }
                for op in &report.ops {
                    tracing::info!(op = %op, "programmed");
                }
                for f in &report.failures {
                    tracing::warn!(op = %f.op, error = %f.error, "kernel change failed; retrying later");
                }
            }
            // A broken socket is reopened on the next pass.
            Err(_) => *handle_slot = None,
        }
        let nft_fingerprint = match &*self.inner.nft_applied.lock().unwrap_or_else(|p| p.into_inner()) {
            nft::Applied::Table(fp) => Some(fp.clone()),
            _ => None,
        };
        self.save_applied(AppliedStatus {
            revision: state.revision,
            generation,
            clean: result.as_ref().is_ok_and(ReconcileReport::is_clean),
            nft_fingerprint,
            error: match &result {
                Ok(r) if r.is_clean() => None,
                Ok(r) => Some(
                    r.nft_error
                        .clone()
                        .unwrap_or_else(|| format!("{} kernel change(s) failed", r.failures.len())),
                ),
                Err(e) => Some(e.to_string()),
            },
        })
        .await;
        self.inner
            .done
            .send_modify(|done| *done = (*done).max(generation));
        result
    }

    /// Saves the outcome of a pass (logged, not fatal: it is for observers only);
    /// a pass with the same outcome as the last saved one (a resync) writes nothing.
    async fn save_applied(&self, status: AppliedStatus) {
        {
            let mut last = self.inner.last_applied.lock().unwrap_or_else(|p| p.into_inner());
            if last.as_ref() == Some(&status) {
                return;
            }
            *last = Some(status.clone());
        }
        let store = self.inner.store.clone();
        let saved = tokio::task::spawn_blocking(move || store.save_applied(&status))
            .await
            .unwrap_or_else(|e| Err(join_as_io(e)));
        if let Err(e) = saved {
            tracing::warn!(error = %e, "cannot save the reconcile outcome");
            // Written again by the next pass.
            *self.inner.last_applied.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    /// Brings the nftables table in line with `wanted` on a blocking thread in the
    /// target namespace (element-only changes incrementally, [`nft::sync_incremental`]);
    /// whether it wrote or the error as text, and what the live table is now known to be.
    async fn sync_nft(&self, wanted: Option<nft::NftTable>) -> (Result<bool, String>, nft::Applied) {
        let mut last = self
            .inner
            .nft_applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut previous = self
            .inner
            .nft_previous
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let netns = self.inner.config.netns.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let pass = move || {
                let outcome = nft::sync_incremental(wanted.as_ref(), &mut last, &mut previous)
                    .map_err(|e| e.to_string());
                (outcome, last, previous)
            };
            let outcome = match &netns {
                Some(path) => weft_cni::run_in_netns(path, pass).map_err(|e| e.to_string()),
                None => Ok(pass()),
            };
            match outcome {
                Ok(triple) => triple,
                Err(e) => (Err(e), nft::Applied::Unknown, None),
            }
        })
        .await;
        let (outcome, applied, previous) = joined.unwrap_or_else(|e| {
            (
                Err(format!("nftables worker failed: {e}")),
                nft::Applied::Unknown,
                None,
            )
        });
        *self.inner.nft_previous.lock().unwrap_or_else(|p| p.into_inner()) = previous;
        let outcome = outcome.map(|synced| {
            match synced {
                nft::Synced::Elements(commands) => {
                    tracing::info!(table = "inet weft", commands, "nftables set elements updated")
                }
                nft::Synced::Rewritten => tracing::info!(table = "inet weft", "nftables table rewritten"),
                nft::Synced::Removed => tracing::info!(table = "inet weft", "nftables table removed"),
                nft::Synced::Unchanged => {}
            }
            synced != nft::Synced::Unchanged
        });
        (outcome, applied)
    }

    /// Drops the attachments whose host veth no longer exists in `sys_class_net` (the
    /// node namespace's `/sys/class/net`) and saves the rest; how many were dropped.
    /// For start-up, before [`Agent::serve_cni`]: see [`prune_vanished_veths`].
    pub async fn prune_vanished_veths(&self, sys_class_net: &Path) -> usize {
        let pruned = {
            let mut data = self.data();
            let before = data.attachments.len();
            prune_vanished_veths(&mut data.attachments, sys_class_net);
            before - data.attachments.len()
        };
        if pruned > 0 {
            self.bump();
            // Not fatal: the dropped entries only name devices that no longer exist.
            if let Err(e) = self.persist_attachments().await {
                tracing::warn!(error = %e, "cannot save the pruned attachments");
            }
        }
        pruned
    }

    /// Waits until a reconcile pass covering `generation` has completed, at most
    /// `timeout`; true if it did.
    pub async fn wait_reconciled(&self, generation: u64, timeout: Duration) -> bool {
        let mut rx = self.inner.done.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|done| *done >= generation))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The reconciler task: a pass at once (programs the saved state), then one after
    /// every change and every resync period (drift repair). Never returns.
    pub async fn run_reconciler(self) {
        let mut dirty = self.inner.dirty.subscribe();
        let resync = self.inner.config.resync.max(Duration::from_millis(100));
        loop {
            dirty.borrow_and_update();
            let wait = match self.reconcile_now().await {
                Ok(report) if report.is_clean() => {
                    if !report.ops.is_empty() {
                        tracing::info!(changes = report.ops.len(), "kernel reconciled");
                    }
                    resync
                }
                Ok(report) => {
                    tracing::warn!(
                        changes = report.ops.len(),
                        failed = report.failures.len(),
                        "kernel partly reconciled"
                    );
                    FAILED_RETRY.min(resync)
                }
                Err(e) => {
                    tracing::error!(error = %e, "reconcile failed");
                    FAILED_RETRY.min(resync)
                }
            };
            tokio::select! {
                _ = dirty.changed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// The controller task: watches this node's state from `after` = the current
    /// revision and applies every new state; on any error keeps the current state (and
    /// so the kernel) as it is and reconnects with exponential backoff
    /// ([`INITIAL_BACKOFF`] doubling up to [`MAX_BACKOFF`]). Never returns.
    pub async fn follow_controller<S: StateSource>(self, source: S) {
        let node = self.inner.config.node.clone();
        let mut backoff = INITIAL_BACKOFF;
        let mut connected: Option<bool> = None;
        loop {
            let after = self.revision();
            match source.watch(&node, after).await {
                Ok(mut stream) => {
                    // Every successful connect follows a disconnect (or the start).
                    tracing::info!(source = %source.describe(), after, "watching the controller");
                    let reason = loop {
                        match stream.next().await {
                            Some(Ok(state)) => {
                                backoff = INITIAL_BACKOFF;
                                match self.set_node_state(state).await {
                                    Ok(_) => {}
                                    Err(e @ UpdateError::WrongNode { .. }) => {
                                        break e.to_string();
                                    }
                                    Err(e) => tracing::error!(error = %e, "saving the node state failed"),
                                }
                            }
                            Some(Err(e)) => break e.to_string(),
                            None => break "the controller closed the watch".to_string(),
                        }
                    };
                    tracing::warn!(
                        reason = %reason,
                        revision = self.revision(),
                        "controller watch ended; forwarding with the last state, reconnecting"
                    );
                    self.data().controller_error = Some(reason);
                    connected = Some(false);
                }
                Err(e) => {
                    if connected != Some(false) {
                        tracing::warn!(
                            error = %e,
                            revision = self.revision(),
                            "cannot reach the controller; forwarding with the last state, retrying"
                        );
                    } else {
                        tracing::debug!(error = %e, retry_in = ?backoff, "controller still unreachable");
                    }
                    connected = Some(false);
                    self.data().controller_error = Some(e.to_string());
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// Drops the attachments whose host veth is gone from `sys_class_net` (the node
/// namespace's `/sys/class/net`); true if any was dropped. For start-up, before the
/// CNI socket serves (so no ADD races it): the plugin's DEL deletes the veth even when the agent is down
/// (a DEL must not wait for a dead agent), so an agent that was stopped or killed
/// while a pod was removed would otherwise keep its attachment (and the pod's rules)
/// forever. Does nothing when `sys_class_net` has no `lo` (sysfs not mounted: no
/// evidence either way).
fn prune_vanished_veths(attachments: &mut Attachments, sys_class_net: &Path) -> bool {
    if !sys_class_net.join("lo").exists() {
        return false;
    }
    let before = attachments.len();
    attachments.retain(|key, a| {
        let present = sys_class_net.join(&a.host_if_name).exists();
        if !present {
            tracing::info!(
                interface = %key,
                host_if = %a.host_if_name,
                "host veth gone while the agent was not running (missed CNI DEL); dropping the attachment"
            );
        }
        present
    });
    attachments.len() != before
}

fn join_as_io(e: tokio::task::JoinError) -> StateDirError {
    StateDirError::Io {
        what: "saving (worker failed)",
        path: PathBuf::new(),
        source: io::Error::other(e.to_string()),
    }
}

/// The configuration the plugin applies for one interface.
///
/// The address is a host prefix (`/32`), not the network's subnet (TF hands out the
/// subnet's /12): with no on-link subnet, *every* destination is routed through the
/// gateway, i.e. through the host veth into the network's table, so a destination the
/// table does not know fails at once with the ICMP error of its `unreachable default`
/// instead of an ARP timeout, and policy sees all traffic, even to same-subnet pods.
///
/// The primary interface gets the default route via the gateway; a secondary one a route
/// to its network's subnet (`IP/prefix_len`, truncated) via the gateway, and no
/// `gateway` field, so the plugin does not try to add a second default route through it.
/// MTU [`OVERLAY_MTU`] leaves room for the VXLAN header.
pub fn interface_config(iface: &LocalInterface) -> InterfaceConfig {
    let address = IpNet::from(iface.ip);
    let routes = match iface.gateway {
        None => Vec::new(),
        Some(gw) if iface.primary => vec![RouteConfig {
            dst: match iface.ip {
                std::net::IpAddr::V4(_) => IpNet::V4(Default::default()),
                std::net::IpAddr::V6(_) => IpNet::V6(Default::default()),
            },
            gw: Some(gw),
        }],
        Some(gw) => IpNet::new(iface.ip, iface.prefix_len)
            .map(|n| {
                vec![RouteConfig {
                    dst: n.trunc(),
                    gw: Some(gw),
                }]
            })
            .unwrap_or_default(),
    };
    InterfaceConfig {
        if_name: iface.interface.clone(),
        network: iface.network.clone(),
        address,
        gateway: if iface.primary { iface.gateway } else { None },
        mac: Some(iface.mac.to_string()),
        routes,
        mtu: Some(OVERLAY_MTU),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
