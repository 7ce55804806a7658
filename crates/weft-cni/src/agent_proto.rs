//! The wire protocol between `weft-cni` and the node's weft agent.
//!
//! Transport: a unix stream socket (default `/run/weft/agent.sock`), **one request per
//! connection**: the client writes one JSON object followed by `\n`, the agent answers
//! with one JSON object followed by `\n` and closes. Field names are camelCase.
//!
//! Requests are tagged by `op`:
//!
//! ```json
//! {"op":"add","containerId":"..","netns":"/var/run/netns/x","ifName":"eth0","podNamespace":"dev","podName":"web","podUid":".."}
//! {"op":"attached","containerId":"..","ifName":"eth0","hostIfName":"weft0123456789","podNamespace":"dev","podName":"web"}
//! {"op":"del","containerId":"..","ifName":"eth0","podNamespace":"dev","podName":"web"}
//! {"op":"status"}
//! ```
//!
//! Responses are either `{"ok": …}` or `{"error": {"code":…,"msg":…,"details":…}}`.
//! The `ok` payload is [`AddReply`] for `add` and an empty object for the other ops
//! ([`Empty`]). Error codes are CNI codes ([`crate::spec::codes`]): the plugin hands
//! them to the runtime unchanged, so `11` (try again later) makes ADD retry and `50`/`51`
//! are what STATUS reports.
//!
//! Sequence for a pod: `add` (agent returns the interface config it got from the
//! controller), the plugin builds the veth, then `attached` (agent programs the host
//! side: /32 route to the veth, policy-routing rule, nftables sets); on teardown `del`.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// A request from the plugin to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum AgentRequest {
    /// "Which interfaces does this pod get?" — sent first on CNI ADD.
    Add(AddRequest),
    /// "The veth is built": the agent may now program routes for it.
    Attached(AttachedRequest),
    /// "The attachment is gone" — sent on CNI DEL and for stale veths found by GC.
    Del(DelRequest),
    /// "Are you ready?" — CNI STATUS.
    Status,
}

impl AgentRequest {
    /// The `op` name, for logs and errors.
    pub fn op(&self) -> &'static str {
        match self {
            AgentRequest::Add(_) => "add",
            AgentRequest::Attached(_) => "attached",
            AgentRequest::Del(_) => "del",
            AgentRequest::Status => "status",
        }
    }
}

/// `add`: the pod and sandbox the runtime is attaching.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddRequest {
    /// `CNI_CONTAINERID` (the pod sandbox's id).
    pub container_id: String,
    /// `CNI_NETNS`, the sandbox's network namespace path.
    pub netns: String,
    /// `CNI_IFNAME`, the interface name wanted inside the pod (e.g. `eth0`).
    pub if_name: String,
    /// Kubernetes namespace (`K8S_POD_NAMESPACE`).
    pub pod_namespace: String,
    /// Pod name (`K8S_POD_NAME`).
    pub pod_name: String,
    /// Pod UID (`K8S_POD_UID`); empty when the runtime did not send it.
    #[serde(default)]
    pub pod_uid: String,
}

/// `attached`: the veth for the attachment exists and is configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachedRequest {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// Interface name inside the pod.
    pub if_name: String,
    /// Host end of the veth (`weft` + 10 hex chars); the agent routes the pod's
    /// addresses to it.
    pub host_if_name: String,
    /// Kubernetes namespace.
    pub pod_namespace: String,
    /// Pod name.
    pub pod_name: String,
    /// Pod UID; empty when unknown.
    #[serde(default)]
    pub pod_uid: String,
}

/// `del`: the attachment is being (or has been) torn down. Pod fields are empty when
/// the runtime did not send them or when GC found a stale veth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DelRequest {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// Interface name inside the pod.
    pub if_name: String,
    /// Host end of the veth, so the agent can drop what it programmed for it.
    #[serde(default)]
    pub host_if_name: String,
    /// `CNI_NETNS`, empty when the runtime sent none (allowed on DEL).
    #[serde(default)]
    pub netns: String,
    /// Kubernetes namespace, may be empty.
    #[serde(default)]
    pub pod_namespace: String,
    /// Pod name, may be empty.
    #[serde(default)]
    pub pod_name: String,
    /// Pod UID, may be empty.
    #[serde(default)]
    pub pod_uid: String,
}

/// The agent's answer: `{"ok": T}` or `{"error": AgentError}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentResponse<T> {
    /// Success with the op's payload.
    Ok(T),
    /// Failure, as a CNI error.
    Error(AgentError),
}

impl<T> From<Result<T, AgentError>> for AgentResponse<T> {
    fn from(r: Result<T, AgentError>) -> Self {
        match r {
            Ok(v) => AgentResponse::Ok(v),
            Err(e) => AgentResponse::Error(e),
        }
    }
}

/// An error the agent reports; `code` is a CNI error code passed through to the runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("agent error {code}: {msg}")]
pub struct AgentError {
    /// CNI error code (11 = try again later, 50/51 for status, …).
    pub code: u32,
    /// Short message.
    pub msg: String,
    /// More context; may be empty.
    #[serde(default)]
    pub details: String,
}

impl AgentError {
    /// An error with no details.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        AgentError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }
}

/// What a handler of [`crate::agent::serve_agent_requests`] returns on success: the
/// `ok` payload, serialized as the inner value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum AgentReply {
    /// Reply to `add`.
    Add(AddReply),
    /// Reply to `attached`, `del` and `status`: `{}`.
    Empty(Empty),
}

/// An empty `ok` payload, `{}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// `ok` payload of `add`: the pod's interfaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddReply {
    /// One entry per pod interface; the plugin configures the one whose `ifName` is
    /// `CNI_IFNAME`.
    pub interfaces: Vec<InterfaceConfig>,
    /// DNS settings to put in the CNI result, if the agent has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsConfig>,
}

/// One pod interface as the controller allocated it (TF: VMI + instance IP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceConfig {
    /// Interface name in the pod (`eth0`, or a Multus-style secondary name).
    pub if_name: String,
    /// FQ name of the virtual network, e.g. `default-domain:k8s-default:k8s-default-pod-network`.
    #[serde(default)]
    pub network: String,
    /// Address with the network's prefix length, e.g. `10.47.255.252/12`.
    pub address: IpNet,
    /// Default gateway; the plugin installs a default route via it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// MAC for the pod end (`02:…`); the kernel picks one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Extra routes in the pod (a default route equal to the gateway's is merged).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    /// MTU of both veth ends; the kernel default (1500) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// A route for the pod: the same shape as a route in the CNI result, so the plugin
/// can pass the agent's routes through unchanged.
pub type RouteConfig = crate::spec::Route;

/// DNS settings: the same shape as the CNI result's `dns`.
pub type DnsConfig = crate::spec::Dns;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_matches_the_documented_examples() {
        let req: AgentRequest = serde_json::from_str(
            r#"{"op":"add","containerId":"c","netns":"/var/run/netns/x","ifName":"eth0","podNamespace":"dev","podName":"web","podUid":"u"}"#,
        )
        .unwrap();
        assert_eq!(req.op(), "add");
        let back = serde_json::to_value(&req).unwrap();
        assert_eq!(back["op"], "add");
        assert_eq!(back["ifName"], "eth0");
        assert_eq!(
            serde_json::to_string(&AgentRequest::Status).unwrap(),
            r#"{"op":"status"}"#
        );

        let resp: AgentResponse<AddReply> = serde_json::from_str(
            r#"{"ok":{"interfaces":[{"ifName":"eth0","network":"default-domain:k8s-default:k8s-default-pod-network","address":"10.47.255.252/12","gateway":"10.47.255.254","mac":"02:00:00:00:00:01","routes":[{"dst":"0.0.0.0/0","gw":"10.47.255.254"}],"mtu":1450}]}}"#,
        )
        .unwrap();
        let AgentResponse::Ok(reply) = resp else {
            panic!("expected ok")
        };
        assert_eq!(reply.interfaces[0].address.to_string(), "10.47.255.252/12");
        assert_eq!(reply.interfaces[0].mtu, Some(1450));

        let resp: AgentResponse<AddReply> = serde_json::from_str(
            r#"{"error":{"code":11,"msg":"pod dev/web has no interface yet","details":"waiting"}}"#,
        )
        .unwrap();
        assert_eq!(
            resp,
            AgentResponse::Error(AgentError {
                code: 11,
                msg: "pod dev/web has no interface yet".into(),
                details: "waiting".into()
            })
        );

        let ok: AgentResponse<AgentReply> = AgentResponse::Ok(AgentReply::Empty(Empty {}));
        assert_eq!(serde_json::to_string(&ok).unwrap(), r#"{"ok":{}}"#);
    }
}
