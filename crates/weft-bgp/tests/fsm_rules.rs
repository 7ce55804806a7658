//! The session FSM, one test per RFC rule, named after it. Inputs in, outputs and state
//! checked; no sockets, no clock.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::net::Ipv4Addr;
use std::time::Instant;

use weft_bgp::codec::SessionCodec;
use weft_bgp::fsm::OPEN_SENT_HOLD_SECS;
use weft_bgp::message::notif;
use weft_bgp::{
    Capability, DownReason, Family, Fsm, FsmConfig, GracefulRestart, Input, Message, NotificationMsg,
    OpenMsg, Output, RouteRefreshMsg, State, Timer, UpdateMsg,
};

const LOCAL_AS: u32 = 65000;
const PEER_AS: u32 = 65001;
const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn config() -> FsmConfig {
    FsmConfig {
        connect_retry_secs: 30,
        idle_hold_secs: 2,
        ..FsmConfig::new(LOCAL_AS, LOCAL_ID, PEER_AS)
    }
}

fn peer_open(hold: u16) -> OpenMsg {
    OpenMsg::new(
        PEER_AS,
        hold,
        PEER_ID,
        vec![
            Capability::multiprotocol(Family::Ipv4Unicast),
            Capability::multiprotocol(Family::Vpnv4),
            Capability::RouteRefresh,
            Capability::FourOctetAs(PEER_AS),
        ],
    )
}

struct Harness {
    fsm: Fsm,
    now: Instant,
}

impl Harness {
    fn new(cfg: FsmConfig) -> Self {
        Self {
            fsm: Fsm::new(cfg),
            now: Instant::now(),
        }
    }

    fn feed(&mut self, input: Input) -> Vec<Output> {
        self.fsm.process(input, self.now)
    }

    fn recv(&mut self, m: Message) -> Vec<Output> {
        self.feed(Input::MessageReceived(m))
    }

    fn drive_to_open_sent(&mut self) -> Vec<Output> {
        self.feed(Input::Start);
        self.feed(Input::TcpConnected)
    }

    fn drive_to_open_confirm(&mut self, open: OpenMsg) -> Vec<Output> {
        self.drive_to_open_sent();
        self.recv(Message::Open(open))
    }

    fn drive_to_established(&mut self) -> Vec<Output> {
        self.drive_to_open_confirm(peer_open(90));
        self.recv(Message::Keepalive)
    }
}

fn sent(out: &[Output]) -> Vec<&Message> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn armed(out: &[Output], timer: Timer) -> Option<u16> {
    out.iter().rev().find_map(|o| match o {
        Output::ArmTimer { timer: t, secs } if *t == timer => Some(*secs),
        _ => None,
    })
}

fn down(out: &[Output]) -> Option<(&DownReason, Option<&NotificationMsg>)> {
    out.iter().find_map(|o| match o {
        Output::Down { reason, notification } => Some((reason, notification.as_ref())),
        _ => None,
    })
}

fn notification_sent(out: &[Output]) -> Option<(u8, u8, Vec<u8>)> {
    down(out).and_then(|(_, n)| n.map(|n| (n.code, n.subcode, n.data.clone())))
}

fn open_rejected_with(open: OpenMsg) -> (u8, u8, Vec<u8>, State) {
    let mut h = Harness::new(config());
    let out = h.drive_to_open_confirm(open);
    let n = notification_sent(&out).unwrap_or_else(|| panic!("no NOTIFICATION in {out:?}"));
    (n.0, n.1, n.2, h.fsm.state())
}

// ===== Idle, Connect, Active =====

#[test]
fn manual_start_connects_and_arms_connect_retry_rfc4271_8_2_2_idle_event_1() {
    let mut h = Harness::new(config());
    let out = h.feed(Input::Start);
    assert!(out.contains(&Output::Connect));
    assert_eq!(armed(&out, Timer::ConnectRetry), Some(30));
    assert_eq!(h.fsm.state(), State::Connect);
}

#[test]
fn passive_start_waits_in_active_without_connecting_rfc4271_8_2_2_idle_event_4() {
    let mut h = Harness::new(FsmConfig {
        passive: true,
        ..config()
    });
    let out = h.feed(Input::Start);
    assert!(!out.contains(&Output::Connect));
    assert_eq!(h.fsm.state(), State::Active);
    assert!(!h.fsm.is_armed(Timer::ConnectRetry));
}

#[test]
fn events_other_than_start_are_ignored_in_idle_rfc4271_8_2_2_idle() {
    let mut h = Harness::new(config());
    assert!(h.feed(Input::HoldTimerExpired).is_empty());
    assert!(h.feed(Input::TcpFailed).is_empty());
    assert_eq!(h.fsm.state(), State::Idle);
}

#[test]
fn connection_in_idle_is_rejected_with_cease_connection_rejected_rfc4486() {
    let mut h = Harness::new(config());
    let out = h.feed(Input::TcpConnected);
    assert_eq!(
        notification_sent(&out),
        Some((notif::CEASE, notif::CEASE_CONNECTION_REJECTED, vec![]))
    );
    assert_eq!(h.fsm.state(), State::Idle);
}

#[test]
fn tcp_connected_sends_open_and_arms_a_large_hold_timer_rfc4271_8_2_2_connect_event_16() {
    let mut h = Harness::new(config());
    h.feed(Input::Start);
    let out = h.feed(Input::TcpConnected);
    assert!(out.contains(&Output::StopTimer(Timer::ConnectRetry)));
    let Some(Message::Open(open)) = sent(&out).first().copied() else {
        panic!("{out:?}")
    };
    assert_eq!(open.asn(), LOCAL_AS);
    assert_eq!(open.router_id, LOCAL_ID);
    assert_eq!(armed(&out, Timer::Hold), Some(OPEN_SENT_HOLD_SECS));
    assert_eq!(h.fsm.state(), State::OpenSent);
}

#[test]
fn our_open_offers_families_route_refresh_and_4_octet_as_rfc4760_rfc2918_rfc6793() {
    let open = config().open();
    assert_eq!(open.families(), vec![Family::Ipv4Unicast, Family::Vpnv4]);
    assert!(open.route_refresh());
    assert_eq!(open.four_octet_as(), Some(LOCAL_AS));
    let big = FsmConfig::new(4_200_000_000, LOCAL_ID, PEER_AS).open();
    assert_eq!(big.my_as, 23456);
}

#[test]
fn tcp_failure_in_connect_goes_active_and_retries_later_rfc4271_8_2_2_connect_event_18() {
    let mut h = Harness::new(config());
    h.feed(Input::Start);
    let out = h.feed(Input::TcpFailed);
    assert_eq!(armed(&out, Timer::ConnectRetry), Some(30));
    assert_eq!(h.fsm.state(), State::Active);
    let out = h.feed(Input::ConnectRetryTimerExpired);
    assert!(out.contains(&Output::Connect));
    assert_eq!(h.fsm.state(), State::Connect);
}

#[test]
fn connect_retry_expiry_in_connect_reconnects_rfc4271_8_2_2_connect_event_9() {
    let mut h = Harness::new(config());
    h.feed(Input::Start);
    let out = h.feed(Input::ConnectRetryTimerExpired);
    assert!(out.contains(&Output::Connect));
    assert_eq!(armed(&out, Timer::ConnectRetry), Some(30));
    assert_eq!(h.fsm.state(), State::Connect);
}

#[test]
fn passive_peer_accepts_a_connection_in_active_rfc4271_8_2_2_active_event_17() {
    let mut h = Harness::new(FsmConfig {
        passive: true,
        ..config()
    });
    h.feed(Input::Start);
    let out = h.feed(Input::TcpConnected);
    assert!(matches!(sent(&out).first(), Some(Message::Open(_))));
    assert_eq!(h.fsm.state(), State::OpenSent);
}

// ===== OpenSent: OPEN validation (RFC 4271 §6.2) and negotiation =====

#[test]
fn valid_open_sends_keepalive_and_goes_open_confirm_rfc4271_8_2_2_opensent_event_19() {
    let mut h = Harness::new(config());
    let out = h.drive_to_open_confirm(peer_open(90));
    assert_eq!(sent(&out), vec![&Message::Keepalive]);
    assert_eq!(h.fsm.state(), State::OpenConfirm);
    let n = h.fsm.negotiated().unwrap();
    assert_eq!(n.peer_asn, PEER_AS);
    assert_eq!(n.peer_router_id, PEER_ID);
    assert!(n.asn4 && n.route_refresh);
    assert_eq!(n.families, vec![Family::Ipv4Unicast, Family::Vpnv4]);
}

#[test]
fn hold_time_is_the_smaller_of_both_proposals_rfc4271_4_2() {
    let mut h = Harness::new(config());
    let out = h.drive_to_open_confirm(peer_open(30));
    assert_eq!(h.fsm.negotiated().unwrap().hold_secs, 30);
    assert_eq!(armed(&out, Timer::Hold), Some(30));
    let mut h = Harness::new(FsmConfig {
        hold_secs: 9,
        ..config()
    });
    h.drive_to_open_confirm(peer_open(180));
    assert_eq!(h.fsm.negotiated().unwrap().hold_secs, 9);
}

#[test]
fn keepalive_interval_is_a_third_of_the_hold_time_rfc4271_10() {
    let mut h = Harness::new(config());
    let out = h.drive_to_open_confirm(peer_open(30));
    assert_eq!(armed(&out, Timer::Keepalive), Some(10));
    assert_eq!(h.fsm.negotiated().unwrap().keepalive_secs, 10);
}

#[test]
fn hold_time_zero_disables_hold_and_keepalive_timers_rfc4271_4_4() {
    let mut h = Harness::new(config());
    h.drive_to_open_confirm(peer_open(0));
    assert!(!h.fsm.is_armed(Timer::Hold));
    assert!(!h.fsm.is_armed(Timer::Keepalive));
    let out = h.recv(Message::Keepalive);
    assert_eq!(h.fsm.state(), State::Established);
    assert_eq!(armed(&out, Timer::Hold), None);
}

#[test]
fn hold_time_of_1_or_2_seconds_is_unacceptable_rfc4271_6_2() {
    for hold in [1, 2] {
        let (code, sub, data, state) = open_rejected_with(peer_open(hold));
        assert_eq!((code, sub, data), (2, 6, vec![0, hold as u8]));
        assert_eq!(state, State::Idle);
    }
}

#[test]
fn version_other_than_4_is_unsupported_version_with_4_as_data_rfc4271_6_2() {
    let open = OpenMsg {
        version: 3,
        ..peer_open(90)
    };
    let r = open_rejected_with(open);
    assert_eq!((r.0, r.1, r.2), (2, 1, vec![0, 4]));
}

#[test]
fn peer_as_different_from_configuration_is_bad_peer_as_rfc4271_6_2() {
    let open = OpenMsg::new(65099, 90, PEER_ID, vec![Capability::FourOctetAs(65099)]);
    let r = open_rejected_with(open);
    assert_eq!((r.0, r.1), (2, 2));
}

#[test]
fn peer_as_is_taken_from_the_4_octet_capability_rfc6793_4_1() {
    let mut cfg = config();
    cfg.peer_asn = 4_200_000_001;
    let mut h = Harness::new(cfg);
    let open = OpenMsg::new(
        4_200_000_001,
        90,
        PEER_ID,
        vec![Capability::FourOctetAs(4_200_000_001)],
    );
    assert_eq!(open.my_as, 23456);
    h.drive_to_open_confirm(open);
    assert_eq!(h.fsm.state(), State::OpenConfirm);
    assert_eq!(h.fsm.negotiated().unwrap().peer_asn, 4_200_000_001);
}

#[test]
fn as_trans_without_4_octet_capability_is_bad_peer_as_rfc6793_4_1() {
    let mut cfg = config();
    cfg.peer_asn = 4_200_000_001;
    let mut h = Harness::new(cfg);
    let out = h.drive_to_open_confirm(OpenMsg::new(4_200_000_001, 90, PEER_ID, vec![]));
    assert_eq!(notification_sent(&out).map(|n| (n.0, n.1)), Some((2, 2)));
}

#[test]
fn two_octet_peer_negotiates_2_octet_encoding_rfc6793_4_1() {
    let mut h = Harness::new(config());
    h.drive_to_open_confirm(OpenMsg::new(PEER_AS, 90, PEER_ID, vec![]));
    assert!(!h.fsm.negotiated().unwrap().asn4);
    assert!(!h.fsm.negotiated().unwrap().codec().asn4());
}

#[test]
fn bgp_identifier_zero_is_bad_bgp_identifier_rfc6286_2_1() {
    let open = OpenMsg {
        router_id: Ipv4Addr::UNSPECIFIED,
        ..peer_open(90)
    };
    let r = open_rejected_with(open);
    assert_eq!((r.0, r.1), (2, 3));
}

#[test]
fn internal_peer_with_our_bgp_identifier_is_bad_bgp_identifier_rfc6286_2_2() {
    let mut cfg = config();
    cfg.peer_asn = LOCAL_AS;
    let mut h = Harness::new(cfg);
    let open = OpenMsg::new(LOCAL_AS, 90, LOCAL_ID, vec![Capability::FourOctetAs(LOCAL_AS)]);
    let out = h.drive_to_open_confirm(open);
    assert_eq!(notification_sent(&out).map(|n| (n.0, n.1)), Some((2, 3)));
}

#[test]
fn unsupported_optional_parameter_answers_the_decoders_notification_rfc4271_6_2() {
    // A real OPEN with optional parameter type 1 (not Capabilities), through the codec.
    let mut bytes = vec![0xff; 16];
    bytes.extend_from_slice(&[0, 33, 1, 4, 0xfd, 0xe9, 0, 90, 10, 0, 0, 2, 4, 1, 2, 0xab, 0xcd]);
    let err = SessionCodec::default().decode(&bytes).unwrap_err();
    let mut h = Harness::new(config());
    h.drive_to_open_sent();
    let out = h.feed(Input::DecodeError(err));
    assert_eq!(notification_sent(&out).map(|n| (n.0, n.1)), Some((2, 4)));
    assert_eq!(h.fsm.state(), State::Idle);
}

#[test]
fn no_family_in_common_is_unsupported_capability_rfc5492_5() {
    let mut h = Harness::new(FsmConfig {
        families: vec![Family::Vpnv4],
        ..config()
    });
    // a peer with no MP capability speaks IPv4 unicast only
    let out = h.drive_to_open_confirm(OpenMsg::new(
        PEER_AS,
        90,
        PEER_ID,
        vec![Capability::FourOctetAs(PEER_AS)],
    ));
    assert_eq!(notification_sent(&out).map(|n| (n.0, n.1)), Some((2, 7)));
}

#[test]
fn peer_without_multiprotocol_capability_gets_ipv4_unicast_rfc4760_8() {
    let mut h = Harness::new(config());
    h.drive_to_open_confirm(OpenMsg::new(
        PEER_AS,
        90,
        PEER_ID,
        vec![Capability::FourOctetAs(PEER_AS)],
    ));
    assert_eq!(h.fsm.negotiated().unwrap().families, vec![Family::Ipv4Unicast]);
}

#[test]
fn graceful_restart_is_advertised_and_the_peers_is_recorded_rfc4724_3() {
    let cfg = FsmConfig {
        graceful_restart_secs: Some(120),
        ..config()
    };
    let ours = cfg.open();
    assert_eq!(ours.graceful_restart().map(|g| g.restart_secs), Some(120));
    let mut h = Harness::new(cfg);
    let mut open = peer_open(90);
    let gr = GracefulRestart {
        restarted: true,
        notification: false,
        restart_secs: 60,
        families: vec![(Family::Ipv4Unicast, true)],
    };
    open.capabilities.push(Capability::GracefulRestart(gr.clone()));
    h.drive_to_open_confirm(open);
    assert_eq!(h.fsm.negotiated().unwrap().peer_graceful_restart, Some(gr));
}

#[test]
fn update_in_open_sent_is_fsm_error_subcode_1_rfc6608() {
    let mut h = Harness::new(config());
    h.drive_to_open_sent();
    let out = h.recv(Message::Update(UpdateMsg::default()));
    assert_eq!(notification_sent(&out), Some((5, 1, vec![])));
    assert_eq!(h.fsm.state(), State::Idle);
}

#[test]
fn tcp_failure_in_open_sent_closes_and_returns_to_active_rfc4271_8_2_2_opensent_event_18() {
    let mut h = Harness::new(config());
    h.drive_to_open_sent();
    let out = h.feed(Input::TcpFailed);
    assert!(matches!(down(&out), Some((DownReason::TcpFailed, None))));
    assert_eq!(armed(&out, Timer::ConnectRetry), Some(30));
    assert_eq!(h.fsm.state(), State::Active);
}

// ===== OpenConfirm =====

#[test]
fn keepalive_in_open_confirm_establishes_rfc4271_8_2_2_openconfirm_event_26() {
    let mut h = Harness::new(config());
    h.drive_to_open_confirm(peer_open(90));
    let out = h.recv(Message::Keepalive);
    assert_eq!(h.fsm.state(), State::Established);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Established(n) if n.peer_asn == PEER_AS))
    );
    assert_eq!(armed(&out, Timer::Hold), Some(90));
}

#[test]
fn second_open_in_open_confirm_is_fsm_error_subcode_2_without_collision_detection_rfc6608() {
    let mut h = Harness::new(config());
    h.drive_to_open_confirm(peer_open(90));
    let out = h.recv(Message::Open(peer_open(90)));
    assert_eq!(notification_sent(&out), Some((5, 2, vec![])));
}

#[test]
fn keepalive_timer_expiry_sends_keepalive_and_rearms_rfc4271_8_2_2_openconfirm_event_11() {
    let mut h = Harness::new(config());
    h.drive_to_open_confirm(peer_open(90));
    let out = h.feed(Input::KeepaliveTimerExpired);
    assert_eq!(sent(&out), vec![&Message::Keepalive]);
    assert_eq!(armed(&out, Timer::Keepalive), Some(30));
}

// ===== Established =====

#[test]
fn update_restarts_the_hold_timer_and_goes_to_the_rib_rfc4271_8_2_2_established_event_27() {
    let mut h = Harness::new(config());
    h.drive_to_established();
    let update = UpdateMsg::end_of_rib(Family::Ipv4Unicast);
    let out = h.recv(Message::Update(update.clone()));
    assert_eq!(armed(&out, Timer::Hold), Some(90));
    assert!(out.contains(&Output::RoutesReceived(update)));
}

#[test]
fn keepalive_restarts_the_hold_timer_rfc4271_8_2_2_established_event_26() {
    let mut h = Harness::new(config());
    h.drive_to_established();
    let out = h.recv(Message::Keepalive);
    assert_eq!(
        out,
        vec![Output::ArmTimer {
            timer: Timer::Hold,
            secs: 90
        }]
    );
}

#[test]
fn open_in_established_is_fsm_error_subcode_3_rfc6608() {
    let mut h = Harness::new(config());
    h.drive_to_established();
    let out = h.recv(Message::Open(peer_open(90)));
    assert_eq!(notification_sent(&out), Some((5, 3, vec![])));
    assert_eq!(h.fsm.state(), State::Idle);
}

#[test]
fn hold_timer_expiry_sends_hold_timer_expired_notification_rfc4271_6_5() {
    let mut h = Harness::new(config());
    h.drive_to_established();
    let out = h.feed(Input::HoldTimerExpired);
    assert_eq!(notification_sent(&out), Some((4, 0, vec![])));
    assert!(matches!(down(&out), Some((DownReason::HoldTimerExpired, _))));
    assert_eq!(h.fsm.state(), State::Idle);
}

#[test]
fn received_notification_closes_without_answering_rfc4271_6_4() {
    let mut h = Harness::new(config());
    h.drive_to_established();
    let cease = NotificationMsg::cease(notif::CEASE_ADMIN_RESET);
    let out = h.recv(Message::Notification(cease.clone()));
    assert_eq!(down(&out), Some((&DownReason::NotificationReceived(cease), None)));
    assert!(sent(&out).is_empty());
    assert_eq!(h.fsm.state(), State::Idle);
}

#[test]
fn decode_error_sends_its_notification_and_closes_rfc4271_6_3() {
    let mut h = Harness::new(config());
    h.drive_to_established();
    let err = SessionCodec::default().decode(&[0xff; 19]).unwrap_err();
    let out = h.feed(Input::DecodeError(err));
    assert_eq!(notification_sent(&out).map(|n| n.0), Some(1));
    assert_eq!(h.fsm.state(), State::Idle);
}

#[test]
fn tcp_failure_in_established_takes_the_session_down_rfc4271_8_2_2_established_event_18() {
    let mut h = Harness::new(config());
    h.drive_to_established();
    let out = h.feed(Input::TcpFailed);
    assert!(matches!(down(&out), Some((DownReason::TcpFailed, None))));
    assert_eq!(h.fsm.state(), State::Idle);
}

#[test]
fn route_refresh_for_a_negotiated_family_asks_for_our_routes_rfc2918_4() {
    let mut h = Harness::new(config());
    h.drive_to_established();
    let out = h.recv(Message::RouteRefresh(RouteRefreshMsg::request(Family::Vpnv4)));
    assert!(out.contains(&Output::RouteRefreshRequested(Family::Vpnv4)));
}

#[test]
fn route_refresh_for_an_unknown_family_is_ignored_rfc2918_4() {
    let mut h = Harness::new(config());
    h.drive_to_established();
    let out = h.recv(Message::RouteRefresh(RouteRefreshMsg {
        afi: 2,
        subtype: 0,
        safi: 1,
    }));
    assert!(!out.iter().any(|o| matches!(o, Output::RouteRefreshRequested(_))));
    assert_eq!(h.fsm.state(), State::Established);
}

// ===== Stop, restart, timers =====

#[test]
fn manual_stop_sends_cease_administrative_shutdown_and_stays_down_rfc4486() {
    let mut h = Harness::new(config());
    h.drive_to_established();
    let out = h.feed(Input::Stop);
    assert_eq!(notification_sent(&out), Some((6, 2, vec![])));
    assert_eq!(h.fsm.state(), State::Idle);
    assert!(!h.fsm.is_armed(Timer::IdleHold));
    assert!(h.feed(Input::IdleHoldTimerExpired).is_empty());
}

#[test]
fn errors_restart_automatically_after_an_idle_hold_that_backs_off_rfc4271_8_1_1() {
    let mut h = Harness::new(config());
    h.drive_to_open_sent();
    let out = h.feed(Input::HoldTimerExpired);
    assert_eq!(armed(&out, Timer::IdleHold), Some(2));
    let out = h.feed(Input::IdleHoldTimerExpired);
    assert!(out.contains(&Output::Connect));
    h.feed(Input::TcpConnected);
    let out = h.feed(Input::HoldTimerExpired);
    assert_eq!(
        armed(&out, Timer::IdleHold),
        Some(4),
        "second failure doubles the delay"
    );
    // a session that reaches Established resets the backoff
    h.feed(Input::IdleHoldTimerExpired);
    h.feed(Input::TcpConnected);
    h.recv(Message::Open(peer_open(90)));
    h.recv(Message::Keepalive);
    let out = h.feed(Input::HoldTimerExpired);
    assert_eq!(armed(&out, Timer::IdleHold), Some(2));
}

#[test]
fn expiry_of_a_timer_that_is_not_armed_is_ignored() {
    let mut h = Harness::new(config());
    h.drive_to_open_sent();
    // the keepalive timer is not armed in OpenSent
    assert!(h.feed(Input::KeepaliveTimerExpired).is_empty());
    assert_eq!(h.fsm.state(), State::OpenSent);
    // a hold expiry racing with the session's end does nothing once the timer was stopped
    h.feed(Input::Stop);
    assert!(h.feed(Input::HoldTimerExpired).is_empty());
}

#[test]
fn every_state_change_is_reported() {
    let mut h = Harness::new(config());
    let mut changes = Vec::new();
    for input in [Input::Start, Input::TcpConnected] {
        changes.extend(h.feed(input));
    }
    changes.extend(h.recv(Message::Open(peer_open(90))));
    changes.extend(h.recv(Message::Keepalive));
    let states: Vec<State> = changes
        .iter()
        .filter_map(|o| match o {
            Output::StateChanged { to, .. } => Some(*to),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        vec![
            State::Connect,
            State::OpenSent,
            State::OpenConfirm,
            State::Established
        ]
    );
}

// ===== connection collision (RFC 4271 §6.8) and graceful restart bits (RFC 4724) =====

#[test]
fn a_lost_collision_sends_cease_7_and_waits_in_active_without_a_restart_delay() {
    for confirm in [false, true] {
        let mut h = Harness::new(config());
        if confirm {
            h.drive_to_open_confirm(peer_open(90));
        } else {
            h.drive_to_open_sent();
        }
        let out = h.feed(Input::ConnectionCollision);
        assert_eq!(notification_sent(&out), Some((6, 7, Vec::new())), "{out:?}");
        assert_eq!(
            down(&out).map(|d| d.0.clone()),
            Some(DownReason::ConnectionCollision)
        );
        assert_eq!(h.fsm.state(), State::Active);
        assert!(!h.fsm.is_armed(Timer::IdleHold) && !h.fsm.is_armed(Timer::Hold));
        // The winning connection is handed over at once: OPEN on it.
        let out = h.feed(Input::TcpConnected);
        assert!(matches!(sent(&out)[..], [Message::Open(_)]), "{out:?}");
        assert_eq!(h.fsm.state(), State::OpenSent);
    }
}

#[test]
fn a_collision_input_outside_open_sent_and_open_confirm_changes_nothing() {
    let mut h = Harness::new(config());
    h.drive_to_established();
    assert!(h.feed(Input::ConnectionCollision).is_empty());
    assert_eq!(h.fsm.state(), State::Established);
}

fn our_gr(out: &[Output]) -> Option<weft_bgp::GracefulRestart> {
    sent(out).iter().find_map(|m| match m {
        Message::Open(o) => o.graceful_restart().cloned(),
        _ => None,
    })
}

#[test]
fn a_restarting_speaker_sets_r_on_its_first_session_only_and_f_when_configured() {
    let mut h = Harness::new(FsmConfig {
        graceful_restart_secs: Some(120),
        restart_state: true,
        forwarding_preserved: true,
        ..config()
    });
    let gr = our_gr(&h.drive_to_open_sent()).unwrap();
    assert!(gr.restarted && gr.restart_secs == 120);
    assert!(
        gr.families.iter().all(|(_, f)| *f) && gr.families.len() == 2,
        "{gr:?}"
    );
    h.recv(Message::Open(peer_open(90)));
    h.recv(Message::Keepalive);
    assert_eq!(h.fsm.state(), State::Established);
    // The session fails; the next OPEN no longer claims a restart.
    h.feed(Input::TcpFailed);
    h.feed(Input::Start);
    let gr = our_gr(&h.feed(Input::TcpConnected)).unwrap();
    assert!(!gr.restarted, "{gr:?}");

    // Without forwarding_preserved the F bits are clear.
    let mut h = Harness::new(FsmConfig {
        graceful_restart_secs: Some(120),
        ..config()
    });
    let gr = our_gr(&h.drive_to_open_sent()).unwrap();
    assert!(!gr.restarted && gr.families.iter().all(|(_, f)| !*f), "{gr:?}");
}
