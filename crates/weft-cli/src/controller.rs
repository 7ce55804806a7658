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
    /// Store URL; overrides --data-dir: `redb:///path/file.redb`, or
    /// `etcd://host:port[,host:port…][/prefix]` to share the state with other replicas (HA).
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
    /// Serve an open API (no token) on a non-loopback --listen address anyway.
    #[arg(long)]
    pub insecure: bool,
    /// With an etcd store: the URL other replicas and operators see for this replica (the
    /// leader key's value). Default: http://LISTEN.
    #[arg(long, env = "WEFT_ADVERTISE")]
    pub advertise: Option<String>,
    /// With an etcd store: lease TTL of the leader key in seconds (a dead leader is
    /// replaced within about this long).
    #[arg(long, default_value_t = weft_store::DEFAULT_LEADER_TTL)]
    pub leader_ttl: i64,
}

/// Runs the controller until SIGINT/SIGTERM.
pub async fn run(args: ControllerArgs) -> Result<()> {
    let url = match &args.store {
        Some(u) => u.clone(),
        None => args.data_dir.display().to_string(),
    };
    let token = weft_api::auth::default_token();
    weft_api::auth::check_listen(&args.listen, token.as_deref(), args.insecure)?;
    let token: Option<std::sync::Arc<str>> = token.map(Into::into);
    // HA: on etcd, every replica serves reads and writes (commits are guarded, see
    // weft_api::controller::WRITER_KEY); once-only work runs on the elected leader.
    let (store, leadership): (std::sync::Arc<dyn weft_store::ConfigStore>, _) = if url.starts_with("etcd://")
    {
        let etcd = weft_store::EtcdStore::open(&url).with_context(|| format!("opening the store {url}"))?;
        let identity = args
            .advertise
            .clone()
            .unwrap_or_else(|| format!("http://{}", args.listen));
        let leadership = etcd.campaign(&identity, args.leader_ttl);
        (std::sync::Arc::new(etcd), leadership)
    } else {
        let store = weft_store::open_url(&url).with_context(|| format!("opening the store {url}"))?;
        (store, weft_store::Leadership::always())
    };
    let controller = weft_api::Controller::open(store, &url)
        .await
        .context("loading the stored state")?;
    tokio::spawn(controller.clone().follow_store());
    // The BGP speaker (weft_api::bgp): idle until ClusterConfig or a BgpPeer enables it.
    // On etcd only the elected leader keeps BGP sessions (work that must happen once).
    tokio::spawn(weft_api::bgp::run_while_leader(
        controller.clone(),
        leadership.subscribe(),
    ));
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
        tokio::spawn(kube_while_leader(
            controller.clone(),
            source,
            args.kubeconfig.clone(),
            leadership.subscribe(),
        ));
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
    let tcp = weft_api::server::serve_with_auth(
        controller.clone(),
        listener,
        token.clone(),
        stopped(stop_rx.clone()),
    );
    match unix_listener {
        None => tcp.await.context("serving the API")?,
        Some(unix) => {
            let unix = weft_api::server::serve_unix_with_auth(controller, unix, token, stopped(stop_rx));
            let (tcp, unix) = tokio::join!(tcp, unix);
            tcp.context("serving the API")?;
            unix.context("serving the API on the Unix socket")?;
        }
    }
    if let Some(path) = &args.listen_unix {
        let _ = std::fs::remove_file(path);
    }
    // Hand leadership over at once (on etcd) rather than after the lease TTL.
    leadership.resign().await;
    Ok(())
}

/// Runs the Kubernetes ingestion while this replica is the leader (always, on an embedded
/// store), restarting it with a fresh connection after every re-election.
async fn kube_while_leader(
    controller: std::sync::Arc<weft_api::Controller>,
    first: weft_kube::KubeSource,
    kubeconfig: Option<PathBuf>,
    mut leader: tokio::sync::watch::Receiver<bool>,
) {
    let mut source = Some(first);
    loop {
        if leader.wait_for(|l| *l).await.is_err() {
            return;
        }
        let src = match source.take() {
            Some(s) => s,
            None => match weft_kube::KubeSource::from_kubeconfig(kubeconfig.as_deref()).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "connecting to the Kubernetes API");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        tracing::info!("leader: ingesting from the Kubernetes API");
        let task = tokio::spawn(controller.clone().run_kube(src));
        let _ = leader.wait_for(|l| !*l).await;
        tracing::info!("no longer the leader: stopping the Kubernetes ingestion");
        task.abort();
    }
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

/// Arguments of `weft routes`: a node's tables as the controller computes them, or one
/// network's routes (its endpoints and what BGP imported).
#[derive(Debug, Args)]
pub struct RoutesArgs {
    /// Network whose routes to show (FQ name or short name): this cluster's endpoints
    /// with node and next hop, and routes imported over BGP with next hop, VNI, RD, RTs
    /// and source peer.
    #[arg(conflicts_with = "node", required_unless_present = "node")]
    pub network: Option<String>,
    /// Node whose desired routing tables to show.
    #[arg(long)]
    pub node: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: RoutesFormat,
}

/// `weft routes --node NODE`: asks the controller (over `http://…` or `unix:/…`) for the
/// node's desired forwarding state and prints it.
pub async fn routes(server: &str, args: RoutesArgs) -> Result<()> {
    let Some(node) = args.node.clone() else {
        let network = args.network.clone().unwrap_or_default();
        let routes = weft_api::client::ApiClient::new(server)
            .network_routes(&network)
            .await?;
        match args.output {
            RoutesFormat::Json => println!("{}", serde_json::to_string_pretty(&routes)?),
            RoutesFormat::Text => print!("{}", render_network_routes(&routes)),
        }
        return Ok(());
    };
    let client = weft_api::node_client::NodeStateClient::new(server)?;
    match args.output {
        RoutesFormat::Text => print!("{}", client.routes_text(&node).await?),
        RoutesFormat::Json => {
            let state = client.state(&node).await?;
            println!("{}", serde_json::to_string_pretty(&state)?);
        }
    }
    Ok(())
}

/// `weft routes NETWORK` as text: one line per route.
fn render_network_routes(r: &weft_api::bgp::NetworkRoutes) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "network {} (VNI {}; import {}; export {})",
        r.network,
        r.vni,
        r.import_targets.join(","),
        r.export_targets.join(",")
    );
    let _ = writeln!(
        out,
        "{:<20} {:<9} {:<16} {:<16} {:<7} {:<20} {:<22} SOURCE",
        "PREFIX", "ORIGIN", "NODE", "NEXT-HOP", "VNI", "RD", "RTS"
    );
    if r.routes.is_empty() {
        let _ = writeln!(out, "(no routes)");
    }
    for route in &r.routes {
        let _ = writeln!(
            out,
            "{:<20} {:<9} {:<16} {:<16} {:<7} {:<20} {:<22} {}",
            route.prefix,
            route.origin,
            route.node.as_deref().unwrap_or("-"),
            route
                .next_hop
                .map(|h| h.to_string())
                .unwrap_or_else(|| "-".into()),
            route.vni,
            route.rd.as_deref().unwrap_or("-"),
            if route.route_targets.is_empty() {
                "-".to_string()
            } else {
                route.route_targets.join(",")
            },
            route.source
        );
    }
    out
}

/// Arguments of `weft bgp`.
#[derive(Debug, Args)]
pub struct BgpArgs {
    /// What to show.
    #[command(subcommand)]
    pub command: BgpCommand,
}

/// `weft bgp` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BgpCommand {
    /// The controller's BGP peers: address, ASN, role, state, uptime, prefixes received
    /// and accepted, last error (or why a peer is refused).
    Peers {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: RoutesFormat,
    },
}

/// `weft bgp …`.
pub async fn bgp(server: &str, args: BgpArgs) -> Result<()> {
    match args.command {
        BgpCommand::Peers { output } => {
            let report = weft_api::client::ApiClient::new(server).bgp_peers().await?;
            match output {
                RoutesFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                RoutesFormat::Text => print!("{}", render_bgp_peers(&report)),
            }
        }
    }
    Ok(())
}

fn render_bgp_peers(r: &weft_api::bgp::BgpPeersReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "BGP {}: AS {}, router ID {}, listen {}, {} route(s) exported",
        r.status,
        r.asn,
        r.router_id.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
        r.listen.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
        r.exported
    );
    if r.peers.is_empty() {
        let _ = writeln!(out, "no BgpPeer objects");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<16} {:<22} {:<11} {:<8} {:<12} {:<9} {:>8} {:>8}  LAST ERROR",
        "NAME", "ADDRESS", "ASN", "ROLE", "STATE", "UPTIME", "RECEIVED", "ACCEPTED"
    );
    for p in &r.peers {
        let _ = writeln!(
            out,
            "{:<16} {:<22} {:<11} {:<8} {:<12} {:<9} {:>8} {:>8}  {}",
            p.name,
            format!("{}:{}", p.address, p.port),
            p.asn,
            p.role,
            p.state,
            p.uptime_secs
                .map(|s| format!("{s}s"))
                .unwrap_or_else(|| "-".into()),
            p.received,
            p.accepted,
            p.last_error.as_deref().unwrap_or("-")
        );
    }
    out
}
