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

/// Several controller replicas (`--controller URL1,URL2,…`): watches through whichever
/// answers, starting with the one that worked last and rotating to the next on failure, so
/// an agent follows the HA controllers through the loss of any of them.
#[derive(Debug)]
pub struct ControllerList {
    clients: Vec<NodeStateClient>,
    current: std::sync::atomic::AtomicUsize,
}

impl ControllerList {
    /// Parses a comma-separated list of controller URLs (each as [`NodeStateClient::new`]
    /// accepts).
    pub fn parse(urls: &str) -> Result<Self, weft_api::client::ClientError> {
        let clients = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(NodeStateClient::new)
            .collect::<Result<Vec<_>, _>>()?;
        if clients.is_empty() {
            return Err(weft_api::client::ClientError::InvalidUrl {
                url: urls.to_string(),
                reason: "no controller URL given".into(),
            });
        }
        Ok(Self {
            clients,
            current: std::sync::atomic::AtomicUsize::new(0),
        })
    }
}

impl StateSource for ControllerList {
    fn watch<'a>(&'a self, node: &'a str, after: u64) -> BoxFuture<'a, Result<StateStream, anyhow::Error>> {
        Box::pin(async move {
            use std::sync::atomic::Ordering;
            let start = self.current.load(Ordering::SeqCst);
            let mut errors = Vec::new();
            for i in 0..self.clients.len() {
                let index = (start + i) % self.clients.len();
                let client = &self.clients[index];
                match StateSource::watch(client, node, after).await {
                    Ok(stream) => {
                        if index != start {
                            tracing::info!(controller = %client.url(), "switched to another controller replica");
                        }
                        self.current.store(index, Ordering::SeqCst);
                        // Next reconnect (after this stream breaks) tries the next replica
                        // first only if this one then fails.
                        return Ok(stream);
                    }
                    Err(e) => errors.push(format!("{}: {e}", client.url())),
                }
            }
            self.current
                .store((start + 1) % self.clients.len(), Ordering::SeqCst);
            Err(anyhow::anyhow!("no controller answered: {}", errors.join("; ")))
        })
    }

    fn describe(&self) -> String {
        self.clients.iter().map(|c| c.url()).collect::<Vec<_>>().join(",")
    }
}

#[cfg(test)]
mod tests {
    //! Rotation over controller replicas against a fake controller answering one state.

    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A one-shot fake controller: answers every request with one NDJSON state line.
    async fn fake_controller() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = socket.read(&mut buf).await;
                    let body = concat!(
                        r#"{"node":"n1","revision":7,"vtep_mac":"02:00:00:00:00:01","#,
                        r#""peers":[],"networks":[],"interfaces":[]}"#,
                        "\n"
                    );
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(body.as_bytes()).await;
                    tokio::time::sleep(Duration::from_secs(5)).await;
                });
            }
        });
        format!("http://{addr}")
    }

    /// A loopback port nothing listens on.
    fn dead_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    #[tokio::test]
    async fn watch_rotates_to_the_replica_that_answers() {
        let live = fake_controller().await;
        let list = ControllerList::parse(&format!("{}, {live}", dead_url())).unwrap();
        assert!(list.describe().ends_with(&live));
        let mut stream = list.watch("n1", 0).await.unwrap();
        let state = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!((state.node.as_str(), state.revision), ("n1", 7));
        // The replica that answered is tried first next time.
        assert_eq!(list.current.load(std::sync::atomic::Ordering::SeqCst), 1);

        let none = ControllerList::parse(&format!("{},{}", dead_url(), dead_url())).unwrap();
        let err = none.watch("n1", 0).await.err().unwrap().to_string();
        assert!(err.contains("no controller answered"), "{err}");
        assert!(ControllerList::parse(" , ").is_err());
    }
}
