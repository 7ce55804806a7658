//! Session hardening between weft speakers on 127.0.0.1 (ephemeral ports, real TCP):
//! connection collision detection with both sides active (RFC 4271 §6.8), TCP MD5
//! signatures (RFC 2385), and graceful restart from the restarting side (RFC 4724 §4.1).
//! Every wait is bounded.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use weft_bgp::codec::SessionCodec;
use weft_bgp::{
    Capability, Family, Message, OpenMsg, PeerConfig, PeerId, Prefix4, Route, Speaker, SpeakerConfig, State,
};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const WAIT: Duration = Duration::from_secs(30);

fn speaker_cfg(asn: u32, id: u8) -> SpeakerConfig {
    SpeakerConfig::new(asn, Ipv4Addr::new(10, 255, 0, id), Some(SocketAddr::new(LO, 0)))
}

async fn speaker(asn: u32, id: u8) -> Speaker {
    Speaker::new(speaker_cfg(asn, id)).await.unwrap()
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

async fn state_of(s: &Speaker, peer: PeerId) -> Option<State> {
    s.peers()
        .await
        .unwrap()
        .iter()
        .find(|p| p.id == peer)
        .map(|p| p.state)
}

async fn wait_state(s: &Speaker, peer: PeerId, state: State) {
    let res = timeout(WAIT, async {
        while state_of(s, peer).await != Some(state) {
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

/// Waits until `s`'s Loc-RIB has `prefix` with the given staleness.
async fn wait_route(s: &Speaker, prefix: Prefix4, stale: Option<bool>) {
    let res = timeout(WAIT, async {
        loop {
            let routes = s.routes().await.unwrap();
            let found = routes
                .iter()
                .find(|(r, _)| *r == Route::Ipv4(prefix))
                .map(|(_, path)| path.stale);
            match (found, stale) {
                (Some(st), Some(want)) if st == want => return,
                (Some(_), None) => return,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    assert!(
        res.is_ok(),
        "{prefix} (stale {stale:?}) never showed up: {:?}",
        s.routes().await.unwrap()
    );
}

async fn has_route(s: &Speaker, prefix: Prefix4) -> bool {
    s.routes()
        .await
        .unwrap()
        .iter()
        .any(|(r, _)| *r == Route::Ipv4(prefix))
}

fn p(s: &str) -> Prefix4 {
    s.parse().unwrap()
}

// ===== connection collision (RFC 4271 §6.8) =====

/// Both speakers connect to each other at the same moment, several times over with the
/// higher identifier on either side: each round ends with one Established session that
/// stays up and carries routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_active_converge_on_one_session() {
    for (round, (id_a, id_b)) in [(1u8, 2u8), (4, 3), (5, 6)].into_iter().enumerate() {
        let a = speaker(65000, id_a).await;
        let b = speaker(65001, id_b).await;
        let a_port = a.local_addr().unwrap().port();
        let b_port = b.local_addr().unwrap().port();
        let (on_a, on_b) = tokio::join!(
            a.add_peer(peer_cfg(b_port, 65001, false)),
            b.add_peer(peer_cfg(a_port, 65000, false))
        );
        let (on_a, on_b) = (on_a.unwrap(), on_b.unwrap());
        wait_state(&a, on_a, State::Established).await;
        wait_state(&b, on_b, State::Established).await;

        let prefix = p(&format!("10.9.{round}.0/24"));
        a.originate(Route::Ipv4(prefix), None).await.unwrap();
        wait_route(&b, prefix, Some(false)).await;

        // The surviving session is stable: no flap, no reset after the collision.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for (s, id) in [(&a, on_a), (&b, on_b)] {
            let st = s.peers().await.unwrap();
            let me = st.iter().find(|x| x.id == id).unwrap();
            assert_eq!(me.state, State::Established, "round {round}: {st:?}");
            assert_eq!(me.flaps, 0, "round {round}: the session flapped: {st:?}");
        }
        a.shutdown().await;
        b.shutdown().await;
    }
}

/// Reads one BGP message from a raw connection (bounded).
async fn read_msg(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Message {
    timeout(WAIT, async {
        loop {
            if let Some(len) = SessionCodec::frame_len(buf).unwrap() {
                let frame: Vec<u8> = buf.drain(..len).collect();
                return SessionCodec::default().decode(&frame).unwrap();
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed while waiting for a message");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("no message in time")
}

fn raw_open(router_id: Ipv4Addr) -> Vec<u8> {
    let open = OpenMsg::new(
        65001,
        9,
        router_id,
        vec![
            Capability::multiprotocol(Family::Ipv4Unicast),
            Capability::FourOctetAs(65001),
        ],
    );
    SessionCodec::default().encode(&Message::Open(open)).unwrap()
}

/// A scripted peer makes the collision deterministic: weft (10.255.0.5) connects out and
/// sends its OPEN; before answering, the peer connects in with its own OPEN. The
/// connection initiated by the higher identifier survives; the other gets Cease 7.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collision_keeps_the_connection_of_the_higher_identifier() {
    for peer_id in [Ipv4Addr::new(10, 255, 0, 9), Ipv4Addr::new(10, 255, 0, 1)] {
        let weft = speaker(65000, 5).await;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        weft.add_peer(peer_cfg(port, 65001, false)).await.unwrap();
        // weft's outgoing connection, in OpenSent.
        let (mut outbound, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
        let (mut out_buf, mut in_buf) = (Vec::new(), Vec::new());
        assert!(matches!(
            read_msg(&mut outbound, &mut out_buf).await,
            Message::Open(_)
        ));
        // The peer's own connection to weft, with its OPEN.
        let mut inbound = TcpStream::connect(weft.local_addr().unwrap()).await.unwrap();
        inbound.write_all(&raw_open(peer_id)).await.unwrap();
        let (winner, winner_buf, loser, loser_buf) =
            if u32::from(peer_id) > u32::from(Ipv4Addr::new(10, 255, 0, 5)) {
                (&mut inbound, &mut in_buf, &mut outbound, &mut out_buf)
            } else {
                (&mut outbound, &mut out_buf, &mut inbound, &mut in_buf)
            };
        match read_msg(loser, loser_buf).await {
            Message::Notification(n) => assert_eq!((n.code, n.subcode), (6, 7), "peer id {peer_id}"),
            m => panic!("peer id {peer_id}: expected Cease 7 on the losing connection, got {m:?}"),
        }
        // The winner completes: (our OPEN on it when it was the peer's connection,) then
        // weft's KEEPALIVE for the peer's OPEN.
        if u32::from(peer_id) < u32::from(Ipv4Addr::new(10, 255, 0, 5)) {
            winner.write_all(&raw_open(peer_id)).await.unwrap();
        } else {
            assert!(matches!(read_msg(winner, winner_buf).await, Message::Open(_)));
        }
        assert_eq!(
            read_msg(winner, winner_buf).await,
            Message::Keepalive,
            "peer id {peer_id}"
        );
        winner
            .write_all(&SessionCodec::default().encode(&Message::Keepalive).unwrap())
            .await
            .unwrap();
        let on_weft = weft.peers().await.unwrap()[0].id;
        wait_state(&weft, on_weft, State::Established).await;
        weft.shutdown().await;
    }
}

// ===== TCP MD5 (RFC 2385) =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_session_forms_with_the_same_password_only() {
    let b = speaker(65001, 2).await;
    let b_port = b.local_addr().unwrap().port();
    let on_b = b
        .add_peer(PeerConfig {
            password: Some("weft-s3cret".into()),
            ..peer_cfg(179, 65000, true)
        })
        .await
        .unwrap();

    // Wrong password, then none: the kernel drops the SYNs, nothing gets established.
    for password in [Some("wrong".to_string()), None] {
        let a = speaker(65000, 1).await;
        let on_a = a
            .add_peer(PeerConfig {
                password: password.clone(),
                ..peer_cfg(b_port, 65001, false)
            })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_ne!(
            state_of(&a, on_a).await,
            Some(State::Established),
            "password {password:?}"
        );
        assert_ne!(
            state_of(&b, on_b).await,
            Some(State::Established),
            "password {password:?}"
        );
        a.shutdown().await;
    }

    // The right password: established, and the status never shows the secret.
    let a = speaker(65000, 1).await;
    let on_a = a
        .add_peer(PeerConfig {
            password: Some("weft-s3cret".into()),
            ..peer_cfg(b_port, 65001, false)
        })
        .await
        .unwrap();
    wait_state(&a, on_a, State::Established).await;
    wait_state(&b, on_b, State::Established).await;
    let st = format!("{:?}", a.peers().await.unwrap());
    assert!(!st.contains("weft-s3cret"), "{st}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_password_is_refused_with_the_reason() {
    let a = speaker(65000, 1).await;
    let err = a
        .add_peer(PeerConfig {
            password: Some("x".repeat(81)),
            ..peer_cfg(1790, 65001, false)
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("127.0.0.1") && err.contains("password"), "{err}");
    a.shutdown().await;
}

// ===== graceful restart, restarting side (RFC 4724 §4.1) =====

/// `b` (the restarting speaker, active) and `a` (the helper, passive) with GR.
async fn gr_pair(a: &Speaker, b: &Speaker, restart_secs: u16) -> (PeerId, PeerId) {
    let a_port = a.local_addr().unwrap().port();
    let on_a = a
        .add_peer(PeerConfig {
            graceful_restart_secs: Some(restart_secs),
            ..peer_cfg(179, 65001, true)
        })
        .await
        .unwrap();
    let on_b = b
        .add_peer(PeerConfig {
            graceful_restart_secs: Some(restart_secs),
            ..peer_cfg(a_port, 65000, false)
        })
        .await
        .unwrap();
    (on_a, on_b)
}

fn restarting_cfg() -> SpeakerConfig {
    let mut cfg = speaker_cfg(65001, 2);
    cfg.forwarding_preserved = true;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_speaker_keeps_its_routes_at_the_peer_and_sets_the_restart_bits() {
    let a = speaker(65000, 1).await;
    let b = Speaker::new(restarting_cfg()).await.unwrap();
    let (on_a, _) = gr_pair(&a, &b, 30).await;
    wait_state(&a, on_a, State::Established).await;
    let first = a.peers().await.unwrap()[0].negotiated.clone().unwrap();
    let gr = first.peer_graceful_restart.unwrap();
    assert!(!gr.restarted, "a fresh speaker must not claim a restart: {gr:?}");
    assert!(gr.families.iter().all(|(_, fwd)| *fwd), "F bits: {gr:?}");

    let kept = p("10.47.1.0/24");
    b.originate(Route::Ipv4(kept), None).await.unwrap();
    wait_route(&a, kept, Some(false)).await;

    // "Crash": the connection closes without a NOTIFICATION; a keeps the route as stale.
    b.shutdown_for_restart().await;
    wait_route(&a, kept, Some(true)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        has_route(&a, kept).await,
        "the stale route went away during the restart"
    );

    // The restarted speaker: R bit on its first session, routes refreshed, stale cleared
    // by its End-of-RIB.
    let mut cfg = restarting_cfg();
    cfg.restarted = true;
    let b2 = Speaker::new(cfg).await.unwrap();
    b2.originate(Route::Ipv4(kept), None).await.unwrap();
    let a_port = a.local_addr().unwrap().port();
    b2.add_peer(PeerConfig {
        graceful_restart_secs: Some(30),
        ..peer_cfg(a_port, 65000, false)
    })
    .await
    .unwrap();
    wait_state(&a, on_a, State::Established).await;
    let second = a.peers().await.unwrap()[0].negotiated.clone().unwrap();
    let gr = second.peer_graceful_restart.unwrap();
    assert!(gr.restarted && gr.families.iter().all(|(_, fwd)| *fwd), "{gr:?}");
    wait_route(&a, kept, Some(false)).await;
    a.shutdown().await;
    b2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_of_a_speaker_that_does_not_come_back_go_after_the_restart_time() {
    let a = speaker(65000, 1).await;
    let b = Speaker::new(restarting_cfg()).await.unwrap();
    let (on_a, _) = gr_pair(&a, &b, 3).await;
    wait_state(&a, on_a, State::Established).await;
    let gone = p("10.47.2.0/24");
    b.originate(Route::Ipv4(gone), None).await.unwrap();
    wait_route(&a, gone, Some(false)).await;
    b.shutdown_for_restart().await;
    wait_route(&a, gone, Some(true)).await;
    let res = timeout(WAIT, async {
        while has_route(&a, gone).await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(res.is_ok(), "the stale route outlived the restart time");
    a.shutdown().await;
}
