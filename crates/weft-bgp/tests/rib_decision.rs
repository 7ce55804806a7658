//! RIB and decision process: best-path selection step by step (RFC 4271 §9.1.2.2, RFC 4456
//! §9), ingest checks, export rules (RFC 4271 §5/§9.2, RFC 4456 §6), Adj-RIB-Out diffs,
//! local origination and graceful-restart stale handling. One test per rule.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::net::{IpAddr, Ipv4Addr};

use weft_bgp::rib::DEFAULT_LOCAL_PREF;
use weft_bgp::{
    AdjInChange, AsPath, AsSegment, ExtCommunity, Family, Nlri, Origin, PathAttributes, PathSource, PeerId,
    PeerInfo, Prefix4, Rib, RibChanges, RibConfig, Route, RouteDistinguisher, RouteKey, RouteTarget,
    UpdateMsg, Vpnv4Route,
};

const LOCAL_AS: u32 = 64512;
const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);

fn rib() -> Rib {
    Rib::new(RibConfig {
        asn: LOCAL_AS,
        router_id: LOCAL_ID,
        cluster_id: None,
        next_hop_unchanged: false,
    })
}

fn p(s: &str) -> Prefix4 {
    s.parse().unwrap()
}

fn key(s: &str) -> RouteKey {
    RouteKey::Ipv4(p(s))
}

/// Peer n: address 192.0.2.n, router id 10.0.0.n, our side 192.0.2.100.
fn peer(n: u8, asn: u32) -> PeerInfo {
    PeerInfo {
        id: PeerId(u32::from(n)),
        address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, n)),
        asn,
        router_id: Ipv4Addr::new(10, 0, 0, n),
        local_address: Ipv4Addr::new(192, 0, 2, 100),
        rr_client: false,
        families: Family::ALL.to_vec(),
    }
}

fn attrs(path: &[u32]) -> PathAttributes {
    PathAttributes {
        as_path: AsPath::sequence(path.to_vec()),
        next_hop: Some(Ipv4Addr::new(198, 51, 100, 1)),
        ..PathAttributes::default()
    }
}

fn announce(prefix: &str, a: PathAttributes) -> UpdateMsg {
    UpdateMsg {
        attributes: Some(a),
        announced: vec![Nlri::Ipv4(p(prefix))],
        ..UpdateMsg::default()
    }
}

fn withdraw(prefix: &str) -> UpdateMsg {
    UpdateMsg {
        withdrawn: vec![key(prefix)],
        ..UpdateMsg::default()
    }
}

fn best_source(rib: &Rib, prefix: &str) -> Option<PathSource> {
    rib.best(&key(prefix)).map(|p| p.source)
}

/// Updates sent to `peer` in `changes`.
fn to(changes: &RibChanges, peer: u8) -> Vec<&UpdateMsg> {
    changes
        .updates
        .iter()
        .filter(|(id, _)| *id == PeerId(u32::from(peer)))
        .map(|(_, u)| u)
        .collect()
}

/// The attributes announced to `peer` for `prefix`, if any.
fn announced_to(changes: &RibChanges, peer: u8, prefix: &str) -> Option<PathAttributes> {
    to(changes, peer).into_iter().find_map(|u| {
        u.announced
            .iter()
            .any(|n| n.key() == key(prefix))
            .then(|| u.attributes.clone())
            .flatten()
    })
}

fn withdrawn_to(changes: &RibChanges, peer: u8, prefix: &str) -> bool {
    to(changes, peer)
        .iter()
        .any(|u| u.withdrawn.contains(&key(prefix)))
}

/// A RIB with two eBGP peers (AS 65001, 65002) and two iBGP peers up.
fn four_peers() -> Rib {
    let mut r = rib();
    for (n, asn) in [(1, 65001), (2, 65002), (3, LOCAL_AS), (4, LOCAL_AS)] {
        r.peer_up(peer(n, asn));
    }
    r
}

// ===== decision process, RFC 4271 §9.1.2.2 =====

#[test]
fn highest_local_pref_wins_rfc4271_9_1_2_2_a() {
    let mut r = four_peers();
    r.update_from_peer(
        PeerId(3),
        &announce(
            "10.0.0.0/8",
            PathAttributes {
                local_pref: Some(200),
                ..attrs(&[65009, 65010])
            },
        ),
    );
    r.update_from_peer(
        PeerId(4),
        &announce(
            "10.0.0.0/8",
            PathAttributes {
                local_pref: Some(100),
                ..attrs(&[65009])
            },
        ),
    );
    assert_eq!(best_source(&r, "10.0.0.0/8"), Some(PathSource::Peer(PeerId(3))));
}

#[test]
fn shortest_as_path_wins_and_an_as_set_counts_one_rfc4271_9_1_2_2_a() {
    let mut r = four_peers();
    r.update_from_peer(PeerId(1), &announce("10.0.0.0/8", attrs(&[65001, 65100, 65101])));
    let with_set = PathAttributes {
        as_path: AsPath {
            segments: vec![AsSegment::Sequence(vec![65002]), AsSegment::Set(vec![1, 2, 3, 4])],
        },
        ..attrs(&[])
    };
    r.update_from_peer(PeerId(2), &announce("10.0.0.0/8", with_set));
    assert_eq!(best_source(&r, "10.0.0.0/8"), Some(PathSource::Peer(PeerId(2))));
}

#[test]
fn lowest_origin_wins_rfc4271_9_1_2_2_c() {
    let mut r = four_peers();
    r.update_from_peer(
        PeerId(1),
        &announce(
            "10.0.0.0/8",
            PathAttributes {
                origin: Origin::Incomplete,
                ..attrs(&[65001])
            },
        ),
    );
    r.update_from_peer(
        PeerId(2),
        &announce(
            "10.0.0.0/8",
            PathAttributes {
                origin: Origin::Egp,
                ..attrs(&[65002])
            },
        ),
    );
    assert_eq!(best_source(&r, "10.0.0.0/8"), Some(PathSource::Peer(PeerId(2))));
}

#[test]
fn lowest_med_wins_among_routes_from_the_same_neighbour_as_rfc4271_9_1_2_2_c() {
    let mut r = rib();
    r.peer_up(peer(1, 65001));
    r.peer_up(peer(2, 65001));
    // peer 1 has the lower router id but the higher MED from the same neighbour AS
    r.update_from_peer(
        PeerId(1),
        &announce(
            "10.0.0.0/8",
            PathAttributes {
                med: Some(50),
                ..attrs(&[65001])
            },
        ),
    );
    r.update_from_peer(
        PeerId(2),
        &announce(
            "10.0.0.0/8",
            PathAttributes {
                med: Some(10),
                ..attrs(&[65001])
            },
        ),
    );
    assert_eq!(best_source(&r, "10.0.0.0/8"), Some(PathSource::Peer(PeerId(2))));
}

#[test]
fn med_is_not_compared_between_different_neighbour_ases_rfc4271_9_1_2_2_c() {
    let mut r = four_peers();
    r.update_from_peer(
        PeerId(1),
        &announce(
            "10.0.0.0/8",
            PathAttributes {
                med: Some(50),
                ..attrs(&[65001])
            },
        ),
    );
    r.update_from_peer(
        PeerId(2),
        &announce(
            "10.0.0.0/8",
            PathAttributes {
                med: Some(10),
                ..attrs(&[65002])
            },
        ),
    );
    // MED does not decide; the lower router id (peer 1) does
    assert_eq!(best_source(&r, "10.0.0.0/8"), Some(PathSource::Peer(PeerId(1))));
}

#[test]
fn missing_med_counts_as_the_lowest_value_rfc4271_9_1_2_2_c() {
    let mut r = rib();
    r.peer_up(peer(1, 65001));
    r.peer_up(peer(2, 65001));
    r.update_from_peer(
        PeerId(1),
        &announce(
            "10.0.0.0/8",
            PathAttributes {
                med: Some(1),
                ..attrs(&[65001])
            },
        ),
    );
    r.update_from_peer(PeerId(2), &announce("10.0.0.0/8", attrs(&[65001])));
    assert_eq!(best_source(&r, "10.0.0.0/8"), Some(PathSource::Peer(PeerId(2))));
}

#[test]
fn ebgp_learned_beats_ibgp_learned_rfc4271_9_1_2_2_d() {
    let mut r = four_peers();
    // iBGP peer 3 has the lower router id
    r.update_from_peer(PeerId(3), &announce("10.0.0.0/8", attrs(&[65002])));
    r.update_from_peer(PeerId(2), &announce("10.0.0.0/8", attrs(&[65002])));
    assert_eq!(best_source(&r, "10.0.0.0/8"), Some(PathSource::Peer(PeerId(2))));
}

#[test]
fn lowest_bgp_identifier_wins_rfc4271_9_1_2_2_f() {
    let mut r = four_peers();
    r.update_from_peer(PeerId(4), &announce("10.0.0.0/8", attrs(&[65009])));
    r.update_from_peer(PeerId(3), &announce("10.0.0.0/8", attrs(&[65009])));
    assert_eq!(best_source(&r, "10.0.0.0/8"), Some(PathSource::Peer(PeerId(3))));
}

#[test]
fn originator_id_stands_in_for_the_bgp_identifier_rfc4456_9() {
    let mut r = four_peers();
    r.update_from_peer(
        PeerId(3),
        &announce(
            "10.0.0.0/8",
            PathAttributes {
                originator_id: Some(Ipv4Addr::new(10, 9, 9, 9)),
                ..attrs(&[65009])
            },
        ),
    );
    r.update_from_peer(PeerId(4), &announce("10.0.0.0/8", attrs(&[65009])));
    assert_eq!(best_source(&r, "10.0.0.0/8"), Some(PathSource::Peer(PeerId(4))));
}

#[test]
fn shorter_cluster_list_wins_rfc4456_9() {
    let mut r = four_peers();
    let orig = Some(Ipv4Addr::new(10, 9, 9, 9));
    let a3 = PathAttributes {
        originator_id: orig,
        cluster_list: vec![Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(2, 2, 2, 2)],
        ..attrs(&[65009])
    };
    let a4 = PathAttributes {
        originator_id: orig,
        cluster_list: vec![Ipv4Addr::new(3, 3, 3, 3)],
        ..attrs(&[65009])
    };
    r.update_from_peer(PeerId(3), &announce("10.0.0.0/8", a3));
    r.update_from_peer(PeerId(4), &announce("10.0.0.0/8", a4));
    assert_eq!(best_source(&r, "10.0.0.0/8"), Some(PathSource::Peer(PeerId(4))));
}

#[test]
fn lowest_peer_address_breaks_the_last_tie_rfc4271_9_1_2_2_g() {
    let mut r = rib();
    let mut a = peer(7, 65001);
    let mut b = peer(8, 65001);
    a.router_id = Ipv4Addr::new(10, 0, 0, 50);
    b.router_id = Ipv4Addr::new(10, 0, 0, 50);
    a.address = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 200));
    r.peer_up(a);
    r.peer_up(b);
    r.update_from_peer(PeerId(7), &announce("10.0.0.0/8", attrs(&[65001])));
    r.update_from_peer(PeerId(8), &announce("10.0.0.0/8", attrs(&[65001])));
    assert_eq!(best_source(&r, "10.0.0.0/8"), Some(PathSource::Peer(PeerId(8))));
}

#[test]
fn withdrawing_the_best_falls_back_to_the_next_best_rfc4271_9_1_2() {
    let mut r = four_peers();
    r.update_from_peer(PeerId(1), &announce("10.0.0.0/8", attrs(&[65001])));
    r.update_from_peer(PeerId(2), &announce("10.0.0.0/8", attrs(&[65002, 65003])));
    assert_eq!(best_source(&r, "10.0.0.0/8"), Some(PathSource::Peer(PeerId(1))));
    let c = r.update_from_peer(PeerId(1), &withdraw("10.0.0.0/8"));
    assert_eq!(best_source(&r, "10.0.0.0/8"), Some(PathSource::Peer(PeerId(2))));
    assert_eq!(c.best_changed, vec![key("10.0.0.0/8")]);
    assert_eq!(r.paths(&key("10.0.0.0/8")).len(), 1);
}

// ===== ingest =====

#[test]
fn route_with_our_as_in_the_path_is_not_used_rfc4271_9_1_2() {
    let mut r = four_peers();
    let c = r.update_from_peer(PeerId(1), &announce("10.0.0.0/8", attrs(&[65001, LOCAL_AS])));
    assert!(r.best(&key("10.0.0.0/8")).is_none());
    assert!(c.updates.is_empty());
}

#[test]
fn external_path_not_starting_with_the_peers_as_is_treat_as_withdraw_rfc7606_7_2() {
    let mut r = four_peers();
    r.update_from_peer(PeerId(1), &announce("10.0.0.0/8", attrs(&[65001])));
    let c = r.update_from_peer(PeerId(1), &announce("10.0.0.0/8", attrs(&[65099])));
    assert!(r.best(&key("10.0.0.0/8")).is_none());
    assert!(c.adj_in.contains(&AdjInChange::Withdrawn {
        peer: PeerId(1),
        key: key("10.0.0.0/8")
    }));
}

#[test]
fn local_pref_from_an_external_peer_is_ignored_rfc4271_5_1_5() {
    let mut r = four_peers();
    r.update_from_peer(
        PeerId(1),
        &announce(
            "10.0.0.0/8",
            PathAttributes {
                local_pref: Some(1000),
                ..attrs(&[65001])
            },
        ),
    );
    assert_eq!(r.best(&key("10.0.0.0/8")).unwrap().attrs.local_pref, None);
}

#[test]
fn route_with_our_originator_id_is_dropped_rfc4456_8() {
    let mut r = four_peers();
    r.update_from_peer(
        PeerId(3),
        &announce(
            "10.0.0.0/8",
            PathAttributes {
                originator_id: Some(LOCAL_ID),
                ..attrs(&[])
            },
        ),
    );
    assert!(r.best(&key("10.0.0.0/8")).is_none());
}

#[test]
fn route_with_our_cluster_id_in_the_cluster_list_is_dropped_rfc4456_8() {
    let mut r = four_peers();
    r.update_from_peer(
        PeerId(3),
        &announce(
            "10.0.0.0/8",
            PathAttributes {
                cluster_list: vec![LOCAL_ID],
                ..attrs(&[])
            },
        ),
    );
    assert!(r.best(&key("10.0.0.0/8")).is_none());
}

#[test]
fn adj_rib_in_changes_are_reported_for_the_event_stream() {
    let mut r = four_peers();
    let c = r.update_from_peer(PeerId(1), &announce("10.0.0.0/8", attrs(&[65001])));
    assert!(matches!(
        &c.adj_in[..],
        [AdjInChange::Announced {
            peer: PeerId(1),
            route: Route::Ipv4(_),
            ..
        }]
    ));
    assert_eq!(r.adj_rib_in(PeerId(1)).len(), 1);
}

// ===== export, RFC 4271 §5 / §9.2 and RFC 4456 §6 =====

#[test]
fn ibgp_learned_routes_are_not_sent_to_ibgp_peers_rfc4271_9_2() {
    let mut r = four_peers();
    let c = r.update_from_peer(PeerId(3), &announce("10.0.0.0/8", attrs(&[65009])));
    assert!(announced_to(&c, 4, "10.0.0.0/8").is_none());
    assert!(announced_to(&c, 1, "10.0.0.0/8").is_some());
}

#[test]
fn routes_are_not_sent_back_to_the_peer_they_came_from() {
    let mut r = four_peers();
    let c = r.update_from_peer(PeerId(1), &announce("10.0.0.0/8", attrs(&[65001])));
    assert!(to(&c, 1).is_empty());
}

#[test]
fn external_export_prepends_our_as_sets_next_hop_self_and_strips_local_pref_rfc4271_5_1_2_5_1_3() {
    let mut r = four_peers();
    let c = r.update_from_peer(
        PeerId(3),
        &announce(
            "10.0.0.0/8",
            PathAttributes {
                local_pref: Some(300),
                ..attrs(&[65009])
            },
        ),
    );
    let a = announced_to(&c, 1, "10.0.0.0/8").unwrap();
    assert_eq!(a.as_path, AsPath::sequence(vec![LOCAL_AS, 65009]));
    assert_eq!(a.next_hop, Some(Ipv4Addr::new(192, 0, 2, 100)));
    assert_eq!(a.local_pref, None);
}

#[test]
fn a_speaker_off_the_forwarding_path_keeps_third_party_next_hops_rfc4271_5_1_3() {
    // weft's controller: routes from one cluster reach another cluster or a gateway with
    // the hosting node as next hop, never the controller.
    let mut r = Rib::new(RibConfig {
        next_hop_unchanged: true,
        ..rib().config().clone()
    });
    r.peer_up(peer(1, 65001));
    r.peer_up(peer(2, 65002));
    let c = r.update_from_peer(PeerId(1), &announce("10.0.0.0/8", attrs(&[65001])));
    let a = announced_to(&c, 2, "10.0.0.0/8").unwrap();
    assert_eq!(a.as_path, AsPath::sequence(vec![LOCAL_AS, 65001]));
    assert_eq!(a.next_hop, Some(Ipv4Addr::new(198, 51, 100, 1)));
}

#[test]
fn med_learned_from_another_as_is_not_passed_to_external_peers_rfc4271_5_1_4() {
    let mut r = four_peers();
    let c = r.update_from_peer(
        PeerId(1),
        &announce(
            "10.0.0.0/8",
            PathAttributes {
                med: Some(7),
                ..attrs(&[65001])
            },
        ),
    );
    assert_eq!(announced_to(&c, 2, "10.0.0.0/8").unwrap().med, None);
    assert_eq!(
        announced_to(&c, 3, "10.0.0.0/8").unwrap().med,
        Some(7),
        "MED stays inside the AS"
    );
}

#[test]
fn internal_export_keeps_the_next_hop_and_adds_local_pref_rfc4271_5_1_3_5_1_5() {
    let mut r = four_peers();
    let c = r.update_from_peer(PeerId(1), &announce("10.0.0.0/8", attrs(&[65001])));
    let a = announced_to(&c, 3, "10.0.0.0/8").unwrap();
    assert_eq!(a.next_hop, Some(Ipv4Addr::new(198, 51, 100, 1)));
    assert_eq!(a.local_pref, Some(DEFAULT_LOCAL_PREF));
    assert_eq!(a.as_path, AsPath::sequence(vec![65001]));
}

#[test]
fn reflector_sends_a_clients_route_to_non_clients_with_originator_and_cluster_list_rfc4456_6_8() {
    let mut r = rib();
    let mut client = peer(3, LOCAL_AS);
    client.rr_client = true;
    r.peer_up(client);
    r.peer_up(peer(4, LOCAL_AS));
    let c = r.update_from_peer(PeerId(3), &announce("10.0.0.0/8", attrs(&[])));
    let a = announced_to(&c, 4, "10.0.0.0/8").unwrap();
    assert_eq!(a.originator_id, Some(Ipv4Addr::new(10, 0, 0, 3)));
    assert_eq!(a.cluster_list, vec![LOCAL_ID]);
}

#[test]
fn reflector_sends_a_non_clients_route_to_clients_only_rfc4456_6() {
    let mut r = rib();
    let mut client = peer(3, LOCAL_AS);
    client.rr_client = true;
    r.peer_up(client);
    r.peer_up(peer(4, LOCAL_AS));
    r.peer_up(peer(5, LOCAL_AS));
    let c = r.update_from_peer(PeerId(4), &announce("10.0.0.0/8", attrs(&[])));
    assert!(announced_to(&c, 3, "10.0.0.0/8").is_some());
    assert!(announced_to(&c, 5, "10.0.0.0/8").is_none());
}

#[test]
fn families_are_exported_only_where_negotiated_rfc4760() {
    let mut r = rib();
    let mut v4only = peer(1, 65001);
    v4only.families = vec![Family::Ipv4Unicast];
    r.peer_up(v4only);
    r.peer_up(peer(2, 65002));
    let vpn = Route::Vpnv4(Vpnv4Route {
        rd: RouteDistinguisher::As2 {
            asn: 64512,
            number: 1,
        },
        prefix: p("10.1.1.0/24"),
        label: 100,
        route_targets: vec![RouteTarget::As2 {
            asn: 64512,
            value: 8_000_001,
        }],
    });
    let c = r.originate(&vpn, Some(Ipv4Addr::new(172, 16, 0, 5)));
    assert!(to(&c, 1).is_empty());
    let sent = to(&c, 2);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].announced,
        vec![Nlri::Vpnv4 {
            rd: RouteDistinguisher::As2 {
                asn: 64512,
                number: 1
            },
            prefix: p("10.1.1.0/24"),
            label: 100
        }]
    );
    let a = sent[0].attributes.as_ref().unwrap();
    assert_eq!(
        a.ext_communities,
        vec![ExtCommunity::RouteTarget(RouteTarget::As2 {
            asn: 64512,
            value: 8_000_001
        })]
    );
    assert_eq!(
        a.next_hop,
        Some(Ipv4Addr::new(172, 16, 0, 5)),
        "third-party next hop kept"
    );
}

// ===== local routes and Adj-RIB-Out =====

#[test]
fn originated_route_goes_to_every_peer_and_its_withdrawal_too() {
    let mut r = four_peers();
    let c = r.originate(&Route::Ipv4(p("10.47.255.252/32")), None);
    for n in 1..=4 {
        let a = announced_to(&c, n, "10.47.255.252/32").unwrap();
        assert_eq!(a.next_hop, Some(Ipv4Addr::new(192, 0, 2, 100)), "next hop self");
    }
    assert_eq!(
        announced_to(&c, 1, "10.47.255.252/32").unwrap().as_path,
        AsPath::sequence(vec![LOCAL_AS])
    );
    assert_eq!(
        announced_to(&c, 3, "10.47.255.252/32").unwrap().as_path,
        AsPath::default()
    );
    let c = r.withdraw(&key("10.47.255.252/32"));
    for n in 1..=4 {
        assert!(withdrawn_to(&c, n, "10.47.255.252/32"));
    }
    assert!(r.routes().is_empty());
}

#[test]
fn unchanged_re_origination_sends_nothing() {
    let mut r = four_peers();
    r.originate(&Route::Ipv4(p("10.47.255.252/32")), None);
    let c = r.originate(&Route::Ipv4(p("10.47.255.252/32")), None);
    assert!(c.updates.is_empty());
}

#[test]
fn a_new_peer_gets_the_whole_table_then_end_of_rib_rfc4724_2() {
    let mut r = rib();
    r.originate(&Route::Ipv4(p("10.47.255.252/32")), None);
    r.originate(&Route::Ipv4(p("10.47.255.251/32")), None);
    let c = r.peer_up(peer(1, 65001));
    let sent = to(&c, 1);
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[0].announced.len(), 2, "same attributes, one UPDATE");
    assert_eq!(sent[1].end_of_rib, Some(Family::Ipv4Unicast));
    assert_eq!(sent[2].end_of_rib, Some(Family::Vpnv4));
}

#[test]
fn a_peer_going_down_withdraws_its_routes_from_the_others() {
    let mut r = four_peers();
    r.update_from_peer(PeerId(1), &announce("10.0.0.0/8", attrs(&[65001])));
    let c = r.peer_down(PeerId(1), false);
    assert!(withdrawn_to(&c, 2, "10.0.0.0/8"));
    assert!(c.adj_in.contains(&AdjInChange::Withdrawn {
        peer: PeerId(1),
        key: key("10.0.0.0/8")
    }));
    assert!(r.best(&key("10.0.0.0/8")).is_none());
}

#[test]
fn route_refresh_resends_the_adj_rib_out_rfc2918() {
    let mut r = four_peers();
    r.originate(&Route::Ipv4(p("10.47.255.252/32")), None);
    let again = r.route_refresh(PeerId(1), Family::Ipv4Unicast);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].announced, vec![Nlri::Ipv4(p("10.47.255.252/32"))]);
    assert!(r.route_refresh(PeerId(1), Family::Vpnv4).is_empty());
}

// ===== graceful restart, RFC 4724 §4.2 =====

#[test]
fn graceful_down_keeps_routes_stale_until_end_of_rib_rfc4724_4_2() {
    let mut r = four_peers();
    r.update_from_peer(PeerId(1), &announce("10.0.0.0/8", attrs(&[65001])));
    r.update_from_peer(PeerId(1), &announce("172.16.0.0/12", attrs(&[65001])));
    let c = r.peer_down(PeerId(1), true);
    assert!(c.updates.is_empty(), "others keep the routes");
    assert!(r.best(&key("10.0.0.0/8")).unwrap().stale);
    // the peer comes back and re-announces one of the two
    r.peer_up(peer(1, 65001));
    r.update_from_peer(PeerId(1), &announce("10.0.0.0/8", attrs(&[65001])));
    assert!(!r.best(&key("10.0.0.0/8")).unwrap().stale);
    let c = r.update_from_peer(PeerId(1), &UpdateMsg::end_of_rib(Family::Ipv4Unicast));
    assert!(
        r.best(&key("172.16.0.0/12")).is_none(),
        "stale route purged at End-of-RIB"
    );
    assert!(withdrawn_to(&c, 2, "172.16.0.0/12"));
    assert!(r.best(&key("10.0.0.0/8")).is_some());
}

#[test]
fn stale_routes_go_when_the_restart_time_runs_out_rfc4724_4_2() {
    let mut r = four_peers();
    r.update_from_peer(PeerId(1), &announce("10.0.0.0/8", attrs(&[65001])));
    r.peer_down(PeerId(1), true);
    let c = r.purge_stale(PeerId(1), None, false);
    assert!(withdrawn_to(&c, 2, "10.0.0.0/8"));
}
