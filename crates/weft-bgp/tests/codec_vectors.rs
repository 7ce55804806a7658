//! Codec byte vectors, written by hand from the RFCs' message layouts, checked in both
//! directions (decode → expected value, encode → expected bytes), plus decode-only vectors
//! for every error RFC 4271 §6 and RFC 7606 define an outcome for.
//!
//! Vectors captured from GoBGP live in `codec_gobgp_vectors.rs`.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::net::Ipv4Addr;

use weft_bgp::codec::SessionCodec;
use weft_bgp::message::notif;
use weft_bgp::{
    AsPath, AsSegment, AttrAction, Capability, ExtCommunity, Family, GracefulRestart, Message, Nlri,
    NotificationMsg, OpenMsg, Origin, PathAttributes, Prefix4, RouteDistinguisher, RouteKey, RouteRefreshMsg,
    RouteTarget, UpdateMsg,
};

/// Parses "ff ff 00 .." (whitespace and `|` ignored) into bytes.
fn hex(s: &str) -> Vec<u8> {
    let clean: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    assert!(clean.len().is_multiple_of(2), "odd hex: {s}");
    (0..clean.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).unwrap())
        .collect()
}

const MARKER: &str = "ffffffff ffffffff ffffffff ffffffff";

fn msg(len_and_type: &str, body: &str) -> Vec<u8> {
    hex(&format!("{MARKER} {len_and_type} {body}"))
}

/// Asserts equal bytes, printing both as hex rows with the first difference marked.
fn assert_bytes(expected: &[u8], actual: &[u8]) {
    if expected == actual {
        return;
    }
    let first = expected
        .iter()
        .zip(actual)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(actual.len()));
    let rows = |b: &[u8]| {
        b.chunks(16)
            .enumerate()
            .map(|(i, c)| {
                format!(
                    "{:04x}: {}",
                    i * 16,
                    c.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    panic!(
        "bytes differ at offset {first} (expected {} octets, got {})\nexpected:\n{}\nactual:\n{}",
        expected.len(),
        actual.len(),
        rows(expected),
        rows(actual)
    );
}

fn both_ways(codec: &SessionCodec, bytes: &[u8], expected: &Message) {
    let decoded = codec
        .decode(bytes)
        .unwrap_or_else(|e| panic!("decode failed: {e}"));
    assert_eq!(&decoded, expected, "decode");
    let encoded = codec.encode(expected).unwrap();
    assert_bytes(bytes, &encoded);
}

fn p(s: &str) -> Prefix4 {
    s.parse().unwrap()
}

const RD: RouteDistinguisher = RouteDistinguisher::As2 {
    asn: 64512,
    number: 1,
};

// ===== round trips, both directions =====

#[test]
fn keepalive_rfc4271_4_4() {
    both_ways(&SessionCodec::default(), &msg("0013 04", ""), &Message::Keepalive);
}

#[test]
fn open_with_mp_route_refresh_and_4_octet_as_rfc4271_4_2_rfc5492() {
    let bytes = msg(
        "0033 01",
        "04 fde9 005a 0a000001 16
         02 14 | 01 04 0001 00 01 | 01 04 0001 00 80 | 02 00 | 41 04 0000fde9",
    );
    let open = OpenMsg::new(
        65001,
        90,
        Ipv4Addr::new(10, 0, 0, 1),
        vec![
            Capability::multiprotocol(Family::Ipv4Unicast),
            Capability::multiprotocol(Family::Vpnv4),
            Capability::RouteRefresh,
            Capability::FourOctetAs(65001),
        ],
    );
    both_ways(&SessionCodec::default(), &bytes, &Message::Open(open));
}

#[test]
fn open_with_a_4_octet_as_sends_as_trans_rfc6793_3() {
    let bytes = msg("0025 01", "04 5ba0 00b4 0a000002 08 02 06 | 41 04 fa56ea01");
    let open = OpenMsg::new(
        4_200_000_001,
        180,
        Ipv4Addr::new(10, 0, 0, 2),
        vec![Capability::FourOctetAs(4_200_000_001)],
    );
    assert_eq!(open.my_as, 23456);
    both_ways(&SessionCodec::default(), &bytes, &Message::Open(open.clone()));
    let Message::Open(decoded) = SessionCodec::default().decode(&bytes).unwrap() else {
        panic!()
    };
    assert_eq!(decoded.asn(), 4_200_000_001);
}

#[test]
fn open_with_graceful_restart_rfc4724_3() {
    // R=0, N=0, restart time 120, IPv4 unicast F=0, VPNv4 F=1
    let bytes = msg(
        "002b 01",
        "04 fde9 005a 0a000001 0e 02 0c | 40 0a 0078 0001 01 00 0001 80 80",
    );
    let open = OpenMsg::new(
        65001,
        90,
        Ipv4Addr::new(10, 0, 0, 1),
        vec![Capability::GracefulRestart(GracefulRestart {
            restarted: false,
            notification: false,
            restart_secs: 120,
            families: vec![(Family::Ipv4Unicast, false), (Family::Vpnv4, true)],
        })],
    );
    both_ways(&SessionCodec::default(), &bytes, &Message::Open(open));
}

#[test]
fn open_with_one_parameter_per_capability_decodes_the_same() {
    // GoBGP and FRR put each capability in its own optional parameter.
    let bytes = msg(
        "0039 01",
        "04 fde9 005a 0a000001 1c 02 06 01 04 0001 0001 | 02 06 01 04 0001 0080 | 02 02 02 00 | 02 06 41 04 0000fde9",
    );
    let Message::Open(open) = SessionCodec::default().decode(&bytes).unwrap() else {
        panic!()
    };
    assert_eq!(open.families(), vec![Family::Ipv4Unicast, Family::Vpnv4]);
    assert!(open.route_refresh());
    assert_eq!(open.asn(), 65001);
}

#[test]
fn open_unknown_capability_is_kept_not_rejected_rfc5492_4() {
    let bytes = msg("0021 01", "04 fde9 005a 0a000001 04 02 02 | 63 00");
    let Message::Open(open) = SessionCodec::default().decode(&bytes).unwrap() else {
        panic!()
    };
    assert_eq!(
        open.capabilities,
        vec![Capability::Other {
            code: 0x63,
            value: vec![]
        }]
    );
}

fn ipv4_attrs() -> PathAttributes {
    PathAttributes {
        origin: Origin::Igp,
        as_path: AsPath::sequence(vec![65001]),
        next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
        ..PathAttributes::default()
    }
}

#[test]
fn update_announces_ipv4_prefix_rfc4271_4_3() {
    let bytes = msg(
        "0030 02",
        "0000 0014 | 40 01 01 00 | 40 02 06 02 01 0000fde9 | 40 03 04 c0000201 | 20 0a2ffffc",
    );
    let update = UpdateMsg {
        attributes: Some(ipv4_attrs()),
        announced: vec![Nlri::Ipv4(p("10.47.255.252/32"))],
        ..UpdateMsg::default()
    };
    both_ways(&SessionCodec::default(), &bytes, &Message::Update(update));
}

#[test]
fn update_with_every_attribute_weft_uses() {
    let attrs = PathAttributes {
        origin: Origin::Incomplete,
        as_path: AsPath {
            segments: vec![
                AsSegment::Sequence(vec![65001, 65002]),
                AsSegment::Set(vec![7, 8]),
            ],
        },
        next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
        med: Some(50),
        local_pref: Some(200),
        atomic_aggregate: true,
        aggregator: Some((65001, Ipv4Addr::new(10, 0, 0, 9))),
        communities: vec![0xfde9_0064],
        ext_communities: vec![
            ExtCommunity::RouteTarget(RouteTarget::As2 {
                asn: 64512,
                value: 8_000_001,
            }),
            ExtCommunity::Other([0x03, 0x0c, 0, 0, 0, 0, 0, 8]),
        ],
        originator_id: Some(Ipv4Addr::new(10, 0, 0, 7)),
        cluster_list: vec![Ipv4Addr::new(10, 0, 0, 1)],
    };
    let bytes = msg(
        "0081 02",
        "0000 0066
         40 01 01 02
         40 02 14 02 02 0000fde9 0000fdea 01 02 00000007 00000008
         40 03 04 c0000201
         80 04 04 00000032
         40 05 04 000000c8
         40 06 00
         c0 07 08 0000fde9 0a000009
         c0 08 04 fde90064
         80 09 04 0a000007
         80 0a 04 0a000001
         c0 10 10 0002fc00007a1201 030c000000000008
         18 0a0101",
    );
    let update = UpdateMsg {
        attributes: Some(attrs),
        announced: vec![Nlri::Ipv4(p("10.1.1.0/24"))],
        ..UpdateMsg::default()
    };
    both_ways(&SessionCodec::default(), &bytes, &Message::Update(update));
}

#[test]
fn update_withdraws_ipv4_prefix_rfc4271_4_3() {
    let bytes = msg("001c 02", "0005 20 0a2ffffc 0000");
    let update = UpdateMsg {
        withdrawn: vec![RouteKey::Ipv4(p("10.47.255.252/32"))],
        ..UpdateMsg::default()
    };
    both_ways(&SessionCodec::default(), &bytes, &Message::Update(update));
}

#[test]
fn end_of_rib_ipv4_unicast_rfc4724_2() {
    both_ways(
        &SessionCodec::default(),
        &msg("0017 02", "0000 0000"),
        &Message::Update(UpdateMsg::end_of_rib(Family::Ipv4Unicast)),
    );
}

#[test]
fn end_of_rib_vpnv4_rfc4724_2() {
    both_ways(
        &SessionCodec::default(),
        &msg("001d 02", "0000 0006 80 0f 03 0001 80"),
        &Message::Update(UpdateMsg::end_of_rib(Family::Vpnv4)),
    );
}

#[test]
fn update_announces_vpnv4_with_rd_label_and_rt_rfc4364_4_3_rfc4760_3() {
    let bytes = msg(
        "0053 02",
        "0000 003c
         80 0e 20 0001 80 0c 0000000000000000 c0000201 00
                  70 000101 0000fc0000000001 0a0101
         40 01 01 00
         40 02 00
         40 05 04 00000064
         c0 10 08 0002fc0000000064",
    );
    let update = UpdateMsg {
        attributes: Some(PathAttributes {
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
            local_pref: Some(100),
            ext_communities: vec![ExtCommunity::RouteTarget(RouteTarget::As2 {
                asn: 64512,
                value: 100,
            })],
            ..PathAttributes::default()
        }),
        announced: vec![Nlri::Vpnv4 {
            rd: RD,
            prefix: p("10.1.1.0/24"),
            label: 16,
        }],
        ..UpdateMsg::default()
    };
    both_ways(&SessionCodec::default(), &bytes, &Message::Update(update));
}

#[test]
fn update_withdraws_vpnv4_with_compatibility_label_rfc8277_2_4() {
    let bytes = msg(
        "002c 02",
        "0000 0015 80 0f 12 0001 80 70 800000 0000fc0000000001 0a0101",
    );
    let update = UpdateMsg {
        withdrawn: vec![RouteKey::Vpnv4 {
            rd: RD,
            prefix: p("10.1.1.0/24"),
        }],
        ..UpdateMsg::default()
    };
    both_ways(&SessionCodec::default(), &bytes, &Message::Update(update));
}

#[test]
fn route_target_types_0_1_2_subtype_2_rfc4360_rfc5668() {
    let bytes = msg(
        "0045 02",
        "0000 0029 40 01 01 00 | 40 02 00 | 40 03 04 c0000201
         c0 10 18 0002fc0000000064 01020a0000010007 0202fa56ea010009
         20 0a2ffffc",
    );
    let attrs = PathAttributes {
        next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
        ext_communities: vec![
            ExtCommunity::RouteTarget(RouteTarget::As2 {
                asn: 64512,
                value: 100,
            }),
            ExtCommunity::RouteTarget(RouteTarget::Ipv4 {
                ip: Ipv4Addr::new(10, 0, 0, 1),
                value: 7,
            }),
            ExtCommunity::RouteTarget(RouteTarget::As4 {
                asn: 4_200_000_001,
                value: 9,
            }),
        ],
        ..PathAttributes::default()
    };
    let update = UpdateMsg {
        attributes: Some(attrs),
        announced: vec![Nlri::Ipv4(p("10.47.255.252/32"))],
        ..UpdateMsg::default()
    };
    both_ways(&SessionCodec::default(), &bytes, &Message::Update(update));
}

#[test]
fn two_octet_session_uses_as_trans_and_as4_path_rfc6793_4_2_2() {
    let codec = SessionCodec::new(false, Family::ALL);
    let bytes = msg(
        "003d 02",
        "0000 0021 40 01 01 00 | 40 02 06 02 02 fde9 5ba0 | 40 03 04 c0000201 | c0 11 0a 02 02 0000fde9 fa56ea01
         20 0a2ffffc",
    );
    let update = UpdateMsg {
        attributes: Some(PathAttributes {
            as_path: AsPath::sequence(vec![65001, 4_200_000_001]),
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
            ..PathAttributes::default()
        }),
        announced: vec![Nlri::Ipv4(p("10.47.255.252/32"))],
        ..UpdateMsg::default()
    };
    both_ways(&codec, &bytes, &Message::Update(update));
}

#[test]
fn notification_cease_admin_shutdown_rfc4486() {
    both_ways(
        &SessionCodec::default(),
        &msg("0015 03", "06 02"),
        &Message::Notification(NotificationMsg::cease(notif::CEASE_ADMIN_SHUTDOWN)),
    );
}

#[test]
fn notification_with_unknown_code_is_still_received_rfc4271_4_5() {
    both_ways(
        &SessionCodec::default(),
        &msg("0017 03", "09 07 abcd"),
        &Message::Notification(NotificationMsg::new(9, 7, vec![0xab, 0xcd])),
    );
}

#[test]
fn route_refresh_rfc2918_3() {
    both_ways(
        &SessionCodec::default(),
        &msg("0017 05", "0001 00 01"),
        &Message::RouteRefresh(RouteRefreshMsg::request(Family::Ipv4Unicast)),
    );
    both_ways(
        &SessionCodec::default(),
        &msg("0017 05", "0001 00 80"),
        &Message::RouteRefresh(RouteRefreshMsg::request(Family::Vpnv4)),
    );
}

#[test]
fn route_refresh_for_unknown_family_decodes_so_it_can_be_ignored_rfc2918_4() {
    both_ways(
        &SessionCodec::default(),
        &msg("0017 05", "4444 00 99"),
        &Message::RouteRefresh(RouteRefreshMsg {
            afi: 0x4444,
            subtype: 0,
            safi: 0x99,
        }),
    );
}

// ===== header errors: RFC 4271 §6.1 =====

fn decode_err(codec: &SessionCodec, bytes: &[u8]) -> NotificationMsg {
    match codec.decode(bytes) {
        Err(e) => e.notification,
        Ok(m) => panic!("expected an error, decoded {m:?}"),
    }
}

#[test]
fn bad_marker_is_connection_not_synchronized_rfc4271_6_1() {
    let mut bytes = msg("0013 04", "");
    bytes[3] = 0;
    assert_eq!(
        decode_err(&SessionCodec::default(), &bytes),
        NotificationMsg::new(1, 1, vec![])
    );
}

#[test]
fn length_below_19_is_bad_message_length_with_the_length_as_data_rfc4271_6_1() {
    let bytes = msg("0012 04", "");
    assert_eq!(
        SessionCodec::frame_len(&bytes).unwrap_err().notification,
        NotificationMsg::new(1, 2, vec![0, 0x12])
    );
}

#[test]
fn length_above_4096_is_bad_message_length_rfc4271_6_1() {
    let bytes = msg("1001 02", "");
    assert_eq!(
        SessionCodec::frame_len(&bytes).unwrap_err().notification,
        NotificationMsg::new(1, 2, vec![0x10, 0x01])
    );
}

#[test]
fn keepalive_longer_than_19_is_bad_message_length_rfc4271_6_1() {
    let bytes = msg("0014 04", "00");
    assert_eq!(
        decode_err(&SessionCodec::default(), &bytes),
        NotificationMsg::new(1, 2, vec![0, 0x14])
    );
}

#[test]
fn unknown_type_is_bad_message_type_rfc4271_6_1() {
    let bytes = msg("0013 09", "");
    assert_eq!(
        decode_err(&SessionCodec::default(), &bytes),
        NotificationMsg::new(1, 3, vec![9])
    );
}

#[test]
fn frame_len_waits_for_the_whole_message() {
    let bytes = msg("0013 04", "");
    assert_eq!(SessionCodec::frame_len(&bytes[..10]).unwrap(), None);
    let mut two = bytes.clone();
    two.extend_from_slice(&bytes);
    assert_eq!(SessionCodec::frame_len(&two).unwrap(), Some(19));
}

#[test]
fn borr_with_bad_length_is_route_refresh_invalid_length_rfc7313_5() {
    let bytes = msg("0018 05", "0001 01 01 00");
    assert_eq!(
        SessionCodec::frame_len(&bytes).unwrap_err().notification.code,
        notif::ROUTE_REFRESH
    );
}

// ===== OPEN errors: RFC 4271 §6.2 =====

#[test]
fn open_version_3_is_unsupported_version_with_4_as_data_rfc4271_6_2() {
    let bytes = msg("001d 01", "03 fde9 005a 0a000001 00");
    assert_eq!(
        decode_err(&SessionCodec::default(), &bytes),
        NotificationMsg::new(2, 1, vec![0, 4])
    );
}

#[test]
fn open_hold_time_1_or_2_is_unacceptable_rfc4271_6_2() {
    let bytes = msg("001d 01", "04 fde9 0002 0a000001 00");
    assert_eq!(
        decode_err(&SessionCodec::default(), &bytes),
        NotificationMsg::new(2, 6, vec![0, 2])
    );
}

#[test]
fn open_bgp_identifier_zero_is_bad_bgp_identifier_rfc4271_6_2() {
    let bytes = msg("001d 01", "04 fde9 005a 00000000 00");
    assert_eq!(
        decode_err(&SessionCodec::default(), &bytes).subcode,
        notif::OPEN_BAD_BGP_ID
    );
}

#[test]
fn open_unknown_optional_parameter_is_unsupported_optional_parameter_rfc4271_6_2() {
    let bytes = msg("0021 01", "04 fde9 005a 0a000001 04 01 02 abcd");
    assert_eq!(
        decode_err(&SessionCodec::default(), &bytes).subcode,
        notif::OPEN_UNSUPPORTED_OPT_PARAM
    );
}

// ===== UPDATE errors: RFC 4271 §6.3 and RFC 7606 =====

fn decode_update(codec: &SessionCodec, bytes: &[u8]) -> UpdateMsg {
    match codec.decode(bytes) {
        Ok(Message::Update(u)) => u,
        other => panic!("expected an UPDATE, got {other:?}"),
    }
}

/// An UPDATE for 10.47.255.252/32 with `attrs` (hex) as its attribute list.
fn update_with_attrs(attrs: &str) -> Vec<u8> {
    let attrs = hex(attrs);
    let mut body = vec![0, 0];
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(&attrs);
    body.extend_from_slice(&hex("20 0a2ffffc"));
    let mut out = hex(MARKER);
    out.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    out.push(2);
    out.extend_from_slice(&body);
    out
}

const GOOD_ORIGIN: &str = "40 01 01 00";
const GOOD_AS_PATH: &str = "40 02 06 02 01 0000fde9";
const GOOD_NEXT_HOP: &str = "40 03 04 c0000201";

fn assert_treat_as_withdraw(u: &UpdateMsg, code: u8) {
    assert!(u.announced.is_empty(), "{u:?}");
    assert_eq!(u.withdrawn, vec![RouteKey::Ipv4(p("10.47.255.252/32"))]);
    assert!(u.attributes.is_none());
    assert!(
        u.errors
            .iter()
            .any(|e| e.type_code == code && e.action == AttrAction::TreatAsWithdraw),
        "{:?}",
        u.errors
    );
}

#[test]
fn withdrawn_length_overrun_is_malformed_attribute_list_rfc4271_6_3() {
    let bytes = msg("0017 02", "0005 0000");
    assert_eq!(
        decode_err(&SessionCodec::default(), &bytes),
        NotificationMsg::new(3, 1, vec![])
    );
}

#[test]
fn total_attribute_length_overrun_is_malformed_attribute_list_rfc4271_6_3() {
    let bytes = msg("0018 02", "0000 0009 00");
    assert_eq!(
        decode_err(&SessionCodec::default(), &bytes),
        NotificationMsg::new(3, 1, vec![])
    );
}

#[test]
fn malformed_origin_is_treat_as_withdraw_rfc7606_7_1() {
    let u = decode_update(
        &SessionCodec::default(),
        &update_with_attrs(&format!("40 01 01 05 {GOOD_AS_PATH} {GOOD_NEXT_HOP}")),
    );
    assert_treat_as_withdraw(&u, 1);
    let u = decode_update(
        &SessionCodec::default(),
        &update_with_attrs(&format!("40 01 02 0000 {GOOD_AS_PATH} {GOOD_NEXT_HOP}")),
    );
    assert_treat_as_withdraw(&u, 1);
}

#[test]
fn malformed_as_path_is_treat_as_withdraw_rfc7606_7_2() {
    // segment type 9 does not exist
    let u = decode_update(
        &SessionCodec::default(),
        &update_with_attrs(&format!("{GOOD_ORIGIN} 40 02 06 09 01 0000fde9 {GOOD_NEXT_HOP}")),
    );
    assert_treat_as_withdraw(&u, 2);
}

#[test]
fn malformed_next_hop_length_is_treat_as_withdraw_rfc7606_7_3() {
    let u = decode_update(
        &SessionCodec::default(),
        &update_with_attrs(&format!("{GOOD_ORIGIN} {GOOD_AS_PATH} 40 03 05 c000020101")),
    );
    assert_treat_as_withdraw(&u, 3);
}

#[test]
fn next_hop_zero_is_ignored_as_withdraw_rfc4271_6_3() {
    let u = decode_update(
        &SessionCodec::default(),
        &update_with_attrs(&format!("{GOOD_ORIGIN} {GOOD_AS_PATH} 40 03 04 00000000")),
    );
    assert_treat_as_withdraw(&u, 3);
}

#[test]
fn malformed_med_is_treat_as_withdraw_rfc7606_7_4() {
    let u = decode_update(
        &SessionCodec::default(),
        &update_with_attrs(&format!(
            "{GOOD_ORIGIN} {GOOD_AS_PATH} {GOOD_NEXT_HOP} 80 04 02 0000"
        )),
    );
    assert_treat_as_withdraw(&u, 4);
}

#[test]
fn malformed_atomic_aggregate_is_attribute_discard_rfc7606_7_6() {
    let u = decode_update(
        &SessionCodec::default(),
        &update_with_attrs(&format!(
            "{GOOD_ORIGIN} {GOOD_AS_PATH} {GOOD_NEXT_HOP} 40 06 01 00"
        )),
    );
    assert_eq!(u.announced, vec![Nlri::Ipv4(p("10.47.255.252/32"))]);
    assert!(!u.attributes.as_ref().unwrap().atomic_aggregate);
    assert_eq!(u.errors.len(), 1);
    assert_eq!(u.errors[0].action, AttrAction::Discard);
}

#[test]
fn malformed_aggregator_is_attribute_discard_rfc7606_7_7() {
    let u = decode_update(
        &SessionCodec::default(),
        &update_with_attrs(&format!(
            "{GOOD_ORIGIN} {GOOD_AS_PATH} {GOOD_NEXT_HOP} c0 07 03 000001"
        )),
    );
    assert_eq!(u.announced.len(), 1);
    assert_eq!(u.errors[0].action, AttrAction::Discard);
}

#[test]
fn malformed_communities_is_treat_as_withdraw_rfc7606_7_8() {
    let u = decode_update(
        &SessionCodec::default(),
        &update_with_attrs(&format!(
            "{GOOD_ORIGIN} {GOOD_AS_PATH} {GOOD_NEXT_HOP} c0 08 03 000001"
        )),
    );
    assert_treat_as_withdraw(&u, 8);
}

#[test]
fn malformed_extended_communities_is_treat_as_withdraw_rfc7606_7_14() {
    let u = decode_update(
        &SessionCodec::default(),
        &update_with_attrs(&format!(
            "{GOOD_ORIGIN} {GOOD_AS_PATH} {GOOD_NEXT_HOP} c0 10 07 00020000000000"
        )),
    );
    assert_treat_as_withdraw(&u, 16);
}

#[test]
fn attribute_flags_conflict_is_treat_as_withdraw_rfc7606_3_c() {
    // ORIGIN sent as optional
    let u = decode_update(
        &SessionCodec::default(),
        &update_with_attrs(&format!("c0 01 01 00 {GOOD_AS_PATH} {GOOD_NEXT_HOP}")),
    );
    assert_treat_as_withdraw(&u, 1);
}

#[test]
fn missing_well_known_attribute_is_treat_as_withdraw_rfc7606_3_d() {
    let u = decode_update(
        &SessionCodec::default(),
        &update_with_attrs(&format!("{GOOD_ORIGIN} {GOOD_AS_PATH}")),
    );
    assert_treat_as_withdraw(&u, 0);
}

#[test]
fn repeated_attribute_keeps_the_first_rfc7606_3_g() {
    let u = decode_update(
        &SessionCodec::default(),
        &update_with_attrs(&format!(
            "{GOOD_ORIGIN} 40 01 01 02 {GOOD_AS_PATH} {GOOD_NEXT_HOP}"
        )),
    );
    assert_eq!(u.attributes.unwrap().origin, Origin::Igp);
    assert_eq!(u.errors[0].action, AttrAction::Discard);
}

#[test]
fn repeated_mp_reach_is_session_reset_rfc7606_3_g() {
    let reach = "80 0e 20 0001 80 0c 0000000000000000 c0000201 00 70 000101 0000fc0000000001 0a0101";
    let bytes = update_with_attrs(&format!(
        "{reach} {reach} {GOOD_ORIGIN} {GOOD_AS_PATH} {GOOD_NEXT_HOP}"
    ));
    assert_eq!(
        decode_err(&SessionCodec::default(), &bytes),
        NotificationMsg::new(3, 1, vec![])
    );
}

#[test]
fn malformed_mp_reach_is_session_reset_rfc7606_7_11() {
    // next hop length 12 but only 4 octets of next hop follow
    let bytes = update_with_attrs(&format!(
        "80 0e 08 0001 80 0c c0000201 {GOOD_ORIGIN} {GOOD_AS_PATH}"
    ));
    let n = decode_err(&SessionCodec::default(), &bytes);
    assert_eq!((n.code, n.subcode), (3, 9));
}

#[test]
fn attribute_overrunning_the_list_is_treat_as_withdraw_rfc7606_4() {
    // the last attribute claims 9 octets, only 4 remain before the NLRI
    let u = decode_update(
        &SessionCodec::default(),
        &update_with_attrs(&format!("{GOOD_ORIGIN} {GOOD_AS_PATH} 40 03 09 c0000201")),
    );
    assert_treat_as_withdraw(&u, 0);
}

#[test]
fn unrecognized_well_known_attribute_is_session_reset_rfc4271_6_3() {
    let bytes = update_with_attrs(&format!(
        "{GOOD_ORIGIN} {GOOD_AS_PATH} {GOOD_NEXT_HOP} 40 63 01 00"
    ));
    assert_eq!(
        decode_err(&SessionCodec::default(), &bytes),
        NotificationMsg::new(3, 2, hex("40 63 01 00"))
    );
}

#[test]
fn unknown_optional_attribute_is_ignored_rfc4271_5() {
    let u = decode_update(
        &SessionCodec::default(),
        &update_with_attrs(&format!(
            "{GOOD_ORIGIN} {GOOD_AS_PATH} {GOOD_NEXT_HOP} c0 63 02 abcd"
        )),
    );
    assert_eq!(u.announced.len(), 1);
    assert!(u.errors.is_empty());
}

#[test]
fn bad_nlri_prefix_length_is_invalid_network_field_rfc7606_5_3() {
    let bytes = msg("001d 02", "0000 0000 21 0a2ffffc00");
    let n = decode_err(&SessionCodec::default(), &bytes);
    assert_eq!((n.code, n.subcode), (3, 10));
}

#[test]
fn unnegotiated_family_is_ignored_rfc4760_7() {
    let codec = SessionCodec::new(true, [Family::Ipv4Unicast]);
    let bytes = update_with_attrs(&format!(
        "80 0e 20 0001 80 0c 0000000000000000 c0000201 00 70 000101 0000fc0000000001 0a0101 {GOOD_ORIGIN} {GOOD_AS_PATH} {GOOD_NEXT_HOP}"
    ));
    let u = decode_update(&codec, &bytes);
    assert_eq!(u.announced, vec![Nlri::Ipv4(p("10.47.255.252/32"))]);
    assert_eq!(u.errors.len(), 1);
}

#[test]
fn large_updates_are_split_below_4096_octets() {
    let codec = SessionCodec::default();
    let announced: Vec<Nlri> = (0..2000u32)
        .map(|i| Nlri::Ipv4(Prefix4::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap()))
        .collect();
    let update = UpdateMsg {
        attributes: Some(ipv4_attrs()),
        announced: announced.clone(),
        ..UpdateMsg::default()
    };
    let frames = codec.encode_update(&update).unwrap();
    assert!(frames.len() > 1);
    let mut back = Vec::new();
    for f in &frames {
        assert!(f.len() <= 4096);
        let Message::Update(u) = codec.decode(f).unwrap() else {
            panic!()
        };
        back.extend(u.announced);
    }
    assert_eq!(back, announced);
}

#[test]
fn our_notification_bytes_parse_in_netgauze_too() {
    use netgauze_bgp_pkt::BgpMessage;
    use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
    use netgauze_parse_utils::reader::SliceReader;
    use netgauze_parse_utils::traits::ParseFromWithOneInput;
    let bytes = SessionCodec::default()
        .encode(&Message::Notification(NotificationMsg::new(4, 0, vec![])))
        .unwrap();
    let parsed = BgpMessage::parse(&mut SliceReader::new(&bytes), &mut BgpParsingContext::default()).unwrap();
    assert!(matches!(parsed, BgpMessage::Notification(_)));
}
