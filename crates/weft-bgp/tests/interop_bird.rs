//! Interop with BIRD (Debian `bird2` 2.0.12): `bird -c <conf> -s <sock> -f` in a temp dir,
//! passive on a free high port; weft connects from 127.0.0.2 over eBGP (weft AS 65000,
//! BIRD AS 65002). IPv4 unicast both ways, withdrawal, NOTIFICATION handling. Skipped with
//! a message when bird is not installed.
//!
//! ```text
//!   weft Speaker (AS 65000, 127.0.0.2) ──TCP──► bird (AS 65002, 127.0.0.1:<port>, passive, multihop)
//!                                                 static s4: 10.3.0.0/24 (enabled/disabled by birdc)
//! ```
//!
//! BIRD refuses a loopback neighbour as "directly connected", hence `multihop`; next hops are
//! then resolved recursively, so BIRD's own table shows weft's routes as unreachable, which
//! is fine: the test checks that they arrive with the right attributes.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod common;

use common::bird::{BIRD_AS, Bird};
use common::*;
use std::net::Ipv4Addr;
use weft_bgp::{Family, PeerId, Prefix4, Route, RouteKey, Speaker, SpeakerEvent, State};

async fn setup() -> Option<(Bird, Speaker, PeerId)> {
    let bird = Bird::start(&[], true)?;
    let weft = weft_speaker(None).await;
    let mut cfg = daemon_peer(bird.port, BIRD_AS);
    cfg.local_address = Some(WEFT_LOCAL);
    cfg.families = vec![Family::Ipv4Unicast];
    let peer = weft.add_peer(cfg).await.unwrap();
    Some((bird, weft, peer))
}

async fn check(bird: &Bird, weft: &Speaker, result: Result<(), String>) {
    weft.shutdown().await;
    if let Err(e) = result {
        panic!("{e}\n--- bird log (tail) ---\n{}", bird.daemon.log());
    }
}

async fn up(bird: &Bird, weft: &Speaker, peer: PeerId) -> Result<(), String> {
    wait_state(weft, peer, State::Established).await?;
    eventually("BIRD to see the session established", || async {
        bird.established().await.then_some(())
    })
    .await
}

fn p(s: &str) -> Prefix4 {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bird_session_and_ipv4_routes_both_ways_with_withdrawal() {
    let Some((bird, weft, peer)) = setup().await else {
        return;
    };
    let mut events = weft.subscribe();
    let result = async {
        up(&bird, &weft, peer).await?;

        // weft → BIRD, next-hop-self (127.0.0.2)
        weft.originate(Route::Ipv4(p("10.47.255.252/32")), None)
            .await
            .map_err(|e| e.to_string())?;
        let shown = eventually("10.47.255.252/32 in BIRD", || bird.route("10.47.255.252/32")).await?;
        for needle in ["BGP.as_path: 65000", "BGP.next_hop: 127.0.0.2", "BGP.origin: IGP"] {
            if !shown.contains(needle) {
                return Err(format!("BIRD's route lacks `{needle}`:\n{shown}"));
            }
        }

        // BIRD → weft
        bird.birdc(&["enable", "s4"]).await?;
        let attrs = wait_event(&mut events, "10.3.0.0/24 from BIRD", |e| match e {
            SpeakerEvent::RouteReceived {
                route: Route::Ipv4(px),
                attrs,
                ..
            } if *px == p("10.3.0.0/24") => Some(attrs.clone()),
            _ => None,
        })
        .await?;
        if attrs.as_path.asns().collect::<Vec<_>>() != vec![BIRD_AS]
            || attrs.next_hop != Some(Ipv4Addr::LOCALHOST)
        {
            return Err(format!("unexpected attributes from BIRD: {attrs:?}"));
        }

        // withdrawals, both ways
        weft.withdraw(RouteKey::Ipv4(p("10.47.255.252/32")))
            .await
            .map_err(|e| e.to_string())?;
        eventually("10.47.255.252/32 gone from BIRD", || async {
            bird.route("10.47.255.252/32").await.is_none().then_some(())
        })
        .await?;
        bird.birdc(&["disable", "s4"]).await?;
        wait_event(&mut events, "withdrawal of 10.3.0.0/24", |e| match e {
            SpeakerEvent::RouteWithdrawn {
                key: RouteKey::Ipv4(px),
                ..
            } if *px == p("10.3.0.0/24") => Some(()),
            _ => None,
        })
        .await?;
        Ok(())
    }
    .await;
    check(&bird, &weft, result).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bird_notification_is_handled_and_the_session_recovers() {
    let Some((bird, weft, peer)) = setup().await else {
        return;
    };
    let mut events = weft.subscribe();
    let result = async {
        up(&bird, &weft, peer).await?;
        bird.birdc(&["restart", "weft"]).await?;
        let reason = wait_event(&mut events, "the session to go down", |e| match e {
            SpeakerEvent::PeerDown { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await?;
        if !reason.contains("Cease") {
            return Err(format!("expected a Cease NOTIFICATION, got: {reason}"));
        }
        up(&bird, &weft, peer).await
    }
    .await;
    check(&bird, &weft, result).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bird_answers_a_malformed_message_from_us_with_a_notification() {
    let Some((bird, weft, peer)) = setup().await else {
        return;
    };
    let mut events = weft.subscribe();
    let result = async {
        up(&bird, &weft, peer).await?;
        // a KEEPALIVE with a broken marker: RFC 4271 §6.1 Connection Not Synchronized
        let mut bad = vec![0xff; 16];
        bad[7] = 0;
        bad.extend_from_slice(&[0, 19, 4]);
        weft.send_raw(peer, bad).await.map_err(|e| e.to_string())?;
        let reason = wait_event(&mut events, "the session to go down", |e| match e {
            SpeakerEvent::PeerDown { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await?;
        if !reason.contains("Message Header Error") {
            return Err(format!(
                "expected a Message Header Error NOTIFICATION, got: {reason}"
            ));
        }
        up(&bird, &weft, peer).await
    }
    .await;
    check(&bird, &weft, result).await;
}
