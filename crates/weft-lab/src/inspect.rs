//! Looking at a running lab: `probe`, `matrix`, `routes`, `exec`.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::sync::Semaphore;
use weft_api::client::ApiClient;
use weft_model::DerivedObject;

use crate::echo::{PortProto, ProbeOutcome, probe_from_netns};
use crate::names::{LabName, split_pod};
use crate::state::LabState;
use crate::sys;

/// Bound on each step of a probe (connect, echo).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Probes run at the same time by `matrix`.
const PARALLEL_PROBES: usize = 12;

/// Resolves a probe target: `NS/POD` of the lab (its eth0 address) or an IP address.
pub async fn resolve_target(state: &LabState, target: &str) -> Result<IpAddr> {
    if let Ok(ip) = target.parse::<IpAddr>() {
        return Ok(ip);
    }
    let (ns, pod) = split_pod(target)?;
    if let Some(ip) = state
        .pods
        .get(&format!("{ns}/{pod}"))
        .and_then(|p| p.ip.as_deref())
        .and_then(|ip| ip.parse().ok())
    {
        return Ok(ip);
    }
    // Not attached by the lab (or no address recorded): ask the controller.
    let client = ApiClient::new(&state.controller.url);
    let ifaces = client
        .derived("interfaces", Some(&ns))
        .await
        .with_context(|| format!("looking up the address of {ns}/{pod}"))?;
    ifaces
        .iter()
        .find_map(|o| match o {
            DerivedObject::Interface(i) if i.pod == pod && i.interface == "eth0" => Some(i.ip),
            _ => None,
        })
        .with_context(|| {
            format!(
                "pod {ns}/{pod} has no eth0 address (not in lab {} nor the controller)",
                state.name
            )
        })
}

/// `weft lab probe FROM TO PORT/PROTO`.
pub async fn probe(lab: &LabName, from: &str, to: &str, port: PortProto) -> Result<ExitCode> {
    let state = LabState::load(lab)?;
    let src = state.pod(from)?.clone();
    let ip = resolve_target(&state, to).await?;
    let target = SocketAddr::new(ip, port.port);
    let netns = src.netns.clone();
    let out =
        tokio::task::spawn_blocking(move || probe_from_netns(&netns, target, port.proto, PROBE_TIMEOUT))
            .await
            .context("probe thread")?;
    println!(
        "{} -> {to} ({target}/{}): {} ({:.1} ms)",
        src.key(),
        match port.proto {
            crate::echo::Proto::Tcp => "tcp",
            crate::echo::Proto::Udp => "udp",
        },
        out.detail,
        out.millis
    );
    Ok(if out.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One cell of the matrix.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// Source pod `ns/pod`.
    pub from: String,
    /// Destination pod `ns/pod`.
    pub to: String,
    /// Destination address.
    pub ip: String,
    /// What happened.
    #[serde(flatten)]
    pub outcome: ProbeOutcome,
}

/// The reachability of every ordered pair of pods.
#[derive(Debug, Clone, Serialize)]
pub struct Matrix {
    /// Port probed.
    pub port: String,
    /// Pods, sorted by namespace/pod.
    pub pods: Vec<String>,
    /// One cell per ordered pair of distinct pods, row-major.
    pub cells: Vec<Cell>,
}

impl Matrix {
    /// The cell `from -> to`.
    pub fn get(&self, from: &str, to: &str) -> Option<&Cell> {
        self.cells.iter().find(|c| c.from == from && c.to == to)
    }

    /// The Kubernetes e2e style table: `.` reachable, `X` not, `-` self.
    pub fn table(&self) -> String {
        let width = self.pods.iter().map(String::len).max().unwrap_or(4).max(4);
        let mut s = format!("{:width$}", format!("{} ↓from →to", self.port));
        // Column headers: numbered, with a legend, to stay narrow.
        for (i, _) in self.pods.iter().enumerate() {
            s.push_str(&format!(" {:>2}", i + 1));
        }
        s.push('\n');
        for (r, from) in self.pods.iter().enumerate() {
            s.push_str(&format!(
                "{:width$}",
                format!("{:>2} {from}", r + 1),
                width = width + 3
            ));
            for to in &self.pods {
                let mark = if from == to {
                    "-"
                } else {
                    match self.get(from, to) {
                        Some(c) if c.outcome.ok() => ".",
                        Some(_) => "X",
                        None => "?",
                    }
                };
                s.push_str(&format!(" {mark:>2}"));
            }
            s.push('\n');
        }
        s
    }
}

/// Probes every ordered pair of lab pods on `port`, a bounded number at a time.
pub async fn matrix(state: &LabState, port: PortProto) -> Result<Matrix> {
    let pods: Vec<(String, String, Option<String>)> = state
        .pods
        .values()
        .map(|p| (p.key(), p.netns.clone(), p.ip.clone()))
        .collect();
    let sem = Arc::new(Semaphore::new(PARALLEL_PROBES));
    let mut tasks = Vec::new();
    for (from, netns, _) in &pods {
        for (to, _, ip) in &pods {
            if from == to {
                continue;
            }
            let Some(ip) = ip.as_deref().and_then(|i| i.parse::<IpAddr>().ok()) else {
                continue;
            };
            let (from, to, netns) = (from.clone(), to.clone(), netns.clone());
            let sem = Arc::clone(&sem);
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                let target = SocketAddr::new(ip, port.port);
                let outcome = tokio::task::spawn_blocking(move || {
                    probe_from_netns(&netns, target, port.proto, PROBE_TIMEOUT)
                })
                .await;
                (from, to, ip, outcome)
            }));
        }
    }
    let mut cells = Vec::new();
    for t in tasks {
        let (from, to, ip, outcome) = t.await.context("probe task")?;
        cells.push(Cell {
            from,
            to,
            ip: ip.to_string(),
            outcome: outcome.context("probe thread")?,
        });
    }
    Ok(Matrix {
        port: port.to_string(),
        pods: pods.into_iter().map(|p| p.0).collect(),
        cells,
    })
}

/// `weft lab matrix`.
pub async fn matrix_command(lab: &LabName, port: PortProto, json: bool) -> Result<ExitCode> {
    let state = LabState::load(lab)?;
    if state.pods.is_empty() {
        bail!("lab {lab} has no pods; add some with `weft lab apply --name {lab} -f …`");
    }
    let m = matrix(&state, port).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&m)?);
    } else {
        print!("{}", m.table());
    }
    Ok(ExitCode::SUCCESS)
}

/// Routing state of one node: its policy rules and VN tables (ids ≥ 10000).
pub async fn routes_text(state: &LabState, index: usize) -> Result<String> {
    let node = state.node(index)?;
    let ns = node.netns.as_str();
    let mut s = format!("== {} ({ns}, underlay {})\n", node.name, node.underlay_ip);
    let rules = sys::ip(&["-n", ns, "rule", "show"]).await?;
    let vn_rules: Vec<&str> = rules
        .lines()
        .filter(|l| table_of(l).is_some_and(|t| t >= weft_model::node::VN_TABLE_BASE))
        .collect();
    s.push_str(&format!("policy rules into VN tables ({}):\n", vn_rules.len()));
    for l in &vn_rules {
        s.push_str(&format!("  {}\n", l.trim()));
    }
    let routes = sys::ip(&["-n", ns, "route", "show", "table", "all"]).await?;
    let mut tables: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
    for l in routes.lines() {
        if let Some(t) = table_of(l).filter(|t| *t >= weft_model::node::VN_TABLE_BASE) {
            tables.entry(t).or_default().push(strip_table(l));
        }
    }
    if tables.is_empty() {
        s.push_str("VN tables: none yet\n");
    }
    for (t, lines) in tables {
        s.push_str(&format!(
            "table {t} (VNI {}):\n",
            t - weft_model::node::VN_TABLE_BASE
        ));
        for l in lines {
            s.push_str(&format!("  {l}\n"));
        }
    }
    Ok(s)
}

/// The numeric table named by `table N` / `lookup N` in an `ip` output line.
fn table_of(line: &str) -> Option<u32> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "table" || w[0] == "lookup")
        .and_then(|w| w[1].parse().ok())
}

fn strip_table(line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut out = Vec::new();
    let mut skip = false;
    for w in words {
        if skip {
            skip = false;
            continue;
        }
        if w == "table" {
            skip = true;
            continue;
        }
        out.push(w);
    }
    out.join(" ")
}

/// `weft lab routes`.
pub async fn routes(lab: &LabName, node: Option<&str>) -> Result<()> {
    let state = LabState::load(lab)?;
    let nodes: Vec<usize> = match node {
        Some(n) => vec![crate::names::parse_node(n, state.nodes.len())?],
        None => state.nodes.iter().map(|n| n.index).collect(),
    };
    for i in nodes {
        print!("{}", routes_text(&state, i).await?);
    }
    Ok(())
}

/// `weft lab exec NS/POD -- CMD…`: runs in the pod's namespace; its exit code.
pub async fn exec(lab: &LabName, pod: &str, command: &[String]) -> Result<ExitCode> {
    let state = LabState::load(lab)?;
    let rec = state.pod(pod)?;
    let Some((program, args)) = command.split_first() else {
        bail!("nothing to run: weft lab exec NS/POD -- COMMAND [ARGS…]");
    };
    let status = tokio::process::Command::new("ip")
        .args(["netns", "exec", &rec.netns, program])
        .args(args)
        .status()
        .await
        .with_context(|| format!("running {program} in {}", rec.netns))?;
    let code = match status.code() {
        Some(c) => c,
        None => {
            use std::os::unix::process::ExitStatusExt;
            128 + status.signal().unwrap_or(0)
        }
    };
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::echo::ProbeKind;

    #[test]
    fn tables_are_found_in_ip_output() {
        assert_eq!(
            table_of("10.32.0.5 dev weft1 table 10001 scope link"),
            Some(10001)
        );
        assert_eq!(table_of("1000: from all iif weftab lookup 10002"), Some(10002));
        assert_eq!(table_of("local 127.0.0.1 dev lo table local"), None);
        assert_eq!(table_of("default via 1.2.3.4 dev x"), None);
        assert_eq!(
            strip_table("10.0.0.1 dev x table 10001 scope link"),
            "10.0.0.1 dev x scope link"
        );
    }

    #[test]
    fn table_marks() {
        let cell = |from: &str, to: &str, ok: bool| Cell {
            from: from.into(),
            to: to.into(),
            ip: "10.0.0.1".into(),
            outcome: ProbeOutcome {
                kind: if ok {
                    ProbeKind::Connected
                } else {
                    ProbeKind::Timeout
                },
                detail: String::new(),
                millis: 1.0,
            },
        };
        let m = Matrix {
            port: "80/tcp".into(),
            pods: vec!["a/x".into(), "b/y".into()],
            cells: vec![cell("a/x", "b/y", true), cell("b/y", "a/x", false)],
        };
        let t = m.table();
        let rows: Vec<&str> = t.lines().collect();
        assert_eq!(rows.len(), 3);
        assert!(rows[1].ends_with("-  ."), "{t}");
        assert!(rows[2].ends_with("X  -"), "{t}");
    }
}
