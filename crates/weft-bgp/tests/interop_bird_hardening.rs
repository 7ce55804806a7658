//! Session hardening against BIRD (Debian `bird2` 2.0.12): graceful restart with weft as
//! the *restarting* speaker and BIRD as the helper (RFC 4724), and TCP MD5 signatures
//! (RFC 2385). `bird -c <conf> -s <sock> -f` in a temp dir, passive on a free high port;
//! weft connects from 127.0.0.2 over eBGP (weft AS 65000, BIRD AS 65002). Skipped with a
//! message when bird is not installed.
//!
//! ```text
//!   weft Speaker (AS 65000) ──TCP (MD5?)──► bird (AS 65002, graceful restart on, passive, multihop)
//!     shutdown_for_restart()                  keeps weft's routes as stale …
//!     new Speaker { restarted: true } ──────► … until weft's End-of-RIB, or drops them when
//!                                               the restart time weft advertised runs out
//! ```
//!
//! BIRD refuses a loopback neighbour as "directly connected", hence `multihop`; weft's next
//! hops do not resolve there, so the routes show as unreachable, which is fine: the tests
//! check presence and the stale mark.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use weft_bgp::{Family, PeerConfig, PeerId, Prefix4, Route, Speaker, SpeakerConfig, State};

const BIRD_AS: u32 = 65002;

struct Bird {
    daemon: Daemon,
    birdc: PathBuf,
    sock: String,
    port: u16,
}

impl Bird {
    /// bird with weft (127.0.0.2) as passive neighbor; `extra` lines go in the protocol.
    fn start(extra: &[String]) -> Option<Self> {
        let bird = require("bird", "bird2")?;
        let birdc = require("birdc", "bird2")?;
        let dir = tempfile::Builder::new()
            .prefix("weft-bird-hard-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let extra: String = extra.iter().map(|l| format!("  {l}\n")).collect();
        let conf = format!(
            r#"
router id 10.255.0.3;
log stderr all;
protocol device {{ }}
protocol bgp weft {{
  local 127.0.0.1 port {port} as {BIRD_AS};
  neighbor 127.0.0.2 as {WEFT_AS};
  passive on;
  multihop;
  hold time 9;
  keepalive time 3;
  connect retry time 1;
  error wait time 1, 2;
{extra}  ipv4 {{ import all; export none; }};
}}
"#
        );
        std::fs::write(dir.path().join("bird.conf"), conf).expect("write config");
        let sock = dir.path().join("bird.ctl").to_string_lossy().into_owned();
        let daemon =
            Daemon::spawn("bird", &bird, &["-c", "bird.conf", "-s", &sock, "-f"], dir).expect("bird starts");
        Some(Self {
            daemon,
            birdc,
            sock,
            port,
        })
    }

    async fn birdc(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-s", self.sock.as_str()];
        all.extend_from_slice(args);
        run(&self.birdc, &all).await
    }

    async fn ready(&self) -> Result<(), String> {
        eventually("bird's control socket", || async {
            self.birdc(&["show", "status"]).await.ok().map(|_| ())
        })
        .await
    }

    async fn established(&self) -> bool {
        self.birdc(&["show", "protocols", "weft"])
            .await
            .is_ok_and(|o| o.contains("Established"))
    }

    /// The sorted prefixes BIRD learned from weft, or `None` if bird did not answer.
    async fn prefixes(&self) -> Option<Vec<String>> {
        let out = self.birdc(&["show", "route", "protocol", "weft"]).await.ok()?;
        let mut v: Vec<String> = out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| w.contains('/') && w.parse::<Prefix4>().is_ok())
            .map(str::to_string)
            .collect();
        v.sort();
        Some(v)
    }

    /// Whether BIRD holds weft's routes as stale: it runs the neighbor's restart timer
    /// (`Neighbor graceful restart active`). BIRD 2.0 does not mark stale routes in
    /// `show route`; the routes themselves are checked with [`Bird::prefixes`].
    async fn helping(&self) -> Option<bool> {
        let out = self.birdc(&["show", "protocols", "all", "weft"]).await.ok()?;
        Some(out.contains("Neighbor graceful restart active"))
    }
}

/// Panics with bird's log on failure.
fn check(bird: &Bird, result: Result<(), String>) {
    if let Err(e) = result {
        panic!("{e}\n--- bird log (tail) ---\n{}", bird.daemon.log());
    }
}

fn weft_cfg(restarted: bool) -> SpeakerConfig {
    let mut cfg = SpeakerConfig::new(WEFT_AS, WEFT_ID, Some(SocketAddr::new(LO, 0)));
    cfg.restarted = restarted;
    cfg.forwarding_preserved = true;
    cfg
}

fn peer(bird: &Bird, restart_secs: Option<u16>, password: Option<&str>) -> PeerConfig {
    PeerConfig {
        local_address: Some(WEFT_LOCAL),
        graceful_restart_secs: restart_secs,
        password: password.map(str::to_string),
        families: vec![Family::Ipv4Unicast],
        ..daemon_peer(bird.port, BIRD_AS)
    }
}

/// A GR-capable weft speaker originating `prefixes` (next hop 172.16.0.5), peered with BIRD.
async fn weft_with_routes(
    bird: &Bird,
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
    let id = weft.add_peer(peer(bird, Some(restart_secs), None)).await.unwrap();
    (weft, id)
}

fn owned(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// A fresh weft speaker advertises `prefixes` to BIRD, then goes down without a
/// NOTIFICATION; returns when it went down, once BIRD saw the session drop.
async fn advertise_then_go_down(
    bird: &Bird,
    restart_secs: u16,
    prefixes: &[&str],
) -> Result<Instant, String> {
    bird.ready().await?;
    let (weft, id) = weft_with_routes(bird, false, restart_secs, prefixes).await;
    wait_state(&weft, id, State::Established).await?;
    let want = owned(prefixes);
    eventually("weft's routes in BIRD", || async {
        (bird.prefixes().await? == want).then_some(())
    })
    .await?;
    let down_at = Instant::now();
    weft.shutdown_for_restart().await;
    eventually("BIRD to see the session drop", || async {
        (!bird.established().await).then_some(())
    })
    .await?;
    Ok(down_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bird_keeps_weft_routes_across_a_graceful_restart() {
    let Some(bird) = Bird::start(&["graceful restart on;".into()]) else {
        return;
    };
    // A long restart time: whatever BIRD removes below, the End-of-RIB removed, not the timer.
    let restart: u16 = 120;
    let result = async {
        let before = owned(&["10.47.1.0/24", "10.47.2.0/24"]);
        advertise_then_go_down(&bird, restart, &["10.47.1.0/24", "10.47.2.0/24"]).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        if bird.helping().await != Some(true) {
            return Err("BIRD is not in graceful-restart helper mode for weft".into());
        }
        let held = bird.prefixes().await;
        if held.as_ref() != Some(&before) {
            return Err(format!("BIRD holds {held:?} while weft restarts, not {before:?}"));
        }

        // The restarted speaker (R and F bits) advertises a different set: one route kept,
        // one gone, one new.
        let (weft2, id2) = weft_with_routes(&bird, true, restart, &["10.47.2.0/24", "10.47.3.0/24"]).await;
        let res = async {
            wait_state(&weft2, id2, State::Established).await?;
            let want = owned(&["10.47.2.0/24", "10.47.3.0/24"]);
            eventually("BIRD to hold exactly the restarted speaker's routes", || async {
                (bird.prefixes().await? == want).then_some(())
            })
            .await?;
            // BIRD's view of the restarted session: weft's restart time, Restart State
            // ("Restart recovery") and Forwarding State ("AF preserved") bits.
            let proto = bird.birdc(&["show", "protocols", "all", "weft"]).await?;
            let theirs = proto
                .split("Neighbor capabilities")
                .nth(1)
                .and_then(|t| t.split("Session:").next())
                .unwrap_or_default();
            for needle in [
                format!("Restart time: {restart}"),
                "Restart recovery".into(),
                "AF preserved: ipv4".into(),
            ] {
                if !theirs.contains(&needle) {
                    return Err(format!(
                        "BIRD's view of weft's capabilities lacks `{needle}`:\n{proto}"
                    ));
                }
            }
            if bird.helping().await != Some(false) {
                return Err("BIRD still runs the restart timer after weft's End-of-RIB".into());
            }
            Ok(())
        }
        .await;
        weft2.shutdown().await;
        res
    }
    .await;
    check(&bird, result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bird_drops_weft_routes_when_weft_does_not_come_back_in_time() {
    let Some(bird) = Bird::start(&["graceful restart on;".into()]) else {
        return;
    };
    // The helper runs the restart time the restarting speaker advertised (RFC 4724 §4.2).
    let restart: u16 = 6;
    let route = "10.47.8.0/24";
    let result = async {
        let down_at = advertise_then_go_down(&bird, restart, &[route]).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let held = bird.prefixes().await;
        if bird.helping().await != Some(true) || held != Some(owned(&[route])) {
            return Err(format!(
                "BIRD did not keep the route as stale ({held:?}): graceful restart not in effect"
            ));
        }
        eventually("BIRD to drop the stale route", || async {
            bird.prefixes().await?.is_empty().then_some(())
        })
        .await?;
        let after = down_at.elapsed();
        if after < Duration::from_secs(u64::from(restart) - 1) {
            return Err(format!("the route went after {after:?}, before the restart time"));
        }
        Ok(())
    }
    .await;
    check(&bird, result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bird_md5_session_forms_with_the_right_password_only() {
    let secret = "weft-md5-s3cret";
    let Some(bird) = Bird::start(&[format!("password \"{secret}\";")]) else {
        return;
    };
    let result = async {
        bird.ready().await?;
        for (what, password) in [
            ("a wrong password", Some("not-the-password")),
            ("no password", None),
        ] {
            let weft = weft_speaker(None).await;
            let id = weft.add_peer(peer(&bird, None, password)).await.unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
            let st = weft.peers().await.unwrap();
            let bird_up = bird.established().await;
            weft.shutdown().await;
            if bird_up || st.iter().any(|p| p.id == id && p.state == State::Established) {
                return Err(format!("a session formed with {what}: {st:?}"));
            }
        }
        let weft = weft_speaker(None).await;
        let id = weft.add_peer(peer(&bird, None, Some(secret))).await.unwrap();
        let res = async {
            wait_state(&weft, id, State::Established).await?;
            eventually("BIRD to see the session established", || async {
                bird.established().await.then_some(())
            })
            .await
        }
        .await;
        weft.shutdown().await;
        res
    }
    .await;
    check(&bird, result);
}
