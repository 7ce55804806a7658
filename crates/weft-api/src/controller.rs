//! The controller instance: one owner of the translator, writing every batch of input
//! changes and their derived objects to the store in one transaction.
//!
//! Store layout (all values JSON):
//! - `inputs/<plural>/<namespace or ->/<name>`: the input objects as applied or watched;
//! - `derived/<plural>/<name>`: projects, networks, interfaces, services, policies, statuses.
//!
//! Addresses are recorded only on derived objects, so a crash can never leave an
//! address allocated without an owner: at start-up [`Controller::open`] rebuilds the
//! IPAM pools from what is stored and resynchronises.
//!
//! Per-node forwarding state: after every successful commit the new store revision is
//! published on a watch channel ([`Controller::subscribe_commits`]);
//! [`Controller::node_state`] compiles a node's [`NodeState`] with
//! [`weft_routing::compile_node_state`] from the in-memory networks, interfaces and
//! Nodes. The server's node watch streams it to agents whenever it changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use tokio::sync::{Mutex, watch};
use weft_kube::KubeEvent;
use weft_model::config::EffectiveConfig;
use weft_model::node::NodeState;
use weft_model::{
    DerivedKind, DerivedObject, InputChange, InputKey, InputKind, InputObject, InterfaceAttachment,
    ServiceRecord, VirtualNetworkRecord,
};
use weft_store::{ConfigStore, StoreError, Txn};
use weft_translator::{ApplyAction, DerivedChange, Translator};

use crate::types::{
    ApplyReport, ApplyRequest, ComponentStatus, ConsistencyReport, ControllerStatus, DocumentResult,
    PoolUsage,
};

/// Prefix of stored inputs.
pub const INPUT_PREFIX: &str = "inputs/";
/// Prefix of stored derived objects.
pub const DERIVED_PREFIX: &str = "derived/";
/// Key every controller commit rewrites, guarded on its mod revision: with several controller
/// replicas on one (etcd) store, a commit computed from a translator that missed another
/// replica's commit fails with a conflict instead of, say, handing out an address twice; the
/// replica then reloads and retries. See README "High availability".
pub const WRITER_KEY: &str = "controller/writer";
/// How often [`Controller::apply`] retries after losing a race with another replica.
const MAX_CONFLICT_RETRIES: usize = 20;
/// How long [`Controller::write_status`] waits after a commit before it compares, so a
/// burst of commits is one pass.
pub const STATUS_DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(250);
/// How soon [`Controller::write_status`] tries again after a failed write when no commit
/// comes first.
pub const STATUS_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Errors of the controller runtime.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The store failed; nothing from this request was written.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// Store key of an input.
pub fn input_store_key(key: &InputKey) -> String {
    format!(
        "{INPUT_PREFIX}{}/{}/{}",
        key.kind.plural(),
        key.namespace.as_deref().unwrap_or("-"),
        key.name
    )
}

/// Store key of a derived object.
pub fn derived_store_key(kind: DerivedKind, name: &str) -> String {
    format!("{DERIVED_PREFIX}{}/{name}", kind.plural())
}

#[derive(Debug, Default)]
struct KubeState {
    connected: bool,
    errors: BTreeMap<String, String>,
}

/// What the route compiler reads, copied out of the translator once per revision and
/// shared by every node's computation at that revision.
#[derive(Debug)]
pub(crate) struct RoutingInputs {
    revision: u64,
    pub(crate) networks: Vec<VirtualNetworkRecord>,
    pub(crate) interfaces: Vec<InterfaceAttachment>,
    pub(crate) services: Vec<ServiceRecord>,
    /// Pod floating IPs (bound ones go into the node states and BGP).
    pub(crate) floating_ips: Vec<weft_model::FloatingIpRecord>,
    /// Service chains (their routes and routing instances go into the node states).
    pub(crate) chains: Vec<weft_model::ServiceChainRecord>,
    pub(crate) nodes: Vec<Node>,
    /// Pods, namespaces and NetworkPolicies, for the policy compiler.
    policy_set: weft_policy::PolicySet,
    /// Pod networks with fabric SNAT (TF: the VN's `outside`, set from the
    /// `opencontrail.org/ip_fabric_snat` annotation of the namespace that owns the
    /// network, else the cluster default; ignored with ip-fabric forwarding).
    snat_networks: std::collections::BTreeSet<String>,
    /// The cluster's own ranges, which fabric-SNAT pods reach through the overlay.
    cluster_subnets: Vec<ipnet::IpNet>,
}

/// The controller: translator + store.
pub struct Controller {
    store: Arc<dyn ConfigStore>,
    store_name: String,
    translator: Mutex<Translator>,
    kube: std::sync::Mutex<Option<KubeState>>,
    /// Revision of the last successful commit; sent while the translator lock is held,
    /// so (translator contents, this value) read under the lock belong together.
    commits: watch::Sender<u64>,
    /// Becomes true when the server shuts down, so long-lived streams end.
    closing: watch::Sender<bool>,
    /// Routing inputs at the latest revision (rebuilt lazily after a commit).
    routing: std::sync::Mutex<Option<Arc<RoutingInputs>>>,
    /// The BGP speaker's state shared with the API ([`crate::bgp`]), including the
    /// routes imported into local networks that every node state gets.
    bgp: std::sync::Mutex<crate::bgp::BgpShared>,
    /// Mod revision of [`WRITER_KEY`] the translator's contents correspond to (the guard of
    /// the next commit); changed under the translator lock only.
    writer: std::sync::atomic::AtomicU64,
    /// Node watches (agents) open on this replica, by node, for `status()`.
    agents: std::sync::Mutex<BTreeMap<String, AgentLink>>,
    /// When this controller started (for "no agent connected since …").
    started: std::time::Instant,
}

/// The agent links of one node as this replica sees them (its node watch streams).
#[derive(Debug, Clone, Copy)]
struct AgentLink {
    /// Open watch streams for the node.
    watches: usize,
    /// When the count last went from 0 to 1 or from 1 to 0.
    since: std::time::Instant,
}

/// Held by a node watch stream while it is open; tells the controller when the agent
/// goes away (dropped with the stream: a client that disconnects or dies).
pub struct AgentWatchGuard {
    controller: Arc<Controller>,
    node: String,
}

impl Drop for AgentWatchGuard {
    fn drop(&mut self) {
        if let Ok(mut agents) = self.controller.agents.lock()
            && let Some(link) = agents.get_mut(&self.node)
        {
            link.watches = link.watches.saturating_sub(1);
            if link.watches == 0 {
                link.since = std::time::Instant::now();
            }
        }
    }
}

/// Adds the replica guard to a non-empty commit.
fn guard_writer(txn: &mut Txn, writer: u64) {
    txn.push_guard(WRITER_KEY, writer);
    txn.push_put(WRITER_KEY, b"{}".to_vec());
}

fn is_conflict(e: &ControllerError) -> bool {
    matches!(e, ControllerError::Store(StoreError::Conflict { .. }))
}

/// What [`load`] read from one store snapshot.
struct Loaded {
    translator: Translator,
    /// Repairs and unreadable objects, for the log.
    notes: Vec<String>,
    /// Mod revision of [`WRITER_KEY`] in the snapshot: the guard of this replica's next
    /// commit (any commit by another replica after the snapshot makes it conflict).
    writer: u64,
    /// The store revision of the snapshot (what the translator's contents correspond to).
    revision: u64,
}

/// Loads inputs and derived objects from ONE store snapshot into a fresh translator, with
/// the snapshot's [`WRITER_KEY`] guard and revision: inputs, derived objects, guard and
/// revision all match even while other replicas write.
async fn load(store: &dyn ConfigStore) -> Result<Loaded, ControllerError> {
    let (kvs, revision) = store.list("").await?;
    let mut notes = Vec::new();
    let (mut inputs, mut derived, mut writer) = (Vec::new(), Vec::new(), 0);
    for kv in kvs {
        if kv.key.starts_with(INPUT_PREFIX) {
            match serde_json::from_slice(&kv.value)
                .map_err(|e| e.to_string())
                .and_then(|v| InputObject::from_value(v).map_err(|e| e.to_string()))
            {
                Ok(o) => inputs.push(o),
                Err(e) => notes.push(format!("skipped unreadable stored input {}: {e}", kv.key)),
            }
        } else if kv.key.starts_with(DERIVED_PREFIX) {
            match serde_json::from_slice::<DerivedObject>(&kv.value) {
                Ok(o) => derived.push(o),
                Err(e) => notes.push(format!("skipped unreadable stored object {}: {e}", kv.key)),
            }
        } else if kv.key == WRITER_KEY {
            writer = kv.mod_revision;
        }
    }
    let (translator, more) = Translator::restore(inputs, derived);
    notes.extend(more);
    Ok(Loaded {
        translator,
        notes,
        writer,
        revision,
    })
}

fn derived_ops(txn: &mut Txn, changes: &[DerivedChange]) {
    for change in changes {
        match change {
            DerivedChange::Put(d) => {
                let value = serde_json::to_vec(d).unwrap_or_default();
                txn.ops.push(weft_store::Op::Put {
                    key: derived_store_key(d.kind(), &d.name()),
                    value,
                });
            }
            DerivedChange::Delete(kind, name) => {
                txn.ops.push(weft_store::Op::Delete {
                    key: derived_store_key(*kind, name),
                });
            }
        }
    }
}

fn action_name(a: ApplyAction) -> &'static str {
    match a {
        ApplyAction::Created => "created",
        ApplyAction::Configured => "configured",
        ApplyAction::Unchanged => "unchanged",
        ApplyAction::Deleted => "deleted",
        ApplyAction::NotFound => "not-found",
    }
}

impl Controller {
    /// Opens the controller on a store: loads what is stored, repairs anything
    /// inconsistent (recomputing it), and writes the repair in one transaction.
    pub async fn open(store: Arc<dyn ConfigStore>, store_name: &str) -> Result<Arc<Self>, ControllerError> {
        let mut attempt = 0;
        let (translator, revision, writer) = loop {
            let Loaded {
                mut translator,
                notes,
                writer,
                revision,
            } = load(store.as_ref()).await?;
            for note in &notes {
                tracing::warn!(note = %note, "store repair");
            }
            let changes = translator.flush();
            if changes.is_empty() {
                break (translator, revision, writer);
            }
            let mut txn = Txn::default();
            derived_ops(&mut txn, &changes);
            guard_writer(&mut txn, writer);
            match store.commit(txn).await {
                Ok(revision) => {
                    tracing::info!(
                        changes = changes.len(),
                        revision,
                        "resynchronised derived objects at start-up"
                    );
                    break (translator, revision, revision);
                }
                // Another replica wrote meanwhile: load again.
                Err(StoreError::Conflict { .. }) if attempt < MAX_CONFLICT_RETRIES => attempt += 1,
                Err(e) => return Err(e.into()),
            }
        };
        Ok(Arc::new(Controller {
            store,
            store_name: store_name.to_string(),
            translator: Mutex::new(translator),
            kube: std::sync::Mutex::new(None),
            commits: watch::Sender::new(revision),
            closing: watch::Sender::new(false),
            routing: std::sync::Mutex::new(None),
            bgp: std::sync::Mutex::new(crate::bgp::BgpShared::default()),
            writer: std::sync::atomic::AtomicU64::new(writer),
            agents: std::sync::Mutex::new(BTreeMap::new()),
            started: std::time::Instant::now(),
        }))
    }

    /// Writes the inputs in `touched` (or their deletion) and the derived changes in one
    /// transaction. On failure the translator is reloaded from the store, so memory
    /// never runs ahead of what is durable.
    async fn commit(
        &self,
        t: &mut Translator,
        touched: &BTreeSet<InputKey>,
        changes: &[DerivedChange],
    ) -> Result<u64, ControllerError> {
        let mut txn = Txn::default();
        for key in touched {
            match t.input(key) {
                Some(o) => txn.ops.push(weft_store::Op::Put {
                    key: input_store_key(key),
                    value: serde_json::to_vec(&o.to_value()).unwrap_or_default(),
                }),
                None => txn.ops.push(weft_store::Op::Delete {
                    key: input_store_key(key),
                }),
            }
        }
        derived_ops(&mut txn, changes);
        if txn.ops.is_empty() {
            return Ok(self.store.revision().await?);
        }
        guard_writer(&mut txn, self.writer.load(std::sync::atomic::Ordering::SeqCst));
        match self.store.commit(txn).await {
            Ok(rev) => {
                self.writer.store(rev, std::sync::atomic::Ordering::SeqCst);
                // Still under the translator lock: readers see the new contents and the
                // new revision together.
                self.commits.send_replace(rev);
                Ok(rev)
            }
            Err(e) => {
                if matches!(e, StoreError::Conflict { .. }) {
                    tracing::info!("another controller replica committed first; reloading and retrying");
                } else {
                    tracing::error!(error = %e, "store write failed; reloading state from the store");
                }
                if let Ok(fresh) = load(self.store.as_ref()).await {
                    self.install(t, fresh);
                }
                Err(e.into())
            }
        }
    }

    /// Applies (or deletes) manifest documents. Each document gets its own result; valid
    /// documents take effect even when others in the same request are refused.
    ///
    /// With several replicas on one store, a commit that lost the race to another replica
    /// is recomputed on the reloaded state and retried.
    pub async fn apply(&self, request: ApplyRequest, delete: bool) -> Result<ApplyReport, ControllerError> {
        let mut attempt = 0;
        loop {
            match self.apply_once(request.clone(), delete).await {
                Err(e) if is_conflict(&e) && attempt < MAX_CONFLICT_RETRIES => attempt += 1,
                other => return other,
            }
        }
    }

    async fn apply_once(&self, request: ApplyRequest, delete: bool) -> Result<ApplyReport, ControllerError> {
        let default_ns = request.namespace.clone().unwrap_or_else(|| "default".into());
        let mut results: Vec<DocumentResult> = request
            .documents
            .iter()
            .map(|d| DocumentResult {
                source: d.source.clone(),
                object: None,
                action: "error".into(),
                error: None,
                pending: None,
            })
            .collect();
        let mut decoded = Vec::new();
        for (i, doc) in request.documents.into_iter().enumerate() {
            match InputObject::from_value(doc.object) {
                Ok(mut o) => {
                    o.default_namespace(&default_ns);
                    results[i].object = Some(o.key().to_string());
                    decoded.push((i, o));
                }
                Err(e) => results[i].error = Some(format!("{}: {e}", doc.source)),
            }
        }
        // Dependencies first when creating (ClusterConfig, networks, namespaces, then
        // pods …), last when deleting.
        decoded.sort_by_key(|(i, o)| (o.kind(), *i));
        if delete {
            decoded.reverse();
        }
        let mut t = self.translator.lock().await;
        let mut touched = BTreeSet::new();
        let mut keys = Vec::new();
        for (i, object) in decoded {
            let key = object.key();
            let change = if delete {
                InputChange::Delete(key.clone())
            } else {
                InputChange::Upsert(object)
            };
            match t.apply(change) {
                Ok(action) => {
                    results[i].action = action_name(action).into();
                    if matches!(
                        action,
                        ApplyAction::Created | ApplyAction::Configured | ApplyAction::Deleted
                    ) {
                        touched.insert(key.clone());
                    }
                    keys.push((i, key));
                }
                Err(e) => results[i].error = Some(format!("{}: {e}", results[i].source)),
            }
        }
        let changes = t.flush();
        let revision = self.commit(&mut t, &touched, &changes).await?;
        for (i, key) in keys {
            results[i].pending = t.pending_reason(&key).map(str::to_string);
        }
        Ok(ApplyReport { results, revision })
    }

    /// Applies a batch of events from the Kubernetes watch (retried like [`Controller::apply`]
    /// when another replica committed first).
    pub async fn ingest_kube(&self, events: Vec<KubeEvent>) -> Result<u64, ControllerError> {
        let mut attempt = 0;
        loop {
            match self.ingest_kube_once(events.clone()).await {
                Err(e) if is_conflict(&e) && attempt < MAX_CONFLICT_RETRIES => attempt += 1,
                other => return other,
            }
        }
    }

    async fn ingest_kube_once(&self, events: Vec<KubeEvent>) -> Result<u64, ControllerError> {
        let mut t = self.translator.lock().await;
        let mut touched = BTreeSet::new();
        let apply = |t: &mut Translator, change: InputChange, touched: &mut BTreeSet<InputKey>| {
            let key = match &change {
                InputChange::Upsert(o) => o.key(),
                InputChange::Delete(k) => k.clone(),
            };
            match t.apply(change) {
                Ok(ApplyAction::Created | ApplyAction::Configured | ApplyAction::Deleted) => {
                    touched.insert(key);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(object = %key, error = %e, "refused object from Kubernetes");
                    self.note_kube_error(&key.kind.to_string(), e.to_string());
                }
            }
        };
        for event in events {
            match event {
                KubeEvent::Change(change) => apply(&mut t, change, &mut touched),
                KubeEvent::Snapshot { kind, objects } => {
                    self.note_kube_ok(kind);
                    let listed: BTreeSet<InputKey> = objects.iter().map(|o| o.key()).collect();
                    let gone: Vec<InputKey> = t
                        .inputs()
                        .map(|o| o.key())
                        .filter(|k| k.kind == kind && !listed.contains(k))
                        .collect();
                    for key in gone {
                        apply(&mut t, InputChange::Delete(key), &mut touched);
                    }
                    for o in objects {
                        apply(&mut t, InputChange::Upsert(o), &mut touched);
                    }
                }
                KubeEvent::WatchError { kind, message } => self.note_kube_error(&kind.to_string(), message),
            }
        }
        let changes = t.flush();
        self.commit(&mut t, &touched, &changes).await
    }

    fn note_kube_error(&self, kind: &str, message: String) {
        if let Ok(mut k) = self.kube.lock() {
            k.get_or_insert_with(KubeState::default)
                .errors
                .insert(kind.to_string(), message);
        }
    }

    fn note_kube_ok(&self, kind: InputKind) {
        if let Ok(mut k) = self.kube.lock() {
            let state = k.get_or_insert_with(KubeState::default);
            state.connected = true;
            state.errors.remove(kind.kind_name());
        }
    }

    /// Runs the Kubernetes watch until it ends, feeding batches into the translator, and
    /// meanwhile writes weft's results back to Kubernetes ([`Controller::write_status`]).
    ///
    /// Only the replica that ingests runs this (the leader on etcd, see the CLI's
    /// `kube_while_leader`), so status writes are once-only work like the ingestion and
    /// BGP: two replicas never write the same status. Dropping (aborting) this future
    /// stops both.
    pub async fn run_kube(self: Arc<Self>, source: weft_kube::KubeSource) {
        if let Ok(mut k) = self.kube.lock() {
            *k = Some(KubeState::default());
        }
        let sink = weft_kube::KubeStatusSink::new(source.client().clone());
        let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
        let watcher = tokio::spawn(source.run(tx));
        let ingest = async {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                // Collect what is already queued, so a relist becomes one transaction.
                while batch.len() < 2000 {
                    match rx.try_recv() {
                        Ok(e) => batch.push(e),
                        Err(_) => break,
                    }
                }
                if let Err(e) = self.ingest_kube(batch).await {
                    tracing::error!(error = %e, "could not store Kubernetes changes");
                }
            }
        };
        // The status writer never ends on its own: it stops with the ingestion.
        tokio::select! {
            () = ingest => {}
            () = self.clone().write_status(sink) => {}
        }
        if let Ok(Err(e)) = watcher.await {
            tracing::error!(error = %e, "Kubernetes watch ended");
            self.note_kube_error("watch", e.to_string());
        }
    }

    /// Writes weft's results back to Kubernetes through `sink` (see [`weft_kube::status`]:
    /// LoadBalancer ingress, pods' `k8s.v1.cni.cncf.io/network-status`), until the commit
    /// channel closes.
    ///
    /// Triggered by commits rather than by a periodic tick: every change that can alter
    /// what should be shown (a derived object) or what Kubernetes shows (a watched
    /// Service or Pod, including the result of our own writes) is a commit, so a pass
    /// after each one sees everything, and an idle cluster costs nothing. Passes are
    /// debounced ([`STATUS_DEBOUNCE`]) so a burst of commits (a relist, many pods
    /// starting) is one pass. A pass with failed writes is repeated after
    /// [`STATUS_RETRY`] even without a commit. Each pass compares before writing
    /// ([`weft_kube::status::plan`]); the watch then delivers the written status as an
    /// input change whose commit leads to a pass that finds nothing to do — no loop.
    pub async fn write_status<S: weft_kube::StatusSink>(self: Arc<Self>, sink: S) {
        let mut commits = self.subscribe_commits();
        let mut writer = weft_kube::StatusWriter::new(sink);
        loop {
            // Debounce: let a burst of commits land, then look once.
            tokio::time::sleep(STATUS_DEBOUNCE).await;
            commits.borrow_and_update();
            let patches = self.status_plan().await;
            let report = writer.write(patches).await;
            if report.written + report.failed > 0 {
                tracing::debug!(?report, "status pass");
            }
            let changed = async {
                if report.failed > 0 {
                    tokio::select! {
                        r = commits.changed() => r.is_ok(),
                        () = tokio::time::sleep(STATUS_RETRY) => true,
                    }
                } else {
                    commits.changed().await.is_ok()
                }
            };
            if !changed.await {
                return;
            }
        }
    }

    /// The status patches Kubernetes needs now: the translator's Services and Pods (as the
    /// watch last delivered them) against its derived services and interfaces.
    async fn status_plan(&self) -> Vec<weft_kube::StatusPatch> {
        let t = self.translator.lock().await;
        let (mut services, mut pods) = (Vec::new(), Vec::new());
        for object in t.inputs() {
            match object {
                InputObject::Service(s) => services.push(s.as_ref()),
                InputObject::Pod(p) => pods.push(p.as_ref()),
                _ => {}
            }
        }
        let records = t.derived(DerivedKind::Service).filter_map(|d| match d {
            DerivedObject::Service(s) => Some(s),
            _ => None,
        });
        let interfaces = t.derived(DerivedKind::Interface).filter_map(|d| match d {
            DerivedObject::Interface(i) => Some(i),
            _ => None,
        });
        weft_kube::status::plan(services, pods, records, interfaces)
    }

    /// Follows commits made by OTHER controller replicas sharing the store (HA on etcd):
    /// watches [`WRITER_KEY`] (which every controller commit rewrites, so one small event per
    /// commit instead of all its keys and values) and, when the store moves past this
    /// replica's own last commit, reloads the translator and publishes the new revision (so
    /// node watches and reads catch up). Runs until the store closes; with a single
    /// controller it only sees its own commits and skips them.
    pub async fn follow_store(self: Arc<Self>) {
        use futures::StreamExt;
        loop {
            let after = self.revision();
            let mut stream = match self.store.watch(WRITER_KEY, after).await {
                Ok(stream) => stream,
                Err(StoreError::Closed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot follow the store; reloading and retrying");
                    self.resync().await;
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    continue;
                }
            };
            while let Some(item) = stream.next().await {
                match item {
                    Ok(event) if event.revision <= self.revision() => {} // ours, or loaded
                    Ok(_) => {
                        // Let the rest of a burst land, then reload once.
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        self.resync().await;
                    }
                    Err(StoreError::Closed) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "store watch ended; reloading");
                        self.resync().await;
                        break;
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Reloads the translator from the store if the store is ahead of it.
    async fn resync(&self) {
        let mut t = self.translator.lock().await;
        let Ok(head) = self.store.revision().await else {
            return;
        };
        if head <= self.revision() {
            return;
        }
        match load(self.store.as_ref()).await {
            Ok(fresh) => {
                tracing::debug!(
                    revision = fresh.revision,
                    "reloaded state written by another replica"
                );
                self.install(&mut t, fresh);
            }
            Err(e) => tracing::warn!(error = %e, "reloading the state from the store failed"),
        }
    }

    /// Replaces the translator (its lock held by the caller) with a fresh [`load`], takes
    /// over its writer guard and publishes its revision if newer.
    fn install(&self, t: &mut Translator, fresh: Loaded) {
        *t = fresh.translator;
        let _ = t.flush();
        self.writer
            .store(fresh.writer, std::sync::atomic::Ordering::SeqCst);
        self.commits.send_if_modified(|r| {
            let newer = fresh.revision > *r;
            *r = (*r).max(fresh.revision);
            newer
        });
    }

    /// Cluster settings in force.
    pub async fn config(&self) -> EffectiveConfig {
        self.translator.lock().await.config().clone()
    }

    /// Derived objects of a kind, optionally in one namespace.
    pub async fn derived(&self, kind: DerivedKind, namespace: Option<&str>) -> Vec<DerivedObject> {
        let t = self.translator.lock().await;
        t.derived(kind)
            .filter(|d| namespace.is_none() || d.namespace() == namespace)
            .cloned()
            .collect()
    }

    /// Inputs of a kind, optionally in one namespace, as manifests.
    pub async fn inputs(&self, kind: InputKind, namespace: Option<&str>) -> Vec<serde_json::Value> {
        let t = self.translator.lock().await;
        t.inputs()
            .filter(|o| o.kind() == kind)
            .filter(|o| namespace.is_none() || o.metadata().namespace.as_deref() == namespace)
            .map(|o| o.to_value())
            .collect()
    }

    /// Revision of the last successful commit (the one [`Controller::node_state`]
    /// computes from).
    pub fn revision(&self) -> u64 {
        *self.commits.borrow()
    }

    /// A receiver of commit revisions: it sees the revision of every successful commit
    /// (apply, Kubernetes ingest, start-up repair), coalesced when the reader is slow.
    pub fn subscribe_commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// Tells long-lived streams (node watches) to end, so a graceful shutdown of the
    /// server does not wait on them forever. The server calls it on shutdown.
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// A receiver that turns true once [`Controller::close_streams`] was called.
    pub fn subscribe_closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// The desired forwarding state of `node` at the latest committed revision: its
    /// tables, routes, VXLAN peers and local interfaces (see [`weft_routing`]).
    pub async fn node_state(&self, node: &str) -> NodeState {
        let inputs = self.routing_inputs().await;
        let mut state = weft_routing::compile_node_state_with_services(
            node,
            inputs.revision,
            &inputs.networks,
            &inputs.interfaces,
            &inputs.services,
            &inputs.nodes,
        );
        weft_routing::add_floating_ips(&mut state, &inputs.floating_ips);
        state.policies =
            weft_routing::policy::compile_node_policies(node, &inputs.policy_set, &inputs.interfaces);
        for network in &mut state.networks {
            let fabric_snat = inputs.snat_networks.contains(&network.fq_name);
            let floating = state
                .interfaces
                .iter()
                .any(|i| i.network == network.fq_name && !i.floating_ips.is_empty());
            // IP fabric forwarding: destinations outside the cluster leave through the
            // underlay with the pod's own address (no SNAT; the agent does not confine
            // these pods).
            if fabric_snat || floating || network.ip_fabric_forwarding {
                network.outside = Some(weft_model::node::Outside {
                    cluster_subnets: inputs.cluster_subnets.clone(),
                    fabric_snat,
                });
            }
        }
        weft_routing::chains::add_service_chains(
            &mut state,
            &inputs.chains,
            &inputs.networks,
            &inputs.interfaces,
            &inputs.nodes,
        );
        let imported = self.with_bgp(|b| b.imported.clone());
        if !imported.is_empty() {
            weft_routing::add_imported_routes(&mut state, &imported);
        }
        state
    }

    /// Runs `f` on the BGP state shared between the speaker task and the API.
    pub fn with_bgp<T>(&self, f: impl FnOnce(&mut crate::bgp::BgpShared) -> T) -> T {
        let mut guard = self.bgp.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Replaces the routes imported over BGP (and the per-peer accepted counts). When
    /// the routes changed, node watches are woken (as by a commit, with the revision
    /// unchanged) so agents get the new tables.
    pub fn set_imported(&self, routes: Vec<weft_model::ImportedRoute>, accepted: BTreeMap<String, usize>) {
        let changed = self.with_bgp(|b| {
            b.accepted = accepted;
            if *b.imported != routes {
                b.imported = Arc::new(routes);
                true
            } else {
                false
            }
        });
        if changed {
            self.commits.send_modify(|_| {});
        }
    }

    /// The route compiler's inputs at the latest revision (networks, interfaces,
    /// services, Nodes), for the BGP exports and `weft routes NETWORK`.
    pub(crate) async fn bgp_inputs(&self) -> Arc<RoutingInputs> {
        self.routing_inputs().await
    }

    /// The route compiler's inputs at the latest revision, copied out of the translator
    /// at most once per revision however many nodes ask.
    async fn routing_inputs(&self) -> Arc<RoutingInputs> {
        let t = self.translator.lock().await;
        let revision = self.revision();
        if let Some(cached) = self.cached_routing(revision) {
            return cached;
        }
        let mut networks = Vec::new();
        for d in t.derived(DerivedKind::Network) {
            if let DerivedObject::Network(n) = d {
                networks.push(n.clone());
            }
        }
        let mut interfaces = Vec::new();
        for d in t.derived(DerivedKind::Interface) {
            if let DerivedObject::Interface(i) = d {
                interfaces.push(i.clone());
            }
        }
        let floating_ips = t
            .derived(DerivedKind::FloatingIp)
            .filter_map(|d| match d {
                DerivedObject::FloatingIp(f) => Some(f.clone()),
                _ => None,
            })
            .collect();
        let chains = t
            .derived(DerivedKind::ServiceChain)
            .filter_map(|d| match d {
                DerivedObject::ServiceChain(c) => Some(c.clone()),
                _ => None,
            })
            .collect();
        let mut services = Vec::new();
        for d in t.derived(DerivedKind::Service) {
            if let DerivedObject::Service(s) = d {
                services.push(s.clone());
            }
        }
        let nodes = t
            .inputs()
            .filter_map(|o| match o {
                InputObject::Node(n) => Some(n.as_ref().clone()),
                _ => None,
            })
            .collect();
        let snat_by_namespace: BTreeMap<String, bool> = t
            .derived(DerivedKind::Project)
            .filter_map(|d| match d {
                DerivedObject::Project(p) => Some((p.namespace.clone(), p.ip_fabric_snat)),
                _ => None,
            })
            .collect();
        let cfg = t.config();
        let snat_networks = networks
            .iter()
            .filter(|n| n.kind == weft_model::NetworkKind::Pod && !n.ip_fabric_forwarding)
            .filter(|n| {
                snat_by_namespace
                    .get(&n.namespace)
                    .copied()
                    .unwrap_or(cfg.ip_fabric_snat)
            })
            .map(|n| n.fq_name.clone())
            .collect();
        let mut cluster_subnets: Vec<ipnet::IpNet> = cfg
            .pod_subnets
            .iter()
            .chain(&cfg.service_subnets)
            .chain(&cfg.ip_fabric_subnets)
            .copied()
            .chain(networks.iter().flat_map(|n| n.subnets.iter().copied()))
            .collect();
        cluster_subnets.sort();
        cluster_subnets.dedup();
        let (mut pods, mut namespaces, mut policies) = (Vec::new(), Vec::new(), Vec::new());
        let (mut admin, mut baseline) = (Vec::new(), Vec::new());
        for o in t.inputs() {
            match o {
                InputObject::Pod(p) => pods.push(p.as_ref().clone()),
                InputObject::Namespace(n) => namespaces.push(n.as_ref().clone()),
                InputObject::NetworkPolicy(p) => policies.push(p.as_ref().clone()),
                InputObject::AdminNetworkPolicy(p) => admin.push(p.as_ref().clone()),
                InputObject::BaselineAdminNetworkPolicy(p) => baseline.push(p.as_ref().clone()),
                _ => {}
            }
        }
        drop(t);
        let policy_set = weft_routing::policy::policy_set_with_admin(
            &pods,
            &namespaces,
            &policies,
            &admin,
            &baseline,
            &interfaces,
        );
        let fresh = Arc::new(RoutingInputs {
            revision,
            networks,
            interfaces,
            services,
            floating_ips,
            chains,
            nodes,
            policy_set,
            snat_networks,
            cluster_subnets,
        });
        if let Ok(mut slot) = self.routing.lock()
            && slot.as_ref().is_none_or(|old| old.revision <= revision)
        {
            *slot = Some(fresh.clone());
        }
        fresh
    }

    fn cached_routing(&self, revision: u64) -> Option<Arc<RoutingInputs>> {
        let slot = self.routing.lock().ok()?;
        slot.as_ref().filter(|r| r.revision == revision).cloned()
    }

    /// Records an open node watch (an agent following its state); the link counts as
    /// gone when the returned guard is dropped. Feeds the `agent <node>` lines of
    /// [`Controller::status`].
    pub fn agent_watch_started(self: &Arc<Self>, node: &str) -> AgentWatchGuard {
        if let Ok(mut agents) = self.agents.lock() {
            let now = std::time::Instant::now();
            let link = agents.entry(node.to_string()).or_insert(AgentLink {
                watches: 0,
                since: now,
            });
            if link.watches == 0 {
                link.since = now;
            }
            link.watches += 1;
        }
        AgentWatchGuard {
            controller: Arc::clone(self),
            node: node.to_string(),
        }
    }

    /// One `agent <node>` component per Node object: ready while its agent watches the
    /// node's state here; otherwise since when it is not connected and what it waits for.
    fn agent_components(&self, nodes: &[String], pods_on: &BTreeMap<String, usize>) -> Vec<ComponentStatus> {
        let agents = self.agents.lock().map(|a| a.clone()).unwrap_or_default();
        nodes
            .iter()
            .map(|node| {
                let pods = pods_on.get(node).copied().unwrap_or(0);
                let (state, reason) = match agents.get(node) {
                    Some(l) if l.watches > 0 => (
                        "ready",
                        format!("connected for {} s (watching its node state)", l.since.elapsed().as_secs()),
                    ),
                    Some(l) => (
                        "waiting",
                        format!(
                            "not connected since {} s (its node watch ended: agent stopped, crashed or cut off; the node forwards with its last state); waiting for the agent to reconnect",
                            l.since.elapsed().as_secs()
                        ),
                    ),
                    // Replicas on a shared (etcd) store each see only the agents that
                    // watch them: an agent absent here may be connected to another one.
                    None if self.store_name.starts_with("etcd://") => (
                        "elsewhere",
                        format!(
                            "not watching this replica (controllers share the store {}; an agent watches one of them): ask the other replicas with `weft --server URL status`",
                            self.store_name
                        ),
                    ),
                    None => (
                        "waiting",
                        format!(
                            "not connected since {} s (no agent has watched node {node} on this controller since it started); waiting for `weft agent --node {node}` to connect",
                            self.started.elapsed().as_secs()
                        ),
                    ),
                };
                let reason = if state != "ready" && pods > 0 {
                    format!("{reason}; {pods} pod(s) scheduled there wait for it (CNI ADD fails until it runs)")
                } else {
                    reason
                };
                ComponentStatus {
                    component: format!("agent {node}"),
                    state: state.into(),
                    reason,
                }
            })
            .collect()
    }

    /// Every component's state, with reasons.
    pub async fn status(&self) -> ControllerStatus {
        let revision = self.store.revision().await;
        let t = self.translator.lock().await;
        let mut components = vec![match &revision {
            Ok(rev) => ComponentStatus {
                component: "store".into(),
                state: "ready".into(),
                reason: format!("{} at revision {rev}", self.store_name),
            },
            Err(e) => ComponentStatus {
                component: "store".into(),
                state: "degraded".into(),
                reason: format!("{}: {e}", self.store_name),
            },
        }];
        let pending: Vec<_> = t
            .derived(DerivedKind::Status)
            .filter_map(|d| {
                if let DerivedObject::Status(s) = d {
                    Some(s.clone())
                } else {
                    None
                }
            })
            .collect();
        components.push(ComponentStatus {
            component: "translator".into(),
            state: if pending.is_empty() {
                "ready".into()
            } else {
                "waiting".into()
            },
            reason: if pending.is_empty() {
                format!("cluster {:?}: every object translated", t.config().cluster_name)
            } else {
                format!(
                    "{} objects waiting, first: {} ({})",
                    pending.len(),
                    pending[0].object,
                    pending[0].reason.clone().unwrap_or_default()
                )
            },
        });
        if let Ok(k) = self.kube.lock()
            && let Some(k) = k.as_ref()
        {
            let (state, reason) = match (k.connected, k.errors.iter().next()) {
                (_, Some((kind, e))) => ("degraded", format!("watch of {kind}: {e}")),
                (true, None) => ("ready", "watching the Kubernetes API".to_string()),
                (false, None) => (
                    "waiting",
                    "waiting for the first list from the Kubernetes API".to_string(),
                ),
            };
            components.push(ComponentStatus {
                component: "kubernetes".into(),
                state: state.into(),
                reason,
            });
        }
        let (bgp_state, bgp_reason) = self.with_bgp(|b| (b.state.clone(), b.reason.clone()));
        if !bgp_state.is_empty() && bgp_state != "disabled" {
            components.push(ComponentStatus {
                component: "bgp".into(),
                state: bgp_state,
                reason: bgp_reason,
            });
        }
        let node_names: Vec<String> = t
            .inputs()
            .filter(|o| matches!(o, InputObject::Node(_)))
            .map(|o| o.key().name)
            .collect();
        let mut pods_on: BTreeMap<String, usize> = BTreeMap::new();
        for o in t.inputs() {
            if let InputObject::Pod(p) = o
                && let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone())
            {
                *pods_on.entry(node).or_default() += 1;
            }
        }
        components.extend(self.agent_components(&node_names, &pods_on));
        let mut inputs: BTreeMap<String, usize> = BTreeMap::new();
        for o in t.inputs() {
            *inputs.entry(o.kind().plural().to_string()).or_default() += 1;
        }
        ControllerStatus {
            components,
            revision: revision.unwrap_or(0),
            cluster_name: t.config().cluster_name.clone(),
            inputs: inputs.into_iter().collect(),
            derived: DerivedKind::ALL
                .iter()
                .map(|k| (k.plural().to_string(), t.derived(*k).count()))
                .collect(),
            pending,
            pools: t
                .pool_usage()
                .into_iter()
                .map(|(name, in_use, capacity)| PoolUsage {
                    name,
                    in_use,
                    capacity,
                })
                .collect(),
        }
    }

    /// Checks the invariants on what is *stored* (not on memory): no address handed out
    /// twice within a pool, every interface belongs to a stored pod, every running pod
    /// has an interface or a pending reason, every service record has its Service.
    pub async fn consistency(&self) -> Result<ConsistencyReport, ControllerError> {
        let _guard = self.translator.lock().await;
        check_store(self.store.as_ref()).await
    }
}

/// Checks the stored state's invariants (see [`Controller::consistency`]).
pub async fn check_store(store: &dyn ConfigStore) -> Result<ConsistencyReport, ControllerError> {
    let (input_kvs, _) = store.list(INPUT_PREFIX).await?;
    let (derived_kvs, _) = store.list(DERIVED_PREFIX).await?;
    let mut report = ConsistencyReport::default();
    let mut inputs = BTreeMap::new();
    for kv in input_kvs {
        match serde_json::from_slice(&kv.value)
            .map_err(|e| e.to_string())
            .and_then(|v| InputObject::from_value(v).map_err(|e| e.to_string()))
        {
            Ok(o) => {
                inputs.insert(o.key(), o);
            }
            Err(e) => report.problems.push(format!("unreadable input {}: {e}", kv.key)),
        }
    }
    let mut derived = Vec::new();
    for kv in derived_kvs {
        match serde_json::from_slice::<DerivedObject>(&kv.value) {
            Ok(o) => derived.push(o),
            Err(e) => report.problems.push(format!("unreadable object {}: {e}", kv.key)),
        }
    }
    let ipam_of: BTreeMap<String, String> = derived
        .iter()
        .filter_map(|d| {
            if let DerivedObject::Network(n) = d {
                Some((n.fq_name.clone(), n.ipam.clone()))
            } else {
                None
            }
        })
        .collect();
    let mut seen: BTreeMap<(String, std::net::IpAddr), String> = BTreeMap::new();
    let mut claim = |report: &mut ConsistencyReport, network: &str, ip: std::net::IpAddr, owner: String| {
        report.addresses += 1;
        let Some(pool) = ipam_of.get(network) else {
            report
                .problems
                .push(format!("{owner} uses network {network}, which is not stored"));
            return;
        };
        if let Some(other) = seen.insert((pool.clone(), ip), owner.clone()) {
            report.problems.push(format!(
                "address {ip} in {pool} is held by both {other} and {owner}"
            ));
        }
    };
    let mut pods_with_interface = BTreeSet::new();
    let mut pending = BTreeSet::new();
    for d in &derived {
        match d {
            DerivedObject::Interface(i) => {
                claim(
                    &mut report,
                    &i.network,
                    i.ip,
                    format!("Pod {}/{} {}", i.namespace, i.pod, i.interface),
                );
                let key = InputKey::namespaced(InputKind::Pod, &i.namespace, &i.pod);
                if !inputs.contains_key(&key) {
                    report.problems.push(format!(
                        "interface {}/{}/{} has no Pod (leaked address {})",
                        i.namespace, i.pod, i.interface, i.ip
                    ));
                }
                pods_with_interface.insert(key);
            }
            DerivedObject::Service(s) => {
                if let Some(vip) = s.vip {
                    claim(
                        &mut report,
                        &s.network,
                        vip,
                        format!("Service {}/{}", s.namespace, s.name),
                    );
                }
                if let Some(network) = &s.fip_network {
                    for fip in &s.floating_ips {
                        claim(
                            &mut report,
                            network,
                            *fip,
                            format!("Service {}/{} floating IP", s.namespace, s.name),
                        );
                    }
                }
                if !inputs.contains_key(&InputKey::namespaced(InputKind::Service, &s.namespace, &s.name)) {
                    report.problems.push(format!(
                        "service record {}/{} has no Service",
                        s.namespace, s.name
                    ));
                }
            }
            DerivedObject::FloatingIp(f) => {
                if let (Some(ip), Some(network)) = (f.ip, &f.network) {
                    claim(
                        &mut report,
                        network,
                        ip,
                        format!("FloatingIp {}/{}", f.namespace, f.name),
                    );
                }
                if !inputs.contains_key(&InputKey::namespaced(
                    InputKind::FloatingIp,
                    &f.namespace,
                    &f.name,
                )) {
                    report.problems.push(format!(
                        "floating IP record {}/{} has no FloatingIp (leaked address {:?})",
                        f.namespace, f.name, f.ip
                    ));
                }
            }
            DerivedObject::Status(s) => {
                pending.insert(s.object.clone());
            }
            _ => {}
        }
    }
    for (key, o) in &inputs {
        if let InputObject::Pod(p) = o {
            let host = p.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
            let done = matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            );
            if !host && !done && !pods_with_interface.contains(key) && !pending.contains(&key.to_string()) {
                report
                    .problems
                    .push(format!("{key} has neither an interface nor a pending reason"));
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: serde_json::Value) -> InputObject {
        InputObject::from_value(v).expect("valid")
    }

    fn pod(ns: &str, name: &str) -> InputObject {
        obj(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
                   "spec": {"containers": [{"name": "c", "image": "x"}]}}),
        )
    }

    /// Records the status patches the controller sends.
    #[derive(Clone, Default)]
    struct RecordingSink(Arc<std::sync::Mutex<Vec<weft_kube::StatusPatch>>>);

    impl weft_kube::StatusSink for RecordingSink {
        async fn send(&self, patch: &weft_kube::StatusPatch) -> Result<(), weft_kube::status::StatusError> {
            if let Ok(mut sent) = self.0.lock() {
                sent.push(patch.clone());
            }
            Ok(())
        }
    }

    impl RecordingSink {
        fn sent(&self) -> Vec<weft_kube::StatusPatch> {
            self.0.lock().map(|s| s.clone()).unwrap_or_default()
        }

        async fn wait_for(&self, count: usize) -> Vec<weft_kube::StatusPatch> {
            for _ in 0..200 {
                if self.sent().len() >= count {
                    return self.sent();
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            panic!("expected {count} status patches, got {:?}", self.sent());
        }
    }

    #[tokio::test]
    async fn status_is_written_after_a_commit_and_not_again_once_the_watch_shows_it() {
        let store: Arc<dyn ConfigStore> = Arc::new(weft_store::MemoryStore::new());
        let c = Controller::open(store, "memory").await.expect("open");
        let sink = RecordingSink::default();
        let writer = tokio::spawn(c.clone().write_status(sink.clone()));
        let scheduled = |annotations: serde_json::Value| {
            obj(json!({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": "a", "namespace": "default", "uid": "u-a", "resourceVersion": "5",
                                    "annotations": annotations},
                       "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "x"}]}}))
        };
        c.ingest_kube(vec![KubeEvent::Snapshot {
            kind: InputKind::Pod,
            objects: vec![scheduled(json!({})), pod("default", "unscheduled")],
        }])
        .await
        .expect("ingest");
        let sent = sink.wait_for(1).await;
        let weft_kube::StatusPatch::PodNetworkStatus { name, value, .. } = &sent[0] else {
            panic!("expected the pod's network-status, got {sent:?}");
        };
        assert_eq!(name, "a");
        // The watch delivers the annotated pod (a new resourceVersion): a commit, a
        // pass, and nothing more to write.
        let mut shown = scheduled(json!({weft_kube::status::NETWORK_STATUS_ANNOTATION: value}));
        if let InputObject::Pod(p) = &mut shown {
            p.metadata.resource_version = Some("6".into());
        }
        let before = c.revision();
        c.ingest_kube(vec![KubeEvent::Change(InputChange::Upsert(shown))])
            .await
            .expect("ingest");
        assert!(c.revision() > before, "the annotation change is committed");
        tokio::time::sleep(STATUS_DEBOUNCE * 3).await;
        assert_eq!(sink.sent().len(), 1, "{:?}", sink.sent());
        writer.abort();
    }

    #[tokio::test]
    async fn kube_relist_snapshot_deletes_what_vanished_and_is_stored() {
        let store: Arc<dyn ConfigStore> = Arc::new(weft_store::MemoryStore::new());
        let c = Controller::open(store.clone(), "memory").await.expect("open");
        c.ingest_kube(vec![KubeEvent::Snapshot {
            kind: InputKind::Pod,
            objects: vec![pod("default", "a"), pod("default", "b")],
        }])
        .await
        .expect("ingest");
        assert_eq!(c.derived(DerivedKind::Interface, None).await.len(), 2);
        // A watch event, then a relist (after 410 Gone) in which `a` is gone.
        c.ingest_kube(vec![KubeEvent::Change(InputChange::Upsert(pod("default", "c")))])
            .await
            .expect("ingest");
        c.ingest_kube(vec![KubeEvent::Snapshot {
            kind: InputKind::Pod,
            objects: vec![pod("default", "b"), pod("default", "c")],
        }])
        .await
        .expect("ingest");
        let pods: Vec<String> = c
            .derived(DerivedKind::Interface, None)
            .await
            .into_iter()
            .filter_map(|d| {
                if let DerivedObject::Interface(i) = d {
                    Some(i.pod)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(pods, vec!["b", "c"]);
        assert!(
            store
                .get(&input_store_key(&InputKey::namespaced(
                    InputKind::Pod,
                    "default",
                    "a"
                )))
                .await
                .expect("get")
                .is_none()
        );
        // A refused object is reported in status, the others still land.
        let bad = obj(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x", "annotations": {"opencontrail.org/isolation": "perhaps"}}}),
        );
        c.ingest_kube(vec![
            KubeEvent::Change(InputChange::Upsert(bad)),
            KubeEvent::Change(InputChange::Delete(InputKey::namespaced(
                InputKind::Pod,
                "default",
                "b",
            ))),
        ])
        .await
        .expect("ingest");
        let status = c.status().await;
        let kube = status
            .components
            .iter()
            .find(|s| s.component == "kubernetes")
            .expect("kubernetes component");
        assert!(
            kube.reason.contains("opencontrail.org/isolation"),
            "{}",
            kube.reason
        );
        assert_eq!(c.derived(DerivedKind::Interface, None).await.len(), 1);
        // A restarted controller sees the same state.
        let again = Controller::open(store, "memory").await.expect("reopen");
        assert_eq!(again.derived(DerivedKind::Interface, None).await.len(), 1);
        assert!(
            check_store(again.store.as_ref())
                .await
                .expect("check")
                .problems
                .is_empty()
        );
    }

    /// Floating IPs are addresses too: the consistency check counts them, and a stored
    /// FIP record whose FloatingIp is gone is a leak.
    #[tokio::test]
    async fn consistency_counts_floating_ips() {
        let store: Arc<dyn ConfigStore> = Arc::new(weft_store::MemoryStore::new());
        let c = Controller::open(store.clone(), "memory").await.expect("open");
        let objects = vec![
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default", "annotations": {
                "opencontrail.org/fip-pool": "{\"domain\":\"default-domain\",\"project\":\"k8s-default\",\"network\":\"public\",\"name\":\"pool\"}"}}}),
            json!({"apiVersion": "weft.dev/v1alpha1", "kind": "VirtualNetwork", "metadata": {"name": "public", "namespace": "default"},
                   "spec": {"subnets": ["198.51.100.0/24"]}}),
            json!({"apiVersion": "weft.dev/v1alpha1", "kind": "FloatingIpPool", "metadata": {"name": "pool", "namespace": "default"},
                   "spec": {"network": "public"}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default", "labels": {"app": "p"}},
                   "spec": {"containers": [{"name": "c", "image": "x"}]}}),
            json!({"apiVersion": "weft.dev/v1alpha1", "kind": "FloatingIp", "metadata": {"name": "p", "namespace": "default"},
                   "spec": {"pool": "pool", "pod": "p"}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb", "namespace": "default"},
                   "spec": {"type": "LoadBalancer", "selector": {"app": "p"}, "ports": [{"port": 80}]}}),
        ];
        let report = c
            .apply(crate::types::ApplyRequest::from_objects("test", objects), false)
            .await
            .expect("apply");
        assert_eq!(report.errors(), 0, "{report:#?}");
        let check = c.consistency().await.expect("check");
        assert!(check.problems.is_empty(), "{:?}", check.problems);
        // eth0 of p, the VIP, the service's FIP and the pod's FIP.
        assert_eq!(check.addresses, 4, "{check:?}");
    }

    #[tokio::test]
    async fn status_names_each_node_agent_and_why_it_is_not_ready() {
        let store: Arc<dyn ConfigStore> = Arc::new(weft_store::MemoryStore::new());
        let c = Controller::open(store, "memory").await.expect("open");
        let node = obj(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}));
        c.ingest_kube(vec![KubeEvent::Change(InputChange::Upsert(node))])
            .await
            .expect("ingest");
        let agent = |s: &ControllerStatus| {
            s.components
                .iter()
                .find(|x| x.component == "agent n1")
                .cloned()
                .expect("agent n1 component")
        };
        let never = agent(&c.status().await);
        assert_eq!(never.state, "waiting");
        assert!(never.reason.contains("not connected since"), "{}", never.reason);
        assert!(never.reason.contains("weft agent --node n1"), "{}", never.reason);
        let pod = obj(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
                             "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}}),
        );
        c.ingest_kube(vec![KubeEvent::Change(InputChange::Upsert(pod))])
            .await
            .expect("ingest");
        let waiting = agent(&c.status().await);
        assert!(
            waiting.reason.contains("1 pod(s) scheduled there"),
            "{}",
            waiting.reason
        );
        let first = c.agent_watch_started("n1");
        let second = c.agent_watch_started("n1");
        assert_eq!(agent(&c.status().await).state, "ready");
        drop(first);
        assert_eq!(agent(&c.status().await).state, "ready", "one watch is still open");
        drop(second);
        let gone = agent(&c.status().await);
        assert_eq!(gone.state, "waiting");
        assert!(gone.reason.contains("watch ended"), "{}", gone.reason);
    }

    #[tokio::test]
    async fn ha_replica_reports_agents_it_does_not_serve_as_elsewhere() {
        let store: Arc<dyn ConfigStore> = Arc::new(weft_store::MemoryStore::new());
        let c = Controller::open(store, "etcd://127.0.0.1:2379/weft/")
            .await
            .expect("open");
        let node = obj(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}));
        c.ingest_kube(vec![KubeEvent::Change(InputChange::Upsert(node))])
            .await
            .expect("ingest");
        let status = c.status().await;
        let agent = status
            .components
            .iter()
            .find(|x| x.component == "agent n1")
            .expect("agent n1 component");
        assert_eq!(agent.state, "elsewhere");
        assert!(
            agent.reason.contains("not watching this replica"),
            "{}",
            agent.reason
        );
        let _watch = c.agent_watch_started("n1");
        let status = c.status().await;
        let agent = status
            .components
            .iter()
            .find(|x| x.component == "agent n1")
            .expect("agent");
        assert_eq!(agent.state, "ready");
    }
}
