//! `weft controller`: opens the store, restores the translator, serves the API and,
//! with `--kubeconfig`/`--in-cluster`, watches a Kubernetes API.

use std::path::PathBuf;

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
    tracing::info!(listen = %args.listen, store = %url, "weft controller ready");
    if args.kubeconfig.is_some() || args.in_cluster {
        let source = weft_kube::KubeSource::from_kubeconfig(args.kubeconfig.as_deref())
            .await
            .context("connecting to the Kubernetes API")?;
        tokio::spawn(controller.clone().run_kube(source));
    }
    let shutdown = async {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    };
    weft_api::server::serve(controller, listener, shutdown)
        .await
        .context("serving the API")?;
    Ok(())
}
