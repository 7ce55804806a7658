//! Route-feed benchmark (issue 5, "Performance"): how fast a BGP speaker receives N IPv4
//! prefixes from one peer and re-advertises them to another, and its peak memory, with
//! weft and with FRR, BIRD and GoBGP as the device under test, in the same run.
//!
//! ```text
//!   feeder (weft, AS 65010, 127.0.0.2) ──► DUT (AS 65020, 127.0.0.1:<port>, passive) ──► sink (weft, AS 65030, 127.0.0.3)
//! ```
//!
//! The feeder holds the N prefixes before it connects; the clock runs from its
//! `add_peer` until the sink holds all N. The DUT runs in its own process (weft's is this
//! binary re-executed with `WEFT_BGP_BENCH_DUT`), so its peak RSS (`VmHWM`) is its own.
//! Loopback only. Run:
//!
//! ```text
//! cargo bench -p weft-bgp --bench feed                 # 100k prefixes, all four DUTs
//! cargo bench -p weft-bgp --bench feed -- 1000000 weft bird   # N and a subset
//! ```
//!
//! Not run by `cargo test` (no `--bench` argument: it exits at once).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "benchmark binary"
)]

// The interop tests' helpers: daemons killed on drop, free ports, binaries, gobgpd config.
#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{Daemon, LO, find_binary, free_port, gobgpd_config, gobgpd_neighbor};
use weft_bgp::{PeerConfig, Prefix4, Route, Speaker, SpeakerConfig, State};

const FEEDER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const SINK: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const FEEDER_AS: u32 = 65010;
const DUT_AS: u32 = 65020;
const SINK_AS: u32 = 65030;
const DUT_ID: Ipv4Addr = Ipv4Addr::new(10, 255, 1, 2);
const LIMIT: Duration = Duration::from_secs(300);

fn main() {
    if let Ok(port) = std::env::var("WEFT_BGP_BENCH_DUT") {
        return run_weft_dut(port.parse().expect("port"));
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("feed: a benchmark; run it with `cargo bench -p weft-bgp --bench feed`");
        return;
    }
    let rest: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let n: usize = rest.first().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let mut duts: Vec<&str> = rest.iter().skip(1).map(|s| s.as_str()).collect();
    if duts.is_empty() {
        duts = vec!["weft", "bird", "frr", "gobgp"];
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "{:<8} {:>10} {:>12} {:>14} {:>16}",
        "dut", "prefixes", "seconds", "prefixes/s", "peak RSS MiB (B/prefix)"
    );
    for dut in duts {
        match rt.block_on(run_one(dut, n)) {
            Ok((secs, hwm_kib)) => println!(
                "{dut:<8} {n:>10} {secs:>12.2} {:>14.0} {:>10.1} ({:.0})",
                n as f64 / secs,
                hwm_kib as f64 / 1024.0,
                hwm_kib as f64 * 1024.0 / n as f64
            ),
            Err(e) => println!("{dut:<8} {n:>10} failed: {e}"),
        }
    }
}

/// weft as the DUT: passive towards the feeder and the sink, nothing else.
fn run_weft_dut(port: u16) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cfg = SpeakerConfig::new(DUT_AS, DUT_ID, Some(SocketAddr::new(LO, port)));
        let s = Speaker::new(cfg).await.expect("DUT speaker");
        for (addr, asn) in [(FEEDER, FEEDER_AS), (SINK, SINK_AS)] {
            s.add_peer(PeerConfig {
                passive: true,
                ..PeerConfig::new(IpAddr::V4(addr), asn)
            })
            .await
            .expect("peer");
        }
        std::future::pending::<()>().await;
    });
}

/// Starts the DUT on 127.0.0.1:`port`.
fn start_dut(dut: &str, port: u16) -> Result<Daemon, String> {
    let dir = tempfile::Builder::new()
        .prefix("weft-bench-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let d = dir.path().to_string_lossy().into_owned();
    let missing = |b: &str| format!("{b} not installed (scripts/install-deps)");
    let spawn = |bin: &std::path::Path, args: &[&str], env: &[(&str, &str)], dir| {
        Daemon::spawn_with_env("dut", bin, args, env, dir).map_err(|e| format!("{}: {e}", bin.display()))
    };
    match dut {
        "weft" => {
            let me = std::env::current_exe().map_err(|e| e.to_string())?;
            spawn(&me, &[], &[("WEFT_BGP_BENCH_DUT", &port.to_string())], dir)
        }
        "gobgp" => {
            let bin = find_binary("gobgpd").ok_or_else(|| missing("gobgpd"))?;
            let conf = gobgpd_config(
                DUT_AS,
                DUT_ID,
                port,
                &[
                    gobgpd_neighbor(FEEDER.into(), FEEDER_AS, None, ""),
                    gobgpd_neighbor(SINK.into(), SINK_AS, None, ""),
                ],
            );
            std::fs::write(dir.path().join("gobgpd.toml"), conf).map_err(|e| e.to_string())?;
            let api = format!("127.0.0.1:{}", free_port());
            spawn(
                &bin,
                &["-f", "gobgpd.toml", "--api-hosts", &api, "--pprof-disable", "-p"],
                &[],
                dir,
            )
        }
        "bird" => {
            let bin = find_binary("bird").ok_or_else(|| missing("bird2"))?;
            let peer = |name: &str, addr: Ipv4Addr, asn: u32| {
                format!(
                    "protocol bgp {name} {{\n  local 127.0.0.1 port {port} as {DUT_AS};\n  neighbor {addr} as {asn};\n  passive on;\n  multihop;\n  ipv4 {{ import all; export all; next hop self; }};\n}}\n"
                )
            };
            let conf = format!(
                "router id {DUT_ID};\nprotocol device {{ }}\n{}{}",
                peer("feeder", FEEDER, FEEDER_AS),
                peer("sink", SINK, SINK_AS)
            );
            std::fs::write(dir.path().join("bird.conf"), conf).map_err(|e| e.to_string())?;
            let sock = format!("{d}/bird.ctl");
            spawn(&bin, &["-c", "bird.conf", "-s", &sock, "-f"], &[], dir)
        }
        "frr" => {
            let bin = find_binary("bgpd").ok_or_else(|| missing("frr"))?;
            let conf = format!(
                "frr defaults traditional\nlog stdout informational\nrouter bgp {DUT_AS}\n bgp router-id {DUT_ID}\n no bgp ebgp-requires-policy\n neighbor {FEEDER} remote-as {FEEDER_AS}\n neighbor {FEEDER} passive\n neighbor {FEEDER} disable-connected-check\n neighbor {SINK} remote-as {SINK_AS}\n neighbor {SINK} passive\n neighbor {SINK} disable-connected-check\n"
            );
            std::fs::write(dir.path().join("bgpd.conf"), conf).map_err(|e| e.to_string())?;
            let (c, p, port_s) = (
                format!("{d}/bgpd.conf"),
                format!("{d}/bgpd.pid"),
                port.to_string(),
            );
            spawn(
                &bin,
                &[
                    "-f",
                    &c,
                    "-p",
                    &port_s,
                    "-l",
                    "127.0.0.1",
                    "-Z",
                    "-S",
                    "-i",
                    &p,
                    "--vty_socket",
                    &d,
                    "-P",
                    "0",
                ],
                &[],
                dir,
            )
        }
        other => Err(format!("unknown DUT {other} (weft, bird, frr, gobgp)")),
    }
}

/// Peak resident set (VmHWM) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn wait_established(s: &Speaker, what: &str) -> Result<(), String> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        if s.peers()
            .await
            .map_err(|e| e.to_string())?
            .iter()
            .any(|p| p.state == State::Established)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("{what}: no session with the DUT"))
}

/// One run: (seconds from the feeder's connect to all N at the sink, DUT peak RSS KiB).
async fn run_one(dut: &str, n: usize) -> Result<(f64, u64), String> {
    let port = free_port();
    let guard = start_dut(dut, port)?;
    let pid = guard.id();
    let peer = |local: Ipv4Addr| PeerConfig {
        port,
        local_address: Some(IpAddr::V4(local)),
        connect_retry_secs: 1,
        idle_hold_secs: 1,
        families: vec![weft_bgp::Family::Ipv4Unicast],
        ..PeerConfig::new(LO, DUT_AS)
    };
    let sink = Speaker::new(SpeakerConfig::new(SINK_AS, Ipv4Addr::new(10, 255, 1, 3), None))
        .await
        .map_err(|e| e.to_string())?;
    sink.add_peer(peer(SINK)).await.map_err(|e| e.to_string())?;
    wait_established(&sink, "sink").await?;

    let feeder = Speaker::new(SpeakerConfig::new(FEEDER_AS, Ipv4Addr::new(10, 255, 1, 1), None))
        .await
        .map_err(|e| e.to_string())?;
    // FRR and GoBGP refuse loopback next hops (martians); BIRD needs one it can resolve.
    let next_hop = matches!(dut, "frr" | "gobgp").then_some(Ipv4Addr::new(192, 0, 2, 1));
    // 10.0.0.0/24, 10.0.1.0/24, …: N distinct /24s from 10.0.0.0 on.
    for i in 0..n {
        let base = u32::from(Ipv4Addr::new(10, 0, 0, 0)) + ((i as u32) << 8);
        let px = Prefix4::new(Ipv4Addr::from(base), 24).map_err(|e| e.to_string())?;
        feeder
            .originate(Route::Ipv4(px), next_hop)
            .await
            .map_err(|e| e.to_string())?;
    }
    let start = Instant::now();
    feeder.add_peer(peer(FEEDER)).await.map_err(|e| e.to_string())?;
    loop {
        let got = sink
            .peers()
            .await
            .map_err(|e| e.to_string())?
            .first()
            .map_or(0, |p| p.received_routes);
        if got >= n {
            break;
        }
        if start.elapsed() > LIMIT {
            return Err(format!(
                "only {got} of {n} prefixes at the sink after {LIMIT:?}; DUT log tail:\n{}",
                guard.log()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let hwm = peak_rss_kib(pid);
    feeder.shutdown().await;
    sink.shutdown().await;
    drop(guard);
    Ok((secs, hwm))
}
