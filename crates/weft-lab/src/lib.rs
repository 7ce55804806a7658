//! weft lab: a whole weft cluster on one Linux machine, built from network namespaces.
//! It plays kubelet and container runtime: pods become network namespaces attached
//! through the real CNI plugin, each running a TCP/UDP echo server on its
//! containerPorts, and probes tell what reaches what. It is the demo and the test bed.
//!
//! ```text
//!  host namespace
//!  ┌──────────────────────────────────────────────────────────────────────┐
//!  │ weft controller --listen 127.0.0.1:<port>  (URL for weft --server)   │
//!  │                 --listen-unix /run/weft/lab/<L>/controller.sock      │
//!  │ weft lab …      (probes run on threads that enter a pod's namespace)  │
//!  └──────────────────────────────────────────────────────────────────────┘
//!          ▲ unix:…/controller.sock        ▲   (unix sockets cross namespaces)
//!  wl-<L>-n1  node-1 192.0.2.11    wl-<L>-n2  node-2 192.0.2.12
//!  ┌─────────────────────────┐     ┌─────────────────────────┐
//!  │ weft agent ◄ agent.sock │     │ weft agent ◄ agent.sock │◄─ weft-cni ADD/DEL
//!  │ ip rules, VN tables     │     │ ip rules, VN tables     │   (ip netns exec n2)
//!  │ 10000+VNI, weft-vxlan   │     │ 10000+VNI, weft-vxlan   │
//!  │ weft<hash>        ul0   │     │ ul0        weft<hash>   │
//!  └────┼─────────────────┼──┘     └──┼────────────────┼─────┘
//!       │  wl-<L>-ul:     └─ n1 ─[br0]─ n2 ┘  underlay │ 192.0.2.0/24, VXLAN 4789
//!       │ veth                                         │ veth
//!  ┌────┴───────────────────┐               ┌──────────┴─────────────┐
//!  │ eth0   default/client  │               │ eth0   ns-user/web     │
//!  │ weft lab echo tcp+udp  │               │ weft lab echo tcp+udp  │
//!  └─ wl-<L>-p<hash> ───────┘               └─ wl-<L>-p<hash> ───────┘
//! ```
//!
//! State: `/run/weft/lab/<L>/` holds `state.json` (nodes, underlay addresses, pods →
//! netns/node/sandbox/address/pids, controller URL/pid), `lock`, `controller.sock`,
//! `controller.log`, `store/`, `n<i>/{agent.sock,agent.log,cni.log,state/}` and
//! `pods/<netns>.{log,ready}`.
//!
//! Names derive from the lab name `L` (≤ 6 characters): namespaces `wl-<L>-ul`
//! (underlay bridge), `wl-<L>-n<i>` (nodes), `wl-<L>-p<hash of ns/pod>` (pods); the
//! state directory `/run/weft/lab/<L>/`; so `down` finds everything after a crash too.
//! Kubernetes node names are `node-<i>` (as in `examples/namespaces`, whose pods say
//! `spec.nodeName: node-1`); the agents run as
//! `ip netns exec wl-<L>-n<i> weft agent --node node-<i> --controller unix:…`.
//!
//! Modules: [`topology`] (up, down, start/stop, status), [`pods`] (manifests, CNI,
//! sandboxes), [`echo`] (echo server and probe), [`inspect`] (probe, matrix, routes,
//! exec), [`converge`] (`wait`: the kernels enforce the controller's state), [`state`]
//! (`state.json`, lock), [`names`], [`sys`] (processes, `ip`),
//! `bench` (CNI latency), [`bench_throughput`] (goodput vs VXLAN and veth) and
//! [`bench_policy`] (policy and service costs).
//!
//! Secondary interfaces (`k8s.v1.cni.cncf.io/networks`): after `eth0` the lab runs one
//! CNI ADD per further interface the controller gave the pod (`net1`, `net2` …), as
//! Multus calls its delegates, and records the Multus-style network status in
//! `state.json` (`weft lab status -o json`); DEL goes in reverse order.

pub mod bench_outside;
pub mod bench_policy;
pub mod bench_throughput;
pub mod converge;
pub mod echo;
pub mod federation;
pub mod gateway;
pub mod inspect;
pub mod names;
pub mod pods;
pub mod state;
pub mod sys;
pub mod topology;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::{Args, Subcommand};

pub use echo::{PortProto, Proto};
pub use names::LabName;
pub use topology::Component;

/// Progress lines on stderr, with the time since the command started.
#[derive(Debug, Clone)]
pub struct Progress {
    start: Instant,
    quiet: bool,
}

impl Progress {
    /// Starts the clock.
    pub fn new() -> Progress {
        Progress {
            start: Instant::now(),
            quiet: false,
        }
    }

    /// A progress printer that prints nothing.
    pub fn quiet() -> Progress {
        Progress {
            start: Instant::now(),
            quiet: true,
        }
    }

    /// True for [`Progress::quiet`].
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// Prints `[ 3.2s] text`.
    pub fn step(&self, text: &str) {
        if !self.quiet {
            eprintln!("[{:5.1}s] {text}", self.start.elapsed().as_secs_f64());
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

/// `weft lab …`: a multi-node weft cluster in network namespaces on this machine.
#[derive(Debug, Args)]
pub struct LabArgs {
    /// Lab name (1-6 lower-case letters/digits); prefixes everything the lab makes.
    #[arg(long, global = true, env = "WEFT_LAB", default_value = "weft")]
    pub name: String,
    /// What to do.
    #[command(subcommand)]
    pub command: LabCommand,
}

/// Output formats of the lab's reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people.
    Table,
    /// For scripts.
    Json,
}

/// Manifest arguments shared by up/apply/delete.
#[derive(Debug, Args, Clone)]
pub struct ManifestArgs {
    /// Manifest files or directories (`-` = stdin).
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    /// Namespace for objects that name none.
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// How long CNI ADD waits for the agent to know a pod (seconds).
    #[arg(long, default_value_t = 30)]
    pub cni_timeout: u64,
}

/// The lab's subcommands.
#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Build the lab: underlay, N nodes, controller, one agent per node; then apply -f.
    Up {
        /// Number of nodes.
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        /// Manifests.
        #[command(flatten)]
        manifests: ManifestArgs,
        /// Build nodes and controller only, no agents (pods cannot be attached).
        #[arg(long, hide = true)]
        no_agents: bool,
        /// Clusters: 2 builds a second cluster as lab `<name>2` on the same underlay,
        /// with its own ASN and subnets, the two controllers peered over BGP (manifests
        /// go to the first; `weft lab apply --name <name>2` for the second).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
        clusters: u8,
        /// Add a gateway router (FRR in namespace wl-<name>-gw, AS 65000, 192.0.2.1) that
        /// peers with every cluster's controller and learns its routes, and an external
        /// host behind it (wl-<name>-ext, 203.0.113.10).
        #[arg(long)]
        gateway: bool,
    },
    /// Remove everything the lab made (processes, namespaces, state); also after a crash.
    Down,
    /// Apply manifests to the running lab (pods get sandboxes and echo servers).
    Apply(ManifestArgs),
    /// Delete the objects named in manifests (pods lose their sandboxes first).
    Delete(ManifestArgs),
    /// Wait until every running agent enforces the controller's current state in its
    /// kernel (routes and nftables); exit 1 with the lagging nodes after the timeout.
    Wait {
        /// Seconds to wait at most.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Show the lab's components and pods.
    Status {
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Probe from a pod to a pod (NS/POD) or an address; exit 0 if it connects, 1 if not.
    Probe {
        /// Source pod, NS/POD.
        from: String,
        /// Destination: NS/POD or an IP address.
        to: String,
        /// PORT/PROTO, e.g. 80/tcp or 80/udp.
        port: PortProto,
    },
    /// Reachability matrix of all pods ('.' connects, 'X' does not).
    Matrix {
        /// PORT/PROTO to probe.
        #[arg(long, default_value = "80/tcp")]
        port: PortProto,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Run a command inside a pod's network namespace; its exit code is passed through.
    Exec {
        /// Pod, NS/POD.
        pod: String,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Show a node's policy rules and VN routing tables (all nodes by default).
    Routes {
        /// Node: node-1, n1 or 1.
        #[arg(long)]
        node: Option<String>,
    },
    /// Stop a component (to see the data plane keep working without it).
    Stop {
        /// controller or agent.
        #[arg(value_enum)]
        component: Component,
        /// The agent's node.
        #[arg(long, required_if_eq("component", "agent"))]
        node: Option<String>,
    },
    /// Start a stopped component again and wait until it is ready.
    Start {
        /// controller or agent.
        #[arg(value_enum)]
        component: Component,
        /// The agent's node.
        #[arg(long, required_if_eq("component", "agent"))]
        node: Option<String>,
    },
    /// Run the CNI plugin for a lab pod as the runtime would (ADD, DEL, CHECK, STATUS),
    /// print its output and exit with its code.
    Cni {
        /// Pod, NS/POD.
        pod: String,
        /// CNI_COMMAND.
        command: String,
        /// Network config to send instead of the lab's (JSON text).
        #[arg(long)]
        config: Option<String>,
    },
    /// Measure CNI ADD/DEL latency and time from apply to first successful probe
    /// (`bench throughput`: TCP goodput of weft vs hand-made VXLAN vs bare veth;
    /// `bench policy`: label-change latency, policy and service costs).
    #[command(args_conflicts_with_subcommands = true)]
    Bench {
        /// Pods to create (spread over the nodes).
        #[arg(long, default_value_t = 10)]
        pods: usize,
        /// Another benchmark instead.
        #[command(subcommand)]
        what: Option<BenchCommand>,
    },
    /// (internal) The echo server run in each pod.
    #[command(hide = true)]
    Echo {
        /// TCP ports.
        #[arg(long)]
        tcp: Vec<u16>,
        /// UDP ports.
        #[arg(long)]
        udp: Vec<u16>,
        /// Who this is (for `ps`, and the answer to a `weft-whoami` line).
        #[arg(long)]
        tag: Option<String>,
        /// Written once every port is bound.
        #[arg(long)]
        ready_file: Option<std::path::PathBuf>,
    },
    /// (internal) The CNI plugin itself, when no `weft-cni` binary is installed.
    #[command(hide = true)]
    CniPlugin,
    /// (internal) Carries BGP sessions from the machine's namespace into the gateway's.
    #[command(hide = true)]
    Relay {
        /// The gateway's namespace.
        #[arg(long)]
        netns: String,
        /// Where to accept (the machine's namespace).
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Source address inside the gateway namespace.
        #[arg(long)]
        bind: std::net::Ipv4Addr,
        /// Where to connect inside the gateway namespace.
        #[arg(long)]
        connect: std::net::SocketAddr,
        /// The lab's gateway directory (named so `weft lab down` finds this process).
        #[arg(long)]
        log_dir: Option<std::path::PathBuf>,
    },
}

/// The benchmarks of `weft lab bench` other than the default (CNI latency).
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Reaching the outside, in a fresh 2-node lab with a gateway (removed afterwards;
    /// ignores --name): TCP goodput and connection rate pod -> pod (baseline), external
    /// host -> LoadBalancer floating IP and -> a pod's floating IP, fabric-SNAT pod ->
    /// external host, pod -> pod through a two-hop service chain.
    Outside {
        /// Seconds of traffic per figure.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// TCP goodput pod -> pod across two nodes of a fresh lab, compared in the same run
    /// with a hand-made kernel VXLAN path and a bare veth pair (namespaces of its own,
    /// removed afterwards; ignores --name).
    Throughput {
        /// Seconds of traffic per path.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Parallel TCP streams per path.
        #[arg(long, default_value_t = 1)]
        streams: usize,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// NetworkPolicy in the data plane, in a fresh 2-node lab (removed afterwards;
    /// ignores --name): time for a label change to take effect; TCP goodput and
    /// connection rate with 10,000 allowed peers in sets vs no policy vs a 10,000-rule
    /// linear chain; connection rate through a ClusterIP service's DNAT.
    Policy {
        /// Label changes to time.
        #[arg(long, default_value_t = 10)]
        flips: usize,
        /// Seconds of traffic per goodput and connection-rate figure.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
}

/// Runs `weft lab …`.
pub async fn run(args: LabArgs) -> Result<ExitCode> {
    let progress = Progress::new();
    // The internal commands run inside pods and node namespaces; they need no lab name.
    match args.command {
        LabCommand::Echo {
            tcp,
            udp,
            tag,
            ready_file,
        } => {
            echo::check_ports(&tcp, &udp)?;
            echo::serve_as(tag.as_deref(), &tcp, &udp, ready_file.as_deref()).await?;
            return Ok(ExitCode::SUCCESS);
        }
        LabCommand::CniPlugin => return Ok(cni_plugin()),
        LabCommand::Relay {
            netns,
            listen,
            bind,
            connect,
            log_dir: _,
        } => {
            gateway::relay(&netns, listen, bind, connect).await?;
            return Ok(ExitCode::SUCCESS);
        }
        LabCommand::Bench {
            what:
                Some(BenchCommand::Throughput {
                    seconds,
                    streams,
                    output,
                }),
            ..
        } => {
            let opts = bench_throughput::ThroughputOptions {
                seconds,
                streams,
                json: output == Format::Json,
            };
            bench_throughput::run(&opts, &progress).await?;
            return Ok(ExitCode::SUCCESS);
        }
        LabCommand::Bench {
            what: Some(BenchCommand::Outside { seconds, output }),
            ..
        } => {
            if !(1..=600).contains(&seconds) {
                anyhow::bail!("--seconds must be 1 to 600, found {seconds}");
            }
            let opts = bench_outside::OutsideBenchOptions {
                seconds,
                json: output == Format::Json,
            };
            bench_outside::run(&opts, &progress).await?;
            return Ok(ExitCode::SUCCESS);
        }
        LabCommand::Bench {
            what:
                Some(BenchCommand::Policy {
                    flips,
                    seconds,
                    output,
                }),
            ..
        } => {
            if !(1..=600).contains(&seconds) {
                anyhow::bail!("--seconds must be 1 to 600, found {seconds}");
            }
            let opts = bench_policy::PolicyBenchOptions {
                flips,
                seconds,
                json: output == Format::Json,
            };
            bench_policy::run(&opts, &progress).await?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let lab = LabName::new(&args.name)?;
    let ok = |b: bool| if b { ExitCode::SUCCESS } else { ExitCode::from(1) };
    match args.command {
        LabCommand::Up {
            nodes,
            manifests,
            no_agents,
            clusters,
            gateway,
        } => {
            let opts = topology::UpOptions {
                nodes,
                files: manifests.files,
                documents: Vec::new(),
                namespace: manifests.namespace,
                cni_timeout: manifests.cni_timeout,
                no_agents,
                cluster_objects: Vec::new(),
                join_underlay: None,
                gateway: gateway.then_some(1),
                gateway_relay: None,
            };
            if clusters == 2 {
                federation::up_pair(&lab, opts, &progress).await.map(ok)
            } else {
                topology::up(&lab, &opts, &progress).await.map(ok)
            }
        }
        LabCommand::Down => {
            // A second federated cluster on this lab's underlay goes first.
            if let Some(second) = federation::joined_sibling(&lab) {
                topology::down(&second, &progress).await?;
            }
            topology::down(&lab, &progress).await.map(|()| ExitCode::SUCCESS)
        }
        LabCommand::Apply(m) => {
            require_files(&m)?;
            let _lock = state::LabLock::acquire_existing(&lab)?;
            let mut st = state::LabState::load(&lab)?;
            let r = pods::apply(
                &lab,
                &mut st,
                &m.files,
                m.namespace.as_deref(),
                m.cni_timeout,
                &progress,
            )
            .await;
            st.save(&lab)?;
            r.map(ok)
        }
        LabCommand::Delete(m) => {
            require_files(&m)?;
            pods::delete(&lab, &m.files, m.namespace.as_deref(), &progress)
                .await
                .map(ok)
        }
        LabCommand::Wait { timeout } => {
            let st = state::LabState::load(&lab)?;
            converge::wait_converged(&st, std::time::Duration::from_secs(timeout), &progress)
                .await
                .map(|_| ExitCode::SUCCESS)
        }
        LabCommand::Status { output } => {
            topology::status(&lab, output == Format::Json).map(|()| ExitCode::SUCCESS)
        }
        LabCommand::Probe { from, to, port } => inspect::probe(&lab, &from, &to, port).await,
        LabCommand::Matrix { port, output } => {
            inspect::matrix_command(&lab, port, output == Format::Json).await
        }
        LabCommand::Exec { pod, command } => inspect::exec(&lab, &pod, &command).await,
        LabCommand::Routes { node } => inspect::routes(&lab, node.as_deref())
            .await
            .map(|()| ExitCode::SUCCESS),
        LabCommand::Stop { component, node } => topology::stop(&lab, component, node.as_deref(), &progress)
            .await
            .map(|()| ExitCode::SUCCESS),
        LabCommand::Start { component, node } => topology::start(&lab, component, node.as_deref(), &progress)
            .await
            .map(|()| ExitCode::SUCCESS),
        LabCommand::Cni { pod, command, config } => {
            let code = pods::cni_command(&lab, &pod, &command, config.as_deref()).await?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        LabCommand::Bench { pods, .. } => bench::run(&lab, pods, &progress)
            .await
            .map(|()| ExitCode::SUCCESS),
        LabCommand::Echo { .. } | LabCommand::CniPlugin | LabCommand::Relay { .. } => Ok(ExitCode::SUCCESS),
    }
}

mod bench;

fn require_files(m: &ManifestArgs) -> Result<()> {
    if m.files.is_empty() {
        anyhow::bail!("no manifests: give -f FILE|DIR|- (one or more)");
    }
    Ok(())
}

/// The CNI plugin's `main`, for `weft lab cni-plugin` (identical to `weft-cni`).
fn cni_plugin() -> ExitCode {
    use std::io::Read;
    let mut stdin = Vec::new();
    if std::env::var("CNI_COMMAND").as_deref() != Ok("VERSION")
        && let Err(e) = std::io::stdin().take(16 << 20).read_to_end(&mut stdin)
    {
        let err = weft_cni::CniError::new(
            weft_cni::codes::IO_FAILURE,
            "cannot read the network config from stdin",
        )
        .with_details(e.to_string());
        println!("{}", err.to_json(weft_cni::spec::LATEST_VERSION));
        return ExitCode::from(1);
    }
    // The plugin builds its own current-thread runtime; run it off this runtime's threads.
    let outcome = std::thread::scope(|s| {
        s.spawn(|| weft_cni::plugin::run(|k| std::env::var(k).ok(), &stdin))
            .join()
    });
    match outcome {
        Ok(o) => {
            if !o.stdout.is_empty() {
                println!("{}", o.stdout);
            }
            ExitCode::from(o.exit_code)
        }
        Err(_) => ExitCode::from(1),
    }
}
