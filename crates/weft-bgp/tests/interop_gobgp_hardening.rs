//! Session hardening against GoBGP (Debian `gobgpd` 3.10): graceful restart with weft as
//! the *restarting* speaker and GoBGP as the helper (RFC 4724), and TCP MD5 signatures
//! (RFC 2385). gobgpd runs on 127.0.0.1 (passive, free high port, generated config in a
//! temp dir); weft connects from 127.0.0.2. Skipped with a message when gobgpd is not
//! installed.
//!
//! ```text
//!   weft Speaker (AS 65000) ──TCP (MD5?)──► gobgpd (AS 65001, GR helper, passive)
//!     shutdown_for_restart()                   keeps weft's routes as stale …
//!     new Speaker { restarted: true } ───────► … until weft's End-of-RIB, or drops them
//!                                                when the restart time runs out
//! ```

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod common;

use std::time::Duration;

use common::*;
use weft_bgp::State;

/// Our restart time in the GR tests: long enough for a restart under load, short enough
/// for the "does not come back" case.
const RESTART_SECS: u16 = 8;

/// gobgpd as GR helper for weft, with an MD5 password if given; `None` when not installed.
fn start_gobgp(password: Option<&str>) -> Option<GoBgp> {
    GoBgp::start(
        password,
        r#"  [neighbors.graceful-restart.config]
    enabled = true
    restart-time = 30
    helper-only = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
"#,
    )
}

impl GoBgp {
    async fn has_route(&self, prefix: &str) -> bool {
        self.json(&["global", "rib", "-a", "ipv4"])
            .await
            .is_some_and(|rib| rib.get(prefix).is_some())
    }
}

/// A fresh weft speaker advertises `route` to gobgpd, then goes down without a
/// NOTIFICATION, as a crashed or upgrading controller. Returns when it went down.
async fn advertise_then_go_down(gobgp: &GoBgp, route: &str) -> Result<std::time::Instant, String> {
    gobgp.ready().await?;
    let (weft, id) = gr_weft_with_routes(gobgp.bgp_port, GOBGP_AS, false, RESTART_SECS, &[route]).await;
    wait_state(&weft, id, State::Established).await?;
    eventually("the route in GoBGP", || async {
        gobgp.has_route(route).await.then_some(())
    })
    .await?;
    let down_at = std::time::Instant::now();
    weft.shutdown_for_restart().await;
    Ok(down_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gobgp_keeps_weft_routes_across_a_graceful_restart() {
    let Some(gobgp) = start_gobgp(None) else {
        return;
    };
    let route = "10.47.7.0/24";
    let result = async {
        advertise_then_go_down(&gobgp, route).await?;
        eventually("GoBGP to see the session drop", || async {
            (!gobgp.established().await).then_some(())
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        if !gobgp.has_route(route).await {
            return Err("GoBGP withdrew weft's route while weft was restarting".into());
        }

        // The restarted speaker comes back within the restart time (R and F bits set).
        let (weft2, id2) = gr_weft_with_routes(gobgp.bgp_port, GOBGP_AS, true, RESTART_SECS, &[route]).await;
        wait_state(&weft2, id2, State::Established).await?;
        // Past the old restart time the route is still there: the End-of-RIB turned the
        // stale route into a fresh one instead of the timer removing it.
        tokio::time::sleep(Duration::from_secs(u64::from(RESTART_SECS) + 2)).await;
        let kept = gobgp.has_route(route).await;
        weft2.shutdown().await;
        if !kept {
            return Err("the route is gone after weft came back".into());
        }
        Ok(())
    }
    .await;
    check_with_log(&gobgp.daemon, result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gobgp_drops_weft_routes_when_weft_does_not_come_back_in_time() {
    let Some(gobgp) = start_gobgp(None) else {
        return;
    };
    let route = "10.47.8.0/24";
    let result = async {
        let down_at = advertise_then_go_down(&gobgp, route).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        if !gobgp.has_route(route).await {
            return Err("GoBGP withdrew the route at once: graceful restart not in effect".into());
        }
        eventually("GoBGP to drop the stale route", || async {
            (!gobgp.has_route(route).await).then_some(())
        })
        .await?;
        let after = down_at.elapsed();
        if after < Duration::from_secs(u64::from(RESTART_SECS) - 1) {
            return Err(format!("the route went after {after:?}, before the restart time"));
        }
        Ok(())
    }
    .await;
    check_with_log(&gobgp.daemon, result);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gobgp_md5_session_forms_with_the_right_password_only() {
    let Some(gobgp) = start_gobgp(Some("weft-md5-s3cret")) else {
        return;
    };
    let result = async {
        gobgp.ready().await?;
        // Wrong password: GoBGP's kernel drops our SYNs; nothing forms.
        let wrong = weft_speaker(None).await;
        let id = wrong
            .add_peer(hardening_peer(
                gobgp.bgp_port,
                GOBGP_AS,
                Some(RESTART_SECS),
                Some("not-the-password"),
            ))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let st = wrong.peers().await.unwrap();
        wrong.shutdown().await;
        if st.iter().any(|p| p.id == id && p.state == State::Established) || gobgp.established().await {
            return Err(format!("a session formed with the wrong password: {st:?}"));
        }
        // The right one: established.
        let right = weft_speaker(None).await;
        let id = right
            .add_peer(hardening_peer(
                gobgp.bgp_port,
                GOBGP_AS,
                Some(RESTART_SECS),
                Some("weft-md5-s3cret"),
            ))
            .await
            .unwrap();
        let res = wait_state(&right, id, State::Established).await;
        right.shutdown().await;
        res
    }
    .await;
    check_with_log(&gobgp.daemon, result);
}
