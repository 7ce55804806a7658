//! Wire vectors captured from GoBGP 3.10 (Debian `gobgpd`), an independent implementation:
//! what it sent to weft in `interop_gobgp::capture_gobgp_vectors` (re-run that ignored
//! test with `--nocapture` to regenerate). Each is decoded and compared with the expected
//! value; where weft's encoder makes the same choices as GoBGP (attribute order, labels),
//! the bytes are also checked the other way.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::net::Ipv4Addr;

use weft_bgp::codec::SessionCodec;
use weft_bgp::{
    AsPath, Capability, ExtCommunity, Family, Message, Nlri, Origin, PathAttributes, Prefix4,
    RouteDistinguisher, RouteKey, RouteTarget, UpdateMsg,
};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn p(s: &str) -> Prefix4 {
    s.parse().unwrap()
}

/// The session codec after negotiating with GoBGP: 4-octet AS, both families.
fn codec() -> SessionCodec {
    SessionCodec::new(true, Family::ALL)
}

const OPEN: &str = "ffffffffffffffffffffffffffffffff00470104fde900090aff00022a02280200490402766d0001040001000101040001008041040000fde9050c000100010002000100800002";
const KEEPALIVE: &str = "ffffffffffffffffffffffffffffffff001304";
const UPDATE_IPV4: &str = "ffffffffffffffffffffffffffffffff003d02000000224001010240020602010000fde94003047f00000180040400000014c00804fde90007180a0200";
const UPDATE_VPNV4: &str = "ffffffffffffffffffffffffffffffff0052020000003b4001010240020602010000fde9800e200001800c00000000000000000a00000900700006410000fde90000000a0a0100c010080002fde900000064";
const WITHDRAW_IPV4: &str = "ffffffffffffffffffffffffffffffff001b020004180a02000000";
const WITHDRAW_VPNV4: &str =
    "ffffffffffffffffffffffffffffffff002c0200000015800f12000180700006410000fde90000000a0a0100";

#[test]
fn gobgp_open_with_all_capabilities_in_one_parameter() {
    let Message::Open(open) = codec().decode(&hex(OPEN)).unwrap() else {
        panic!()
    };
    assert_eq!(open.asn(), 65001);
    assert_eq!(open.hold_secs, 9);
    assert_eq!(open.router_id, Ipv4Addr::new(10, 255, 0, 2));
    assert_eq!(open.families(), vec![Family::Ipv4Unicast, Family::Vpnv4]);
    assert!(open.route_refresh());
    // FQDN (73) and Extended Next Hop Encoding (5) are kept, not understood
    let others: Vec<u8> = open
        .capabilities
        .iter()
        .filter_map(|c| match c {
            Capability::Other { code, .. } => Some(*code),
            _ => None,
        })
        .collect();
    assert_eq!(others, vec![73, 5]);
}

#[test]
fn gobgp_keepalive() {
    assert_eq!(codec().decode(&hex(KEEPALIVE)).unwrap(), Message::Keepalive);
    assert_eq!(codec().encode(&Message::Keepalive).unwrap(), hex(KEEPALIVE));
}

#[test]
fn gobgp_ipv4_update_with_med_and_community() {
    let expected = Message::Update(UpdateMsg {
        attributes: Some(PathAttributes {
            origin: Origin::Incomplete,
            as_path: AsPath::sequence(vec![65001]),
            next_hop: Some(Ipv4Addr::LOCALHOST),
            med: Some(20),
            communities: vec![(65001 << 16) | 7],
            ..PathAttributes::default()
        }),
        announced: vec![Nlri::Ipv4(p("10.2.0.0/24"))],
        ..UpdateMsg::default()
    });
    assert_eq!(codec().decode(&hex(UPDATE_IPV4)).unwrap(), expected);
    // same attribute order as GoBGP: byte-identical the other way
    assert_eq!(codec().encode(&expected).unwrap(), hex(UPDATE_IPV4));
}

#[test]
fn gobgp_vpnv4_update_with_rd_label_and_route_target() {
    let expected = Message::Update(UpdateMsg {
        attributes: Some(PathAttributes {
            origin: Origin::Incomplete,
            as_path: AsPath::sequence(vec![65001]),
            next_hop: Some(Ipv4Addr::new(10, 0, 0, 9)),
            ext_communities: vec![ExtCommunity::RouteTarget(RouteTarget::As2 {
                asn: 65001,
                value: 100,
            })],
            ..PathAttributes::default()
        }),
        announced: vec![Nlri::Vpnv4 {
            rd: RouteDistinguisher::As2 {
                asn: 65001,
                number: 10,
            },
            prefix: p("10.1.0.0/24"),
            label: 100,
        }],
        ..UpdateMsg::default()
    });
    let bytes = hex(UPDATE_VPNV4);
    assert_eq!(codec().decode(&bytes).unwrap(), expected);
    // weft puts MP_REACH_NLRI first (RFC 7606 §5.1), GoBGP after AS_PATH: same content
    let ours = codec().encode(&expected).unwrap();
    assert_eq!(ours.len(), bytes.len());
    assert_eq!(codec().decode(&ours).unwrap(), expected);
}

#[test]
fn gobgp_ipv4_withdrawal() {
    let expected = Message::Update(UpdateMsg {
        withdrawn: vec![RouteKey::Ipv4(p("10.2.0.0/24"))],
        ..UpdateMsg::default()
    });
    assert_eq!(codec().decode(&hex(WITHDRAW_IPV4)).unwrap(), expected);
    assert_eq!(codec().encode(&expected).unwrap(), hex(WITHDRAW_IPV4));
}

#[test]
fn gobgp_vpnv4_withdrawal_carries_the_label_not_0x800000() {
    // RFC 8277 §2.4 allows either; weft sends 0x800000 and accepts both.
    let expected = Message::Update(UpdateMsg {
        withdrawn: vec![RouteKey::Vpnv4 {
            rd: RouteDistinguisher::As2 {
                asn: 65001,
                number: 10,
            },
            prefix: p("10.1.0.0/24"),
        }],
        ..UpdateMsg::default()
    });
    assert_eq!(codec().decode(&hex(WITHDRAW_VPNV4)).unwrap(), expected);
}
