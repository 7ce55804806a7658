//! weft's Kubernetes write edge: results written back where `kubectl` users look.
//!
//! Data flow: **translator's derived objects + the watched Kubernetes objects → [`plan`]
//! → [`StatusWriter`] → [`StatusSink`] (the API server).** Two things are written:
//!
//! - **Service `status.loadBalancer.ingress`**: `[{ip: FIP}, …]` for a Service of
//!   `type: LoadBalancer` that weft gave floating IPs ([`ServiceRecord::floating_ips`]),
//!   so `kubectl get svc` shows them under EXTERNAL-IP; cleared (the `ingress` field is
//!   removed) when it has none any more (type changed, pool gone, FIP released). weft
//!   owns this field only on Services without `spec.loadBalancerClass`: a class names
//!   another load-balancer implementation, whose status weft must not touch (and weft,
//!   the default implementation, assumes no other one serves Services without a class).
//!   Sent as a JSON merge patch to the `status` subresource (RBAC: `patch` on
//!   `services/status`).
//! - **Pod annotation `k8s.v1.cni.cncf.io/network-status`**, as Multus writes it (the
//!   NPWG multi-network spec's `NetworkStatus` list): one entry per interface weft gave
//!   the pod ([`InterfaceAttachment`]), primary first, e.g.
//!   `[{"name":"default-domain:k8s-default:k8s-default-pod-network","interface":"eth0","ips":["10.32.0.5"],"mac":"02:…","default":true,"dns":{}},
//!   {"name":"default/blue","interface":"net1","ips":["10.1.0.3"],"mac":"02:…","dns":{}}]`.
//!   Field by field it is the Go struct of `network-attachment-definition-client`
//!   (`default` only when true, `dns` always present, as that struct's `omitempty`
//!   tags produce). Names: a secondary interface requested through
//!   `k8s.v1.cni.cncf.io/networks` is named `namespace/name` of the
//!   NetworkAttachmentDefinition (or VirtualNetwork) the pod asked for, exactly as
//!   Multus names it; the primary interface, and any interface whose request cannot be
//!   matched, is named by weft's FQ network name (Multus would use the default CNI
//!   network's name there, which says less: weft's primary network differs between
//!   namespaces). Written only for scheduled pods (`spec.nodeName`) that weft gave
//!   interfaces, and not for pods being deleted. Sent as a JSON merge patch of that one
//!   annotation, so other annotations are never touched (RBAC: `patch` on `pods`).
//!
//! Nothing is written when Kubernetes already shows the desired value: [`plan`] compares
//! the desired value with the object as the watch last delivered it. Writing changes
//! the object, the watch delivers that change, and the next [`plan`] finds it equal — so
//! a write never causes another write. Until the watch catches up, [`StatusWriter`]
//! remembers what it sent for which `resourceVersion` and does not send it again.
//!
//! Failures never panic and never stop the writer: a failed patch is not remembered, so
//! the next pass sends it again; a 404 (the object is gone) is ignored; a 403 is logged
//! once as a warning naming the RBAC permission that is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use weft_model::naming::ANNOTATION_NETWORKS;
use weft_model::{InterfaceAttachment, ServiceRecord};

/// The pod annotation Multus (and weft) write with each interface's network and addresses.
pub const NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";

/// One write weft wants to make to the Kubernetes API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusPatch {
    /// Set (or, with no `ips`, clear) a Service's `status.loadBalancer.ingress`.
    ServiceIngress {
        /// The Service's namespace.
        namespace: String,
        /// The Service's name.
        name: String,
        /// The addresses to show, in order; empty clears the list.
        ips: Vec<IpAddr>,
        /// The `resourceVersion` of the object the decision was made on (for
        /// [`StatusWriter`]'s "already sent" memory).
        resource_version: Option<String>,
    },
    /// Set a Pod's `k8s.v1.cni.cncf.io/network-status` annotation.
    PodNetworkStatus {
        /// The Pod's namespace.
        namespace: String,
        /// The Pod's name.
        name: String,
        /// The annotation's value: the JSON list, serialised.
        value: String,
        /// The `resourceVersion` of the object the decision was made on.
        resource_version: Option<String>,
    },
}

impl StatusPatch {
    /// `services/NS/NAME` or `pods/NS/NAME`: which object this patch writes, for logs and
    /// for [`StatusWriter`]'s memory.
    pub fn target(&self) -> String {
        match self {
            StatusPatch::ServiceIngress { namespace, name, .. } => format!("services/{namespace}/{name}"),
            StatusPatch::PodNetworkStatus { namespace, name, .. } => format!("pods/{namespace}/{name}"),
        }
    }

    /// The JSON merge patch (RFC 7386) to send. A Service's is sent to its `status`
    /// subresource; `null` removes `ingress` when there is nothing to show. A Pod's
    /// names only the one annotation, so other annotations are kept.
    pub fn body(&self) -> Value {
        match self {
            StatusPatch::ServiceIngress { ips, .. } if ips.is_empty() => {
                json!({"status": {"loadBalancer": {"ingress": null}}})
            }
            StatusPatch::ServiceIngress { ips, .. } => {
                let ingress: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect();
                json!({"status": {"loadBalancer": {"ingress": ingress}}})
            }
            StatusPatch::PodNetworkStatus { value, .. } => {
                json!({"metadata": {"annotations": {NETWORK_STATUS_ANNOTATION: value}}})
            }
        }
    }

    /// The RBAC permission this patch needs, for the 403 warning.
    pub fn permission(&self) -> &'static str {
        match self {
            StatusPatch::ServiceIngress { .. } => "patch on services/status (API group \"\")",
            StatusPatch::PodNetworkStatus { .. } => "patch on pods (API group \"\")",
        }
    }

    fn resource_version(&self) -> Option<&str> {
        match self {
            StatusPatch::ServiceIngress { resource_version, .. }
            | StatusPatch::PodNetworkStatus { resource_version, .. } => resource_version.as_deref(),
        }
    }
}

/// Decides which patches to send: for every Service and Pod as Kubernetes shows it now
/// (`services`, `pods`: what the watch last delivered), compares what it shows with
/// what weft derived (`records`, `interfaces`) and returns a patch for each difference.
///
/// Pure: no I/O, so the whole decision is unit-tested without a server. Output order is
/// stable (Services, then Pods, each in `namespace/name` order).
pub fn plan<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    pods: impl IntoIterator<Item = &'a Pod>,
    records: impl IntoIterator<Item = &'a ServiceRecord>,
    interfaces: impl IntoIterator<Item = &'a InterfaceAttachment>,
) -> Vec<StatusPatch> {
    let records: BTreeMap<(&str, &str), &ServiceRecord> = records
        .into_iter()
        .map(|r| ((r.namespace.as_str(), r.name.as_str()), r))
        .collect();
    let mut by_pod: BTreeMap<(&str, &str), Vec<&InterfaceAttachment>> = BTreeMap::new();
    for i in interfaces {
        by_pod
            .entry((i.namespace.as_str(), i.pod.as_str()))
            .or_default()
            .push(i);
    }
    let mut out = Vec::new();
    let mut services: Vec<&Service> = services.into_iter().collect();
    services.sort_by(|a, b| key_of(&a.metadata).cmp(&key_of(&b.metadata)));
    for service in services {
        if let Some(patch) = service_patch(service, &records) {
            out.push(patch);
        }
    }
    let mut pods: Vec<&Pod> = pods.into_iter().collect();
    pods.sort_by(|a, b| key_of(&a.metadata).cmp(&key_of(&b.metadata)));
    for pod in pods {
        if let Some(patch) = pod_patch(pod, &by_pod) {
            out.push(patch);
        }
    }
    out
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (&str, &str) {
    (
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default(),
    )
}

fn service_patch(service: &Service, records: &BTreeMap<(&str, &str), &ServiceRecord>) -> Option<StatusPatch> {
    let (namespace, name) = key_of(&service.metadata);
    if name.is_empty() {
        return None;
    }
    let spec = service.spec.as_ref();
    // Another load-balancer implementation owns Services of a named class.
    if spec.and_then(|s| s.load_balancer_class.as_ref()).is_some() {
        return None;
    }
    let is_lb = spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
    let desired: Vec<IpAddr> = match records.get(&(namespace, name)) {
        Some(r) if is_lb && r.service_type == "LoadBalancer" => r.floating_ips.clone(),
        _ => Vec::new(),
    };
    let shown: Vec<(Option<&str>, Option<&str>)> = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|list| {
            list.iter()
                .map(|i| (i.ip.as_deref(), i.hostname.as_deref()))
                .collect()
        })
        .unwrap_or_default();
    // Shown as exactly these addresses, in this order, and nothing else (no hostnames).
    let same = shown.len() == desired.len()
        && shown.iter().zip(&desired).all(|((ip, host), want)| {
            host.is_none() && ip.and_then(|ip| ip.parse::<IpAddr>().ok()) == Some(*want)
        });
    if same {
        return None;
    }
    Some(StatusPatch::ServiceIngress {
        namespace: namespace.to_string(),
        name: name.to_string(),
        ips: desired,
        resource_version: service.metadata.resource_version.clone(),
    })
}

fn pod_patch(pod: &Pod, by_pod: &BTreeMap<(&str, &str), Vec<&InterfaceAttachment>>) -> Option<StatusPatch> {
    let (namespace, name) = key_of(&pod.metadata);
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    if name.is_empty() || !scheduled || pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let attachments: Vec<&InterfaceAttachment> = by_pod
        .get(&(namespace, name))?
        .iter()
        .copied()
        // Attachments of an earlier pod of the same name are not this pod's.
        .filter(|i| i.pod_uid.is_empty() || uid.is_empty() || i.pod_uid == uid)
        .collect();
    if attachments.is_empty() {
        return None;
    }
    let desired = network_status(pod, &attachments);
    let annotations = pod.metadata.annotations.as_ref();
    let shown = annotations
        .and_then(|a| a.get(NETWORK_STATUS_ANNOTATION))
        .and_then(|v| serde_json::from_str::<Value>(v).ok());
    if shown.as_ref() == Some(&desired) {
        return None;
    }
    Some(StatusPatch::PodNetworkStatus {
        namespace: namespace.to_string(),
        name: name.to_string(),
        value: desired.to_string(),
        resource_version: pod.metadata.resource_version.clone(),
    })
}

/// The `k8s.v1.cni.cncf.io/network-status` value for `pod` with these interfaces:
/// primary first, then by interface name; see the module docs for the names used.
pub fn network_status(pod: &Pod, attachments: &[&InterfaceAttachment]) -> Value {
    let requested = requested_names(pod);
    let mut sorted: Vec<&InterfaceAttachment> = attachments.to_vec();
    sorted.sort_by(|a, b| (!a.primary, &a.interface).cmp(&(!b.primary, &b.interface)));
    let entries: Vec<Value> = sorted
        .into_iter()
        .map(|i| {
            let name = match requested.get(&i.interface) {
                Some(n) if !i.primary => n.clone(),
                _ => i.network.clone(),
            };
            let mut entry = serde_json::Map::new();
            entry.insert("name".into(), name.into());
            entry.insert("interface".into(), i.interface.clone().into());
            entry.insert("ips".into(), json!([i.ip.to_string()]));
            entry.insert("mac".into(), i.mac.to_string().into());
            if i.primary {
                entry.insert("default".into(), true.into());
            }
            entry.insert("dns".into(), json!({}));
            Value::Object(entry)
        })
        .collect();
    Value::Array(entries)
}

/// Interface name → `namespace/name` of the network the pod asked for with
/// `k8s.v1.cni.cncf.io/networks` (the interface named in the request, else `net1`,
/// `net2` … in order, as the translator assigns them).
fn requested_names(pod: &Pod) -> BTreeMap<String, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let Some(value) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_NETWORKS))
    else {
        return BTreeMap::new();
    };
    // The translator validated the annotation before giving the pod interfaces; if it
    // does not parse now, fall back to FQ network names.
    let Ok(selections) = weft_translator::annotations::parse_network_selections("", namespace, value) else {
        return BTreeMap::new();
    };
    selections
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let ifname = s.interface.unwrap_or_else(|| format!("net{}", i + 1));
            (ifname, format!("{}/{}", s.namespace, s.name))
        })
        .collect()
}

/// Why a patch was not written.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The object no longer exists (404): nothing to write.
    #[error("{target} not found")]
    NotFound {
        /// The object, as [`StatusPatch::target`].
        target: String,
    },
    /// weft's service account may not write it (403).
    #[error("not allowed to write {target}: weft needs {permission}: {message}")]
    Forbidden {
        /// The object, as [`StatusPatch::target`].
        target: String,
        /// The RBAC permission needed.
        permission: &'static str,
        /// The API server's message.
        message: String,
    },
    /// Any other failure (connection, conflict, server error): retried on the next pass.
    #[error("writing {target} failed: {source}")]
    Api {
        /// The object, as [`StatusPatch::target`].
        target: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
}

/// Where [`StatusWriter`] sends patches: the API server ([`KubeStatusSink`]) or, in
/// tests, a recorder.
pub trait StatusSink: Send + Sync {
    /// Sends one patch.
    fn send(&self, patch: &StatusPatch) -> impl Future<Output = Result<(), StatusError>> + Send;
}

/// The real sink: JSON merge patches through kube-rs.
#[derive(Clone)]
pub struct KubeStatusSink {
    client: kube::Client,
}

impl std::fmt::Debug for KubeStatusSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeStatusSink").finish_non_exhaustive()
    }
}

impl KubeStatusSink {
    /// A sink writing with `client` (e.g. [`KubeSource::client`](crate::KubeSource::client)).
    pub fn new(client: kube::Client) -> Self {
        Self { client }
    }
}

impl StatusSink for KubeStatusSink {
    async fn send(&self, patch: &StatusPatch) -> Result<(), StatusError> {
        let params = PatchParams::default();
        let body = Patch::Merge(patch.body());
        let result = match patch {
            StatusPatch::ServiceIngress { namespace, name, .. } => {
                let api: Api<Service> = Api::namespaced(self.client.clone(), namespace);
                api.patch_status(name, &params, &body).await.map(drop)
            }
            StatusPatch::PodNetworkStatus { namespace, name, .. } => {
                let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
                api.patch(name, &params, &body).await.map(drop)
            }
        };
        result.map_err(|source| classify(patch, source))
    }
}

fn classify(patch: &StatusPatch, source: kube::Error) -> StatusError {
    let target = patch.target();
    match &source {
        kube::Error::Api(status) if status.code == 404 => StatusError::NotFound { target },
        kube::Error::Api(status) if status.code == 403 => StatusError::Forbidden {
            target,
            permission: patch.permission(),
            message: status.message.clone(),
        },
        _ => StatusError::Api { target, source },
    }
}

/// What one [`StatusWriter::write`] pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Patches the API server accepted.
    pub written: usize,
    /// Patches skipped because the same one was already sent for the object's current
    /// `resourceVersion` (the watch has not delivered the result yet).
    pub already_sent: usize,
    /// Patches whose object was gone (404).
    pub gone: usize,
    /// Patches that failed and will be sent again by the next pass.
    pub failed: usize,
}

/// Sends the patches of each pass, remembering what was sent so an object the watch has
/// not caught up with yet is not written twice, and warning once per missing permission.
#[derive(Debug)]
pub struct StatusWriter<S> {
    sink: S,
    /// Target → (resourceVersion the patch was computed on, body sent).
    sent: BTreeMap<String, (Option<String>, Value)>,
    /// Permissions already warned about (cleared when a write needing it succeeds).
    warned: BTreeSet<&'static str>,
}

impl<S: StatusSink> StatusWriter<S> {
    /// A writer sending to `sink`.
    pub fn new(sink: S) -> Self {
        Self {
            sink,
            sent: BTreeMap::new(),
            warned: BTreeSet::new(),
        }
    }

    /// The sink (tests inspect what it recorded).
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// Sends `patches` (one pass of [`plan`]). Never fails: errors are logged, and a
    /// failed patch is sent again when the next pass still plans it.
    pub async fn write(&mut self, patches: Vec<StatusPatch>) -> WriteReport {
        let mut report = WriteReport::default();
        // Forget objects that need nothing now (the watch caught up, or they are gone).
        let planned: BTreeSet<String> = patches.iter().map(StatusPatch::target).collect();
        self.sent.retain(|target, _| planned.contains(target));
        for patch in patches {
            let target = patch.target();
            let body = patch.body();
            let version = patch.resource_version().map(str::to_string);
            if self.sent.get(&target) == Some(&(version.clone(), body.clone())) {
                report.already_sent += 1;
                continue;
            }
            match self.sink.send(&patch).await {
                Ok(()) => {
                    tracing::info!(object = %target, patch = %body, "wrote status to Kubernetes");
                    self.warned.remove(patch.permission());
                    self.sent.insert(target, (version, body));
                    report.written += 1;
                }
                Err(StatusError::NotFound { .. }) => {
                    tracing::debug!(object = %target, "object gone before its status was written");
                    self.sent.insert(target, (version, body));
                    report.gone += 1;
                }
                Err(e @ StatusError::Forbidden { permission, .. }) => {
                    if self.warned.insert(permission) {
                        tracing::warn!(error = %e, "cannot write status to Kubernetes; grant weft's service account {permission}");
                    } else {
                        tracing::debug!(error = %e, "status write still forbidden");
                    }
                    report.failed += 1;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "status write failed; retrying on the next pass");
                    report.failed += 1;
                }
            }
        }
        report
    }
}

#[cfg(test)]
mod tests;
