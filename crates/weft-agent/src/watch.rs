//! Where node states come from: [`StateSource`], implemented by the controller client
//! ([`weft_api::node_client::NodeStateClient`]) and, in tests, by scripted fakes.
//!
//! The agent only needs "watch this node from revision N": a stream of states that
//! ends (or errors) when the connection dies, after which the agent reconnects with
//! the revision it has (see [`crate::Agent::follow_controller`]).

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use weft_api::node_client::NodeStateClient;
use weft_model::node::NodeState;

/// A stream of node states; an `Err` item means the connection is gone.
pub type StateStream = BoxStream<'static, Result<NodeState, anyhow::Error>>;

/// A source of one node's desired state.
pub trait StateSource: Send + Sync + 'static {
    /// Starts watching `node`; the stream yields the current state first unless the
    /// caller already has revision `after`, then every change.
    fn watch<'a>(&'a self, node: &'a str, after: u64) -> BoxFuture<'a, Result<StateStream, anyhow::Error>>;

    /// Where the states come from, for logs (e.g. the controller URL).
    fn describe(&self) -> String;
}

impl StateSource for NodeStateClient {
    fn watch<'a>(&'a self, node: &'a str, after: u64) -> BoxFuture<'a, Result<StateStream, anyhow::Error>> {
        Box::pin(async move {
            let stream = NodeStateClient::watch(self, node, after).await?;
            Ok(stream.map(|item| item.map_err(anyhow::Error::from)).boxed())
        })
    }

    fn describe(&self) -> String {
        self.url().to_string()
    }
}
