//! CNI attachments: which host veth carries which pod interface.
//!
//! The controller's [`weft_model::node::LocalInterface`] says *what* a pod interface is
//! (address, network, table); only the CNI plugin knows *where* it ended up: the host
//! end of the veth it built (`weft` + hash). The plugin tells the agent with `attached`
//! and `del` ([`weft_cni::agent_proto`]); the agent keeps the map here, persists it in
//! its state directory, and renders rules and routes for every interface that is both
//! in the state and attached.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weft_cni::agent_proto::{AttachedRequest, DelRequest};

/// The attachment of one pod interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// `CNI_CONTAINERID` of the pod sandbox.
    pub container_id: String,
    /// Interface name inside the pod.
    pub if_name: String,
    /// Host end of the veth.
    pub host_if_name: String,
}

/// Attachments by interface key `namespace/pod/interface`
/// ([`weft_model::node::LocalInterface::key`]).
pub type Attachments = BTreeMap<String, Attachment>;

/// The interface key of a pod interface.
pub fn interface_key(namespace: &str, pod: &str, if_name: &str) -> String {
    format!("{namespace}/{pod}/{if_name}")
}

/// Records an `attached` request; returns the key and whether anything changed.
pub fn record(attachments: &mut Attachments, req: &AttachedRequest) -> (String, bool) {
    let key = interface_key(&req.pod_namespace, &req.pod_name, &req.if_name);
    let att = Attachment {
        container_id: req.container_id.clone(),
        if_name: req.if_name.clone(),
        host_if_name: req.host_if_name.clone(),
    };
    let changed = attachments.get(&key) != Some(&att);
    // A host veth carries one interface: drop a stale entry that still names it (a pod
    // re-created under another name with the same sandbox id is impossible, but a lost
    // `del` followed by a reused name must not leave two rules for one veth).
    attachments.retain(|k, a| k == &key || a.host_if_name != att.host_if_name);
    attachments.insert(key.clone(), att);
    (key, changed)
}

/// Removes what a `del` request names; returns the keys removed.
///
/// A `del` may come without pod fields (runtime did not send them, or GC found a stale
/// veth), so it matches, in order: the host veth name; the sandbox id and interface;
/// the pod key. An attachment whose sandbox id differs from a non-empty `containerId`
/// is left alone: a late `del` for an old sandbox must not detach the pod's new one.
pub fn remove(attachments: &mut Attachments, req: &DelRequest) -> Vec<String> {
    let key = interface_key(&req.pod_namespace, &req.pod_name, &req.if_name);
    let matches = |k: &String, a: &Attachment| -> bool {
        if !req.host_if_name.is_empty() && a.host_if_name == req.host_if_name {
            return true;
        }
        if !req.container_id.is_empty() {
            return a.container_id == req.container_id && a.if_name == req.if_name;
        }
        !req.pod_name.is_empty() && *k == key
    };
    let removed: Vec<String> = attachments
        .iter()
        .filter(|(k, a)| matches(k, a))
        .map(|(k, _)| k.clone())
        .collect();
    for k in &removed {
        attachments.remove(k);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached(cid: &str, pod: &str, host: &str) -> AttachedRequest {
        AttachedRequest {
            container_id: cid.into(),
            if_name: "eth0".into(),
            host_if_name: host.into(),
            pod_namespace: "dev".into(),
            pod_name: pod.into(),
            pod_uid: String::new(),
        }
    }

    fn del(cid: &str, host: &str, pod: &str) -> DelRequest {
        DelRequest {
            container_id: cid.into(),
            if_name: "eth0".into(),
            host_if_name: host.into(),
            netns: String::new(),
            pod_namespace: if pod.is_empty() {
                String::new()
            } else {
                "dev".into()
            },
            pod_name: pod.into(),
            pod_uid: String::new(),
        }
    }

    #[test]
    fn record_is_idempotent_and_keyed_by_pod_interface() {
        let mut a = Attachments::new();
        assert_eq!(
            record(&mut a, &attached("c1", "web", "weft01")),
            ("dev/web/eth0".into(), true)
        );
        assert!(!record(&mut a, &attached("c1", "web", "weft01")).1);
        assert!(record(&mut a, &attached("c2", "web", "weft02")).1);
        assert_eq!(a.len(), 1);
        assert_eq!(a["dev/web/eth0"].host_if_name, "weft02");
    }

    #[test]
    fn remove_matches_host_name_then_sandbox_then_pod() {
        let mut a = Attachments::new();
        record(&mut a, &attached("c1", "web", "weft01"));
        record(&mut a, &attached("c2", "db", "weft02"));
        record(&mut a, &attached("c3", "mq", "weft03"));
        assert_eq!(
            remove(&mut a, &del("", "weft01", "")),
            vec!["dev/web/eth0".to_string()]
        );
        assert_eq!(
            remove(&mut a, &del("c2", "", "")),
            vec!["dev/db/eth0".to_string()]
        );
        // An old sandbox's late DEL does not detach the new one.
        assert!(remove(&mut a, &del("c-old", "", "mq")).is_empty());
        assert_eq!(
            remove(&mut a, &del("", "", "mq")),
            vec!["dev/mq/eth0".to_string()]
        );
        assert!(a.is_empty());
        assert!(remove(&mut a, &del("c9", "weft09", "x")).is_empty());
    }
}
