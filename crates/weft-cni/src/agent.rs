//! Both ends of the agent socket: [`AgentClient`] (used by the plugin) and
//! [`serve_agent_requests`] (for the agent, and for tests' fake agents).
//!
//! The protocol itself (one newline-terminated JSON request and one response per
//! connection) is described in [`crate::agent_proto`]. Every step is bounded in time
//! and size, so a hung or chatty peer cannot hang the runtime's CNI call.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::agent_proto::{
    AddReply, AddRequest, AgentError, AgentReply, AgentRequest, AgentResponse, AttachedRequest, DelRequest,
    Empty,
};

/// Longest request or response line accepted (bytes).
pub const MAX_MESSAGE_BYTES: u64 = 1 << 20;

/// How long a server waits for a client's request line.
pub const SERVER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentCallError {
    /// Nobody listens on the socket (missing file, connection refused, or timeout).
    #[error("weft agent not reachable at {path}: {source}")]
    Unreachable {
        /// The socket path.
        path: PathBuf,
        /// The connect error.
        source: io::Error,
    },
    /// Connected, but the exchange did not finish in time.
    #[error("weft agent at {path} did not answer `{op}` within {timeout:?}")]
    Timeout {
        /// The socket path.
        path: PathBuf,
        /// The request's op.
        op: &'static str,
        /// The bound that expired.
        timeout: Duration,
    },
    /// Reading or writing the connection failed, or it closed without an answer.
    #[error("talking to the weft agent at {path} failed: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The answer is not a valid response for the op.
    #[error("weft agent sent an invalid `{op}` response: {reason}")]
    Protocol {
        /// The request's op.
        op: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The agent answered with an error.
    #[error(transparent)]
    Agent(#[from] AgentError),
}

/// Client for the local agent's socket. Cheap to build; one connection per call.
#[derive(Debug, Clone)]
pub struct AgentClient {
    socket: PathBuf,
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl AgentClient {
    /// Default connect bound.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default bound on one whole request/response exchange after connecting.
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

    /// A client for the agent listening at `socket`, with the default timeouts.
    pub fn new(socket: impl Into<PathBuf>) -> AgentClient {
        AgentClient {
            socket: socket.into(),
            connect_timeout: Self::CONNECT_TIMEOUT,
            request_timeout: Self::REQUEST_TIMEOUT,
        }
    }

    /// The same client with other bounds.
    pub fn with_timeouts(mut self, connect: Duration, request: Duration) -> AgentClient {
        self.connect_timeout = connect;
        self.request_timeout = request;
        self
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `add`: the pod's interface configuration.
    pub async fn add(&self, req: AddRequest) -> Result<AddReply, AgentCallError> {
        self.call(&AgentRequest::Add(req)).await
    }

    /// `attached`: the veth is built.
    pub async fn attached(&self, req: AttachedRequest) -> Result<(), AgentCallError> {
        self.call::<Empty>(&AgentRequest::Attached(req)).await.map(drop)
    }

    /// `del`: the attachment is gone.
    pub async fn del(&self, req: DelRequest) -> Result<(), AgentCallError> {
        self.call::<Empty>(&AgentRequest::Del(req)).await.map(drop)
    }

    /// `status`: is the agent ready?
    pub async fn status(&self) -> Result<(), AgentCallError> {
        self.call::<Empty>(&AgentRequest::Status).await.map(drop)
    }

    /// Sends any request and decodes the `ok` payload as `T`.
    pub async fn call<T: DeserializeOwned>(&self, req: &AgentRequest) -> Result<T, AgentCallError> {
        let op = req.op();
        let stream = match tokio::time::timeout(self.connect_timeout, UnixStream::connect(&self.socket)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(AgentCallError::Unreachable {
                    path: self.socket.clone(),
                    source,
                });
            }
            Err(_) => {
                return Err(AgentCallError::Unreachable {
                    path: self.socket.clone(),
                    source: io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("connect timed out after {:?}", self.connect_timeout),
                    ),
                });
            }
        };
        let line = match tokio::time::timeout(self.request_timeout, exchange(stream, req)).await {
            Ok(Ok(line)) => line,
            Ok(Err(source)) => {
                return Err(AgentCallError::Io {
                    path: self.socket.clone(),
                    source,
                });
            }
            Err(_) => {
                return Err(AgentCallError::Timeout {
                    path: self.socket.clone(),
                    op,
                    timeout: self.request_timeout,
                });
            }
        };
        let resp: AgentResponse<T> = serde_json::from_str(&line).map_err(|e| AgentCallError::Protocol {
            op,
            reason: format!("{e} in {}", truncate(&line)),
        })?;
        match resp {
            AgentResponse::Ok(v) => Ok(v),
            AgentResponse::Error(e) => Err(AgentCallError::Agent(e)),
        }
    }
}

async fn exchange(stream: UnixStream, req: &AgentRequest) -> io::Result<String> {
    let (read, mut write) = stream.into_split();
    let mut body = serde_json::to_vec(req).map_err(io::Error::other)?;
    body.push(b'\n');
    write.write_all(&body).await?;
    write.flush().await?;
    let line = read_line_bounded(read).await?;
    if line.trim().is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed without a response",
        ));
    }
    Ok(line)
}

async fn read_line_bounded(read: impl AsyncRead + Unpin) -> io::Result<String> {
    let mut reader = BufReader::new(read.take(MAX_MESSAGE_BYTES));
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    if !line.ends_with('\n') && line.len() as u64 >= MAX_MESSAGE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message larger than 1 MiB",
        ));
    }
    Ok(line)
}

fn truncate(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Serves the agent protocol on `listener` until the surrounding task is dropped.
///
/// Each connection is handled on its own task: one request line is read (bounded by
/// [`SERVER_READ_TIMEOUT`] and [`MAX_MESSAGE_BYTES`]), decoded, passed to `handler`,
/// and the handler's answer written back as `{"ok":…}` / `{"error":…}`. A request that
/// does not decode gets error code 6 without calling the handler. Accept errors (e.g.
/// out of file descriptors) are logged and retried after a short pause.
pub async fn serve_agent_requests<H, Fut>(listener: UnixListener, handler: H)
where
    H: Fn(AgentRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<AgentReply, AgentError>> + Send + 'static,
{
    let handler = Arc::new(handler);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let handler = Arc::clone(&handler);
                tokio::spawn(async move {
                    if let Err(e) = serve_one(stream, handler.as_ref()).await {
                        tracing::debug!(error = %e, "agent connection failed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept on agent socket failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_one<H, Fut>(stream: UnixStream, handler: &H) -> io::Result<()>
where
    H: Fn(AgentRequest) -> Fut,
    Fut: Future<Output = Result<AgentReply, AgentError>>,
{
    let (read, mut write) = stream.into_split();
    let line = tokio::time::timeout(SERVER_READ_TIMEOUT, read_line_bounded(read))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request line in time"))??;
    let response: AgentResponse<AgentReply> = match serde_json::from_str::<AgentRequest>(&line) {
        Ok(req) => handler(req).await.into(),
        Err(e) => AgentResponse::Error(AgentError {
            code: crate::spec::codes::DECODE_FAILURE,
            msg: "request is not a valid agent request".to_string(),
            details: e.to_string(),
        }),
    };
    let mut body = serde_json::to_vec(&response).map_err(io::Error::other)?;
    body.push(b'\n');
    write.write_all(&body).await?;
    write.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_proto::InterfaceConfig;

    #[tokio::test]
    async fn client_and_server_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(serve_agent_requests(listener, |req| async move {
            match req {
                AgentRequest::Add(a) if a.pod_name == "web" => Ok(AgentReply::Add(AddReply {
                    interfaces: vec![InterfaceConfig {
                        if_name: a.if_name,
                        network: "n".into(),
                        address: "10.0.0.2/24".parse().unwrap(),
                        gateway: None,
                        mac: None,
                        routes: vec![],
                        mtu: None,
                    }],
                    dns: None,
                })),
                AgentRequest::Add(_) => Err(AgentError::new(11, "not yet")),
                _ => Ok(AgentReply::Empty(Empty {})),
            }
        }));
        let client = AgentClient::new(&path);
        let add = |pod: &str| AddRequest {
            container_id: "c".into(),
            netns: "/x".into(),
            if_name: "eth0".into(),
            pod_namespace: "dev".into(),
            pod_name: pod.into(),
            pod_uid: String::new(),
        };
        let reply = client.add(add("web")).await.unwrap();
        assert_eq!(reply.interfaces[0].if_name, "eth0");
        match client.add(add("other")).await {
            Err(AgentCallError::Agent(e)) => assert_eq!(e.code, 11),
            other => panic!("unexpected {other:?}"),
        }
        client.status().await.unwrap();
        server.abort();

        let missing = AgentClient::new(dir.path().join("nope.sock"));
        assert!(matches!(
            missing.status().await,
            Err(AgentCallError::Unreachable { .. })
        ));
    }

    #[tokio::test]
    async fn silent_agent_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let _listener = UnixListener::bind(&path).unwrap(); // never accepts
        let client =
            AgentClient::new(&path).with_timeouts(Duration::from_millis(500), Duration::from_millis(300));
        let err = client.status().await.unwrap_err();
        assert!(
            matches!(
                err,
                AgentCallError::Timeout { .. } | AgentCallError::Unreachable { .. }
            ),
            "{err:?}"
        );
    }
}
