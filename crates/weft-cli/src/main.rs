//! `weft`: one binary for every role. `weft controller` runs the controller (config API,
//! store, Kubernetes translation); the other commands are clients of its HTTP API, plus
//! `weft bench` for the measured figures.
//!
//! Exit codes: 0 success; 1 some object was refused or not found; 2 bad usage;
//! 3 the controller could not be reached.

mod bench;
mod controller;
mod demo;
mod explain;
mod output;
mod store_cmd;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Default address of the controller API.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7470";

#[derive(Debug, Parser)]
#[command(
    name = "weft",
    version,
    about = "weft: Tungsten Fabric-style networking for Kubernetes, in one binary"
)]
struct Cli {
    /// Controller API URL for client commands.
    #[arg(
        long,
        global = true,
        env = "WEFT_SERVER",
        default_value = "http://127.0.0.1:7470"
    )]
    server: String,
    /// File holding the API bearer token: sent by clients and agents, required by the
    /// controller for writes (default: $WEFT_TOKEN; none = open API, loopback only).
    #[arg(long, global = true, env = "WEFT_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller: config API, store, translation (and the Kubernetes watch).
    Controller(controller::ControllerArgs),
    /// Create or update objects from manifests (multi-document YAML, like kubectl apply).
    Apply(output::ApplyArgs),
    /// Delete the objects named in manifests.
    Delete(output::ApplyArgs),
    /// List objects: projects, networks, interfaces, services, floatingips, servicechains, policies, pods,
    /// namespaces, nodes, virtualnetworks, clusterconfig, pending …
    Get(output::GetArgs),
    /// Show one object in detail.
    Describe(output::DescribeArgs),
    /// Why a flow from a pod is delivered or not: table, route, service, policy.
    Explain(explain::ExplainArgs),
    /// Every component's state, and why it is not ready.
    Status(output::StatusArgs),
    /// A node's desired routing tables (`--node`, what its agent programs), or one
    /// network's routes including those imported over BGP (`weft routes NETWORK`).
    Routes(controller::RoutesArgs),
    /// The controller's BGP speaker: `weft bgp peers`.
    Bgp(controller::BgpArgs),
    /// The seed 002 namespace scenario on a 2-node lab: reachability matrix, routes (root;
    /// `--control-plane` without).
    Demo(demo::DemoArgs),
    /// Measure translation speed, memory and API throughput.
    Bench(bench::BenchArgs),
    /// A whole cluster in network namespaces on this machine: nodes, agents, pods, probes.
    Lab(weft_lab::LabArgs),
    /// Store maintenance: `weft store migrate --from URL --to URL` (embedded ↔ etcd).
    Store(store_cmd::StoreArgs),
    /// Run the node agent: program this node's kernel from the controller's state and serve
    /// the CNI plugin.
    Agent(weft_agent::AgentArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match &cli.command {
        Command::Controller(_) | Command::Agent(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    match weft_api::auth::load_token(cli.token_file.as_deref()) {
        Ok(token) => weft_api::auth::set_default_token(token),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result: Result<ExitCode> = runtime.block_on(async move {
        match cli.command {
            Command::Controller(args) => controller::run(args).await.map(|_| ExitCode::SUCCESS),
            Command::Apply(args) => output::apply(&cli.server, args, false).await,
            Command::Delete(args) => output::apply(&cli.server, args, true).await,
            Command::Get(args) => output::get(&cli.server, args).await,
            Command::Describe(args) => output::describe(&cli.server, args).await,
            Command::Explain(args) => explain::run(&cli.server, args).await,
            Command::Status(args) => output::status(&cli.server, args).await,
            Command::Routes(args) => controller::routes(&cli.server, args)
                .await
                .map(|_| ExitCode::SUCCESS),
            Command::Bgp(args) => controller::bgp(&cli.server, args)
                .await
                .map(|_| ExitCode::SUCCESS),
            Command::Demo(args) => demo::run(args).await.map(|_| ExitCode::SUCCESS),
            Command::Bench(args) => bench::run(&cli.server, args).await.map(|_| ExitCode::SUCCESS),
            Command::Lab(args) => weft_lab::run(args).await,
            Command::Agent(args) => weft_agent::run(args).await.map(|_| ExitCode::SUCCESS),
            Command::Store(args) => store_cmd::run(args).await.map(|_| ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            let unreachable = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<weft_api::client::ClientError>(),
                    Some(weft_api::client::ClientError::Unreachable { .. })
                )
            });
            ExitCode::from(if unreachable { 3 } else { 1 })
        }
    }
}
