//! Session hardening against FRR (Debian `frr` 8.4): graceful restart with weft as the
//! *restarting* speaker and FRR's `bgpd` as the helper (RFC 4724), and TCP MD5 signatures
//! (RFC 2385). bgpd runs alone (no zebra: `-Z`, no privilege changes: `-S`), config and vty
//! socket in a temp dir, passive on a free high port; weft connects from 127.0.0.2 over eBGP
//! (weft AS 65000, FRR AS 65003). Skipped with a message when FRR is not installed.
//!
//! ```text
//!   weft Speaker (AS 65000) ──TCP (MD5?)──► bgpd (AS 65003, bgp graceful-restart, passive)
//!     shutdown_for_restart()                  keeps weft's routes as stale …
//!     new Speaker { restarted: true } ──────► … until weft's End-of-RIB, or drops them when
//!                                               the restart time weft advertised runs out
//! ```

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use weft_bgp::{Family, PeerConfig, PeerId, Prefix4, Route, Speaker, SpeakerConfig, State};

const FRR_AS: u32 = 65003;

struct Frr {
    daemon: Daemon,
    vtysh: PathBuf,
    dir: String,
    port: u16,
}

impl Frr {
    /// bgpd with weft (127.0.0.2) as passive neighbor; `extra` lines go in `router bgp`
    /// before the address families.
    fn start(extra: &[String]) -> Option<Self> {
        let bgpd = require("bgpd", "frr")?;
        let vtysh = require("vtysh", "frr")?;
        let dir = tempfile::Builder::new()
            .prefix("weft-frr-hard-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let extra: String = extra.iter().map(|l| format!(" {l}\n")).collect();
        let conf = format!(
            r#"frr defaults traditional
hostname weft-frr
log stdout debugging
router bgp {FRR_AS}
 bgp router-id 10.255.0.4
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor 127.0.0.2 remote-as {WEFT_AS}
 neighbor 127.0.0.2 passive
 neighbor 127.0.0.2 timers 3 9
 neighbor 127.0.0.2 timers connect 1
 neighbor 127.0.0.2 disable-connected-check
{extra} address-family ipv4 unicast
  neighbor 127.0.0.2 activate
 exit-address-family
"#
        );
        let path = dir.path().to_string_lossy().into_owned();
        std::fs::write(dir.path().join("bgpd.conf"), conf).expect("write config");
        let conf_path = format!("{path}/bgpd.conf");
        let pid_path = format!("{path}/bgpd.pid");
        let port_s = port.to_string();
        let args = [
            "-f",
            &conf_path,
            "-p",
            &port_s,
            "-l",
            "127.0.0.1",
            "-Z",
            "-S",
            "-i",
            &pid_path,
            "--vty_socket",
            &path,
            "-P",
            "0",
            "--log",
            "stdout",
        ];
        let daemon = Daemon::spawn("bgpd", &bgpd, &args, dir).expect("bgpd starts");
        Some(Self {
            daemon,
            vtysh,
            dir: path,
            port,
        })
    }

    async fn vtysh(&self, commands: &[&str]) -> Result<String, String> {
        let mut args = vec!["--vty_socket", self.dir.as_str(), "-d", "bgpd"];
        for c in commands {
            args.push("-c");
            args.push(c);
        }
        run(&self.vtysh, &args).await
    }

    async fn json(&self, command: &str) -> Option<Value> {
        serde_json::from_str(&self.vtysh(&[command]).await.ok()?).ok()
    }

    async fn ready(&self) -> Result<(), String> {
        eventually("bgpd's vty", || async {
            self.json("show bgp summary json").await.map(|_| ())
        })
        .await
    }

    async fn established(&self) -> bool {
        self.json("show bgp summary json")
            .await
            .is_some_and(|v| v["ipv4Unicast"]["peers"]["127.0.0.2"]["state"] == "Established")
    }

    /// FRR's IPv4 unicast table: prefix → its paths, or `None` if bgpd did not answer.
    async fn routes(&self) -> Option<serde_json::Map<String, Value>> {
        self.json("show bgp ipv4 unicast json").await?["routes"]
            .as_object()
            .cloned()
    }

    /// The sorted prefixes in FRR's IPv4 unicast table.
    async fn prefixes(&self) -> Option<Vec<String>> {
        let mut v: Vec<String> = self.routes().await?.keys().cloned().collect();
        v.sort();
        Some(v)
    }

    /// Whether FRR marks its path for `prefix` stale; `None` when it has no such route.
    async fn stale(&self, prefix: &str) -> Option<bool> {
        let routes = self.routes().await?;
        let paths = routes.get(prefix)?.as_array()?.clone();
        Some(
            paths
                .iter()
                .any(|p| p.get("stale").and_then(Value::as_bool).unwrap_or(false)),
        )
    }
}

/// Panics with bgpd's log on failure.
fn check(frr: &Frr, result: Result<(), String>) {
    if let Err(e) = result {
        panic!("{e}\n--- bgpd log (tail) ---\n{}", frr.daemon.log());
    }
}

fn gr_frr() -> Option<Frr> {
    Frr::start(&[
        "bgp graceful-restart".into(),
        "bgp graceful-restart preserve-fw-state".into(),
    ])
}

fn weft_cfg(restarted: bool) -> SpeakerConfig {
    let mut cfg = SpeakerConfig::new(WEFT_AS, WEFT_ID, Some(SocketAddr::new(LO, 0)));
    cfg.restarted = restarted;
    cfg.forwarding_preserved = true;
    cfg
}

fn peer(frr: &Frr, restart_secs: Option<u16>, password: Option<&str>) -> PeerConfig {
    PeerConfig {
        local_address: Some(WEFT_LOCAL),
        graceful_restart_secs: restart_secs,
        password: password.map(str::to_string),
        families: vec![Family::Ipv4Unicast],
        ..daemon_peer(frr.port, FRR_AS)
    }
}

/// A GR-capable weft speaker originating `prefixes` (next hop 172.16.0.5), peered with FRR.
async fn weft_with_routes(
    frr: &Frr,
    restarted: bool,
    restart_secs: u16,
    prefixes: &[&str],
) -> (Speaker, PeerId) {
    let weft = Speaker::new(weft_cfg(restarted)).await.unwrap();
    for p in prefixes {
        let px: Prefix4 = p.parse().unwrap();
        weft.originate(Route::Ipv4(px), Some(Ipv4Addr::new(172, 16, 0, 5)))
            .await
            .unwrap();
    }
    let id = weft.add_peer(peer(frr, Some(restart_secs), None)).await.unwrap();
    (weft, id)
}

fn owned(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// A fresh weft speaker advertises `prefixes` to FRR, then goes down without a
/// NOTIFICATION; returns when it went down, once FRR saw the session drop.
async fn advertise_then_go_down(frr: &Frr, restart_secs: u16, prefixes: &[&str]) -> Result<Instant, String> {
    frr.ready().await?;
    let (weft, id) = weft_with_routes(frr, false, restart_secs, prefixes).await;
    wait_state(&weft, id, State::Established).await?;
    let want = owned(prefixes);
    eventually("weft's routes in FRR", || async {
        (frr.prefixes().await? == want).then_some(())
    })
    .await?;
    let down_at = Instant::now();
    weft.shutdown_for_restart().await;
    eventually("FRR to see the session drop", || async {
        (!frr.established().await).then_some(())
    })
    .await?;
    Ok(down_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frr_keeps_weft_routes_across_a_graceful_restart() {
    let Some(frr) = gr_frr() else {
        return;
    };
    // A long restart time: whatever FRR removes below, the End-of-RIB removed, not the timer.
    let restart: u16 = 120;
    let result = async {
        advertise_then_go_down(&frr, restart, &["10.47.1.0/24", "10.47.2.0/24"]).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        for p in ["10.47.1.0/24", "10.47.2.0/24"] {
            match frr.stale(p).await {
                Some(true) => {}
                Some(false) => return Err(format!("{p} is in FRR but not marked stale")),
                None => return Err(format!("FRR dropped {p} while weft was restarting")),
            }
        }

        // The restarted speaker (R and F bits) advertises a different set: one route kept,
        // one gone, one new.
        let (weft2, id2) = weft_with_routes(&frr, true, restart, &["10.47.2.0/24", "10.47.3.0/24"]).await;
        let res = async {
            wait_state(&weft2, id2, State::Established).await?;
            let want = owned(&["10.47.2.0/24", "10.47.3.0/24"]);
            eventually("FRR to hold exactly the restarted speaker's routes", || async {
                (frr.prefixes().await? == want).then_some(())
            })
            .await?;
            for p in &want {
                if frr.stale(p).await != Some(false) {
                    return Err(format!("{p} still stale after weft's End-of-RIB"));
                }
            }
            // FRR's view of the restarted session: Restart State and Forwarding State bits,
            // weft's restart time, and weft's End-of-RIB received.
            let n = frr
                .json("show bgp neighbors 127.0.0.2 json")
                .await
                .ok_or("no neighbor json from FRR")?;
            let gr = &n["127.0.0.2"]["gracefulRestartInfo"];
            if gr["rBit"] != true
                || gr["ipv4Unicast"]["fBit"] != true
                || gr["timers"]["receivedRestartTimer"] != restart
                || gr["ipv4Unicast"]["endOfRibStatus"]["endOfRibRecv"] != true
            {
                return Err(format!("FRR's graceful-restart view of weft: {gr}"));
            }
            Ok(())
        }
        .await;
        weft2.shutdown().await;
        res
    }
    .await;
    check(&frr, result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frr_drops_weft_routes_when_weft_does_not_come_back_in_time() {
    let Some(frr) = gr_frr() else {
        return;
    };
    // The helper runs the restart time the restarting speaker advertised (RFC 4724 §4.2).
    let restart: u16 = 6;
    let route = "10.47.8.0/24";
    let result = async {
        let down_at = advertise_then_go_down(&frr, restart, &[route]).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        if frr.stale(route).await != Some(true) {
            return Err("FRR did not keep the route as stale: graceful restart not in effect".into());
        }
        eventually("FRR to drop the stale route", || async {
            frr.stale(route).await.is_none().then_some(())
        })
        .await?;
        let after = down_at.elapsed();
        if after < Duration::from_secs(u64::from(restart) - 1) {
            return Err(format!("the route went after {after:?}, before the restart time"));
        }
        Ok(())
    }
    .await;
    check(&frr, result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frr_md5_session_forms_with_the_right_password_only() {
    let secret = "weft-md5-s3cret";
    let Some(frr) = Frr::start(&[format!("neighbor 127.0.0.2 password {secret}")]) else {
        return;
    };
    let result = async {
        frr.ready().await?;
        for (what, password) in [
            ("a wrong password", Some("not-the-password")),
            ("no password", None),
        ] {
            let weft = weft_speaker(None).await;
            let id = weft.add_peer(peer(&frr, None, password)).await.unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
            let st = weft.peers().await.unwrap();
            let frr_up = frr.established().await;
            weft.shutdown().await;
            if frr_up || st.iter().any(|p| p.id == id && p.state == State::Established) {
                return Err(format!("a session formed with {what}: {st:?}"));
            }
        }
        let weft = weft_speaker(None).await;
        let id = weft.add_peer(peer(&frr, None, Some(secret))).await.unwrap();
        let res = async {
            wait_state(&weft, id, State::Established).await?;
            eventually("FRR to see the session established", || async {
                frr.established().await.then_some(())
            })
            .await
        }
        .await;
        weft.shutdown().await;
        res
    }
    .await;
    check(&frr, result);
}
