//! `weft controller`: opens the store, restores the translator, serves the API and,
//! with `--kubeconfig`/`--in-cluster`, watches a Kubernetes API.
//!
//! The API (including the agents' node-state watch) is served on TCP (`--listen`) and,
//! with `--listen-unix`, also on a Unix socket: agents running in other network
//! namespaces (the lab's nodes) reach a controller in the host's namespace through it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

/// Arguments of `weft controller`.
#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Directory of the embedded store (created if missing).
    #[arg(long, env = "WEFT_DATA_DIR", default_value = "/var/lib/weft")]
    pub data_dir: PathBuf,
    /// Store URL; overrides --data-dir (`redb:///path/file.redb`; etcd comes later).
    #[arg(long, env = "WEFT_STORE")]
    pub store: Option<String>,
    /// Address the HTTP API listens on.
    #[arg(long, env = "WEFT_LISTEN", default_value = crate::DEFAULT_LISTEN)]
    pub listen: String,
    /// Also serve the API on this Unix socket (a stale socket file is replaced); agents
    /// in other network namespaces connect to it as `unix:/path`.
    #[arg(long, env = "WEFT_LISTEN_UNIX")]
    pub listen_unix: Option<PathBuf>,
    /// Watch the Kubernetes API described by this kubeconfig file.
    #[arg(long, env = "KUBECONFIG", conflicts_with = "in_cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// Watch the Kubernetes API of the cluster this runs in (service account).
    #[arg(long)]
    pub in_cluster: bool,
}

/// Runs the controller until SIGINT/SIGTERM.
pub async fn run(args: ControllerArgs) -> Result<()> {
    let url = match &args.store {
        Some(u) => u.clone(),
        None => args.data_dir.display().to_string(),
    };
    let store = weft_store::open_url(&url).with_context(|| format!("opening the store {url}"))?;
    let controller = weft_api::Controller::open(store, &url)
        .await
        .context("loading the stored state")?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| {
            format!(
                "listening on {} (is another controller running? use --listen)",
                args.listen
            )
        })?;
    let unix_listener = match &args.listen_unix {
        Some(path) => Some(bind_unix(path)?),
        None => None,
    };
    tracing::info!(
        listen = %args.listen,
        listen_unix = ?args.listen_unix,
        store = %url,
        "weft controller ready"
    );
    if args.kubeconfig.is_some() || args.in_cluster {
        let source = weft_kube::KubeSource::from_kubeconfig(args.kubeconfig.as_deref())
            .await
            .context("connecting to the Kubernetes API")?;
        tokio::spawn(controller.clone().run_kube(source));
    }
    // One signal stops both listeners.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let tcp = weft_api::server::serve(controller.clone(), listener, stopped(stop_rx.clone()));
    match unix_listener {
        None => tcp.await.context("serving the API")?,
        Some(unix) => {
            let unix = weft_api::server::serve_unix(controller, unix, stopped(stop_rx));
            let (tcp, unix) = tokio::join!(tcp, unix);
            tcp.context("serving the API")?;
            unix.context("serving the API on the Unix socket")?;
        }
    }
    if let Some(path) = &args.listen_unix {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Binds the Unix socket, replacing a stale socket file left by an earlier run (but
/// never a file that is not a socket).
fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                anyhow::bail!(
                    "--listen-unix {}: another process is serving on this socket (another controller?)",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?
        }
        Ok(_) => anyhow::bail!(
            "--listen-unix {}: the path exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(_) => {}
    }
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    tokio::net::UnixListener::bind(path)
        .with_context(|| format!("listening on the Unix socket {}", path.display()))
}

/// Output of `weft routes`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RoutesFormat {
    /// Tables and routes in the manner of `ip route`.
    Text,
    /// The node's state as the agent receives it (JSON).
    Json,
}

/// Arguments of `weft routes`: a node's tables as the controller computes them.
#[derive(Debug, Args)]
pub struct RoutesArgs {
    /// Node whose desired routing tables to show.
    #[arg(long)]
    pub node: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: RoutesFormat,
}

/// `weft routes --node NODE`: asks the controller (over `http://…` or `unix:/…`) for the
/// node's desired forwarding state and prints it.
pub async fn routes(server: &str, args: RoutesArgs) -> Result<()> {
    let client = weft_api::node_client::NodeStateClient::new(server)?;
    match args.output {
        RoutesFormat::Text => print!("{}", client.routes_text(&args.node).await?),
        RoutesFormat::Json => {
            let state = client.state(&args.node).await?;
            println!("{}", serde_json::to_string_pretty(&state)?);
        }
    }
    Ok(())
}
