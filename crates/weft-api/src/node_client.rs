//! The agent's client of the controller: fetches and watches one node's desired
//! forwarding state.
//!
//! ```text
//! controller ── GET /v1/nodes/{node}/watch?after=REV (NDJSON) ──> NodeStateClient::watch
//!     (TCP `http://HOST:PORT`, or `unix:/path` across network namespaces)     │
//!                                                                  agent ─────┘──> kernel
//! ```
//!
//! Plain HTTP/1.1 with hyper over a `TcpStream` or a `UnixStream`, one connection per
//! request (a watch is one long-lived request). Every step is bounded: connecting and
//! the handshake take at most [`CONNECT_TIMEOUT`], the answer's head
//! [`RESPONSE_TIMEOUT`], and a watch that hears nothing (not even a heartbeat) for
//! [`WATCH_IDLE_TIMEOUT`] yields an error so the agent reconnects.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;
use weft_model::node::NodeState;

use crate::client::ClientError;
use crate::types::{ErrorBody, NodeWatchLine};

/// Longest wait for the TCP/Unix connection and the HTTP handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the head of an answer once the request is sent.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// A watch that receives nothing for this long is considered dead (the server sends a
/// heartbeat every 10 s).
pub const WATCH_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest line accepted on a watch stream (a node state with very many routes).
const MAX_LINE: usize = 256 * 1024 * 1024;

/// Where the controller listens.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// `host:port`.
    Tcp(String),
    /// Absolute path of a Unix socket.
    Unix(PathBuf),
}

/// Client of the node-state API of one controller.
#[derive(Debug, Clone)]
pub struct NodeStateClient {
    url: String,
    target: Target,
    idle_timeout: Duration,
    /// Sent as `Authorization: Bearer …` when the controller requires a token.
    token: Option<String>,
}

/// Aborts the task driving the HTTP connection when the request is done with.
struct ConnectionTask(JoinHandle<()>);

impl Drop for ConnectionTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A response with the connection it came on, kept alive as long as its body is read.
struct Exchange {
    response: hyper::Response<Incoming>,
    _sender: SendRequest<Empty<Bytes>>,
    _task: ConnectionTask,
}

/// Percent-encodes a path segment (node names are DNS names, but be safe).
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn handshake<T>(io: T) -> Result<(SendRequest<Empty<Bytes>>, ConnectionTask), hyper::Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "controller connection ended");
        }
    });
    Ok((sender, ConnectionTask(task)))
}

impl NodeStateClient {
    /// A client for `url`: `http://HOST:PORT` (or bare `HOST:PORT`), `unix:/abs/path` or
    /// `unix:///abs/path`.
    pub fn new(url: &str) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = url.trim();
        let target = if let Some(rest) = trimmed.strip_prefix("unix:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if !path.starts_with('/') {
                return Err(invalid(
                    "a Unix socket URL needs an absolute path: unix:/run/weft/api.sock",
                ));
            }
            Target::Unix(PathBuf::from(path))
        } else {
            let rest = if let Some(rest) = trimmed.strip_prefix("http://") {
                rest
            } else if trimmed.contains("://") {
                return Err(invalid("only http:// and unix: URLs are supported"));
            } else {
                trimmed
            };
            let authority = rest.trim_end_matches('/');
            if authority.is_empty() || authority.contains('/') {
                return Err(invalid("expected http://HOST:PORT without a path"));
            }
            if !authority.contains(':') {
                return Err(invalid("expected http://HOST:PORT (the port is required)"));
            }
            Target::Tcp(authority.to_string())
        };
        Ok(NodeStateClient {
            url: trimmed.to_string(),
            target,
            idle_timeout: WATCH_IDLE_TIMEOUT,
            token: crate::auth::default_token(),
        })
    }

    /// The same client with another watch idle timeout (tests use a short one).
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The same client sending this bearer token (`None`: none); [`NodeStateClient::new`]
    /// uses [`crate::auth::default_token`].
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// The controller URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> ClientError {
        ClientError::Unreachable {
            url: self.url.clone(),
            reason: reason.to_string(),
        }
    }

    async fn connect(&self) -> Result<(SendRequest<Empty<Bytes>>, ConnectionTask), ClientError> {
        let attempt = async {
            match &self.target {
                Target::Tcp(addr) => {
                    let stream = tokio::net::TcpStream::connect(addr.as_str())
                        .await
                        .map_err(|e| self.unreachable(e))?;
                    let _ = stream.set_nodelay(true);
                    handshake(stream).await.map_err(|e| self.unreachable(e))
                }
                Target::Unix(path) => {
                    let stream = tokio::net::UnixStream::connect(path)
                        .await
                        .map_err(|e| self.unreachable(format!("{}: {e}", path.display())))?;
                    handshake(stream).await.map_err(|e| self.unreachable(e))
                }
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, attempt)
            .await
            .map_err(|_| self.unreachable(format!("no connection within {} s", CONNECT_TIMEOUT.as_secs())))?
    }

    /// Sends `GET path` and returns the answer once its head is in; a non-2xx answer is
    /// turned into [`ClientError::Refused`] with the server's message.
    async fn get(&self, path: &str, accept: &str) -> Result<Exchange, ClientError> {
        let (mut sender, task) = self.connect().await?;
        let host = match &self.target {
            Target::Tcp(addr) => addr.as_str(),
            Target::Unix(_) => "localhost",
        };
        let mut request = hyper::Request::get(path)
            .header(header::HOST, host)
            .header(header::ACCEPT, accept);
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| ClientError::InvalidUrl {
                url: format!("{}{path}", self.url),
                reason: e.to_string(),
            })?;
        let response = tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(request))
            .await
            .map_err(|_| {
                self.unreachable(format!(
                    "no answer to {path} within {} s",
                    RESPONSE_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if !status.is_success() {
            let body = tokio::time::timeout(RESPONSE_TIMEOUT, response.into_body().collect())
                .await
                .ok()
                .and_then(Result::ok)
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|b| b.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(ClientError::Refused {
                what: path.to_string(),
                message: format!("{status}: {message}"),
            });
        }
        Ok(Exchange {
            response,
            _sender: sender,
            _task: task,
        })
    }

    async fn get_body(&self, path: &str, accept: &str) -> Result<Bytes, ClientError> {
        let exchange = self.get(path, accept).await?;
        let Exchange {
            response,
            _sender,
            _task,
        } = exchange;
        let body = tokio::time::timeout(RESPONSE_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| {
                self.unreachable(format!(
                    "{path}: answer not complete within {} s",
                    RESPONSE_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| self.unreachable(e))?;
        Ok(body.to_bytes())
    }

    /// The node's current desired state (`GET /v1/nodes/{node}/state`).
    pub async fn state(&self, node: &str) -> Result<NodeState, ClientError> {
        let path = format!("/v1/nodes/{}/state", encode_segment(node));
        let body = self.get_body(&path, "application/json").await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode {
            what: path,
            reason: e.to_string(),
        })
    }

    /// The node's tables as text (`GET /v1/routes/{node}`), for people.
    pub async fn routes_text(&self, node: &str) -> Result<String, ClientError> {
        let path = format!("/v1/routes/{}", encode_segment(node));
        let body = self.get_body(&path, "text/plain").await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// Watches the node's state (`GET /v1/nodes/{node}/watch?after=REV`).
    ///
    /// The stream yields the current state first (unless `after` is the controller's
    /// current revision, i.e. the caller already has it), then every state that differs
    /// in content from the previous one. Heartbeats are consumed here. The stream ends
    /// after its first error (the controller closed the stream, nothing heard for the
    /// idle timeout, an undecodable line): reconnect with `after` = the revision of the
    /// last state received. Pass `after = 0` to always get the current state first.
    pub async fn watch(
        &self,
        node: &str,
        after: u64,
    ) -> Result<impl Stream<Item = Result<NodeState, ClientError>> + Send + 'static, ClientError> {
        let path = format!("/v1/nodes/{}/watch?after={after}", encode_segment(node));
        let exchange = self.get(&path, "application/x-ndjson").await?;
        let Exchange {
            response,
            _sender,
            _task,
        } = exchange;
        let lines = WatchLines {
            url: self.url.clone(),
            path,
            body: response.into_body(),
            buffer: Vec::new(),
            idle: self.idle_timeout,
            done: false,
            _sender,
            _task,
        };
        Ok(futures::stream::unfold(lines, |mut lines| async move {
            let item = lines.next_state().await?;
            Some((item, lines))
        }))
    }
}

/// Reads NDJSON lines off a watch body.
struct WatchLines {
    url: String,
    path: String,
    body: Incoming,
    buffer: Vec<u8>,
    idle: Duration,
    done: bool,
    _sender: SendRequest<Empty<Bytes>>,
    _task: ConnectionTask,
}

impl WatchLines {
    fn broken(&mut self, reason: impl Into<String>) -> Option<Result<NodeState, ClientError>> {
        self.done = true;
        Some(Err(ClientError::StreamBroken {
            url: self.url.clone(),
            reason: reason.into(),
        }))
    }

    /// The next state; `None` once the stream has ended (always after an error).
    async fn next_state(&mut self) -> Option<Result<NodeState, ClientError>> {
        loop {
            if self.done {
                return None;
            }
            while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let line = line.trim_ascii();
                if line.is_empty() {
                    continue;
                }
                match serde_json::from_slice::<NodeWatchLine>(line) {
                    Ok(NodeWatchLine::Heartbeat { .. }) => {}
                    Ok(NodeWatchLine::State(state)) => return Some(Ok(state)),
                    Err(e) => {
                        self.done = true;
                        return Some(Err(ClientError::Decode {
                            what: self.path.clone(),
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            match tokio::time::timeout(self.idle, self.body.frame()).await {
                Err(_) => {
                    let secs = self.idle.as_secs_f64();
                    return self.broken(format!("nothing received for {secs:.1} s (not even a heartbeat)"));
                }
                Ok(None) => return self.broken("the controller ended the stream"),
                Ok(Some(Err(e))) => return self.broken(e.to_string()),
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                        if self.buffer.len() > MAX_LINE {
                            return self.broken(format!("a line longer than {MAX_LINE} bytes"));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let t = |u: &str| NodeStateClient::new(u).map(|c| c.target);
        assert_eq!(
            t("http://127.0.0.1:7470").unwrap(),
            Target::Tcp("127.0.0.1:7470".into())
        );
        assert_eq!(
            t("http://localhost:7470/").unwrap(),
            Target::Tcp("localhost:7470".into())
        );
        assert_eq!(t("127.0.0.1:7470").unwrap(), Target::Tcp("127.0.0.1:7470".into()));
        assert_eq!(
            t("unix:/run/weft.sock").unwrap(),
            Target::Unix("/run/weft.sock".into())
        );
        assert_eq!(
            t("unix:///run/weft.sock").unwrap(),
            Target::Unix("/run/weft.sock".into())
        );
        assert!(t("unix:run/weft.sock").is_err());
        assert!(t("https://x:1").is_err());
        assert!(t("http://x:1/api").is_err());
        assert!(t("http://x").is_err());
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(encode_segment("node-1.example"), "node-1.example");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    }
}
