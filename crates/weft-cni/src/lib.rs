//! weft's CNI plugin: the binary container runtimes (containerd, CRI-O) call to attach
//! a pod to weft's network, plus the pieces the agent and the lab reuse.
//!
//! Data flow: kubelet → runtime → **`weft-cni`** (this crate: env vars + config on
//! stdin, result on stdout) → local **weft agent** over a unix socket ([`agent_proto`]:
//! "which interface does pod dev/web get?", "its veth is built", "it is gone") → the
//! agent programs routes and policy for the veth. The kernel work of an attachment
//! happens here, in the plugin: a veth pair whose pod end is born inside the pod's
//! network namespace with its MAC, address and routes, and whose host end
//! (`weft` + hash, ifalias `weft:<containerId>:<ifName>`) gets `proxy_arp` and
//! forwarding, as TF's vrouter CNI did with its `tap…` interfaces.
//!
//! Modules:
//! * [`spec`]: the CNI protocol (spec 0.3.0 – 1.1.0) — env, config, result, error codes.
//! * [`agent_proto`]: the agent socket's request and response types.
//! * [`agent`]: [`AgentClient`] and [`serve_agent_requests`] (for the agent and tests).
//! * [`netns`]: running code in another network namespace on a dedicated thread.
//! * [`link`]: veth, addresses, routes, sysctls via rtnetlink.
//! * [`plugin`]: the six commands; [`plugin::run`] is the whole plugin.

pub mod agent;
pub mod agent_proto;
pub mod link;
pub mod netns;
pub mod plugin;
pub mod spec;

pub use agent::{AgentCallError, AgentClient, serve_agent_requests};
pub use netns::{Netns, NetnsError, run_in_netns, with_netlink_in_netns};
pub use spec::{CniError, codes};
