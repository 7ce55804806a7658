//! The wire format, per session: weft's [`Message`] ⇄ bytes, over netgauze-bgp-pkt 0.13.
//!
//! A [`SessionCodec`] is built from what both OPENs negotiated ([`Negotiated::codec`]):
//! 4-octet AS numbers (RFC 6793) change how AS_PATH and AGGREGATOR are encoded, and the
//! families (RFC 4760) decide which NLRI are accepted. Nothing here is global: two sessions
//! with different capabilities use two codecs.
//!
//! Division of labour with netgauze:
//! - netgauze encodes OPEN, UPDATE, KEEPALIVE and ROUTE-REFRESH, parses OPEN, and parses
//!   every path attribute of an UPDATE *one attribute at a time*;
//! - this module checks the header (RFC 4271 §6.1), walks the UPDATE's attribute list
//!   itself so that each malformed attribute gets the outcome RFC 7606 prescribes for its
//!   type (netgauze's whole-message parser cannot tell us which attribute failed, nor
//!   locate the NLRI after a bad attribute), and frames NOTIFICATION and ROUTE-REFRESH
//!   itself: netgauze rejects error codes and AFI/SAFI pairs outside its enums, while RFC
//!   4271 requires accepting any NOTIFICATION and RFC 2918 §4 ignoring (not failing on) a
//!   refresh for an unknown family.
//!
//! Every decode error carries the NOTIFICATION that RFC 4271 §6 requires; decoding never
//! panics on any input (property-tested), and the transport additionally contains panics.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::capabilities::{
    BgpCapability, FourOctetAsCapability, GracefulRestartAddressFamily, GracefulRestartCapability,
    MultiProtocolExtensionsCapability, UnrecognizedCapability,
};
use netgauze_bgp_pkt::community::{
    Community, ExtendedCommunity, TransitiveFourOctetExtendedCommunity, TransitiveIpv4ExtendedCommunity,
    TransitiveTwoOctetExtendedCommunity,
};
use netgauze_bgp_pkt::iana::RouteRefreshSubcode;
use netgauze_bgp_pkt::nlri::{
    Ipv4MplsVpnUnicastAddress, Ipv4Unicast, Ipv4UnicastAddress, LabeledIpv4NextHop, LabeledNextHop,
    MplsLabel, RouteDistinguisher as NgRd,
};
use netgauze_bgp_pkt::open::{BgpOpenMessage, BgpOpenMessageParameter};
use netgauze_bgp_pkt::path_attribute::{
    Aggregator, As2Aggregator, As2PathSegment, As4Aggregator, As4Path, As4PathSegment, AsPath as NgAsPath,
    AsPathSegmentType, AtomicAggregate, ClusterId, ClusterList, Communities, ExtendedCommunities,
    LocalPreference, MpReach, MpUnreach, MultiExitDiscriminator, NextHop, Origin as NgOrigin, Originator,
    PathAttribute, PathAttributeValue,
};
use netgauze_bgp_pkt::route_refresh::BgpRouteRefreshMessage;
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_bgp_pkt::wire::deserializer::open::{BgpOpenMessageParsingError, BgpParameterParsingError};
use netgauze_bgp_pkt::wire::deserializer::{BgpMessageParsingError, BgpParsingContext};
use netgauze_iana::address_family::{AddressFamily, AddressType, SubsequentAddressFamily};
use netgauze_parse_utils::WritablePdu;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::{ParseFrom, ParseFromWithOneInput};
use serde::{Deserialize, Serialize};

use crate::message::{
    AttrAction, AttributeError, BGP_VERSION, Capability, GracefulRestart, Message, NotificationMsg, OpenMsg,
    RouteRefreshMsg, UpdateMsg, notif,
};
use crate::types::{
    AS_TRANS, AsPath, AsSegment, ExtCommunity, Family, MAX_LABEL, MAX_SEGMENT_LEN, Nlri, Origin,
    PathAttributes, Prefix4, RouteDistinguisher, RouteKey, RouteTarget,
};

/// Length of the fixed header: marker, length, type (RFC 4271 §4.1).
pub const HEADER_LEN: usize = 19;
/// Largest message without the Extended Message capability (RFC 4271 §4.1).
pub const MAX_MESSAGE_LEN: usize = 4096;

/// Path attribute type codes weft handles (IANA "BGP Path Attributes").
pub mod attr {
    /// ORIGIN.
    pub const ORIGIN: u8 = 1;
    /// AS_PATH.
    pub const AS_PATH: u8 = 2;
    /// NEXT_HOP.
    pub const NEXT_HOP: u8 = 3;
    /// MULTI_EXIT_DISC.
    pub const MED: u8 = 4;
    /// LOCAL_PREF.
    pub const LOCAL_PREF: u8 = 5;
    /// ATOMIC_AGGREGATE.
    pub const ATOMIC_AGGREGATE: u8 = 6;
    /// AGGREGATOR.
    pub const AGGREGATOR: u8 = 7;
    /// COMMUNITIES (RFC 1997).
    pub const COMMUNITIES: u8 = 8;
    /// ORIGINATOR_ID (RFC 4456).
    pub const ORIGINATOR_ID: u8 = 9;
    /// CLUSTER_LIST (RFC 4456).
    pub const CLUSTER_LIST: u8 = 10;
    /// MP_REACH_NLRI (RFC 4760).
    pub const MP_REACH: u8 = 14;
    /// MP_UNREACH_NLRI (RFC 4760).
    pub const MP_UNREACH: u8 = 15;
    /// EXTENDED COMMUNITIES (RFC 4360).
    pub const EXT_COMMUNITIES: u8 = 16;
    /// AS4_PATH (RFC 6793).
    pub const AS4_PATH: u8 = 17;
    /// AS4_AGGREGATOR (RFC 6793).
    pub const AS4_AGGREGATOR: u8 = 18;
    /// LARGE_COMMUNITY (RFC 8092).
    pub const LARGE_COMMUNITIES: u8 = 32;

    /// Attribute flag: optional.
    pub const FLAG_OPTIONAL: u8 = 0x80;
    /// Attribute flag: transitive.
    pub const FLAG_TRANSITIVE: u8 = 0x40;
    /// Attribute flag: partial.
    pub const FLAG_PARTIAL: u8 = 0x20;
    /// Attribute flag: extended (2-octet) length.
    pub const FLAG_EXTENDED: u8 = 0x10;
}

/// The label value RFC 8277 §2.4 puts in a withdrawn labelled NLRI ("compatibility"
/// field 0x800000) instead of a real label.
const WITHDRAW_LABEL: [u8; 3] = [0x80, 0x00, 0x00];

// ===== errors =====

/// A received message that cannot be accepted, with the NOTIFICATION RFC 4271 §6 (and
/// RFC 7606 for UPDATEs, RFC 7313 for ROUTE-REFRESH) says to send before closing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{detail} (answer: {notification})")]
pub struct DecodeError {
    /// The NOTIFICATION to send.
    pub notification: NotificationMsg,
    /// What was wrong, in words.
    pub detail: String,
}

impl DecodeError {
    fn new(code: u8, subcode: u8, data: impl Into<Vec<u8>>, detail: impl Into<String>) -> Self {
        Self {
            notification: NotificationMsg::new(code, subcode, data),
            detail: detail.into(),
        }
    }
}

/// Why a message could not be encoded. These are bugs or impossible requests on our side
/// (the RIB never builds such messages), never peer input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The message exceeds 4096 octets; split the UPDATE ([`SessionCodec::encode_update`]
    /// does this).
    #[error("message of {0} octets exceeds {MAX_MESSAGE_LEN}")]
    TooLong(usize),
    /// IPv4 NLRI were announced without a next hop (RFC 4271 §5.1.3 makes it mandatory).
    #[error("announcing without a next hop")]
    MissingNextHop,
    /// An announced UPDATE without attributes.
    #[error("announcing without path attributes")]
    MissingAttributes,
    /// A prefix that is not a unicast destination (multicast, broadcast).
    #[error("{0} is not a unicast prefix")]
    NotUnicast(Prefix4),
    /// A label that does not fit in 20 bits.
    #[error("label {0} does not fit in 20 bits")]
    Label(u32),
    /// An End-of-RIB marker that also carries routes.
    #[error("an End-of-RIB marker must carry nothing else")]
    EndOfRibNotEmpty,
    /// An extended community whose octets netgauze cannot parse.
    #[error("extended community {0:02x?} is not valid")]
    ExtCommunity([u8; 8]),
    /// netgauze refused the message.
    #[error("netgauze: {0}")]
    Wire(String),
}

// ===== negotiation =====

/// What two OPENs agreed on (RFC 4271 §4.2, RFC 5492): the FSM emits it on
/// `Established` and the codec and RIB are configured from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Negotiated {
    /// Hold time: the smaller of both proposals (RFC 4271 §4.2); 0 = no keepalives.
    pub hold_secs: u16,
    /// Keepalive interval: a third of the hold time (RFC 4271 §10), 0 if hold is 0.
    pub keepalive_secs: u16,
    /// The peer's AS (4-octet capability if present).
    pub peer_asn: u32,
    /// The peer's BGP identifier.
    pub peer_router_id: Ipv4Addr,
    /// Both sides support 4-octet AS numbers (RFC 6793 §3).
    pub asn4: bool,
    /// Families both sides advertised (RFC 4760 §8), in [`Family::ALL`] order.
    pub families: Vec<Family>,
    /// Both sides support ROUTE-REFRESH (RFC 2918).
    pub route_refresh: bool,
    /// The peer's graceful restart capability, if both sides advertised one (RFC 4724).
    pub peer_graceful_restart: Option<GracefulRestart>,
}

impl Negotiated {
    /// Computes what `local` and `remote` agree on. The hold time rule is the only one that
    /// can fail, and the FSM checks it first.
    pub fn from_opens(local: &OpenMsg, remote: &OpenMsg) -> Self {
        let hold_secs = local.hold_secs.min(remote.hold_secs);
        let ours = local.families();
        let theirs = remote.families();
        let families = Family::ALL
            .into_iter()
            .filter(|f| ours.contains(f) && theirs.contains(f))
            .collect();
        Self {
            hold_secs,
            keepalive_secs: keepalive_for(hold_secs),
            peer_asn: remote.asn(),
            peer_router_id: remote.router_id,
            asn4: local.four_octet_as().is_some() && remote.four_octet_as().is_some(),
            families,
            route_refresh: local.route_refresh() && remote.route_refresh(),
            peer_graceful_restart: match (local.graceful_restart(), remote.graceful_restart()) {
                (Some(_), Some(gr)) => Some(gr.clone()),
                _ => None,
            },
        }
    }

    /// The codec for a session with these capabilities.
    pub fn codec(&self) -> SessionCodec {
        SessionCodec {
            asn4: self.asn4,
            families: self.families.iter().copied().collect(),
        }
    }
}

/// Keepalive interval for a hold time: one third (RFC 4271 §10 suggests it), at least one
/// second, zero when the hold time is zero (no keepalives at all, RFC 4271 §4.4).
pub fn keepalive_for(hold_secs: u16) -> u16 {
    if hold_secs == 0 { 0 } else { (hold_secs / 3).max(1) }
}

// ===== the codec =====

/// Encoder/decoder for one BGP session, configured by negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCodec {
    asn4: bool,
    families: BTreeSet<Family>,
}

impl Default for SessionCodec {
    /// The codec before OPENs are exchanged: only OPEN, NOTIFICATION and KEEPALIVE are
    /// expected, and their encoding does not depend on capabilities; 4-octet AS numbers
    /// and all families are assumed so nothing is dropped if an UPDATE arrives early (the
    /// FSM rejects it anyway).
    fn default() -> Self {
        Self {
            asn4: true,
            families: Family::ALL.into_iter().collect(),
        }
    }
}

impl SessionCodec {
    /// A codec with explicit settings (tests, tools).
    pub fn new(asn4: bool, families: impl IntoIterator<Item = Family>) -> Self {
        Self {
            asn4,
            families: families.into_iter().collect(),
        }
    }

    /// True if AS numbers travel as 4 octets on this session.
    pub fn asn4(&self) -> bool {
        self.asn4
    }

    fn parsing_context(&self) -> BgpParsingContext {
        // Capability errors are not fatal (RFC 5492 §4: ignore what you do not understand);
        // NLRI and attribute errors never reach netgauze's lenient paths because UPDATEs
        // are walked here.
        BgpParsingContext::new(self.asn4, HashMap::new(), HashMap::new(), true, true, false, true)
    }

    /// Looks at the start of `buf` and returns the length of the first complete message,
    /// `None` if more bytes are needed, or the header error (RFC 4271 §6.1) that makes the
    /// stream unusable.
    pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        if buf[..16].iter().any(|b| *b != 0xff) {
            return Err(DecodeError::new(
                notif::MESSAGE_HEADER,
                notif::HDR_NOT_SYNCHRONIZED,
                Vec::new(),
                "marker is not all ones",
            ));
        }
        let len = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
        let kind = buf[18];
        let bad_len = || {
            DecodeError::new(
                notif::MESSAGE_HEADER,
                notif::HDR_BAD_LENGTH,
                (len as u16).to_be_bytes().to_vec(),
                format!("bad length {len} for message type {kind}"),
            )
        };
        if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) {
            return Err(bad_len());
        }
        let ok = match kind {
            1 => len >= 29,
            2 => len >= 23,
            3 => len >= 21,
            4 => len == 19,
            5 => len == 23,
            _ => {
                return Err(DecodeError::new(
                    notif::MESSAGE_HEADER,
                    notif::HDR_BAD_TYPE,
                    vec![kind],
                    format!("unknown message type {kind}"),
                ));
            }
        };
        if !ok {
            if kind == 5 && len >= 22 && buf.len() >= 22 && matches!(buf[21], 1 | 2) {
                // RFC 7313 §5: BoRR/EoRR with a bad length get their own error code, with
                // the message (as far as we have it) as data.
                let data = buf[..buf.len().min(len)].to_vec();
                return Err(DecodeError::new(
                    notif::ROUTE_REFRESH,
                    notif::RR_INVALID_LENGTH,
                    data,
                    format!("ROUTE-REFRESH of length {len}"),
                ));
            }
            return Err(bad_len());
        }
        Ok(if buf.len() >= len { Some(len) } else { None })
    }

    /// Decodes one complete message (header included).
    pub fn decode(&self, frame: &[u8]) -> Result<Message, DecodeError> {
        match Self::frame_len(frame)? {
            Some(len) if len == frame.len() => {}
            _ => {
                return Err(DecodeError::new(
                    notif::MESSAGE_HEADER,
                    notif::HDR_BAD_LENGTH,
                    frame.get(16..18).map(<[u8]>::to_vec).unwrap_or_default(),
                    format!("frame of {} octets does not match its length field", frame.len()),
                ));
            }
        }
        let body = &frame[HEADER_LEN..];
        match frame[18] {
            1 => self.decode_open(frame),
            2 => self.decode_update(body),
            3 => Ok(Message::Notification(NotificationMsg::new(
                body[0],
                body[1],
                body[2..].to_vec(),
            ))),
            4 => Ok(Message::Keepalive),
            _ => Ok(Message::RouteRefresh(RouteRefreshMsg {
                afi: u16::from_be_bytes([body[0], body[1]]),
                subtype: body[2],
                safi: body[3],
            })),
        }
    }

    /// Encodes one message. UPDATEs that may exceed 4096 octets should go through
    /// [`SessionCodec::encode_update`] instead.
    pub fn encode(&self, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        let out = match msg {
            Message::Open(open) => {
                let mut out = write_ng(&BgpMessage::Open(open_to_ng(open)))?;
                // netgauze always writes version 4; tests need to send others.
                out[HEADER_LEN] = open.version;
                out
            }
            Message::Update(update) => write_ng(&BgpMessage::Update(self.update_to_ng(update)?))?,
            Message::Keepalive => write_ng(&BgpMessage::KeepAlive)?,
            Message::Notification(n) => {
                let len = HEADER_LEN + 2 + n.data.len();
                let mut out = Vec::with_capacity(len);
                out.extend_from_slice(&[0xff; 16]);
                out.extend_from_slice(
                    &u16::try_from(len)
                        .map_err(|_| EncodeError::TooLong(len))?
                        .to_be_bytes(),
                );
                out.extend_from_slice(&[3, n.code, n.subcode]);
                out.extend_from_slice(&n.data);
                out
            }
            Message::RouteRefresh(rr) => {
                match (rr_address_type(rr), RouteRefreshSubcode::from_repr(rr.subtype)) {
                    (Some(at), Some(sub)) => {
                        write_ng(&BgpMessage::RouteRefresh(BgpRouteRefreshMessage::new(at, sub)))?
                    }
                    _ => {
                        let mut out = vec![0xff; 16];
                        out.extend_from_slice(&23u16.to_be_bytes());
                        out.push(5);
                        out.extend_from_slice(&rr.afi.to_be_bytes());
                        out.extend_from_slice(&[rr.subtype, rr.safi]);
                        out
                    }
                }
            }
        };
        if out.len() > MAX_MESSAGE_LEN {
            return Err(EncodeError::TooLong(out.len()));
        }
        Ok(out)
    }

    /// Encodes an UPDATE, splitting its withdrawals and announcements over as many messages
    /// as needed to stay within 4096 octets each.
    pub fn encode_update(&self, update: &UpdateMsg) -> Result<Vec<Vec<u8>>, EncodeError> {
        match self.encode(&Message::Update(update.clone())) {
            Ok(bytes) => Ok(vec![bytes]),
            Err(EncodeError::TooLong(len)) => {
                let total = update.withdrawn.len() + update.announced.len();
                if total <= 1 {
                    return Err(EncodeError::TooLong(len));
                }
                let (a, b) = split_update(update);
                let mut out = self.encode_update(&a)?;
                out.extend(self.encode_update(&b)?);
                Ok(out)
            }
            Err(e) => Err(e),
        }
    }

    // ----- OPEN -----

    fn decode_open(&self, frame: &[u8]) -> Result<Message, DecodeError> {
        let mut ctx = self.parsing_context();
        let mut cur = SliceReader::new(frame);
        match BgpMessage::parse(&mut cur, &mut ctx) {
            Ok(BgpMessage::Open(open)) => Ok(Message::Open(open_from_ng(&open))),
            Ok(other) => Err(DecodeError::new(
                notif::MESSAGE_HEADER,
                notif::HDR_BAD_TYPE,
                vec![frame[18]],
                format!("netgauze read an OPEN as {:?}", other.get_type()),
            )),
            Err(e) => Err(open_error(e)),
        }
    }

    // ----- UPDATE -----

    fn decode_update(&self, body: &[u8]) -> Result<Message, DecodeError> {
        let malformed_list = |detail: String| {
            DecodeError::new(notif::UPDATE, notif::UPD_MALFORMED_ATTR_LIST, Vec::new(), detail)
        };
        // RFC 4271 §6.3: lengths that overrun the message are a Malformed Attribute List.
        let wlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
        if 2 + wlen + 2 > body.len() {
            return Err(malformed_list(format!(
                "withdrawn routes length {wlen} overruns the message"
            )));
        }
        let withdrawn_raw = &body[2..2 + wlen];
        let alen = usize::from(u16::from_be_bytes([body[2 + wlen], body[3 + wlen]]));
        let attrs_start = 4 + wlen;
        if attrs_start + alen > body.len() {
            return Err(malformed_list(format!(
                "total path attribute length {alen} overruns the message"
            )));
        }
        let attrs_raw = &body[attrs_start..attrs_start + alen];
        let nlri_raw = &body[attrs_start + alen..];

        let invalid_network = |what: &str, e: String| {
            DecodeError::new(
                notif::UPDATE,
                notif::UPD_INVALID_NETWORK,
                Vec::new(),
                format!("{what}: {e}"),
            )
        };
        // RFC 7606 §5.3: syntactically wrong NLRI/withdrawn fields reset the session.
        let classic_withdrawn =
            parse_prefixes(withdrawn_raw).map_err(|e| invalid_network("withdrawn routes", e))?;
        let classic_nlri = parse_prefixes(nlri_raw).map_err(|e| invalid_network("NLRI", e))?;

        let mut update = UpdateMsg::default();
        if withdrawn_raw.is_empty() && attrs_raw.is_empty() && nlri_raw.is_empty() {
            update.end_of_rib = Some(Family::Ipv4Unicast);
            return Ok(Message::Update(update));
        }

        let mut errors: Vec<AttributeError> = Vec::new();
        let mut treat_as_withdraw = false;
        let mut attrs = PathAttributes::default();
        let mut seen: BTreeSet<u8> = BTreeSet::new();
        let mut has_path_attrs = false;
        let mut as4_path: Option<AsPath> = None;
        let mut mp_reach: Vec<Nlri> = Vec::new();
        let mut mp_reach_seen = false;
        let mut mp_unreach: Vec<RouteKey> = Vec::new();
        let mut mp_unreach_families: Vec<Family> = Vec::new();
        let mut ctx = self.parsing_context();

        for item in walk_attributes(attrs_raw) {
            let raw = match item {
                Ok(raw) => raw,
                Err(detail) => {
                    // RFC 7606 §4: an attribute overrunning the attribute list is
                    // treat-as-withdraw; the NLRI is found through Total Attribute Length.
                    treat_as_withdraw = true;
                    errors.push(AttributeError {
                        type_code: 0,
                        action: AttrAction::TreatAsWithdraw,
                        detail,
                    });
                    break;
                }
            };
            let code = raw.code;
            if !seen.insert(code) {
                // RFC 7606 §3 g: repeated MP_(UN)REACH resets; other repeats are discarded.
                if code == attr::MP_REACH || code == attr::MP_UNREACH {
                    return Err(malformed_list(format!("attribute {code} appears twice")));
                }
                errors.push(AttributeError {
                    type_code: code,
                    action: AttrAction::Discard,
                    detail: "repeated attribute, all but the first discarded".into(),
                });
                continue;
            }
            let Some((optional, transitive)) = expected_flags(code) else {
                if raw.flags & attr::FLAG_OPTIONAL == 0 {
                    // RFC 4271 §6.3: an unrecognized well-known attribute resets the session.
                    return Err(DecodeError::new(
                        notif::UPDATE,
                        notif::UPD_UNRECOGNIZED_WELL_KNOWN,
                        raw.bytes.to_vec(),
                        format!("unrecognized well-known attribute {code}"),
                    ));
                }
                // Optional attributes weft does not know are dropped (not propagated).
                continue;
            };
            let action = rfc7606_action(code);
            let flags_ok = (raw.flags & attr::FLAG_OPTIONAL != 0) == optional
                && (raw.flags & attr::FLAG_TRANSITIVE != 0) == transitive;
            let parsed = if flags_ok {
                PathAttribute::parse(&mut SliceReader::new(raw.bytes), &mut ctx).map_err(|e| e.to_string())
            } else {
                Err(format!("attribute {code} has flags {:#04x}", raw.flags))
            };
            let value = match parsed {
                Ok(pa) => pa.value().clone(),
                Err(detail) => {
                    match action {
                        AttrAction::SessionReset => {
                            // RFC 4760 §7 / RFC 7606 §7.11: a malformed MP attribute.
                            return Err(DecodeError::new(
                                notif::UPDATE,
                                9,
                                raw.bytes.to_vec(),
                                format!("malformed attribute {code}: {detail}"),
                            ));
                        }
                        AttrAction::TreatAsWithdraw => treat_as_withdraw = true,
                        AttrAction::Discard => {}
                    }
                    errors.push(AttributeError {
                        type_code: code,
                        action,
                        detail,
                    });
                    continue;
                }
            };
            if code != attr::MP_REACH && code != attr::MP_UNREACH {
                has_path_attrs = true;
            }
            match value {
                PathAttributeValue::Origin(o) => {
                    attrs.origin = match o {
                        NgOrigin::IGP => Origin::Igp,
                        NgOrigin::EGP => Origin::Egp,
                        NgOrigin::Incomplete => Origin::Incomplete,
                    }
                }
                PathAttributeValue::AsPath(p) => attrs.as_path = as_path_from_ng(&p),
                // RFC 6793 §4.1: between two 4-octet speakers AS4_PATH is discarded.
                PathAttributeValue::As4Path(p) if !self.asn4 => {
                    as4_path = Some(as4_path_from_ng(p.segments()))
                }
                PathAttributeValue::NextHop(nh) => {
                    let ip = nh.next_hop();
                    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
                        // RFC 4271 §6.3: semantically wrong NEXT_HOP → ignore the routes.
                        treat_as_withdraw = true;
                        errors.push(AttributeError {
                            type_code: code,
                            action: AttrAction::TreatAsWithdraw,
                            detail: format!("next hop {ip} is not a unicast address"),
                        });
                    } else {
                        attrs.next_hop = Some(ip);
                    }
                }
                PathAttributeValue::MultiExitDiscriminator(m) => attrs.med = Some(m.metric()),
                PathAttributeValue::LocalPreference(l) => attrs.local_pref = Some(l.metric()),
                PathAttributeValue::AtomicAggregate(_) => attrs.atomic_aggregate = true,
                PathAttributeValue::Aggregator(a) => {
                    attrs.aggregator = Some(match a {
                        Aggregator::As2Aggregator(a) => (u32::from(*a.asn()), a.origin()),
                        Aggregator::As4Aggregator(a) => (*a.asn(), a.origin()),
                    })
                }
                PathAttributeValue::Communities(c) => {
                    attrs.communities = c.communities().iter().map(Community::value).collect()
                }
                PathAttributeValue::ExtendedCommunities(c) => {
                    attrs.ext_communities = c.communities().iter().map(ext_community_from_ng).collect()
                }
                PathAttributeValue::Originator(o) => attrs.originator_id = Some(o.id()),
                PathAttributeValue::ClusterList(c) => {
                    attrs.cluster_list = c.cluster_list().iter().map(ClusterId::id).collect()
                }
                PathAttributeValue::MpReach(reach) => {
                    mp_reach_seen = true;
                    self.mp_reach_from_ng(&reach, &mut attrs, &mut mp_reach, &mut errors);
                }
                PathAttributeValue::MpUnreach(unreach) => {
                    self.mp_unreach_from_ng(&unreach, &mut mp_unreach, &mut mp_unreach_families, &mut errors)
                }
                _ => {}
            }
        }

        if let Some(as4) = as4_path {
            attrs.as_path = merge_as4_path(&attrs.as_path, &as4);
        }

        let mut announced: Vec<Nlri> = Vec::new();
        if self.families.contains(&Family::Ipv4Unicast) {
            announced.extend(classic_nlri.iter().copied().map(Nlri::Ipv4));
            update
                .withdrawn
                .extend(classic_withdrawn.iter().copied().map(RouteKey::Ipv4));
        } else if !classic_nlri.is_empty() || !classic_withdrawn.is_empty() {
            errors.push(AttributeError {
                type_code: 0,
                action: AttrAction::Discard,
                detail: "IPv4 unicast NLRI on a session that did not negotiate it, ignored".into(),
            });
        }
        announced.extend(mp_reach);
        update.withdrawn.extend(mp_unreach);

        // RFC 7606 §3 d: missing well-known mandatory attributes → treat-as-withdraw.
        if !announced.is_empty() && !treat_as_withdraw {
            let mut missing = Vec::new();
            if !seen.contains(&attr::ORIGIN) {
                missing.push("ORIGIN");
            }
            if !seen.contains(&attr::AS_PATH) {
                missing.push("AS_PATH");
            }
            if !classic_nlri.is_empty() && !seen.contains(&attr::NEXT_HOP) {
                missing.push("NEXT_HOP");
            }
            if mp_reach_seen && attrs.next_hop.is_none() && classic_nlri.is_empty() {
                missing.push("MP_REACH_NLRI next hop");
            }
            if !missing.is_empty() {
                treat_as_withdraw = true;
                errors.push(AttributeError {
                    type_code: 0,
                    action: AttrAction::TreatAsWithdraw,
                    detail: format!("missing well-known attribute(s): {}", missing.join(", ")),
                });
            }
        }

        if treat_as_withdraw {
            update.withdrawn.extend(announced.iter().map(Nlri::key));
            update.attributes = None;
        } else {
            update.announced = announced;
            if has_path_attrs {
                update.attributes = Some(attrs);
            }
        }
        // RFC 4724 §2: an UPDATE with only an empty MP_UNREACH_NLRI is End-of-RIB.
        if update.withdrawn.is_empty()
            && update.announced.is_empty()
            && !has_path_attrs
            && !treat_as_withdraw
            && seen.len() == 1
            && mp_unreach_families.len() == 1
        {
            update.end_of_rib = mp_unreach_families.first().copied();
        }
        update.errors = errors;
        Ok(Message::Update(update))
    }

    fn mp_reach_from_ng(
        &self,
        reach: &MpReach,
        attrs: &mut PathAttributes,
        out: &mut Vec<Nlri>,
        errors: &mut Vec<AttributeError>,
    ) {
        let mut ignore = |detail: String| {
            errors.push(AttributeError {
                type_code: attr::MP_REACH,
                action: AttrAction::Discard,
                detail,
            })
        };
        match reach {
            MpReach::Ipv4Unicast { next_hop, nlri, .. } if self.families.contains(&Family::Ipv4Unicast) => {
                match next_hop {
                    IpAddr::V4(nh) => {
                        attrs.next_hop = Some(*nh);
                        out.extend(
                            nlri.iter()
                                .map(|a| Nlri::Ipv4(Prefix4::from(a.network().address()))),
                        );
                    }
                    IpAddr::V6(nh) => ignore(format!(
                        "IPv4 NLRI with IPv6 next hop {nh} not supported, ignored"
                    )),
                }
            }
            MpReach::Ipv4MplsVpnUnicast { next_hop, nlri } if self.families.contains(&Family::Vpnv4) => {
                match next_hop {
                    LabeledNextHop::Ipv4(nh) => {
                        attrs.next_hop = Some(nh.next_hop());
                        for a in nlri.iter() {
                            match vpn_nlri_from_ng(a) {
                                Some(n) => out.push(n),
                                None => {
                                    ignore(format!("VPNv4 NLRI {a:?} with an unsupported RD or label stack"))
                                }
                            }
                        }
                    }
                    LabeledNextHop::Ipv6(_) => {
                        ignore("VPNv4 NLRI with IPv6 next hop not supported, ignored".into())
                    }
                }
            }
            other => ignore(format!(
                "MP_REACH_NLRI for AFI {:?} SAFI {:?} not negotiated, ignored (RFC 4760 §7)",
                other.afi(),
                other.safi()
            )),
        }
    }

    fn mp_unreach_from_ng(
        &self,
        unreach: &MpUnreach,
        out: &mut Vec<RouteKey>,
        families: &mut Vec<Family>,
        errors: &mut Vec<AttributeError>,
    ) {
        match unreach {
            MpUnreach::Ipv4Unicast { nlri } if self.families.contains(&Family::Ipv4Unicast) => {
                families.push(Family::Ipv4Unicast);
                out.extend(
                    nlri.iter()
                        .map(|a| RouteKey::Ipv4(Prefix4::from(a.network().address()))),
                );
            }
            MpUnreach::Ipv4MplsVpnUnicast { nlri } if self.families.contains(&Family::Vpnv4) => {
                families.push(Family::Vpnv4);
                for a in nlri.iter() {
                    match rd_from_ng(a.rd()) {
                        Some(rd) => out.push(RouteKey::Vpnv4 {
                            rd,
                            prefix: Prefix4::from(a.network().address()),
                        }),
                        None => errors.push(AttributeError {
                            type_code: attr::MP_UNREACH,
                            action: AttrAction::Discard,
                            detail: format!("withdrawn VPNv4 NLRI with unsupported RD {:?}", a.rd()),
                        }),
                    }
                }
            }
            other => errors.push(AttributeError {
                type_code: attr::MP_UNREACH,
                action: AttrAction::Discard,
                detail: format!(
                    "MP_UNREACH_NLRI for AFI {:?} SAFI {:?} not negotiated, ignored",
                    other.afi(),
                    other.safi()
                ),
            }),
        }
    }

    fn update_to_ng(&self, u: &UpdateMsg) -> Result<BgpUpdateMessage, EncodeError> {
        if let Some(family) = u.end_of_rib {
            if !u.withdrawn.is_empty() || !u.announced.is_empty() {
                return Err(EncodeError::EndOfRibNotEmpty);
            }
            return Ok(match family {
                Family::Ipv4Unicast => BgpUpdateMessage::new(vec![], vec![], vec![]),
                Family::Vpnv4 => BgpUpdateMessage::new(
                    vec![],
                    vec![ng_attr(
                        true,
                        false,
                        PathAttributeValue::MpUnreach(MpUnreach::Ipv4MplsVpnUnicast { nlri: Box::new([]) }),
                    )?],
                    vec![],
                ),
            });
        }
        let mut withdrawn = Vec::new();
        let mut vpn_withdrawn = Vec::new();
        for key in &u.withdrawn {
            match key {
                RouteKey::Ipv4(p) => withdrawn.push(Ipv4UnicastAddress::new_no_path_id(unicast(*p)?)),
                RouteKey::Vpnv4 { rd, prefix } => {
                    vpn_withdrawn.push(Ipv4MplsVpnUnicastAddress::new_no_path_id(
                        rd_to_ng(*rd),
                        vec![MplsLabel::new(WITHDRAW_LABEL)],
                        unicast(*prefix)?,
                    ))
                }
            }
        }
        let mut nlri = Vec::new();
        let mut vpn_nlri = Vec::new();
        for n in &u.announced {
            match n {
                Nlri::Ipv4(p) => nlri.push(Ipv4UnicastAddress::new_no_path_id(unicast(*p)?)),
                Nlri::Vpnv4 { rd, prefix, label } => {
                    vpn_nlri.push(Ipv4MplsVpnUnicastAddress::new_no_path_id(
                        rd_to_ng(*rd),
                        vec![MplsLabel::new(label_to_bytes(*label)?)],
                        unicast(*prefix)?,
                    ))
                }
            }
        }
        let mut out = Vec::new();
        // RFC 7606 §5.1: MP_REACH/MP_UNREACH SHOULD come first; the rest in type order.
        if !vpn_withdrawn.is_empty() {
            out.push(ng_attr(
                true,
                false,
                PathAttributeValue::MpUnreach(MpUnreach::Ipv4MplsVpnUnicast {
                    nlri: vpn_withdrawn.into(),
                }),
            )?);
        }
        if !u.announced.is_empty() || u.attributes.is_some() {
            let a = u.attributes.as_ref().ok_or(EncodeError::MissingAttributes)?;
            if !vpn_nlri.is_empty() {
                let nh = a.next_hop.ok_or(EncodeError::MissingNextHop)?;
                out.insert(
                    0,
                    ng_attr(
                        true,
                        false,
                        PathAttributeValue::MpReach(MpReach::Ipv4MplsVpnUnicast {
                            next_hop: LabeledNextHop::Ipv4(LabeledIpv4NextHop::new(
                                rd_to_ng(RouteDistinguisher::ZERO),
                                nh,
                            )),
                            nlri: vpn_nlri.into(),
                        }),
                    )?,
                );
            }
            self.path_attrs_to_ng(a, !nlri.is_empty(), &mut out)?;
        }
        Ok(BgpUpdateMessage::new(withdrawn, out, nlri))
    }

    fn path_attrs_to_ng(
        &self,
        a: &PathAttributes,
        with_next_hop: bool,
        out: &mut Vec<PathAttribute>,
    ) -> Result<(), EncodeError> {
        use PathAttributeValue as V;
        let origin = match a.origin {
            Origin::Igp => NgOrigin::IGP,
            Origin::Egp => NgOrigin::EGP,
            Origin::Incomplete => NgOrigin::Incomplete,
        };
        out.push(ng_attr(false, true, V::Origin(origin))?);
        let segments = chunk_segments(&a.as_path);
        let needs_as4 = a.as_path.asns().any(|asn| asn > u32::from(u16::MAX));
        if self.asn4 {
            let segs: Vec<As4PathSegment> = segments
                .iter()
                .map(|(t, v)| As4PathSegment::new(*t, v.clone()))
                .collect();
            out.push(ng_attr(
                false,
                true,
                V::AsPath(NgAsPath::As4PathSegments(segs.into())),
            )?);
        } else {
            // RFC 6793 §4.2.2: towards a 2-octet speaker, big ASes become AS_TRANS and the
            // real path travels in AS4_PATH.
            let segs: Vec<As2PathSegment> = segments
                .iter()
                .map(|(t, v)| As2PathSegment::new(*t, v.iter().map(|asn| as2(*asn)).collect::<Vec<u16>>()))
                .collect();
            out.push(ng_attr(
                false,
                true,
                V::AsPath(NgAsPath::As2PathSegments(segs.into())),
            )?);
        }
        if with_next_hop {
            let nh = a.next_hop.ok_or(EncodeError::MissingNextHop)?;
            out.push(ng_attr(false, true, V::NextHop(NextHop::new(nh)))?);
        }
        if let Some(med) = a.med {
            out.push(ng_attr(
                true,
                false,
                V::MultiExitDiscriminator(MultiExitDiscriminator::new(med)),
            )?);
        }
        if let Some(lp) = a.local_pref {
            out.push(ng_attr(
                false,
                true,
                V::LocalPreference(LocalPreference::new(lp)),
            )?);
        }
        if a.atomic_aggregate {
            out.push(ng_attr(false, true, V::AtomicAggregate(AtomicAggregate))?);
        }
        if let Some((asn, ip)) = a.aggregator {
            let agg = if self.asn4 {
                Aggregator::As4Aggregator(As4Aggregator::new(asn, ip))
            } else {
                Aggregator::As2Aggregator(As2Aggregator::new(as2(asn), ip))
            };
            out.push(ng_attr(true, true, V::Aggregator(agg))?);
        }
        if !a.communities.is_empty() {
            let c: Vec<Community> = a.communities.iter().map(|v| Community::new(*v)).collect();
            out.push(ng_attr(true, true, V::Communities(Communities::new(c)))?);
        }
        if let Some(id) = a.originator_id {
            out.push(ng_attr(true, false, V::Originator(Originator::new(id)))?);
        }
        if !a.cluster_list.is_empty() {
            let c: Vec<ClusterId> = a.cluster_list.iter().map(|ip| ClusterId::new(*ip)).collect();
            out.push(ng_attr(true, false, V::ClusterList(ClusterList::new(c)))?);
        }
        if !a.ext_communities.is_empty() {
            let c = a
                .ext_communities
                .iter()
                .map(ext_community_to_ng)
                .collect::<Result<Vec<_>, _>>()?;
            out.push(ng_attr(
                true,
                true,
                V::ExtendedCommunities(ExtendedCommunities::new(c)),
            )?);
        }
        if !self.asn4 && needs_as4 {
            let segs: Vec<As4PathSegment> = segments
                .iter()
                .map(|(t, v)| As4PathSegment::new(*t, v.clone()))
                .collect();
            out.push(ng_attr(true, true, V::As4Path(As4Path::new(segs)))?);
        }
        Ok(())
    }
}

// ===== RFC 7606 tables =====

/// The (optional, transitive) flags RFC 4271 §5 / the attribute's RFC fix for each
/// attribute type weft parses; `None` for types weft does not know.
pub fn expected_flags(code: u8) -> Option<(bool, bool)> {
    use attr::*;
    match code {
        ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF | ATOMIC_AGGREGATE => Some((false, true)),
        MED | ORIGINATOR_ID | CLUSTER_LIST | MP_REACH | MP_UNREACH => Some((true, false)),
        AGGREGATOR | COMMUNITIES | EXT_COMMUNITIES | AS4_PATH | AS4_AGGREGATOR | LARGE_COMMUNITIES => {
            Some((true, true))
        }
        _ => None,
    }
}

/// What RFC 7606 §7 prescribes when an attribute of this type is malformed (wrong length,
/// bad value, or flags in conflict with its definition, §3 c).
pub fn rfc7606_action(code: u8) -> AttrAction {
    use attr::*;
    match code {
        // §7.1–§7.5, §7.8–§7.10, §7.14, RFC 8092 §6
        ORIGIN | AS_PATH | NEXT_HOP | MED | LOCAL_PREF | COMMUNITIES | ORIGINATOR_ID | CLUSTER_LIST
        | EXT_COMMUNITIES | LARGE_COMMUNITIES => AttrAction::TreatAsWithdraw,
        // §7.6, §7.7; RFC 6793 §6 for AS4_PATH/AS4_AGGREGATOR
        ATOMIC_AGGREGATE | AGGREGATOR | AS4_PATH | AS4_AGGREGATOR => AttrAction::Discard,
        // §7.11: weft does not implement "AFI/SAFI disable", so the session resets.
        MP_REACH | MP_UNREACH => AttrAction::SessionReset,
        // Attributes weft does not use are dropped anyway.
        _ => AttrAction::Discard,
    }
}

/// One attribute as found in the list: flags, type and its complete octets (header included).
struct RawAttr<'a> {
    flags: u8,
    code: u8,
    bytes: &'a [u8],
}

/// Walks the path attribute list, yielding each attribute or, once, the structural error
/// that stops the walk (RFC 7606 §4).
fn walk_attributes(buf: &[u8]) -> impl Iterator<Item = Result<RawAttr<'_>, String>> {
    let mut pos = 0usize;
    let mut done = false;
    std::iter::from_fn(move || {
        if done || pos >= buf.len() {
            return None;
        }
        let rest = &buf[pos..];
        let flags = rest[0];
        let hdr = if flags & attr::FLAG_EXTENDED != 0 { 4 } else { 3 };
        if rest.len() < hdr {
            done = true;
            return Some(Err(format!(
                "{} octet(s) left, too few for an attribute header",
                rest.len()
            )));
        }
        let code = rest[1];
        let len = if hdr == 4 {
            usize::from(u16::from_be_bytes([rest[2], rest[3]]))
        } else {
            usize::from(rest[2])
        };
        if hdr + len > rest.len() {
            done = true;
            return Some(Err(format!(
                "attribute {code} of length {len} overruns the attribute list"
            )));
        }
        pos += hdr + len;
        Some(Ok(RawAttr {
            flags,
            code,
            bytes: &rest[..hdr + len],
        }))
    })
}

// ===== helpers: prefixes, labels, RDs, communities =====

fn parse_prefixes(buf: &[u8]) -> Result<Vec<Prefix4>, String> {
    let mut cur = SliceReader::new(buf);
    let mut out = Vec::new();
    while !cur.is_empty() {
        let net = <Ipv4Net as ParseFrom>::parse(&mut cur).map_err(|e| e.to_string())?;
        out.push(Prefix4::from(net));
    }
    Ok(out)
}

fn unicast(p: Prefix4) -> Result<Ipv4Unicast, EncodeError> {
    Ipv4Unicast::from_net(p.net()).map_err(|_| EncodeError::NotUnicast(p))
}

/// A 20-bit label as one label-stack entry: label, EXP 0, bottom of stack (RFC 3032 §2.1).
pub fn label_to_bytes(label: u32) -> Result<[u8; 3], EncodeError> {
    if label > MAX_LABEL {
        return Err(EncodeError::Label(label));
    }
    Ok([
        (label >> 12) as u8,
        (label >> 4) as u8,
        ((label << 4) as u8) | 0x01,
    ])
}

/// The 20-bit label of a label-stack entry.
pub fn label_from_bytes(b: [u8; 3]) -> u32 {
    (u32::from(b[0]) << 12) | (u32::from(b[1]) << 4) | (u32::from(b[2]) >> 4)
}

fn vpn_nlri_from_ng(a: &Ipv4MplsVpnUnicastAddress) -> Option<Nlri> {
    let rd = rd_from_ng(a.rd())?;
    let label = label_from_bytes(*a.label_stack().first()?.value());
    Some(Nlri::Vpnv4 {
        rd,
        prefix: Prefix4::from(a.network().address()),
        label,
    })
}

fn rd_to_ng(rd: RouteDistinguisher) -> NgRd {
    match rd {
        RouteDistinguisher::As2 { asn, number } => NgRd::As2Administrator { asn2: asn, number },
        RouteDistinguisher::Ipv4 { ip, number } => NgRd::Ipv4Administrator { ip, number },
        RouteDistinguisher::As4 { asn, number } => NgRd::As4Administrator { asn4: asn, number },
    }
}

fn rd_from_ng(rd: NgRd) -> Option<RouteDistinguisher> {
    match rd {
        NgRd::As2Administrator { asn2, number } => Some(RouteDistinguisher::As2 { asn: asn2, number }),
        NgRd::Ipv4Administrator { ip, number } => Some(RouteDistinguisher::Ipv4 { ip, number }),
        NgRd::As4Administrator { asn4, number } => Some(RouteDistinguisher::As4 { asn: asn4, number }),
        NgRd::LeafAdRoutes => None,
    }
}

fn ext_community_from_ng(c: &ExtendedCommunity) -> ExtCommunity {
    match c {
        ExtendedCommunity::TransitiveTwoOctet(TransitiveTwoOctetExtendedCommunity::RouteTarget {
            global_admin,
            local_admin,
        }) => ExtCommunity::RouteTarget(RouteTarget::As2 {
            asn: *global_admin,
            value: *local_admin,
        }),
        ExtendedCommunity::TransitiveIpv4(TransitiveIpv4ExtendedCommunity::RouteTarget {
            global_admin,
            local_admin,
        }) => ExtCommunity::RouteTarget(RouteTarget::Ipv4 {
            ip: *global_admin,
            value: *local_admin,
        }),
        ExtendedCommunity::TransitiveFourOctet(TransitiveFourOctetExtendedCommunity::RouteTarget {
            global_admin,
            local_admin,
        }) => ExtCommunity::RouteTarget(RouteTarget::As4 {
            asn: *global_admin,
            value: *local_admin,
        }),
        other => {
            let mut buf = Vec::with_capacity(8);
            let mut raw = [0u8; 8];
            if other.write(&mut buf).is_ok() && buf.len() == 8 {
                raw.copy_from_slice(&buf);
            }
            ExtCommunity::Other(raw)
        }
    }
}

fn ext_community_to_ng(c: &ExtCommunity) -> Result<ExtendedCommunity, EncodeError> {
    Ok(match c {
        ExtCommunity::RouteTarget(RouteTarget::As2 { asn, value }) => {
            ExtendedCommunity::TransitiveTwoOctet(TransitiveTwoOctetExtendedCommunity::RouteTarget {
                global_admin: *asn,
                local_admin: *value,
            })
        }
        ExtCommunity::RouteTarget(RouteTarget::Ipv4 { ip, value }) => {
            ExtendedCommunity::TransitiveIpv4(TransitiveIpv4ExtendedCommunity::RouteTarget {
                global_admin: *ip,
                local_admin: *value,
            })
        }
        ExtCommunity::RouteTarget(RouteTarget::As4 { asn, value }) => {
            ExtendedCommunity::TransitiveFourOctet(TransitiveFourOctetExtendedCommunity::RouteTarget {
                global_admin: *asn,
                local_admin: *value,
            })
        }
        ExtCommunity::Other(raw) => ExtendedCommunity::parse(&mut SliceReader::new(raw))
            .map_err(|_| EncodeError::ExtCommunity(*raw))?,
    })
}

// ===== helpers: AS paths =====

fn as2(asn: u32) -> u16 {
    u16::try_from(asn).unwrap_or(AS_TRANS)
}

fn segment_from(t: AsPathSegmentType, asns: Vec<u32>) -> AsSegment {
    match t {
        AsPathSegmentType::AsSet => AsSegment::Set(asns),
        AsPathSegmentType::AsSequence => AsSegment::Sequence(asns),
    }
}

fn as_path_from_ng(p: &NgAsPath) -> AsPath {
    let segments = match p {
        NgAsPath::As2PathSegments(segs) => segs
            .iter()
            .map(|s| {
                segment_from(
                    s.segment_type(),
                    s.as_numbers().iter().map(|a| u32::from(*a)).collect(),
                )
            })
            .collect(),
        NgAsPath::As4PathSegments(segs) => segs
            .iter()
            .map(|s| segment_from(s.segment_type(), s.as_numbers().to_vec()))
            .collect(),
    };
    AsPath { segments }
}

fn as4_path_from_ng(segs: &[As4PathSegment]) -> AsPath {
    AsPath {
        segments: segs
            .iter()
            .map(|s| segment_from(s.segment_type(), s.as_numbers().to_vec()))
            .collect(),
    }
}

/// Segments no longer than 255 ASes each, as the wire requires.
fn chunk_segments(path: &AsPath) -> Vec<(AsPathSegmentType, Vec<u32>)> {
    let mut out = Vec::new();
    for seg in &path.segments {
        let (t, v) = match seg {
            AsSegment::Sequence(v) => (AsPathSegmentType::AsSequence, v),
            AsSegment::Set(v) => (AsPathSegmentType::AsSet, v),
        };
        for chunk in v.chunks(MAX_SEGMENT_LEN) {
            out.push((t, chunk.to_vec()));
        }
    }
    out
}

/// Rebuilds the real AS path from a 2-octet AS_PATH and an AS4_PATH (RFC 6793 §4.2.3):
/// if AS_PATH is shorter than AS4_PATH, AS4_PATH is ignored; otherwise the leading
/// `len(AS_PATH) - len(AS4_PATH)` ASes of AS_PATH are kept in front of AS4_PATH.
pub fn merge_as4_path(as_path: &AsPath, as4_path: &AsPath) -> AsPath {
    let n = as_path.path_len();
    let m = as4_path.path_len();
    if n < m {
        return as_path.clone();
    }
    let mut keep = n - m;
    let mut segments = Vec::new();
    for seg in &as_path.segments {
        if keep == 0 {
            break;
        }
        match seg {
            AsSegment::Sequence(v) => {
                let take = keep.min(v.len());
                segments.push(AsSegment::Sequence(v[..take].to_vec()));
                keep -= take;
            }
            AsSegment::Set(v) => {
                segments.push(AsSegment::Set(v.clone()));
                keep -= 1;
            }
        }
    }
    segments.extend(as4_path.segments.iter().cloned());
    AsPath { segments }
}

// ===== helpers: OPEN and capabilities =====

fn open_to_ng(open: &OpenMsg) -> BgpOpenMessage {
    let caps: Vec<BgpCapability> = open.capabilities.iter().map(capability_to_ng).collect();
    let params = if caps.is_empty() {
        vec![]
    } else {
        vec![BgpOpenMessageParameter::Capabilities(caps.into())]
    };
    BgpOpenMessage::new(open.my_as, open.hold_secs, open.router_id, params)
}

fn open_from_ng(open: &BgpOpenMessage) -> OpenMsg {
    OpenMsg {
        version: open.version(),
        my_as: open.my_as(),
        hold_secs: open.hold_time(),
        router_id: open.bgp_id(),
        capabilities: open.capabilities().into_iter().map(capability_from_ng).collect(),
    }
}

fn address_type(afi: u16, safi: u8) -> Option<AddressType> {
    let afi = AddressFamily::try_from(afi).ok()?;
    let safi = SubsequentAddressFamily::try_from(safi).ok()?;
    AddressType::from_afi_safi(afi, safi).ok()
}

fn family_address_type(f: Family) -> AddressType {
    match f {
        Family::Ipv4Unicast => AddressType::Ipv4Unicast,
        Family::Vpnv4 => AddressType::Ipv4MplsLabeledVpn,
    }
}

fn rr_address_type(rr: &RouteRefreshMsg) -> Option<AddressType> {
    address_type(rr.afi, rr.safi)
}

fn capability_to_ng(c: &Capability) -> BgpCapability {
    match c {
        Capability::Multiprotocol { afi, safi } => match address_type(*afi, *safi) {
            Some(at) => BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(at)),
            None => {
                let [a, b] = afi.to_be_bytes();
                BgpCapability::Unrecognized(UnrecognizedCapability::new(1, vec![a, b, 0, *safi]))
            }
        },
        Capability::RouteRefresh => BgpCapability::RouteRefresh,
        Capability::FourOctetAs(asn) => BgpCapability::FourOctetAs(FourOctetAsCapability::new(*asn)),
        Capability::GracefulRestart(gr) => {
            BgpCapability::GracefulRestartCapability(GracefulRestartCapability::new(
                gr.restarted,
                gr.notification,
                gr.restart_secs.min(0x0fff),
                gr.families
                    .iter()
                    .map(|(f, fwd)| GracefulRestartAddressFamily::new(*fwd, family_address_type(*f)))
                    .collect::<Vec<_>>(),
            ))
        }
        Capability::Other { code, value } => {
            BgpCapability::Unrecognized(UnrecognizedCapability::new(*code, value.clone()))
        }
    }
}

fn capability_from_ng(c: &BgpCapability) -> Capability {
    match c {
        BgpCapability::MultiProtocolExtensions(mp) => {
            let at = mp.address_type();
            Capability::Multiprotocol {
                afi: u16::from(at.address_family()),
                safi: u8::from(at.subsequent_address_family()),
            }
        }
        BgpCapability::RouteRefresh => Capability::RouteRefresh,
        BgpCapability::FourOctetAs(a) => Capability::FourOctetAs(a.asn4()),
        BgpCapability::GracefulRestartCapability(gr) => Capability::GracefulRestart(GracefulRestart {
            restarted: gr.restart(),
            notification: gr.graceful_notification(),
            restart_secs: gr.time(),
            families: gr
                .address_families()
                .iter()
                .filter_map(|af| {
                    let at = af.address_type();
                    Family::from_afi_safi(
                        u16::from(at.address_family()),
                        u8::from(at.subsequent_address_family()),
                    )
                    .map(|f| (f, af.forwarding_state()))
                })
                .collect(),
        }),
        BgpCapability::Unrecognized(u) => Capability::Other {
            code: *u.code(),
            value: u.value().to_vec(),
        },
        other => {
            // Typed by netgauze but not used by weft: keep its octets for logs.
            let mut buf = Vec::new();
            let _ = other.write(&mut buf);
            match buf.as_slice() {
                [code, _len, value @ ..] => Capability::Other {
                    code: *code,
                    value: value.to_vec(),
                },
                _ => Capability::Other {
                    code: 0,
                    value: Vec::new(),
                },
            }
        }
    }
}

/// Maps netgauze's OPEN parsing errors to the NOTIFICATION RFC 4271 §6.2 requires.
fn open_error(e: BgpMessageParsingError) -> DecodeError {
    use BgpOpenMessageParsingError as O;
    let detail = e.to_string();
    let (subcode, data) = match e {
        BgpMessageParsingError::BgpOpenMessageParsingError(o) => match o {
            O::UnsupportedVersionNumber { .. } => (
                notif::OPEN_UNSUPPORTED_VERSION,
                u16::from(BGP_VERSION).to_be_bytes().to_vec(),
            ),
            O::UnacceptableHoldTime { time, .. } => {
                (notif::OPEN_UNACCEPTABLE_HOLD_TIME, time.to_be_bytes().to_vec())
            }
            O::InvalidBgpId { bgp_id, .. } => (notif::OPEN_BAD_BGP_ID, bgp_id.octets().to_vec()),
            O::ParameterError(BgpParameterParsingError::UndefinedParameterType { code, .. }) => {
                (notif::OPEN_UNSUPPORTED_OPT_PARAM, vec![code])
            }
            O::ParameterError(_) | O::Parse(_) => (notif::UNSPECIFIC, Vec::new()),
        },
        _ => (notif::UNSPECIFIC, Vec::new()),
    };
    DecodeError::new(notif::OPEN, subcode, data, detail)
}

// ===== helpers: netgauze writing =====

fn ng_attr(
    optional: bool,
    transitive: bool,
    value: PathAttributeValue,
) -> Result<PathAttribute, EncodeError> {
    let attr = PathAttribute::from(optional, transitive, false, false, value)
        .map_err(|(_, e)| EncodeError::Wire(e.to_string()))?;
    // Header (flags, type, 1-octet length) is 3 octets; longer values need the 2-octet
    // length and the Extended Length flag.
    if attr.len() > 3 + 255 {
        return PathAttribute::from(optional, transitive, false, true, attr.value().clone())
            .map_err(|(_, e)| EncodeError::Wire(e.to_string()));
    }
    Ok(attr)
}

fn write_ng(msg: &BgpMessage) -> Result<Vec<u8>, EncodeError> {
    let len = msg.len();
    if len > MAX_MESSAGE_LEN {
        return Err(EncodeError::TooLong(len));
    }
    let mut out = Vec::with_capacity(len);
    msg.write(&mut out)
        .map_err(|e| EncodeError::Wire(e.to_string()))?;
    Ok(out)
}

fn split_update(u: &UpdateMsg) -> (UpdateMsg, UpdateMsg) {
    let mut a = UpdateMsg {
        attributes: u.attributes.clone(),
        ..UpdateMsg::default()
    };
    let mut b = a.clone();
    if u.withdrawn.len() > 1 || u.announced.is_empty() {
        let mid = u.withdrawn.len() / 2;
        a.withdrawn = u.withdrawn[..mid].to_vec();
        b.withdrawn = u.withdrawn[mid..].to_vec();
        b.announced = u.announced.clone();
        a.attributes = None;
    } else {
        let mid = u.announced.len() / 2;
        a.withdrawn = u.withdrawn.clone();
        a.announced = u.announced[..mid].to_vec();
        b.announced = u.announced[mid..].to_vec();
    }
    if b.announced.is_empty() {
        b.attributes = None;
    }
    (a, b)
}

// ===== fuzzing entry point =====

/// Runs `data` through the codec the way a session does, for the `bgp_decode` fuzz target
/// (fuzz/fuzz_targets/bgp_decode.rs) and its corpus replay test (tests/fuzz_corpus.rs).
///
/// The first byte picks the codec: bit 0 set means 2-octet AS numbers, bits 1-2 drop the
/// IPv4 unicast and VPNv4 families. The rest is a byte stream split into frames with
/// [`SessionCodec::frame_len`] and decoded one by one until the stream ends or a header
/// error makes it unusable. Every decoded message is encoded again (which may fail, never
/// panic), and every error's NOTIFICATION is encoded as a session would send it.
///
/// Returns how many frames decoded and how many were answered with a NOTIFICATION. Panics
/// only on a bug, which is what the fuzzer looks for: a NOTIFICATION that cannot be
/// encoded, or a decoded message whose re-encoding does not decode again.
#[doc(hidden)]
pub fn fuzz_stream(data: &[u8]) -> (usize, usize) {
    let Some((&mode, mut rest)) = data.split_first() else {
        return (0, 0);
    };
    let families = Family::ALL
        .into_iter()
        .enumerate()
        .filter(|(i, _)| mode & (2 << i) == 0)
        .map(|(_, f)| f);
    let codec = SessionCodec::new(mode & 1 == 0, families);
    let (mut ok, mut errors) = (0, 0);
    let notify = |e: &DecodeError| {
        let bytes = codec
            .encode(&Message::Notification(e.notification.clone()))
            .unwrap_or_else(|err| panic!("cannot encode the NOTIFICATION for {e:?}: {err}"));
        assert!(bytes.len() >= HEADER_LEN, "short NOTIFICATION for {e:?}");
    };
    loop {
        match SessionCodec::frame_len(rest) {
            Ok(None) => return (ok, errors),
            Err(e) => {
                notify(&e);
                return (ok, errors + 1);
            }
            Ok(Some(len)) => {
                let (frame, tail) = rest.split_at(len);
                rest = tail;
                match codec.decode(frame) {
                    Ok(msg) => {
                        ok += 1;
                        let frames = match &msg {
                            Message::Update(u) => codec.encode_update(u).unwrap_or_default(),
                            m => codec.encode(m).map(|b| vec![b]).unwrap_or_default(),
                        };
                        for f in frames {
                            if let Err(e) = codec.decode(&f) {
                                panic!("our encoding of {msg:?} does not decode: {e:?}");
                            }
                        }
                    }
                    Err(e) => {
                        notify(&e);
                        errors += 1;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_set_bottom_of_stack() {
        assert_eq!(label_to_bytes(16).unwrap(), [0x00, 0x01, 0x01]);
        assert_eq!(label_from_bytes([0x00, 0x01, 0x01]), 16);
        assert_eq!(label_from_bytes(label_to_bytes(MAX_LABEL).unwrap()), MAX_LABEL);
        assert!(label_to_bytes(MAX_LABEL + 1).is_err());
    }

    #[test]
    fn as4_path_merge_follows_rfc6793_4_2_3() {
        let as_path = AsPath::sequence(vec![65001, u32::from(AS_TRANS), u32::from(AS_TRANS)]);
        let as4 = AsPath::sequence(vec![4_200_000_001, 4_200_000_002]);
        assert_eq!(
            merge_as4_path(&as_path, &as4),
            AsPath::sequence(vec![65001]).tap_extend(&as4)
        );
        let longer = AsPath::sequence(vec![1, 2, 3, 4]);
        assert_eq!(
            merge_as4_path(&AsPath::sequence(vec![1]), &longer),
            AsPath::sequence(vec![1])
        );
    }

    trait TapExtend {
        fn tap_extend(self, other: &AsPath) -> AsPath;
    }
    impl TapExtend for AsPath {
        fn tap_extend(mut self, other: &AsPath) -> AsPath {
            self.segments.extend(other.segments.iter().cloned());
            self
        }
    }

    #[test]
    fn every_known_attribute_has_flags_and_an_action() {
        for code in [1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14, 15, 16, 17, 18, 32] {
            assert!(expected_flags(code).is_some(), "{code}");
        }
        assert_eq!(rfc7606_action(attr::ORIGIN), AttrAction::TreatAsWithdraw);
        assert_eq!(rfc7606_action(attr::ATOMIC_AGGREGATE), AttrAction::Discard);
        assert_eq!(rfc7606_action(attr::MP_REACH), AttrAction::SessionReset);
    }
}
