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

use std::time::Duration;

use common::bird::{BIRD_AS, Bird};
use common::*;
use weft_bgp::State;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bird_keeps_weft_routes_across_a_graceful_restart() {
    let Some(bird) = Bird::start(&["graceful restart on;".into()], false) else {
        return;
    };
    // A long restart time: whatever BIRD removes below, the End-of-RIB removed, not the timer.
    let restart: u16 = 120;
    let result = async {
        let before = sorted_owned(&["10.47.1.0/24", "10.47.2.0/24"]);
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
        let (weft2, id2) = gr_weft_with_routes(
            bird.port,
            BIRD_AS,
            true,
            restart,
            &["10.47.2.0/24", "10.47.3.0/24"],
        )
        .await;
        let res = async {
            wait_state(&weft2, id2, State::Established).await?;
            let want = sorted_owned(&["10.47.2.0/24", "10.47.3.0/24"]);
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
    check_with_log(&bird.daemon, result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bird_drops_weft_routes_when_weft_does_not_come_back_in_time() {
    let Some(bird) = Bird::start(&["graceful restart on;".into()], false) else {
        return;
    };
    // The helper runs the restart time the restarting speaker advertised (RFC 4724 §4.2).
    let restart: u16 = 6;
    let route = "10.47.8.0/24";
    let result = async {
        let down_at = advertise_then_go_down(&bird, restart, &[route]).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let held = bird.prefixes().await;
        if bird.helping().await != Some(true) || held != Some(sorted_owned(&[route])) {
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
    check_with_log(&bird.daemon, result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bird_md5_session_forms_with_the_right_password_only() {
    let secret = "weft-md5-s3cret";
    let Some(bird) = Bird::start(&[format!("password \"{secret}\";")], false) else {
        return;
    };
    let result = md5_session_forms_with_the_right_password_only(&bird, secret).await;
    check_with_log(&bird.daemon, result);
}
