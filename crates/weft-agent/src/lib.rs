//! weft's node agent (TF's vRouter agent): receives this node's desired forwarding
//! state from the controller, programs the Linux kernel to match, serves the CNI plugin
//! on a local unix socket, and keeps forwarding with the last state when the
//! controller is gone.
//!
//! ```text
//!                 ┌──────────────────────────── weft agent ─────────────────────────────┐
//!  controller ────┼─> follow_controller ──> NodeState ─┐                                │
//!  (watch, rev)   │   (reconnect, backoff ≤ 5 s)        │   ┌─ state dir (JSON, atomic)  │
//!                 │                                     ├───┤                            │
//!  weft-cni ──────┼─> CNI socket: add / attached / del ─┘   └─ generation bump           │
//!  (unix socket)  │     └─ add answers from the NodeState          │                     │
//!                 │                                                v                     │
//!                 │   run_reconciler (on change + every 30 s):                            │
//!                 │     dataplane::desired ─> kernel::dump ─> dataplane::diff ─> apply ──┼─> kernel
//!                 │     nft::render ─> (fingerprint changed?) ─> nft -j -f - ────────────┼─> (netlink,
//!                 └─────────────────────────────────────────────────────────────────────┘   /proc/sys,
//!                                                                                            inet weft)
//! ```
//!
//! Modules:
//! * [`dataplane`]: what the kernel should look like, as data, and the diff (pure).
//! * [`kernel`]: reading the kernel and applying ops over rtnetlink.
//! * [`nft`]: the nftables table `inet weft` (service load balancing: VIP / NodePort /
//!   external-IP DNAT, fail-fast rejects, the reply-only guard), rendered purely and
//!   applied atomically with `nft -j`; its module docs describe the packet paths and
//!   why they keep TF's isolation.
//! * [`attachment`]: which host veth carries which pod interface.
//! * [`state_dir`]: persistence of the state and the attachments.
//! * [`watch`]: the [`watch::StateSource`] trait over the controller client.
//! * [`agent`]: the [`Agent`] object and its tasks; [`run`] is `weft agent`.

pub mod agent;
pub mod attachment;
pub mod dataplane;
pub mod kernel;
pub mod nft;
pub mod snat;
pub mod state_dir;
pub mod watch;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

pub use agent::{Agent, AgentConfig};
pub use dataplane::{KernelOp, KernelState, desired, diff};

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/weft/agent";

/// Default period of the drift-repairing reconcile, in seconds.
pub const DEFAULT_RESYNC_SECS: u64 = 30;

/// `weft agent`: run the node agent.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// This node's name (the Kubernetes Node name): whose state to program.
    #[arg(long, env = "WEFT_NODE")]
    pub node: String,
    /// The controller: `http://HOST:PORT` or `unix:/path/to/socket`; HA replicas as a
    /// comma-separated list (the agent follows whichever answers).
    #[arg(long, env = "WEFT_CONTROLLER")]
    pub controller: String,
    /// Unix socket the CNI plugin calls (its `agentSocket`).
    #[arg(long, default_value = weft_cni::spec::DEFAULT_AGENT_SOCKET)]
    pub cni_socket: PathBuf,
    /// Where the last state and the pod attachments are kept across restarts.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Program this network namespace (e.g. /var/run/netns/node1) instead of the
    /// agent's own; for labs that run several nodes on one machine.
    #[arg(long)]
    pub netns: Option<PathBuf>,
    /// Seconds between full reconciles that repair drift in the kernel.
    #[arg(long, default_value_t = DEFAULT_RESYNC_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    pub resync_seconds: u64,
}

/// Runs the agent until SIGINT or SIGTERM: loads and programs the saved state, serves
/// the CNI socket, follows the controller. On exit the kernel is left as it is, so pods
/// keep forwarding while the agent restarts.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let client = watch::ControllerList::parse(&args.controller)
        .with_context(|| format!("invalid --controller {:?}", args.controller))?;
    let agent = Agent::open(AgentConfig {
        node: args.node.clone(),
        state_dir: args.state_dir.clone(),
        netns: args.netns.clone(),
        resync: Duration::from_secs(args.resync_seconds),
        attach_wait: agent::ATTACH_WAIT,
    })
    .context("starting the agent")?;
    // Pods removed while the agent was down lost their veth (DEL does not wait for a
    // dead agent) but not their attachment; sysfs shows this namespace's links only
    // when the agent runs in it (not with --netns).
    if args.netns.is_none() {
        agent.prune_vanished_veths(Path::new("/sys/class/net")).await;
    }
    tracing::info!(
        node = %args.node,
        controller = %args.controller,
        saved_revision = agent.revision(),
        attachments = agent.attachments().len(),
        "weft agent starting"
    );
    let cni = agent
        .serve_cni(&args.cni_socket)
        .await
        .with_context(|| format!("serving the CNI socket {}", args.cni_socket.display()))?;
    let reconciler = tokio::spawn(agent.clone().run_reconciler());
    let follower = tokio::spawn(agent.clone().follow_controller(client));
    let snat_monitor = tokio::spawn(agent.clone().run_snat_monitor());

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let outcome = tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT").map(|()| "SIGINT"),
        _ = term.recv() => Ok("SIGTERM"),
        r = reconciler => Err(anyhow::anyhow!("the reconciler stopped: {r:?}")),
        r = follower => Err(anyhow::anyhow!("the controller watch stopped: {r:?}")),
    };
    cni.abort();
    snat_monitor.abort();
    let _ = std::fs::remove_file(&args.cni_socket);
    let signal = outcome?;
    tracing::info!(signal, "weft agent stopping; the kernel keeps its state");
    Ok(())
}
