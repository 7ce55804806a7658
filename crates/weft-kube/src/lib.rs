//! weft's Kubernetes watch edge.
//!
//! Data flow: **Kubernetes API server → this crate → controller → translator/store.**
//! When `weft controller --kubeconfig FILE` (or in-cluster) runs, [`KubeSource::run`]
//! lists and watches every [`InputKind`] with kube-rs' [`watcher()`](kube::runtime::watcher())
//! and turns what it sees into [`KubeEvent`]s on a channel: a [`KubeEvent::Snapshot`]
//! after each complete (re)list, a [`KubeEvent::Change`] per add, update or delete, and a
//! [`KubeEvent::WatchError`] when something goes wrong. The controller applies those to
//! its input store, and the translator derives weft's network objects from the store.
//!
//! Watched kinds and where they are served:
//!
//! | kind | path |
//! | --- | --- |
//! | Namespace, Node, Pod, Service | `/api/v1/{plural}` |
//! | EndpointSlice | `/apis/discovery.k8s.io/v1/endpointslices` |
//! | NetworkPolicy | `/apis/networking.k8s.io/v1/networkpolicies` |
//! | NetworkAttachmentDefinition | `/apis/k8s.cni.cncf.io/v1/network-attachment-definitions` |
//! | ClusterConfig, VirtualNetwork, FloatingIpPool, FloatingIp | `/apis/weft.dev/v1alpha1/{plural}` |
//! | AdminNetworkPolicy, BaselineAdminNetworkPolicy (sig-network CRDs, optional) | `/apis/policy.networking.k8s.io/v1alpha1/{plural}` |
//!
//! Guarantees the consumer can rely on:
//! - Per kind, events arrive in the order the API server produced them. Across kinds
//!   there is no order (a Pod may arrive before its Namespace).
//! - Every (re)list — the first one, and the one kube-rs does after a `410 Gone` or
//!   any other loss of the watch — ends in exactly one [`KubeEvent::Snapshot`] holding
//!   *all* objects of that kind. Objects deleted while the watch was down are simply
//!   absent from it, so the consumer must delete every stored input of that kind that
//!   the snapshot does not list. No `Change` events are sent for the relist itself.
//! - Objects are decoded one by one. An object that does not decode is reported as a
//!   [`KubeEvent::WatchError`] naming the object and the field, and left out; the
//!   watch goes on. On the live path the consumer therefore keeps the last good
//!   version; in a snapshot the object is absent, so the consumer drops it.
//! - A deletion needs only the object's name and namespace, so it is delivered even
//!   when the deleted object would not decode.
//! - API errors never end [`KubeSource::run`]: each failure is one `WatchError`, then
//!   kube-rs' default backoff (0.8 s doubling to 30 s, with jitter) before the retry.
//!   A custom resource whose CRD is not installed (404) is retried that way forever.
//!   Such a kind gets no Snapshot until its CRD appears: a 404 is not taken to mean
//!   "no objects" (a restarting API server can answer 404 for a CRD briefly, and that
//!   must not wipe weft's networks), so readiness must not wait for those kinds.
//! - A `410 Gone` is routine (the watch history was compacted): it is not reported as
//!   a `WatchError`; the relist's Snapshot follows after one backoff step.
//!
//! The way back — Service `status.loadBalancer.ingress` and the pods'
//! `k8s.v1.cni.cncf.io/network-status` annotation — is [`status`]: a pure [`status::plan`]
//! of patches from the derived objects and the watched objects, sent by a
//! [`StatusWriter`] through a [`StatusSink`] ([`KubeStatusSink`] on a live cluster).

mod convert;
mod kinds;
mod raw;
pub mod status;

use std::path::{Path, PathBuf};

use futures::StreamExt;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;
use weft_model::{InputChange, InputKind, InputObject};

pub use kinds::{api_resource, collection_path};
pub use status::{KubeStatusSink, StatusPatch, StatusSink, StatusWriter};

use convert::KindState;
use raw::RawObject;

/// One thing the controller must do with its inputs.
#[derive(Debug, Clone, PartialEq)]
pub enum KubeEvent {
    /// An object was added or changed ([`InputChange::Upsert`]), or deleted
    /// ([`InputChange::Delete`]).
    Change(InputChange),
    /// A (re)list of `kind` completed: these are ALL objects of that kind now. The
    /// consumer upserts them and deletes any stored input of that kind not in the list.
    Snapshot {
        /// The kind that was listed.
        kind: InputKind,
        /// Every object of that kind that decoded, in the API server's order.
        objects: Vec<InputObject>,
    },
    /// Watching `kind` failed, or one of its objects could not be decoded; the watch
    /// goes on (after a backoff when the API failed). For status reporting.
    WatchError {
        /// The kind whose watch failed.
        kind: InputKind,
        /// What went wrong, for a person: the object and field for a decode error,
        /// the URL and API status for an API error.
        message: String,
    },
}

impl KubeEvent {
    /// The kind this event is about.
    pub fn kind(&self) -> InputKind {
        match self {
            KubeEvent::Change(InputChange::Upsert(object)) => object.kind(),
            KubeEvent::Change(InputChange::Delete(key)) => key.kind,
            KubeEvent::Snapshot { kind, .. } | KubeEvent::WatchError { kind, .. } => *kind,
        }
    }
}

/// Why a [`KubeSource`] could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig file given could not be read or used.
    #[error("cannot use kubeconfig {}: {source}", path.display())]
    Kubeconfig {
        /// The file given.
        path: PathBuf,
        /// What was wrong with it.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No kubeconfig was given and none could be inferred.
    #[error(
        "cannot find Kubernetes credentials (not in a cluster, and no usable $KUBECONFIG or ~/.kube/config): {0}"
    )]
    Infer(#[source] kube::config::InferConfigError),
    /// The configuration was found but no client could be built from it.
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// The Kubernetes side of the controller: lists and watches weft's input kinds.
#[derive(Clone)]
pub struct KubeSource {
    client: kube::Client,
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource").finish_non_exhaustive()
    }
}

impl KubeSource {
    /// Connects with the kubeconfig at `path`, or, with `None`, the way kubectl does:
    /// in-cluster service account first, else `$KUBECONFIG` or `~/.kube/config`.
    ///
    /// Nothing is sent to the API server yet; connection problems show up as
    /// [`KubeEvent::WatchError`]s once [`run`](Self::run) starts.
    pub async fn from_kubeconfig(path: Option<&Path>) -> Result<Self, KubeError> {
        let config = match path {
            Some(path) => {
                let kubeconfig_error = |source| KubeError::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                };
                let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                    .await
                    .map_err(kubeconfig_error)?
            }
            None => kube::Config::infer().await.map_err(KubeError::Infer)?,
        };
        let client = kube::Client::try_from(config).map_err(KubeError::Client)?;
        Ok(Self::from_client(client))
    }

    /// Uses an existing client (tests point one at a fake API server).
    pub fn from_client(client: kube::Client) -> Self {
        Self { client }
    }

    /// The client, for callers that also write to the API (e.g. status).
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// Runs one watcher per [`InputKind`] (all namespaces) and sends their events to
    /// `tx` until `tx` closes; then returns `Ok(())`.
    ///
    /// Never returns early on API errors: each is sent as a [`KubeEvent::WatchError`]
    /// and retried with backoff. Sending waits for room in `tx`, so a slow consumer
    /// slows the watches rather than losing events.
    pub async fn run(self, tx: mpsc::Sender<KubeEvent>) -> Result<(), KubeError> {
        let streams = InputKind::ALL.into_iter().map(|kind| {
            let api: Api<RawObject> = Api::all_with(self.client.clone(), &api_resource(kind));
            let mut state = KindState::new(kind);
            watcher(api, watcher::Config::default().any_semantic())
                .default_backoff()
                .filter_map(move |item| futures::future::ready(state.handle(item)))
                .boxed()
        });
        let mut events = futures::stream::select_all(streams);
        loop {
            let event = tokio::select! {
                () = tx.closed() => break,
                event = events.next() => event,
            };
            // The watchers never end (their backoff never gives up); stop cleanly if one did.
            let Some(event) = event else { break };
            if tx.send(event).await.is_err() {
                break;
            }
        }
        tracing::debug!("event channel closed; Kubernetes watches stopped");
        Ok(())
    }
}
