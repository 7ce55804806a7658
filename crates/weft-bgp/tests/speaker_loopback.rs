//! Two or three weft speakers on 127.0.0.1 (ephemeral ports) talking real TCP: sessions,
//! routes both ways, withdrawal, malformed input, panic containment. Every wait is bounded.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::timeout;
use weft_bgp::{
    Family, PeerConfig, PeerId, Prefix4, Route, RouteDistinguisher, RouteKey, RouteTarget, Speaker,
    SpeakerConfig, SpeakerEvent, State, Vpnv4Route,
};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const WAIT: Duration = Duration::from_secs(20);

async fn speaker(asn: u32, id: u8, hook: Option<fn(&[u8])>) -> Speaker {
    let mut cfg = SpeakerConfig::new(asn, Ipv4Addr::new(10, 255, 0, id), Some(SocketAddr::new(LO, 0)));
    cfg.frame_hook = hook;
    Speaker::new(cfg).await.unwrap()
}

fn peer_cfg(port: u16, asn: u32, passive: bool) -> PeerConfig {
    PeerConfig {
        port,
        passive,
        hold_secs: 9,
        connect_retry_secs: 1,
        idle_hold_secs: 1,
        ..PeerConfig::new(LO, asn)
    }
}

/// Connects `a` (active) to `b` (passive); returns (a's id for b, b's id for a).
async fn pair(a: &Speaker, a_asn: u32, b: &Speaker, b_asn: u32) -> (PeerId, PeerId) {
    let b_port = b.local_addr().unwrap().port();
    let a_port = a.local_addr().unwrap().port();
    let on_b = b.add_peer(peer_cfg(a_port, a_asn, true)).await.unwrap();
    let on_a = a.add_peer(peer_cfg(b_port, b_asn, false)).await.unwrap();
    wait_state(a, on_a, State::Established).await;
    wait_state(b, on_b, State::Established).await;
    (on_a, on_b)
}

async fn wait_state(s: &Speaker, peer: PeerId, state: State) {
    let res = timeout(WAIT, async {
        loop {
            if s.peers()
                .await
                .unwrap()
                .iter()
                .any(|p| p.id == peer && p.state == state)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        res.is_ok(),
        "{peer} did not reach {state:?}: {:?}",
        s.peers().await.unwrap()
    );
}

async fn wait_event<T>(
    rx: &mut broadcast::Receiver<SpeakerEvent>,
    mut pick: impl FnMut(&SpeakerEvent) -> Option<T>,
) -> T {
    timeout(WAIT, async {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    if let Some(v) = pick(&ev) {
                        return v;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream ended: {e}"),
            }
        }
    })
    .await
    .expect("timed out waiting for an event")
}

fn p(s: &str) -> Prefix4 {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebgp_session_carries_ipv4_and_vpnv4_both_ways_and_withdrawals() {
    let a = speaker(65000, 1, None).await;
    let b = speaker(65001, 2, None).await;
    let mut b_events = b.subscribe();
    let mut a_events = a.subscribe();
    let (on_a, on_b) = pair(&a, 65000, &b, 65001).await;

    let st = a.peers().await.unwrap();
    let n = st[0].negotiated.as_ref().unwrap();
    assert_eq!(n.families, vec![Family::Ipv4Unicast, Family::Vpnv4]);
    assert_eq!(n.hold_secs, 9);
    assert!(n.asn4 && n.route_refresh);

    // IPv4: a → b
    a.originate(Route::Ipv4(p("10.47.255.252/32")), None)
        .await
        .unwrap();
    let attrs = wait_event(&mut b_events, |e| match e {
        SpeakerEvent::RouteReceived {
            peer,
            route: Route::Ipv4(px),
            attrs,
        } if *peer == on_b && *px == p("10.47.255.252/32") => Some(attrs.clone()),
        _ => None,
    })
    .await;
    assert_eq!(attrs.as_path.asns().collect::<Vec<_>>(), vec![65000]);
    assert_eq!(attrs.next_hop, Some(Ipv4Addr::LOCALHOST));

    // VPNv4: b → a, with RD, label and RT intact
    let vpn = Vpnv4Route {
        rd: RouteDistinguisher::Ipv4 {
            ip: Ipv4Addr::new(10, 255, 0, 2),
            number: 3,
        },
        prefix: p("10.1.2.0/24"),
        label: 4097,
        route_targets: vec![RouteTarget::As2 {
            asn: 64512,
            value: 8_000_001,
        }],
    };
    b.originate(Route::Vpnv4(vpn.clone()), Some(Ipv4Addr::new(172, 16, 0, 9)))
        .await
        .unwrap();
    let got = wait_event(&mut a_events, |e| match e {
        SpeakerEvent::RouteReceived {
            peer,
            route: Route::Vpnv4(v),
            ..
        } if *peer == on_a => Some(v.clone()),
        _ => None,
    })
    .await;
    assert_eq!(got, vpn);
    let routes = a.routes().await.unwrap();
    assert!(routes.iter().any(|(r, _)| *r == Route::Vpnv4(vpn.clone())));

    // withdrawal a → b
    a.withdraw(RouteKey::Ipv4(p("10.47.255.252/32"))).await.unwrap();
    wait_event(&mut b_events, |e| match e {
        SpeakerEvent::RouteWithdrawn { peer, key }
            if *peer == on_b && *key == RouteKey::Ipv4(p("10.47.255.252/32")) =>
        {
            Some(())
        }
        _ => None,
    })
    .await;
    assert!(b.adj_rib_in(on_b).await.unwrap().is_empty());

    // a peer removed on one side takes the session down on the other (Cease)
    a.remove_peer(on_a).await.unwrap();
    let reason = wait_event(&mut b_events, |e| match e {
        SpeakerEvent::PeerDown { peer, reason } if *peer == on_b => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("Cease"), "{reason}");
    // and the VPN route a had learned from b is gone from b's view of a's routes
    assert!(
        b.routes()
            .await
            .unwrap()
            .iter()
            .all(|(r, _)| matches!(r, Route::Vpnv4(_)))
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_message_from_our_side_gets_a_notification_and_the_session_recovers() {
    let a = speaker(65000, 1, None).await;
    let b = speaker(65001, 2, None).await;
    let mut a_events = a.subscribe();
    let (on_a, on_b) = pair(&a, 65000, &b, 65001).await;
    // a KEEPALIVE with a broken marker
    let mut bad = vec![0xff; 16];
    bad[0] = 0;
    bad.extend_from_slice(&[0, 19, 4]);
    a.send_raw(on_a, bad).await.unwrap();
    let reason = wait_event(&mut a_events, |e| match e {
        SpeakerEvent::PeerDown { peer, reason } if *peer == on_a => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("Connection Not Synchronized"), "{reason}");
    // both sides restart on their own
    wait_state(&a, on_a, State::Established).await;
    wait_state(&b, on_b, State::Established).await;
    a.shutdown().await;
    b.shutdown().await;
}

fn panic_on_magic(frame: &[u8]) {
    if frame.windows(4).any(|w| w == [0xde, 0xad, 0xbe, 0xef]) {
        panic!("injected decode panic");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_decoding_resets_only_that_session() {
    let a = speaker(65000, 1, None).await;
    let b = speaker(65001, 2, Some(panic_on_magic)).await;
    let c = speaker(65002, 3, None).await;
    let mut a_events = a.subscribe();
    let (on_a, _) = pair(&a, 65000, &b, 65001).await;
    let (_, on_b_c) = pair(&c, 65002, &b, 65001).await;
    let mut b_events = b.subscribe();
    c.originate(Route::Ipv4(p("192.0.2.0/24")), None).await.unwrap();
    wait_event(&mut b_events, |e| match e {
        SpeakerEvent::RouteReceived { peer, .. } if *peer == on_b_c => Some(()),
        _ => None,
    })
    .await;

    // A valid UPDATE from a whose COMMUNITIES attribute contains the magic value.
    let mut upd = vec![0xff; 16];
    let body: Vec<u8> = [
        &[0u8, 0, 0, 27][..],
        &[0x40, 1, 1, 0],
        &[0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe8],
        &[0x40, 3, 4, 127, 0, 0, 1],
        &[0xc0, 8, 4, 0xde, 0xad, 0xbe, 0xef],
        &[24, 198, 51, 100],
    ]
    .concat();
    upd.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    upd.push(2);
    upd.extend_from_slice(&body);
    a.send_raw(on_a, upd).await.unwrap();

    let reason = wait_event(&mut a_events, |e| match e {
        SpeakerEvent::PeerDown { peer, reason } if *peer == on_a => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(
        reason.contains("UPDATE Message Error (3) / Unspecific"),
        "{reason}"
    );
    // the other session on b never went down
    let st = b.peers().await.unwrap();
    let other = st.iter().find(|s| s.id == on_b_c).unwrap();
    assert_eq!(other.state, State::Established);
    assert_eq!(other.flaps, 0);
    assert_eq!(other.received_routes, 1);
    // and the reset session comes back
    wait_state(&a, on_a, State::Established).await;
    for s in [&a, &b, &c] {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_peer_as_is_refused_with_bad_peer_as() {
    let a = speaker(65000, 1, None).await;
    let b = speaker(65001, 2, None).await;
    let b_port = b.local_addr().unwrap().port();
    b.add_peer(peer_cfg(1, 65000, true)).await.unwrap();
    // a expects AS 65099 but b is 65001
    let on_a = a.add_peer(peer_cfg(b_port, 65099, false)).await.unwrap();
    let res = timeout(WAIT, async {
        loop {
            let st = a.peers().await.unwrap();
            if let Some(d) = st.iter().find(|s| s.id == on_a).and_then(|s| s.last_down.clone()) {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    assert!(res.contains("expected AS 65099"), "{res}");
    a.shutdown().await;
    b.shutdown().await;
}
