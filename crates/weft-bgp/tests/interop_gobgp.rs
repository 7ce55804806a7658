//! Interop with GoBGP (Debian `gobgpd` 3.10): a real gobgpd on 127.0.0.1 with a generated
//! config in a temp dir, passive on a free high port; weft connects to it over eBGP
//! (weft AS 65000, GoBGP AS 65001). Skipped with a message when gobgpd is not installed.
//!
//! ```text
//!   weft Speaker (AS 65000, 10.255.0.1) ──TCP──► gobgpd (AS 65001, 10.255.0.2, passive)
//!        ▲ events                                     ▲ `gobgp -u 127.0.0.1 -p <api>` CLI
//!        └── test asserts                             └── test adds/deletes routes, reads RIB
//! ```

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

mod common;

use std::net::Ipv4Addr;

use common::*;
use serde_json::Value;
use weft_bgp::{
    Family, PeerId, Prefix4, Route, RouteDistinguisher, RouteKey, RouteTarget, Speaker, SpeakerEvent, State,
    Vpnv4Route,
};

impl GoBgp {
    /// GoBGP's Loc-RIB for `family` ("ipv4" or "vpnv4"), keyed by destination.
    async fn rib(&self, family: &str) -> Option<Value> {
        self.json(&["global", "rib", "-a", family]).await
    }
}

/// Starts gobgpd and a weft speaker peered with it; `None` when skipped.
async fn setup(hook: Option<fn(&[u8])>) -> Option<(GoBgp, Speaker, PeerId)> {
    let gobgp = GoBgp::start(
        None,
        r#"  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "l3vpn-ipv4-unicast"
"#,
    )?;
    let weft = weft_speaker(hook).await;
    let mut cfg = daemon_peer(gobgp.bgp_port, GOBGP_AS);
    cfg.local_address = Some(WEFT_LOCAL);
    let peer = weft.add_peer(cfg).await.unwrap();
    Some((gobgp, weft, peer))
}

/// Runs a scenario; on failure, shows gobgpd's log.
async fn check(gobgp: &GoBgp, weft: &Speaker, result: Result<(), String>) {
    weft.shutdown().await;
    if let Err(e) = result {
        panic!("{e}\n--- gobgpd log (tail) ---\n{}", gobgp.daemon.log());
    }
}

async fn up(gobgp: &GoBgp, weft: &Speaker, peer: PeerId) -> Result<(), String> {
    gobgp.ready().await?;
    wait_state(weft, peer, State::Established).await?;
    eventually("gobgpd to see the session established", || async {
        gobgp.established().await.then_some(())
    })
    .await
}

fn p(s: &str) -> Prefix4 {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gobgp_session_and_ipv4_routes_both_ways_with_withdrawal() {
    let Some((gobgp, weft, peer)) = setup(None).await else {
        return;
    };
    let mut events = weft.subscribe();
    let result = async {
        up(&gobgp, &weft, peer).await?;
        let st = weft.peers().await.map_err(|e| e.to_string())?;
        let n = st[0].negotiated.clone().ok_or("no negotiation")?;
        if n.families != vec![Family::Ipv4Unicast, Family::Vpnv4] || !n.asn4 || n.hold_secs != 9 {
            return Err(format!("unexpected negotiation {n:?}"));
        }

        // weft → GoBGP, next hop = the node hosting the endpoint. (Next-hop-self would be
        // a loopback address here, and GoBGP rejects loopback next hops; it is covered by
        // the loopback speaker tests.)
        weft.originate(
            Route::Ipv4(p("10.47.255.252/32")),
            Some(Ipv4Addr::new(172, 16, 0, 5)),
        )
        .await
        .map_err(|e| e.to_string())?;
        let path = eventually("10.47.255.252/32 in GoBGP's RIB", || async {
            gobgp.rib("ipv4").await?.get("10.47.255.252/32").cloned()
        })
        .await?;
        let text = path.to_string();
        if !text.contains("65000") || !text.contains("\"nexthop\":\"172.16.0.5\"") {
            return Err(format!("GoBGP has the route with unexpected attributes: {text}"));
        }

        // GoBGP → weft
        gobgp
            .cli(&[
                "global",
                "rib",
                "add",
                "10.2.0.0/24",
                "-a",
                "ipv4",
                "community",
                "65001:7",
            ])
            .await?;
        let attrs = wait_event(&mut events, "10.2.0.0/24 from GoBGP", |e| match e {
            SpeakerEvent::RouteReceived {
                route: Route::Ipv4(px),
                attrs,
                ..
            } if *px == p("10.2.0.0/24") => Some(attrs.clone()),
            _ => None,
        })
        .await?;
        if attrs.as_path.asns().collect::<Vec<_>>() != vec![GOBGP_AS]
            || attrs.next_hop != Some(Ipv4Addr::LOCALHOST)
            || attrs.communities != vec![(65001 << 16) | 7]
        {
            return Err(format!("unexpected attributes from GoBGP: {attrs:?}"));
        }

        // withdrawals, both ways
        weft.withdraw(RouteKey::Ipv4(p("10.47.255.252/32")))
            .await
            .map_err(|e| e.to_string())?;
        eventually("10.47.255.252/32 gone from GoBGP", || async {
            gobgp
                .rib("ipv4")
                .await
                .filter(|rib| rib.get("10.47.255.252/32").is_none())
                .map(|_| ())
        })
        .await?;
        gobgp
            .cli(&["global", "rib", "del", "10.2.0.0/24", "-a", "ipv4"])
            .await?;
        wait_event(&mut events, "withdrawal of 10.2.0.0/24", |e| match e {
            SpeakerEvent::RouteWithdrawn {
                key: RouteKey::Ipv4(px),
                ..
            } if *px == p("10.2.0.0/24") => Some(()),
            _ => None,
        })
        .await?;
        Ok(())
    }
    .await;
    check(&gobgp, &weft, result).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gobgp_vpnv4_routes_with_rd_label_and_route_target_both_ways() {
    let Some((gobgp, weft, peer)) = setup(None).await else {
        return;
    };
    let mut events = weft.subscribe();
    let result = async {
        up(&gobgp, &weft, peer).await?;
        // weft → GoBGP: a VN route, label = VNI, TF-style auto route target
        let ours = Vpnv4Route {
            rd: RouteDistinguisher::Ipv4 {
                ip: Ipv4Addr::new(10, 255, 0, 1),
                number: 7,
            },
            prefix: p("10.47.0.0/24"),
            label: 5001,
            route_targets: vec![RouteTarget::As2 {
                asn: 64512,
                value: 8_000_001,
            }],
        };
        weft.originate(Route::Vpnv4(ours), Some(Ipv4Addr::new(172, 16, 0, 5)))
            .await
            .map_err(|e| e.to_string())?;
        let path = eventually("the VPNv4 route in GoBGP's RIB", || async {
            gobgp
                .rib("vpnv4")
                .await?
                .get("10.255.0.1:7:10.47.0.0/24")
                .cloned()
        })
        .await?;
        let text = path.to_string();
        // the explicit next hop (the node hosting the endpoint) is kept on eBGP too
        for needle in ["\"labels\":[5001]", "64512:8000001", "\"nexthop\":\"172.16.0.5\""] {
            if !text.contains(needle) {
                return Err(format!("GoBGP's VPNv4 path lacks {needle}: {text}"));
            }
        }

        // GoBGP → weft
        gobgp
            .cli(&[
                "global",
                "rib",
                "-a",
                "vpnv4",
                "add",
                "10.1.0.0/24",
                "label",
                "100",
                "rd",
                "65001:10",
                "rt",
                "65001:100",
                "nexthop",
                "10.0.0.9",
            ])
            .await?;
        let got = wait_event(&mut events, "the VPNv4 route from GoBGP", |e| match e {
            SpeakerEvent::RouteReceived {
                route: Route::Vpnv4(v),
                ..
            } => Some(v.clone()),
            _ => None,
        })
        .await?;
        let want = Vpnv4Route {
            rd: RouteDistinguisher::As2 {
                asn: 65001,
                number: 10,
            },
            prefix: p("10.1.0.0/24"),
            label: 100,
            route_targets: vec![RouteTarget::As2 {
                asn: 65001,
                value: 100,
            }],
        };
        if got != want {
            return Err(format!("received {got:?}, expected {want:?}"));
        }

        // withdrawals both ways
        weft.withdraw(RouteKey::Vpnv4 {
            rd: RouteDistinguisher::Ipv4 {
                ip: Ipv4Addr::new(10, 255, 0, 1),
                number: 7,
            },
            prefix: p("10.47.0.0/24"),
        })
        .await
        .map_err(|e| e.to_string())?;
        eventually("the VPNv4 route gone from GoBGP", || async {
            gobgp
                .rib("vpnv4")
                .await
                .filter(|rib| rib.get("10.255.0.1:7:10.47.0.0/24").is_none())
                .map(|_| ())
        })
        .await?;
        gobgp
            .cli(&[
                "global",
                "rib",
                "-a",
                "vpnv4",
                "del",
                "10.1.0.0/24",
                "label",
                "100",
                "rd",
                "65001:10",
            ])
            .await?;
        wait_event(&mut events, "withdrawal of the VPNv4 route", |e| match e {
            SpeakerEvent::RouteWithdrawn {
                key: RouteKey::Vpnv4 { prefix, .. },
                ..
            } if *prefix == p("10.1.0.0/24") => Some(()),
            _ => None,
        })
        .await?;
        Ok(())
    }
    .await;
    check(&gobgp, &weft, result).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gobgp_notification_is_handled_and_the_session_recovers() {
    let Some((gobgp, weft, peer)) = setup(None).await else {
        return;
    };
    let mut events = weft.subscribe();
    let result = async {
        up(&gobgp, &weft, peer).await?;
        // `disable` sends Cease / Administrative Shutdown; `reset` would work too but makes
        // GoBGP refuse connections for its 30 s idle hold time.
        gobgp.cli(&["neighbor", "127.0.0.2", "disable"]).await?;
        let reason = wait_event(&mut events, "the session to go down", |e| match e {
            SpeakerEvent::PeerDown { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await?;
        if !reason.contains("Cease") {
            return Err(format!("expected a Cease NOTIFICATION, got: {reason}"));
        }
        gobgp.cli(&["neighbor", "127.0.0.2", "enable"]).await?;
        up(&gobgp, &weft, peer).await
    }
    .await;
    check(&gobgp, &weft, result).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gobgp_answers_a_malformed_message_from_us_with_a_notification() {
    let Some((gobgp, weft, peer)) = setup(None).await else {
        return;
    };
    let mut events = weft.subscribe();
    let result = async {
        up(&gobgp, &weft, peer).await?;
        // An UPDATE whose ORIGIN attribute has the value 7 (RFC 4271 defines 0–2); GoBGP
        // treats it as withdraw (RFC 7606) or resets; either way the session must survive
        // or recover. Then an UPDATE with an overrunning length, which must be answered with 3/1.
        let mut upd = vec![0xff; 16];
        let body: Vec<u8> = [
            &[0u8, 0, 0, 20][..],
            &[0x40, 1, 1, 7],
            &[0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe8],
            &[0x40, 3, 4, 127, 0, 0, 1],
            &[24, 198, 51, 100],
        ]
        .concat();
        upd.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
        upd.push(2);
        upd.extend_from_slice(&body);
        weft.send_raw(peer, upd).await.map_err(|e| e.to_string())?;
        up(&gobgp, &weft, peer).await?;
        if gobgp
            .rib("ipv4")
            .await
            .is_some_and(|r| r.get("198.51.100.0/24").is_some())
        {
            return Err("GoBGP accepted a route with an invalid ORIGIN".into());
        }

        // an UPDATE whose Withdrawn Routes Length overruns the message: RFC 4271 §6.3
        // Malformed Attribute List, a session reset
        let mut bad = vec![0xff; 16];
        bad.extend_from_slice(&[0, 23, 2, 0, 0xff, 0, 0]);
        weft.send_raw(peer, bad).await.map_err(|e| e.to_string())?;
        let reason = wait_event(&mut events, "the session to go down", |e| match e {
            SpeakerEvent::PeerDown { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await?;
        if !reason.contains("UPDATE Message Error") {
            return Err(format!(
                "expected an UPDATE Message Error NOTIFICATION, got: {reason}"
            ));
        }
        up(&gobgp, &weft, peer).await
    }
    .await;
    check(&gobgp, &weft, result).await;
}

/// GoBGP 3.10 dereferences a nil pointer on a message of an unknown type and exits (a
/// GoBGP bug found by this test). weft must see a clean TCP failure and keep retrying; a
/// GoBGP that answers with NOTIFICATION 1/3 instead passes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gobgp_failing_on_an_unknown_message_type_leaves_weft_clean() {
    let Some((mut gobgp, weft, peer)) = setup(None).await else {
        return;
    };
    let mut events = weft.subscribe();
    let result = async {
        up(&gobgp, &weft, peer).await?;
        let mut bad = vec![0xff; 16];
        bad.extend_from_slice(&[0, 19, 9]);
        weft.send_raw(peer, bad).await.map_err(|e| e.to_string())?;
        let reason = wait_event(&mut events, "the session to go down", |e| match e {
            SpeakerEvent::PeerDown { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await?;
        if !(reason.contains("TCP") || reason.contains("Bad Message Type")) {
            return Err(format!("unexpected reason: {reason}"));
        }
        // weft goes back to trying to connect, nothing else breaks
        eventually("weft to retry the connection", || async {
            let st = weft.peers().await.ok()?;
            matches!(
                st[0].state,
                State::Connect | State::Active | State::Idle | State::OpenSent
            )
            .then_some(())
        })
        .await?;
        if gobgp.daemon.alive() {
            eprintln!("note: this gobgpd survived an unknown message type");
        }
        Ok(())
    }
    .await;
    check(&gobgp, &weft, result).await;
}

static CAPTURED: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

fn capture(frame: &[u8]) {
    if let Ok(mut v) = CAPTURED.lock() {
        v.push(frame.to_vec());
    }
}

/// Prints the frames GoBGP sends for a few routes, as hex, for `codec_gobgp_vectors.rs`.
/// Run by hand: `cargo test -p weft-bgp --test interop_gobgp -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "generator for codec_gobgp_vectors.rs, run by hand"]
async fn capture_gobgp_vectors() {
    let Some((gobgp, weft, peer)) = setup(Some(capture)).await else {
        return;
    };
    let mut events = weft.subscribe();
    let result = async {
        up(&gobgp, &weft, peer).await?;
        gobgp
            .cli(&[
                "global",
                "rib",
                "add",
                "10.2.0.0/24",
                "-a",
                "ipv4",
                "community",
                "65001:7",
                "med",
                "20",
            ])
            .await?;
        gobgp
            .cli(&[
                "global",
                "rib",
                "-a",
                "vpnv4",
                "add",
                "10.1.0.0/24",
                "label",
                "100",
                "rd",
                "65001:10",
                "rt",
                "65001:100",
                "nexthop",
                "10.0.0.9",
            ])
            .await?;
        wait_event(&mut events, "vpn route", |e| {
            matches!(
                e,
                SpeakerEvent::RouteReceived {
                    route: Route::Vpnv4(_),
                    ..
                }
            )
            .then_some(())
        })
        .await?;
        gobgp
            .cli(&["global", "rib", "del", "10.2.0.0/24", "-a", "ipv4"])
            .await?;
        gobgp
            .cli(&[
                "global",
                "rib",
                "-a",
                "vpnv4",
                "del",
                "10.1.0.0/24",
                "label",
                "100",
                "rd",
                "65001:10",
            ])
            .await?;
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        for f in CAPTURED.lock().map_err(|e| e.to_string())?.iter() {
            println!("{}", f.iter().map(|b| format!("{b:02x}")).collect::<String>());
        }
        Ok(())
    }
    .await;
    check(&gobgp, &weft, result).await;
}
