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

use std::time::Duration;

use common::frr::{FRR_AS, Frr};
use common::*;
use weft_bgp::State;

fn gr_frr() -> Option<Frr> {
    Frr::start(
        &[
            "bgp graceful-restart".into(),
            "bgp graceful-restart preserve-fw-state".into(),
        ],
        false,
    )
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
        let (weft2, id2) =
            gr_weft_with_routes(frr.port, FRR_AS, true, restart, &["10.47.2.0/24", "10.47.3.0/24"]).await;
        let res = async {
            wait_state(&weft2, id2, State::Established).await?;
            let want = sorted_owned(&["10.47.2.0/24", "10.47.3.0/24"]);
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
    check_with_log(&frr.daemon, result);
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
    check_with_log(&frr.daemon, result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frr_md5_session_forms_with_the_right_password_only() {
    let secret = "weft-md5-s3cret";
    let Some(frr) = Frr::start(&[format!("neighbor 127.0.0.2 password {secret}")], false) else {
        return;
    };
    let result = md5_session_forms_with_the_right_password_only(&frr, secret).await;
    check_with_log(&frr.daemon, result);
}
