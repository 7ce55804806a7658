//! A throwaway single-member etcd for tests and benchmarks (`weft bench apply --store etcd`):
//! spawns the system's `etcd` binary on free loopback ports with a fresh data directory and
//! kills it (and removes the directory) on drop.
//!
//! Not for production: the cluster has one member and lives as long as this handle.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::StoreError;

/// Where Debian's `etcd-server` package installs the binary (`scripts/install-deps`).
pub const ETCD_BINARY: &str = "/usr/bin/etcd";

/// How long a fresh etcd may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running throwaway etcd (see the module docs); killed on drop.
#[derive(Debug)]
pub struct EtcdServer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

fn free_port() -> Result<u16, StoreError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| StoreError::backend("etcd test server: pick a port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| StoreError::backend("etcd test server: pick a port", e))?
        .port();
    Ok(port)
}

impl EtcdServer {
    /// The etcd binary to run: `$WEFT_ETCD_BINARY` or `/usr/bin/etcd`.
    pub fn binary() -> PathBuf {
        std::env::var_os("WEFT_ETCD_BINARY").map_or_else(|| PathBuf::from(ETCD_BINARY), PathBuf::from)
    }

    /// Whether the etcd binary is installed (tests skip with a message when it is not).
    pub fn available() -> bool {
        Self::binary().is_file()
    }

    /// Starts an etcd and waits (bounded) until it serves requests. Retries on a port race.
    pub async fn start() -> Result<Self, StoreError> {
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start().await {
                Ok(server) => return Ok(server),
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or(StoreError::Closed))
    }

    async fn try_start() -> Result<Self, StoreError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "weft-etcd-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| StoreError::backend(format!("create {}", dir.display()), e))?;
        let (port, peer) = (free_port()?, free_port()?);
        let log = std::fs::File::create(dir.join("etcd.log"))
            .map_err(|e| StoreError::backend(format!("create {}/etcd.log", dir.display()), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| StoreError::backend("etcd test server: log file", e))?;
        let client_url = format!("http://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new(Self::binary())
            .arg("--name=weft-test")
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=weft-test={peer_url}"))
            .arg("--max-txn-ops=100000")
            .arg("--max-request-bytes=33554432")
            .arg("--logger=zap")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| StoreError::backend(format!("start {}", Self::binary().display()), e))?;
        let mut server = Self { child, dir, port };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Result<(), StoreError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let endpoint = format!("http://127.0.0.1:{}", self.port);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(StoreError::Backend(format!(
                    "etcd exited during start ({status}); log: {}",
                    self.log_tail()
                )));
            }
            let probe = async {
                let mut client = etcd_client::Client::connect([endpoint.as_str()], None).await?;
                client.get("weft-probe", None).await
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), probe).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StoreError::Backend(format!(
                    "etcd did not answer within {START_TIMEOUT:?}; log: {}",
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        text.get(start..).unwrap_or_default().to_owned()
    }

    /// `127.0.0.1:PORT`, the client endpoint.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A store URL on this server under `prefix` (e.g. `etcd://127.0.0.1:PORT/prefix`).
    pub fn url(&self, prefix: &str) -> String {
        format!("etcd://{}/{}", self.endpoint(), prefix.trim_matches('/'))
    }

    /// The data directory (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
