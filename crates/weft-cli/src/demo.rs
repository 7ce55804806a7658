//! `weft demo`: the seed 002 namespace scenario (default, non-isolated, isolated and
//! custom-network namespaces, pods on two nodes, services — `examples/namespaces`) on
//! a real data plane: a 2-node `weft lab` of network namespaces on this machine, with
//! a controller, one agent per node and the CNI plugin attaching every pod. It prints
//! the reachability matrix with a one-line explanation per group of cells, the routing
//! tables involved, and takes the lab down (`--keep` leaves it up). Then two more acts:
//! two clusters peered over BGP (a client in one calls a service in the other) and a
//! two-hop service chain (`examples/service-chain`). Needs root.
//!
//! `weft demo --control-plane` is the part without root: what the controller makes of
//! the manifests (projects, networks and VNIs, addresses, services) on a throw-away
//! controller.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use weft_api::client::ApiClient;
use weft_api::manifest::parse_manifest_text;
use weft_api::types::ApplyRequest;
use weft_lab::{LabName, PortProto, Progress};
use weft_model::DerivedObject;

/// The scenario, compiled in so the demo runs from anywhere.
const SCENARIO: [(&str, &str); 3] = [
    (
        "examples/namespaces/00-namespaces.yaml",
        include_str!("../../../examples/namespaces/00-namespaces.yaml"),
    ),
    (
        "examples/namespaces/10-pods.yaml",
        include_str!("../../../examples/namespaces/10-pods.yaml"),
    ),
    (
        "examples/namespaces/20-services.yaml",
        include_str!("../../../examples/namespaces/20-services.yaml"),
    ),
];

/// Arguments of `weft demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Leave the lab (or, with --control-plane, the controller) running afterwards, for
    /// exploring with `weft lab …` and `weft get`.
    #[arg(long)]
    pub keep: bool,
    /// Name of the demo's lab.
    #[arg(long, default_value = "demo")]
    pub name: String,
    /// Only the control-plane part (no root needed): a throw-away controller, no lab.
    #[arg(long)]
    pub control_plane: bool,
    /// Where the --control-plane demo's controller listens.
    #[arg(long, default_value = "127.0.0.1:7479")]
    pub listen: String,
    /// The federation act (no root needed): two controllers peered over BGP on
    /// 127.0.0.1 (`examples/federation`), each importing the other's routes, and FRR's
    /// bgpd as gateway router when installed.
    #[arg(long, conflicts_with = "control_plane")]
    pub federation: bool,
}

/// The federation scenario, compiled in.
const FEDERATION: [(&str, &str); 2] = [
    (
        "examples/federation/cluster-1.yaml",
        include_str!("../../../examples/federation/cluster-1.yaml"),
    ),
    (
        "examples/federation/cluster-2.yaml",
        include_str!("../../../examples/federation/cluster-2.yaml"),
    ),
];
/// FRR configuration of the federation's gateway router.
const GATEWAY_FRR: &str = include_str!("../../../examples/federation/gateway-frr.conf");
/// Port the gateway's bgpd listens on (cluster-2.yaml's BgpPeer `gateway`).
const GATEWAY_PORT: u16 = 17903;

fn step(start: Instant, text: &str) {
    eprintln!("[{:5.2}s] {text}", start.elapsed().as_secs_f64());
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> Result<()> {
    if args.control_plane {
        return control_plane(args).await;
    }
    if args.federation {
        return federation().await;
    }
    data_plane(args).await
}

/// The control-plane demo: what the controller makes of the scenario.
async fn control_plane(args: DemoArgs) -> Result<()> {
    let start = Instant::now();
    let dir = std::env::temp_dir().join(format!("weft-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    step(
        start,
        &format!(
            "starting a controller with an embedded store in {}",
            dir.display()
        ),
    );
    let store = weft_store::open_url(&dir.display().to_string()).context("opening the demo store")?;
    let controller = weft_api::Controller::open(store, &dir.display().to_string()).await?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| {
            format!(
                "listening on {} (use --listen to pick another address)",
                args.listen
            )
        })?;
    let server = tokio::spawn(weft_api::server::serve(
        controller,
        listener,
        std::future::pending(),
    ));
    let url = format!("http://{}", args.listen);
    let client = ApiClient::new(&url);
    let mut documents = Vec::new();
    for (name, text) in SCENARIO {
        for doc in parse_manifest_text(text, name) {
            documents.push(doc.context("the built-in scenario parses")?);
        }
    }
    step(
        start,
        &format!(
            "applying the seed 002 namespace scenario ({} objects)",
            documents.len()
        ),
    );
    let report = client
        .apply(&ApplyRequest {
            documents,
            namespace: None,
        })
        .await?;
    for r in &report.results {
        println!("  {} {}", r.object.clone().unwrap_or_default(), r.action);
    }
    anyhow::ensure!(
        report.errors() == 0,
        "the demo scenario was refused: {:?}",
        report.results
    );
    let show = |title: &str| println!("\n== {title}");
    show("projects (namespace -> project <cluster>-<namespace>; isolated namespaces get their own networks)");
    crate::output::get(
        &url,
        crate::output::GetArgs {
            kind: "projects".into(),
            name: None,
            namespace: None,
            output: crate::output::Format::Table,
        },
    )
    .await?;
    show("virtual networks, their VNIs and routing instances");
    crate::output::get(
        &url,
        crate::output::GetArgs {
            kind: "networks".into(),
            name: None,
            namespace: None,
            output: crate::output::Format::Table,
        },
    )
    .await?;
    show("pods and their addresses (flat-subnet IPAM: allocated from the top of 10.32.0.0/12)");
    crate::output::get(
        &url,
        crate::output::GetArgs {
            kind: "pods".into(),
            name: None,
            namespace: None,
            output: crate::output::Format::Table,
        },
    )
    .await?;
    show("services (VIPs from the service network, backends from the selector)");
    crate::output::get(
        &url,
        crate::output::GetArgs {
            kind: "services".into(),
            name: None,
            namespace: None,
            output: crate::output::Format::Table,
        },
    )
    .await?;
    show("what TF's default network policies connect (routes leak only between these)");
    for n in client.derived("networks", None).await? {
        if let weft_model::DerivedObject::Network(n) = n {
            let peers: Vec<&str> = n
                .connected_networks
                .iter()
                .map(|c| c.rsplit(':').next().unwrap_or(c))
                .collect();
            println!(
                "  {:<40} <-> {}",
                n.name,
                if peers.is_empty() {
                    "(nothing: connect custom networks yourself)".to_string()
                } else {
                    peers.join(", ")
                }
            );
        }
    }
    let consistency = client.consistency().await?;
    step(
        start,
        &format!(
            "store consistent: {} addresses, {} problems",
            consistency.addresses,
            consistency.problems.len()
        ),
    );
    if args.keep {
        step(
            start,
            &format!(
                "controller left running at {url}; try: WEFT_SERVER={url} weft get interfaces (Ctrl-C to stop)"
            ),
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
    step(start, "done");
    Ok(())
}

fn scenario_documents() -> Result<Vec<weft_api::types::ManifestDocument>> {
    let mut documents = Vec::new();
    for (name, text) in SCENARIO {
        for doc in parse_manifest_text(text, name) {
            documents.push(doc.context("the built-in scenario parses")?);
        }
    }
    Ok(documents)
}

/// Which "world" a pod lives in by TF's rules, independent of how weft implements
/// them: a custom network, an isolated namespace, or the cluster's shared pod network.
fn world(project: Option<&weft_model::derived::Project>, namespace: &str) -> (String, String) {
    match project {
        Some(p) if p.custom_network.is_some() => {
            let net = p.custom_network.clone().unwrap_or_default();
            let short = net.rsplit(':').next().unwrap_or(&net).to_string();
            (
                format!("custom network {short}"),
                format!(
                    "{namespace} puts its pods on custom network {short}, which no policy connects to anything"
                ),
            )
        }
        Some(p) if p.isolated => (
            format!("isolated {namespace}"),
            format!("{namespace} is isolated: it has its own pod network, reachable only from inside"),
        ),
        _ => (
            "cluster pod network".to_string(),
            "default and non-isolated namespaces share k8s-default-pod-network".to_string(),
        ),
    }
}

/// The data-plane demo on a 2-node lab.
async fn data_plane(args: DemoArgs) -> Result<()> {
    let wall = Instant::now();
    if !weft_lab::sys::is_root() {
        anyhow::bail!(
            "`weft demo` builds a 2-node cluster out of network namespaces on this machine and \
             needs root: run it with sudo. Without root, `weft demo --control-plane` shows what the \
             controller makes of the scenario (no data plane)."
        );
    }
    let lab = LabName::new(&args.name)?;
    let progress = Progress::new();
    if weft_lab::topology::exists(&lab).await {
        progress.step(&format!("removing what an earlier demo left (lab {lab})"));
        weft_lab::topology::down(&lab, &progress).await?;
    }
    let documents = scenario_documents()?;
    progress.step(&format!(
        "building lab {lab}: 2 nodes, controller, agents; then the seed 002 scenario ({} objects)",
        documents.len()
    ));
    let opts = weft_lab::topology::UpOptions {
        documents,
        ..Default::default()
    };
    let outcome = show(&lab, &opts, &progress).await;
    if args.keep {
        let url = weft_lab::state::LabState::load(&lab)
            .map(|s| s.controller.url)
            .unwrap_or_default();
        progress.step(&format!(
            "lab {lab} left up. Try: weft lab matrix --name {lab}; weft lab probe --name {lab} default/client ns-user/web 80/tcp; \
             weft --server {url} get pods; weft lab down --name {lab}"
        ));
    } else {
        weft_lab::topology::down(&lab, &progress).await?;
    }
    let mismatches = outcome?;
    second_act(args.keep, &progress).await?;
    chain_act(args.keep, &progress).await?;
    progress.step(&format!("demo finished in {:.1}s", wall.elapsed().as_secs_f64()));
    anyhow::ensure!(
        mismatches == 0,
        "{mismatches} cell(s) of the matrix differ from what Tungsten Fabric's namespace rules expect"
    );
    Ok(())
}

/// The second act's two clusters: a client in cluster 1, a web service in cluster 2.
const SECOND_ACT: [&str; 2] = [
    "apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default}
spec: {nodeName: node-1, containers: [{name: c, image: x, ports: [{containerPort: 80}]}]}
",
    "apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec: {nodeName: node-2, containers: [{name: c, image: x, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
",
];

/// Second act: two clusters on one underlay (`weft lab up --clusters 2`, labs `wfed`
/// and `wfed2`), controllers peered over BGP; cluster 1's client calls cluster 2's
/// ClusterIP service through the overlay.
async fn second_act(keep: bool, progress: &Progress) -> Result<()> {
    let lab = LabName::new("wfed")?;
    let second = weft_lab::federation::sibling(&lab)?;
    for l in [&second, &lab] {
        if weft_lab::topology::exists(l).await {
            weft_lab::topology::down(l, progress).await?;
        }
    }
    progress.step(
        "second act: two clusters (AS 64512 and AS 64513) on one underlay, controllers peered over BGP",
    );
    let docs = |name: &str, text: &str| -> Result<Vec<weft_api::types::ManifestDocument>> {
        parse_manifest_text(text, name)
            .into_iter()
            .map(|d| d.context("the built-in second act parses"))
            .collect()
    };
    let opts = weft_lab::topology::UpOptions {
        documents: docs("second act, cluster 1", SECOND_ACT[0])?,
        ..Default::default()
    };
    let outcome = async {
        anyhow::ensure!(
            weft_lab::federation::up_pair(&lab, opts, progress).await?,
            "cluster 1's pod did not attach"
        );
        let mut state2 = weft_lab::state::LabState::load(&second)?;
        let applied = weft_lab::pods::apply_docs(
            &second,
            &mut state2,
            docs("second act, cluster 2", SECOND_ACT[1])?,
            None,
            30,
            progress,
        )
        .await;
        state2.save(&second)?;
        anyhow::ensure!(applied?, "cluster 2's pod or service did not apply");
        let services = ApiClient::new(&state2.controller.url)
            .derived("services", None)
            .await?;
        let vip: std::net::IpAddr = services
            .iter()
            .find_map(|o| match o {
                DerivedObject::Service(s) => s.vip,
                _ => None,
            })
            .context("cluster 2's service has no VIP")?;
        let state1 = weft_lab::state::LabState::load(&lab)?;
        let netns = state1
            .pods
            .values()
            .find(|p| p.pod == "client")
            .map(|p| p.netns.clone())
            .context("no client pod in cluster 1")?;
        let target = std::net::SocketAddr::new(vip, 80);
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let probe = netns.clone();
            let who = tokio::task::spawn_blocking(move || {
                weft_lab::echo::whoami_from_netns(
                    &probe,
                    target,
                    weft_lab::Proto::Tcp,
                    std::time::Duration::from_secs(1),
                )
            })
            .await?;
            match who {
                Ok(who) => {
                    progress.step(&format!(
                        "cluster 1 default/client -> cluster 2 service web {target}: answered by {who} \
                         (VXLAN straight to cluster 2's node, VNI from the VPNv4 label, DNAT there)"
                    ));
                    break;
                }
                Err(o) if Instant::now() >= deadline => {
                    anyhow::bail!(
                        "cluster 1's client did not reach cluster 2's service {target} within 30 s: {o:?}"
                    )
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        }
        anyhow::Ok(())
    }
    .await;
    if keep {
        progress.step(&format!(
            "labs {lab} and {second} left up; weft lab down --name {lab} removes both"
        ));
    } else {
        weft_lab::topology::down(&second, progress).await?;
        weft_lab::topology::down(&lab, progress).await?;
    }
    outcome
}

/// The third act's scenario: two networks joined by a two-hop service chain.
const CHAIN_ACT: (&str, &str) = (
    "examples/service-chain/chain.yaml",
    include_str!("../../../examples/service-chain/chain.yaml"),
);

/// Third act: a service chain (lab `wchain`). vn-left and vn-right are joined only
/// through the forwarding pods fw1 and fw2; the probes show both directions cross
/// both hops, and fw2's filter shows the order (left to right fw1 forwards what fw2
/// then drops; right to left fw2 drops it first and fw1 never sees it).
async fn chain_act(keep: bool, progress: &Progress) -> Result<()> {
    let lab = LabName::new("wchain")?;
    if weft_lab::topology::exists(&lab).await {
        weft_lab::topology::down(&lab, progress).await?;
    }
    progress
        .step("third act: a service chain, vn-left <-> fw1 <-> fw2 <-> vn-right (examples/service-chain)");
    let documents = parse_manifest_text(CHAIN_ACT.1, CHAIN_ACT.0)
        .into_iter()
        .map(|d| d.context("the built-in chain act parses"))
        .collect::<Result<Vec<_>>>()?;
    let opts = weft_lab::topology::UpOptions {
        documents,
        ..Default::default()
    };
    let outcome = async {
        anyhow::ensure!(
            weft_lab::topology::up(&lab, &opts, progress).await?,
            "the chain scenario did not apply cleanly (see the errors above)"
        );
        let state = weft_lab::state::LabState::load(&lab)?;
        let netns =
            |name: &str| -> Result<String> { Ok(state.pod(&format!("default/{name}"))?.netns.clone()) };
        let left = (
            netns("left")?,
            weft_lab::inspect::resolve_target(&state, "default/left").await?,
        );
        let right = (
            netns("right")?,
            weft_lab::inspect::resolve_target(&state, "default/right").await?,
        );
        let (fw1, fw2) = (netns("fw1")?, netns("fw2")?);
        println!("\n== service chain web: vn-left -> fw1 -> fw2 -> vn-right (fw2 drops tcp/8081)");
        let mut wrong = Vec::new();
        for (from, (src, _), (_, dst), port, expect) in [
            ("left", &left, &right, 80, true),
            ("right", &right, &left, 80, true),
            ("left", &left, &right, 8081, false),
            ("right", &right, &left, 8081, false),
        ] {
            let to = if from == "left" { "right" } else { "left" };
            // Let the last probe's connection finish closing, so the counts are this
            // probe's packets.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let before = hop_counts(&fw1, &fw2).await?;
            // A connection that should work may wait for the agents (bounded).
            let deadline = Instant::now() + std::time::Duration::from_secs(if expect { 20 } else { 0 });
            let outcome = loop {
                let (ns, target) = (src.clone(), std::net::SocketAddr::new(*dst, port));
                let o = tokio::task::spawn_blocking(move || {
                    weft_lab::echo::probe_from_netns(
                        &ns,
                        target,
                        weft_lab::Proto::Tcp,
                        std::time::Duration::from_secs(1),
                    )
                })
                .await?;
                if o.ok() == expect || Instant::now() >= deadline {
                    break o;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            };
            let after = hop_counts(&fw1, &fw2).await?;
            let delta = |i: usize| {
                let (routed, dropped) = (after[i].0 - before[i].0, after[i].1 - before[i].1);
                if dropped == 0 {
                    format!("+{routed}")
                } else {
                    format!("+{routed}, {dropped} dropped by its filter")
                }
            };
            println!(
                "{} {from} -> {to} {dst}:{port}/tcp: {} ({}); packets at fw1 {}, at fw2 {}",
                if outcome.ok() { "." } else { "X" },
                if outcome.ok() {
                    "connected"
                } else {
                    "no connection"
                },
                outcome.detail,
                delta(0),
                delta(1),
            );
            if outcome.ok() != expect {
                wrong.push(format!("{from} -> {to} {port}/tcp"));
            }
        }
        let chains = ApiClient::new(&state.controller.url)
            .derived("servicechains", None)
            .await?;
        println!("\n{}", crate::output::derived_table(&chains));
        anyhow::ensure!(
            wrong.is_empty(),
            "the chain did not behave as expected: {}",
            wrong.join(", ")
        );
        anyhow::Ok(())
    }
    .await;
    if keep {
        progress.step(&format!(
            "lab {lab} left up. Try: weft lab probe --name {lab} default/left default/right 80/tcp; \
             weft lab exec --name {lab} default/fw1 -- cat /proc/net/snmp; weft lab down --name {lab}"
        ));
    } else {
        weft_lab::topology::down(&lab, progress).await?;
    }
    outcome
}

/// (packets routed on, packets dropped by the filter) of the two forwarders.
async fn hop_counts(fw1: &str, fw2: &str) -> Result<[(u64, u64); 2]> {
    let mut out = [(0, 0); 2];
    for (slot, netns) in out.iter_mut().zip([fw1, fw2]) {
        *slot = (
            weft_lab::pods::forwarded_in(netns).await?,
            weft_lab::pods::dropped_in(netns).await?,
        );
    }
    Ok(out)
}

/// Brings the lab up and shows matrix and routes; the number of unexpected cells.
async fn show(lab: &LabName, opts: &weft_lab::topology::UpOptions, progress: &Progress) -> Result<usize> {
    let applied = weft_lab::topology::up(lab, opts, progress).await?;
    anyhow::ensure!(
        applied,
        "the scenario did not apply cleanly (see the errors above)"
    );
    let state = weft_lab::state::LabState::load(lab)?;
    let client = ApiClient::new(&state.controller.url);
    let projects: BTreeMap<String, weft_model::derived::Project> = client
        .derived("projects", None)
        .await?
        .into_iter()
        .filter_map(|o| match o {
            DerivedObject::Project(p) => Some((p.namespace.clone(), p)),
            _ => None,
        })
        .collect();
    let port: PortProto = "80/tcp".parse().map_err(anyhow::Error::msg)?;
    progress.step("probing every ordered pair of pods on 80/tcp (1 s bound per probe)");
    let m = weft_lab::inspect::matrix(&state, port).await?;
    progress.step(&format!("{} probes done", m.cells.len()));

    println!("\n== pods");
    for (i, key) in m.pods.iter().enumerate() {
        let p = state.pod(key)?;
        let (w, _) = world(projects.get(&p.namespace), &p.namespace);
        println!(
            "{:>2} {key:<20} {:<7} {:<15} {w}",
            i + 1,
            p.node,
            p.ip.as_deref().unwrap_or("-")
        );
    }
    println!("\n== reachability matrix (row = from, column = to; '.' connects, 'X' does not)");
    print!("{}", m.table());

    // Group cells by (source world, destination world).
    #[derive(Default)]
    struct Group {
        reached: usize,
        total: usize,
        why: String,
    }
    let mut groups: BTreeMap<(String, String), Group> = BTreeMap::new();
    let mut mismatches = 0;
    for c in &m.cells {
        let ns = |k: &str| k.split('/').next().unwrap_or("").to_string();
        let (from_ns, to_ns) = (ns(&c.from), ns(&c.to));
        let (fw, fwhy) = world(projects.get(&from_ns), &from_ns);
        let (tw, twhy) = world(projects.get(&to_ns), &to_ns);
        let expected = fw == tw;
        if expected != c.outcome.ok() {
            mismatches += 1;
        }
        let g = groups.entry((fw.clone(), tw.clone())).or_default();
        g.total += 1;
        g.reached += usize::from(c.outcome.ok());
        g.why = if fw == tw {
            format!("same world: {fwhy}")
        } else if tw.starts_with("isolated") {
            twhy
        } else if fw.starts_with("isolated") {
            format!("{fwhy}; no route leads out of it either")
        } else if tw.starts_with("custom") {
            twhy
        } else {
            fwhy
        };
    }
    println!("\n== why (cells grouped by source and destination)");
    for ((from, to), g) in &groups {
        let expected = from == to;
        let verdict = match (expected, g.reached == g.total, g.reached == 0) {
            (true, true, _) | (false, _, true) => "as expected",
            _ => "UNEXPECTED",
        };
        println!(
            "{} {from} -> {to}: {}/{} connect ({verdict}) — {}",
            if g.reached == g.total {
                "."
            } else if g.reached == 0 {
                "X"
            } else {
                "~"
            },
            g.reached,
            g.total,
            g.why
        );
    }
    if mismatches == 0 {
        println!(
            "all {} cells are what Tungsten Fabric's namespace rules expect",
            m.cells.len()
        );
    } else {
        println!(
            "{mismatches} of {} cells differ from what Tungsten Fabric's namespace rules expect",
            m.cells.len()
        );
    }
    println!("\n== routing tables involved (policy rules steer each pod veth into its network's table)");
    for n in &state.nodes {
        print!("{}", weft_lab::inspect::routes_text(&state, n.index).await?);
    }
    println!();
    Ok(mismatches)
}

/// A controller of the federation act: in-process, memory store, its API on a free port
/// and its BGP speaker running.
async fn federation_controller() -> Result<(String, tokio::task::JoinHandle<()>)> {
    let store: std::sync::Arc<dyn weft_store::ConfigStore> =
        std::sync::Arc::new(weft_store::MemoryStore::new());
    let controller = weft_api::Controller::open(store, "memory").await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(weft_api::bgp::run(controller.clone()));
    let server = tokio::spawn(async move {
        let _ = weft_api::server::serve(controller, listener, std::future::pending()).await;
    });
    Ok((url, server))
}

/// FRR's bgpd as the gateway router, killed on drop.
struct Gateway {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Gateway {
    fn start() -> Result<Option<Gateway>> {
        let bgpd = std::path::Path::new("/usr/lib/frr/bgpd");
        if !bgpd.is_file() {
            return Ok(None);
        }
        let dir = std::env::temp_dir().join(format!("weft-demo-gw-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("bgpd.conf"), GATEWAY_FRR)?;
        let log = std::fs::File::create(dir.join("bgpd.log"))?;
        let d = dir.display().to_string();
        let child = std::process::Command::new(bgpd)
            .args([
                "-f",
                &format!("{d}/bgpd.conf"),
                "-p",
                &GATEWAY_PORT.to_string(),
                "-l",
                "127.0.0.1",
            ])
            .args([
                "-Z",
                "-S",
                "-i",
                &format!("{d}/bgpd.pid"),
                "--vty_socket",
                &d,
                "-P",
                "0",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::from(log.try_clone()?))
            .stderr(std::process::Stdio::from(log))
            .spawn()
            .context("starting FRR's bgpd")?;
        Ok(Some(Gateway { child, dir }))
    }

    async fn show(&self, command: &str) -> String {
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio::process::Command::new("vtysh")
                .args([
                    "--vty_socket",
                    &self.dir.display().to_string(),
                    "-d",
                    "bgpd",
                    "-c",
                    command,
                ])
                .kill_on_drop(true)
                .output(),
        )
        .await;
        match out {
            Ok(Ok(o)) => String::from_utf8_lossy(&o.stdout).into_owned(),
            _ => "(vtysh did not answer)".to_string(),
        }
    }
}

/// The federation act: two clusters exchange VPNv4 routes, a gateway learns them.
async fn federation() -> Result<()> {
    let start = Instant::now();
    step(
        start,
        "starting two controllers (AS 64512 and AS 64513) with BGP speakers on 127.0.0.1",
    );
    let (url1, server1) = federation_controller().await?;
    let (url2, server2) = federation_controller().await?;
    let gateway = Gateway::start()?;
    match &gateway {
        Some(_) => step(start, "gateway router: FRR bgpd (AS 65003) on 127.0.0.1:17903"),
        None => step(start, "no /usr/lib/frr/bgpd: the gateway router is left out"),
    }
    // Cluster 2 (with the gateway peer) first: the gateway learns its routes.
    let apply = |name: &'static str, text: &'static str, url: String| async move {
        let documents = parse_manifest_text(text, name)
            .into_iter()
            .collect::<std::result::Result<Vec<_>, _>>()
            .context("the built-in federation scenario parses")?;
        let report = ApiClient::new(&url)
            .apply(&ApplyRequest {
                documents,
                namespace: None,
            })
            .await?;
        anyhow::ensure!(report.errors() == 0, "{name} was refused: {:?}", report.results);
        step(start, &format!("applied {name} to {url}"));
        anyhow::Ok(())
    };
    apply(FEDERATION[1].0, FEDERATION[1].1, url2.clone()).await?;
    if let Some(gw) = &gateway {
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        let mut table = String::new();
        while Instant::now() < deadline {
            table = gw.show("show bgp ipv4 unicast").await;
            if table.contains("192.0.2.21") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        println!("\n== gateway router (FRR) learned cluster 2's pods: show bgp ipv4 unicast");
        print!("{table}");
    }
    apply(FEDERATION[0].0, FEDERATION[0].1, url1.clone()).await?;
    let client1 = ApiClient::new(&url1);
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let routes = client1.network_routes("fed").await?;
        if routes.routes.iter().any(|r| r.origin == "imported") {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "cluster 1 imported nothing within 30 s: {:#?}",
            client1.bgp_peers().await?
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    step(start, "cluster 1 imported cluster 2's routes");
    let show = |title: &str| println!("\n== {title}");
    for (cluster, url) in [("cluster 1", &url1), ("cluster 2", &url2)] {
        show(&format!("{cluster}: weft bgp peers"));
        let command = crate::controller::BgpCommand::Peers {
            output: crate::controller::RoutesFormat::Text,
        };
        crate::controller::bgp(url, crate::controller::BgpArgs { command }).await?;
    }
    for (title, url) in [
        (
            "cluster 1: weft routes fed (its pod, and cluster 2's imported with RD, RTs and peer)",
            &url1,
        ),
        ("cluster 2: weft routes fed", &url2),
    ] {
        show(title);
        let args = crate::controller::RoutesArgs {
            network: Some("fed".into()),
            node: None,
            output: crate::controller::RoutesFormat::Text,
        };
        crate::controller::routes(url, args).await?;
    }
    show("cluster 1: node c1-node-1's tables (the imported /32 tunnels straight to cluster 2's node)");
    crate::controller::routes(
        &url1,
        crate::controller::RoutesArgs {
            network: None,
            node: Some("c1-node-1".into()),
            output: crate::controller::RoutesFormat::Text,
        },
    )
    .await?;
    if let Some(gw) = &gateway {
        // Cluster 1's pod reaches the gateway through cluster 2's controller, with cluster
        // 1's node as next hop: controllers are not on the forwarding path.
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        let mut table = String::new();
        while Instant::now() < deadline && !table.contains("192.0.2.11") {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            table = gw.show("show bgp ipv4 vpn").await;
        }
        show("gateway router (FRR): both clusters' pods as VPNv4, next hop = the hosting node");
        print!("{table}");
        anyhow::ensure!(
            table.contains("192.0.2.11"),
            "the gateway did not learn cluster 1's pod through cluster 2 within 20 s"
        );
    }
    drop(gateway);
    server1.abort();
    server2.abort();
    step(start, "done");
    Ok(())
}
