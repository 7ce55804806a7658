//! Interop with FRR (Debian `frr` 8.4): FRR's `bgpd` alone (no zebra: `-Z`, no privilege
//! changes: `-S`), config and vty socket in a temp dir, passive on a free high port; weft
//! connects from 127.0.0.2 over eBGP (weft AS 65000, FRR AS 65003). Queries and route
//! changes go through `vtysh --vty_socket <dir> -d bgpd`. Skipped with a message when
//! FRR is not installed.
//!
//! ```text
//!   weft Speaker (AS 65000, 127.0.0.2) ──TCP──► bgpd (AS 65003, 127.0.0.1:<port>, passive)
//!                                                 ▲ vtysh: show bgp … json, network …
//! ```

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod common;

use common::frr::{FRR_AS, Frr};
use common::*;
use std::net::Ipv4Addr;
use weft_bgp::{
    Family, PeerId, Prefix4, Route, RouteDistinguisher, RouteKey, RouteTarget, Speaker, SpeakerEvent, State,
    Vpnv4Route,
};

async fn setup() -> Option<(Frr, Speaker, PeerId)> {
    let frr = Frr::start(&[], true)?;
    let weft = weft_speaker(None).await;
    let mut cfg = daemon_peer(frr.port, FRR_AS);
    cfg.local_address = Some(WEFT_LOCAL);
    let peer = weft.add_peer(cfg).await.unwrap();
    Some((frr, weft, peer))
}

async fn check(frr: &Frr, weft: &Speaker, result: Result<(), String>) {
    weft.shutdown().await;
    if let Err(e) = result {
        panic!("{e}\n--- bgpd log (tail) ---\n{}", frr.daemon.log());
    }
}

async fn up(frr: &Frr, weft: &Speaker, peer: PeerId) -> Result<(), String> {
    wait_state(weft, peer, State::Established).await?;
    eventually("FRR to see the session established", || async {
        frr.established().await.then_some(())
    })
    .await
}

fn p(s: &str) -> Prefix4 {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frr_session_and_ipv4_routes_both_ways_with_withdrawal() {
    let Some((frr, weft, peer)) = setup().await else {
        return;
    };
    let mut events = weft.subscribe();
    let result = async {
        up(&frr, &weft, peer).await?;
        let st = weft.peers().await.map_err(|e| e.to_string())?;
        let families = st[0]
            .negotiated
            .as_ref()
            .map(|n| n.families.clone())
            .unwrap_or_default();
        if families != vec![Family::Ipv4Unicast, Family::Vpnv4] {
            return Err(format!("negotiated {families:?}"));
        }

        // weft → FRR, next hop = the node hosting the endpoint (FRR, like GoBGP, treats a
        // loopback next hop as martian, so next-hop-self is covered by the loopback tests)
        weft.originate(
            Route::Ipv4(p("10.47.255.252/32")),
            Some(Ipv4Addr::new(172, 16, 0, 5)),
        )
        .await
        .map_err(|e| e.to_string())?;
        let path = eventually("10.47.255.252/32 in FRR", || async {
            frr.json("show bgp ipv4 unicast json").await?["routes"]
                .get("10.47.255.252/32")
                .cloned()
        })
        .await?;
        let text = path.to_string();
        if !text.contains("\"path\":\"65000\"") || !text.contains("172.16.0.5") {
            return Err(format!("FRR's route has unexpected attributes: {text}"));
        }

        // FRR → weft
        frr.configure(&["address-family ipv4 unicast", "network 10.4.0.0/24"])
            .await?;
        let attrs = wait_event(&mut events, "10.4.0.0/24 from FRR", |e| match e {
            SpeakerEvent::RouteReceived {
                route: Route::Ipv4(px),
                attrs,
                ..
            } if *px == p("10.4.0.0/24") => Some(attrs.clone()),
            _ => None,
        })
        .await?;
        if attrs.as_path.asns().collect::<Vec<_>>() != vec![FRR_AS]
            || attrs.next_hop != Some(Ipv4Addr::LOCALHOST)
        {
            return Err(format!("unexpected attributes from FRR: {attrs:?}"));
        }

        // withdrawals, both ways
        weft.withdraw(RouteKey::Ipv4(p("10.47.255.252/32")))
            .await
            .map_err(|e| e.to_string())?;
        eventually("10.47.255.252/32 gone from FRR", || async {
            let v = frr.json("show bgp ipv4 unicast json").await?;
            v["routes"].get("10.47.255.252/32").is_none().then_some(())
        })
        .await?;
        frr.configure(&["address-family ipv4 unicast", "no network 10.4.0.0/24"])
            .await?;
        wait_event(&mut events, "withdrawal of 10.4.0.0/24", |e| match e {
            SpeakerEvent::RouteWithdrawn {
                key: RouteKey::Ipv4(px),
                ..
            } if *px == p("10.4.0.0/24") => Some(()),
            _ => None,
        })
        .await?;
        Ok(())
    }
    .await;
    check(&frr, &weft, result).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frr_receives_vpnv4_with_rd_label_and_route_target() {
    let Some((frr, weft, peer)) = setup().await else {
        return;
    };
    let result = async {
        up(&frr, &weft, peer).await?;
        let route = Vpnv4Route {
            rd: RouteDistinguisher::As2 {
                asn: 64512,
                number: 7,
            },
            prefix: p("10.47.0.0/24"),
            label: 5001,
            route_targets: vec![RouteTarget::As2 {
                asn: 64512,
                value: 8_000_001,
            }],
        };
        weft.originate(Route::Vpnv4(route), Some(Ipv4Addr::new(172, 16, 0, 5)))
            .await
            .map_err(|e| e.to_string())?;
        let shown = eventually("the VPNv4 route in FRR", || async {
            let out = frr.vtysh(&["show bgp ipv4 vpn 10.47.0.0/24"]).await.ok()?;
            out.contains("64512:7").then_some(out)
        })
        .await?;
        for needle in ["RT:64512:8000001", "172.16.0.5", "65000", "Remote label: 5001"] {
            if !shown.contains(needle) {
                return Err(format!("FRR's VPNv4 route lacks `{needle}`:\n{shown}"));
            }
        }
        Ok(())
    }
    .await;
    check(&frr, &weft, result).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frr_notification_is_handled_and_the_session_recovers() {
    let Some((frr, weft, peer)) = setup().await else {
        return;
    };
    let mut events = weft.subscribe();
    let result = async {
        up(&frr, &weft, peer).await?;
        frr.vtysh(&["clear bgp 127.0.0.2"]).await?;
        let reason = wait_event(&mut events, "the session to go down", |e| match e {
            SpeakerEvent::PeerDown { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await?;
        if !reason.contains("Cease") {
            return Err(format!("expected a Cease NOTIFICATION, got: {reason}"));
        }
        up(&frr, &weft, peer).await
    }
    .await;
    check(&frr, &weft, result).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frr_answers_a_malformed_message_from_us_with_a_notification() {
    let Some((frr, weft, peer)) = setup().await else {
        return;
    };
    let mut events = weft.subscribe();
    let result = async {
        up(&frr, &weft, peer).await?;
        // a message of unknown type 9: RFC 4271 §6.1 Bad Message Type
        let mut bad = vec![0xff; 16];
        bad.extend_from_slice(&[0, 19, 9]);
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
        up(&frr, &weft, peer).await
    }
    .await;
    check(&frr, &weft, result).await;
}
