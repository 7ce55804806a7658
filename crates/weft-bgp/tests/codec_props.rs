//! Property tests for the codec: encode → decode is the identity for every message weft
//! can build, and no input whatsoever makes the decoder panic.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::net::Ipv4Addr;

use proptest::prelude::*;
use weft_bgp::codec::SessionCodec;
use weft_bgp::types::MAX_LABEL;
use weft_bgp::{
    AsPath, AsSegment, Capability, ExtCommunity, Family, GracefulRestart, Message, Nlri, NotificationMsg,
    OpenMsg, Origin, PathAttributes, Prefix4, RouteDistinguisher, RouteKey, RouteRefreshMsg, RouteTarget,
    UpdateMsg,
};

fn prefix() -> impl Strategy<Value = Prefix4> {
    // First octet 1..=223: unicast space, which is all netgauze will encode.
    (1u8..=223, any::<[u8; 3]>(), 0u8..=32).prop_map(|(a, [b, c, d], len)| {
        Prefix4::new(Ipv4Addr::new(a, b, c, d), len.max(if a == 0 { 1 } else { 0 })).unwrap()
    })
}

fn unicast_addr() -> impl Strategy<Value = Ipv4Addr> {
    (1u8..=223, any::<[u8; 3]>()).prop_map(|(a, [b, c, d])| Ipv4Addr::new(a, b, c, d))
}

fn rd() -> impl Strategy<Value = RouteDistinguisher> {
    prop_oneof![
        (any::<u16>(), any::<u32>()).prop_map(|(asn, number)| RouteDistinguisher::As2 { asn, number }),
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, number)| RouteDistinguisher::Ipv4 {
            ip: ip.into(),
            number
        }),
        (any::<u32>(), any::<u16>()).prop_map(|(asn, number)| RouteDistinguisher::As4 { asn, number }),
    ]
}

fn ext_community() -> impl Strategy<Value = ExtCommunity> {
    prop_oneof![
        (any::<u16>(), any::<u32>())
            .prop_map(|(asn, value)| ExtCommunity::RouteTarget(RouteTarget::As2 { asn, value })),
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, value)| ExtCommunity::RouteTarget(RouteTarget::Ipv4 { ip: ip.into(), value })),
        (any::<u32>(), any::<u16>())
            .prop_map(|(asn, value)| ExtCommunity::RouteTarget(RouteTarget::As4 { asn, value })),
        // Encapsulation (RFC 9012 §4.1): what TF uses to say MPLSoUDP/VXLAN.
        any::<u16>().prop_map(|t| {
            let [a, b] = t.to_be_bytes();
            ExtCommunity::Other([0x03, 0x0c, 0, 0, 0, 0, a, b])
        }),
    ]
}

fn as_path(asn4: bool) -> impl Strategy<Value = AsPath> {
    let asn = if asn4 {
        (1u32..=u32::MAX).boxed()
    } else {
        prop_oneof![1u32..=65535, 65536u32..=u32::MAX].boxed()
    };
    let seg = prop_oneof![
        proptest::collection::vec(asn.clone(), 1..8).prop_map(AsSegment::Sequence),
        proptest::collection::vec(asn, 1..4).prop_map(AsSegment::Set),
    ];
    proptest::collection::vec(seg, 0..3).prop_map(|segments| AsPath { segments })
}

fn attributes(asn4: bool) -> impl Strategy<Value = PathAttributes> {
    (
        (
            prop_oneof![Just(Origin::Igp), Just(Origin::Egp), Just(Origin::Incomplete)],
            as_path(asn4),
            unicast_addr(),
        ),
        (any::<Option<u32>>(), any::<Option<u32>>(), any::<bool>()),
        proptest::option::of((any::<u16>(), unicast_addr())),
        proptest::collection::vec(any::<u32>(), 0..4),
        proptest::collection::vec(ext_community(), 0..4),
        proptest::option::of(unicast_addr()),
        proptest::collection::vec(unicast_addr(), 0..3),
    )
        .prop_map(
            |(
                (origin, as_path, nh),
                (med, local_pref, atomic_aggregate),
                agg,
                communities,
                ext,
                originator,
                cl,
            )| {
                PathAttributes {
                    origin,
                    as_path,
                    next_hop: Some(nh),
                    med,
                    local_pref,
                    atomic_aggregate,
                    aggregator: agg.map(|(asn, ip)| (u32::from(asn), ip)),
                    communities,
                    ext_communities: ext,
                    originator_id: originator,
                    cluster_list: cl,
                }
            },
        )
}

fn nlri() -> impl Strategy<Value = Nlri> {
    prop_oneof![
        prefix().prop_map(Nlri::Ipv4),
        (rd(), prefix(), 0..=MAX_LABEL).prop_map(|(rd, prefix, label)| Nlri::Vpnv4 { rd, prefix, label }),
    ]
}

fn update(asn4: bool) -> impl Strategy<Value = UpdateMsg> {
    (
        proptest::collection::vec(nlri().prop_map(|n| n.key()), 0..6),
        proptest::collection::vec(nlri(), 0..6),
        attributes(asn4),
    )
        .prop_filter("not an End-of-RIB", |(w, a, _)| !w.is_empty() || !a.is_empty())
        .prop_map(|(withdrawn, announced, attrs)| {
            // The wire groups IPv4 before VPNv4 in each list; generate them in that order.
            let mut withdrawn = withdrawn;
            withdrawn.sort_by_key(|k| matches!(k, RouteKey::Vpnv4 { .. }));
            let mut announced = announced;
            announced.sort_by_key(|n| matches!(n, Nlri::Vpnv4 { .. }));
            let attributes = if announced.is_empty() { None } else { Some(attrs) };
            UpdateMsg {
                withdrawn,
                attributes,
                announced,
                ..UpdateMsg::default()
            }
        })
}

fn capability() -> impl Strategy<Value = Capability> {
    prop_oneof![
        prop_oneof![Just(Family::Ipv4Unicast), Just(Family::Vpnv4)].prop_map(Capability::multiprotocol),
        Just(Capability::RouteRefresh),
        any::<u32>().prop_map(Capability::FourOctetAs),
        (
            any::<bool>(),
            any::<bool>(),
            0u16..=4095,
            proptest::collection::vec(any::<bool>(), 0..2)
        )
            .prop_map(|(restarted, notification, restart_secs, fwd)| {
                Capability::GracefulRestart(GracefulRestart {
                    restarted,
                    notification,
                    restart_secs,
                    families: Family::ALL.into_iter().zip(fwd).collect(),
                })
            }),
        (100u8..=127, proptest::collection::vec(any::<u8>(), 0..6))
            .prop_map(|(code, value)| Capability::Other { code, value }),
    ]
}

fn open() -> impl Strategy<Value = OpenMsg> {
    (
        any::<u16>(),
        prop_oneof![Just(0u16), 3u16..],
        unicast_addr(),
        proptest::collection::vec(capability(), 0..6),
    )
        .prop_map(|(my_as, hold_secs, router_id, capabilities)| OpenMsg {
            version: 4,
            my_as,
            hold_secs,
            router_id,
            capabilities,
        })
}

fn message(asn4: bool) -> impl Strategy<Value = Message> {
    prop_oneof![
        open().prop_map(Message::Open),
        update(asn4).prop_map(Message::Update),
        Just(Message::Keepalive),
        (
            any::<u8>(),
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..20)
        )
            .prop_map(|(c, s, d)| Message::Notification(NotificationMsg::new(c, s, d))),
        (any::<u16>(), 0u8..=2, any::<u8>())
            .prop_map(|(afi, subtype, safi)| Message::RouteRefresh(RouteRefreshMsg { afi, subtype, safi })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_is_identity_on_4_octet_sessions(m in message(true)) {
        let codec = SessionCodec::new(true, Family::ALL);
        let bytes = codec.encode(&m).unwrap();
        prop_assert_eq!(SessionCodec::frame_len(&bytes).unwrap(), Some(bytes.len()));
        prop_assert_eq!(codec.decode(&bytes).unwrap(), m);
    }

    #[test]
    fn encode_then_decode_is_identity_on_2_octet_sessions(m in update(false)) {
        let codec = SessionCodec::new(false, Family::ALL);
        let m = Message::Update(m);
        let bytes = codec.encode(&m).unwrap();
        prop_assert_eq!(codec.decode(&bytes).unwrap(), m);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128), asn4 in any::<bool>()) {
        let codec = SessionCodec::new(asn4, Family::ALL);
        let _ = SessionCodec::frame_len(&bytes);
        let _ = codec.decode(&bytes);
    }

    #[test]
    fn random_bodies_behind_a_valid_header_never_panic(
        kind in 1u8..=5,
        body in proptest::collection::vec(any::<u8>(), 0..300),
        asn4 in any::<bool>(),
    ) {
        let codec = SessionCodec::new(asn4, Family::ALL);
        let mut bytes = vec![0xff; 16];
        bytes.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
        bytes.push(kind);
        bytes.extend_from_slice(&body);
        let _ = codec.decode(&bytes);
    }

    #[test]
    fn mutated_valid_messages_never_panic(
        m in message(true),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        asn4 in any::<bool>(),
    ) {
        let codec = SessionCodec::new(asn4, Family::ALL);
        let mut bytes = SessionCodec::new(true, Family::ALL).encode(&m).unwrap();
        for (i, v) in flips {
            // keep the marker intact so the mutation reaches the body parsers
            let at = 16 + i.index(bytes.len() - 16);
            bytes[at] = v;
        }
        let _ = SessionCodec::frame_len(&bytes);
        let _ = codec.decode(&bytes);
    }
}
