//! Waiting until the lab's kernels enforce what the controller says (`weft lab wait`).
//!
//! ```text
//!  weft lab apply ──> controller (store revision R) ──watch──> agent ──pass──> kernel
//!                          │ GET /v1/nodes/N/state                │ node-state.json (received)
//!                          v                                      │ applied.json (revision, clean)
//!                     wait_converged  <───────── reads both ──────┘
//! ```
//!
//! A node has converged when its agent's last reconcile pass programmed the state the
//! agent last received (`applied.json` revision = `node-state.json` revision), that pass
//! was clean (every route and the nftables table applied), and the received state has
//! the content the controller serves for the node now (revisions aside: the controller
//! only pushes states whose content changed). Then every probe sees the new policy:
//! nothing is left to chance or to a sleep. Nodes whose agent is stopped are skipped.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use weft_agent::agent::AppliedStatus;
use weft_agent::state_dir::StateDir;
use weft_api::node_client::NodeStateClient;
use weft_model::node::NodeState;

use crate::Progress;
use crate::state::{LabState, NodeRecord};

/// Pause between two looks at a node that has not converged yet.
const POLL: Duration = Duration::from_millis(50);

/// Where one node stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeProgress {
    /// The kernel enforces the controller's current state for the node.
    Converged {
        /// The revision the agent applied.
        revision: u64,
    },
    /// Not yet, and why (for the timeout message).
    Pending(String),
}

fn without_revision(state: &NodeState) -> NodeState {
    NodeState {
        revision: 0,
        ..state.clone()
    }
}

/// Compares what the controller wants for a node with what its agent received and
/// applied (pure; the decision of [`node_progress`]).
pub fn judge(
    wanted: &NodeState,
    received: Option<&NodeState>,
    applied: Option<&AppliedStatus>,
) -> NodeProgress {
    let Some(received) = received else {
        return NodeProgress::Pending("the agent has saved no state yet".into());
    };
    let Some(applied) = applied else {
        return NodeProgress::Pending("the agent has finished no reconcile pass yet".into());
    };
    if without_revision(received) != without_revision(wanted) {
        return NodeProgress::Pending(format!(
            "the agent has revision {}, the controller's state (revision {}) differs",
            received.revision, wanted.revision
        ));
    }
    if applied.revision != received.revision {
        return NodeProgress::Pending(format!(
            "the agent received revision {} and last programmed revision {}",
            received.revision, applied.revision
        ));
    }
    if !applied.clean {
        return NodeProgress::Pending(format!(
            "the last pass (revision {}) failed: {}",
            applied.revision,
            applied.error.as_deref().unwrap_or("unknown error")
        ));
    }
    NodeProgress::Converged {
        revision: applied.revision,
    }
}

/// Where `node` stands now.
pub async fn node_progress(client: &NodeStateClient, node: &NodeRecord) -> Result<NodeProgress> {
    let wanted = client
        .state(&node.name)
        .await
        .with_context(|| format!("asking the controller for the state of {}", node.name))?;
    let dir = StateDir::open(&node.agent_state_dir)
        .with_context(|| format!("state directory of the agent of {}", node.name))?;
    // Both files are replaced atomically; a read racing a write sees the old or the
    // new content, and the next look settles it.
    let received = dir.load_node_state().ok().flatten();
    let applied = dir.load_applied().ok().flatten();
    Ok(judge(&wanted, received.as_ref(), applied.as_ref()))
}

/// Waits (at most `timeout`) until every node with a running agent has converged;
/// returns how long it took. The error names each node that has not and why.
pub async fn wait_converged(state: &LabState, timeout: Duration, progress: &Progress) -> Result<Duration> {
    let start = Instant::now();
    let client = NodeStateClient::new(&state.controller.url)
        .with_context(|| format!("controller URL {}", state.controller.url))?;
    let nodes: Vec<&NodeRecord> = state.nodes.iter().filter(|n| n.agent_pid.is_some()).collect();
    let mut pending: Vec<String>;
    loop {
        pending = Vec::new();
        for node in &nodes {
            match node_progress(&client, node).await {
                Ok(NodeProgress::Converged { .. }) => {}
                Ok(NodeProgress::Pending(why)) => pending.push(format!("{}: {why}", node.name)),
                Err(e) => pending.push(format!("{}: {e:#}", node.name)),
            }
        }
        if pending.is_empty() {
            let took = start.elapsed();
            progress.step(&format!(
                "{} agent(s) enforce the controller's state ({:.0} ms)",
                nodes.len(),
                took.as_secs_f64() * 1000.0
            ));
            return Ok(took);
        }
        if start.elapsed() >= timeout {
            anyhow::bail!(
                "the lab did not converge within {timeout:?}:\n  {}",
                pending.join("\n  ")
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(revision: u64, warning: &str) -> NodeState {
        NodeState {
            node: "node-1".into(),
            revision,
            underlay_ip: None,
            vtep_mac: weft_model::node::vtep_mac("node-1"),
            peers: vec![],
            networks: vec![],
            interfaces: vec![],
            services: vec![],
            service_routes: vec![],
            warnings: vec![warning.into()],
            policies: vec![],
        }
    }

    fn applied(revision: u64, clean: bool) -> AppliedStatus {
        AppliedStatus {
            revision,
            generation: 3,
            clean,
            nft_fingerprint: None,
            error: (!clean).then(|| "nft said no".to_string()),
        }
    }

    #[test]
    fn converged_only_when_received_applied_and_clean() {
        let wanted = state(9, "a");
        // Same content at an older revision (the controller does not push unchanged
        // states): converged.
        assert_eq!(
            judge(&wanted, Some(&state(7, "a")), Some(&applied(7, true))),
            NodeProgress::Converged { revision: 7 }
        );
        // Content differs: the agent has not received the change.
        assert!(matches!(
            judge(&wanted, Some(&state(7, "b")), Some(&applied(7, true))),
            NodeProgress::Pending(_)
        ));
        // Received, not yet programmed.
        assert!(matches!(
            judge(&wanted, Some(&state(9, "a")), Some(&applied(7, true))),
            NodeProgress::Pending(_)
        ));
        // Programmed, but the pass failed.
        let NodeProgress::Pending(why) = judge(&wanted, Some(&state(9, "a")), Some(&applied(9, false)))
        else {
            panic!("a failed pass is not convergence");
        };
        assert!(why.contains("nft said no"), "{why}");
        assert!(matches!(judge(&wanted, None, None), NodeProgress::Pending(_)));
        assert!(matches!(
            judge(&wanted, Some(&wanted), None),
            NodeProgress::Pending(_)
        ));
    }
}
