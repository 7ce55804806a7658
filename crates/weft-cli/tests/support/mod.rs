//! Helpers shared by the `weft` binary's integration tests (`controller.rs`, `ha.rs`):
//! starting `weft controller` processes and reading what they stored.

#![allow(dead_code, clippy::unwrap_used)]

use std::ffi::OsString;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use weft_api::client::ApiClient;
use weft_model::DerivedObject;

/// A running `weft controller` process; killed on drop so a failing test leaves nothing
/// behind.
pub struct ControllerProcess {
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// A client sending no token.
    pub client: ApiClient,
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Starts `weft controller --listen 127.0.0.1:PORT ARGS…` (without `$WEFT_TOKEN`) on a free
/// port and waits until its API answers; tries another port if the process exits first (a
/// port race).
pub async fn start_controller(args: &[OsString]) -> ControllerProcess {
    for _ in 0..5 {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(["controller", "--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env("WEFT_LOG", "warn")
            .env_remove("WEFT_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn weft controller");
        let mut process = ControllerProcess {
            child,
            client: ApiClient::with_token(&url, None),
            url,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if process.client.status().await.is_ok() {
                return process;
            }
            if let Ok(Some(_)) = process.child.try_wait() {
                break; // port taken or failed: try another port
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = process.child.kill();
    }
    panic!("controller did not come up");
}

/// The interfaces (pod attachments) the controller has stored.
pub async fn interfaces(client: &ApiClient) -> Vec<weft_model::InterfaceAttachment> {
    client
        .derived("interfaces", None)
        .await
        .expect("interfaces")
        .into_iter()
        .filter_map(|d| match d {
            DerivedObject::Interface(i) => Some(i),
            _ => None,
        })
        .collect()
}
