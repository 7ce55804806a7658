//! `weft demo`: the seed 002 namespace scenario on a throw-away controller (embedded
//! store in a temporary directory): default, non-isolated, isolated and custom-network
//! namespaces with pods on two nodes and services, shown the way TF names them.
//!
//! This is the control-plane act: what the controller makes of the manifests. The data
//! plane act (a lab of network namespaces and a reachability matrix) builds on it.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use weft_api::client::ApiClient;
use weft_api::manifest::parse_manifest_text;
use weft_api::types::ApplyRequest;

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
    /// Keep the controller running (on --listen) after the demo, for exploring with `weft get`.
    #[arg(long)]
    pub keep: bool,
    /// Where the demo controller listens.
    #[arg(long, default_value = "127.0.0.1:7479")]
    pub listen: String,
}

fn step(start: Instant, text: &str) {
    eprintln!("[{:5.2}s] {text}", start.elapsed().as_secs_f64());
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> Result<()> {
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
