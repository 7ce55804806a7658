//! BGP messages as weft's FSM and RIB see them (RFC 4271 §4): OPEN, UPDATE, KEEPALIVE,
//! NOTIFICATION and ROUTE-REFRESH (RFC 2918), in weft's own types.
//!
//! The codec ([`crate::codec`]) turns these into bytes and back for one session. Pure
//! data: no I/O.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::types::{AS_TRANS, Family, Nlri, PathAttributes, RouteKey};

/// The only BGP version there is (RFC 4271 §4.2).
pub const BGP_VERSION: u8 = 4;

/// One BGP message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// OPEN (type 1).
    Open(OpenMsg),
    /// UPDATE (type 2).
    Update(UpdateMsg),
    /// NOTIFICATION (type 3).
    Notification(NotificationMsg),
    /// KEEPALIVE (type 4).
    Keepalive,
    /// ROUTE-REFRESH (type 5, RFC 2918).
    RouteRefresh(RouteRefreshMsg),
}

impl Message {
    /// The message type octet (RFC 4271 §4.1).
    pub fn type_code(&self) -> u8 {
        match self {
            Self::Open(_) => 1,
            Self::Update(_) => 2,
            Self::Notification(_) => 3,
            Self::Keepalive => 4,
            Self::RouteRefresh(_) => 5,
        }
    }

    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Open(_) => "OPEN",
            Self::Update(_) => "UPDATE",
            Self::Notification(_) => "NOTIFICATION",
            Self::Keepalive => "KEEPALIVE",
            Self::RouteRefresh(_) => "ROUTE-REFRESH",
        }
    }
}

// ===== OPEN =====

/// OPEN (RFC 4271 §4.2) with its capabilities (RFC 5492). Only the Capabilities optional
/// parameter (type 2) exists; the codec rejects any other with NOTIFICATION 2/4.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenMsg {
    /// Version field; 4. The FSM rejects anything else (RFC 4271 §6.2).
    pub version: u8,
    /// The 2-octet "My Autonomous System" field: the AS, or [`AS_TRANS`] when the AS needs
    /// 4 octets (RFC 6793 §3).
    pub my_as: u16,
    /// Proposed hold time in seconds: 0 or at least 3 (RFC 4271 §4.2).
    pub hold_secs: u16,
    /// BGP identifier (router id).
    pub router_id: Ipv4Addr,
    /// Capabilities, in the order sent.
    pub capabilities: Vec<Capability>,
}

impl OpenMsg {
    /// An OPEN for `asn` (any size: `my_as` becomes [`AS_TRANS`] when it needs 4 octets)
    /// with the given capabilities; add a [`Capability::FourOctetAs`] yourself.
    pub fn new(asn: u32, hold_secs: u16, router_id: Ipv4Addr, capabilities: Vec<Capability>) -> Self {
        Self {
            version: BGP_VERSION,
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_secs,
            router_id,
            capabilities,
        }
    }

    /// The sender's AS: the 4-octet AS capability if present, else `my_as` (RFC 6793 §4.1).
    pub fn asn(&self) -> u32 {
        self.four_octet_as().unwrap_or(u32::from(self.my_as))
    }

    /// The 4-octet AS capability's value, if the sender advertised one.
    pub fn four_octet_as(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAs(asn) => Some(*asn),
            _ => None,
        })
    }

    /// The families the sender advertised with Multiprotocol capabilities; a speaker that
    /// advertises none supports IPv4 unicast only (RFC 4760 §8, RFC 4271).
    pub fn families(&self) -> Vec<Family> {
        let mut any_mp = false;
        let mut out = Vec::new();
        for c in &self.capabilities {
            if let Capability::Multiprotocol { afi, safi } = c {
                any_mp = true;
                if let Some(f) = Family::from_afi_safi(*afi, *safi)
                    && !out.contains(&f)
                {
                    out.push(f);
                }
            }
        }
        if !any_mp {
            out.push(Family::Ipv4Unicast);
        }
        out
    }

    /// True if the sender advertised route refresh (RFC 2918 §3).
    pub fn route_refresh(&self) -> bool {
        self.capabilities
            .iter()
            .any(|c| matches!(c, Capability::RouteRefresh))
    }

    /// The sender's graceful restart capability (RFC 4724 §3), if any.
    pub fn graceful_restart(&self) -> Option<&GracefulRestart> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(gr) => Some(gr),
            _ => None,
        })
    }
}

/// One capability (RFC 5492 §4). The ones weft negotiates are typed; every other one is
/// kept as code + value so it can be logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Capability {
    /// Multiprotocol extensions (code 1, RFC 4760 §8), by IANA AFI/SAFI so unknown pairs
    /// survive decoding.
    Multiprotocol {
        /// Address family identifier.
        afi: u16,
        /// Subsequent address family identifier.
        safi: u8,
    },
    /// Route refresh (code 2, RFC 2918).
    RouteRefresh,
    /// Graceful restart (code 64, RFC 4724).
    GracefulRestart(GracefulRestart),
    /// 4-octet AS numbers (code 65, RFC 6793), carrying the sender's AS.
    FourOctetAs(u32),
    /// Any other capability: code and raw value.
    Other {
        /// Capability code.
        code: u8,
        /// Capability value octets.
        value: Vec<u8>,
    },
}

impl Capability {
    /// The Multiprotocol capability for a family weft supports.
    pub fn multiprotocol(family: Family) -> Self {
        let (afi, safi) = family.afi_safi();
        Self::Multiprotocol { afi, safi }
    }
}

/// The graceful restart capability's content (RFC 4724 §3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GracefulRestart {
    /// Restart State (R) bit: the sender has restarted and its peer should not wait for
    /// the sender's End-of-RIB before sending its own routes.
    pub restarted: bool,
    /// Graceful Notification (N) bit (RFC 8538).
    pub notification: bool,
    /// Restart Time in seconds (12 bits): how long the peer keeps our routes as stale
    /// after the session drops.
    pub restart_secs: u16,
    /// Families for which the sender supports GR, with the Forwarding State (F) bit.
    pub families: Vec<(Family, bool)>,
}

// ===== UPDATE =====

/// UPDATE (RFC 4271 §4.3) with multiprotocol reach/unreach (RFC 4760) folded in: weft
/// sees one list of withdrawals and one list of announcements whatever the family.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UpdateMsg {
    /// Withdrawn destinations (IPv4 unicast in the Withdrawn Routes field, VPNv4 in
    /// MP_UNREACH_NLRI).
    pub withdrawn: Vec<RouteKey>,
    /// Path attributes shared by every announced destination. `None` when the message
    /// carries no attributes besides MP_UNREACH_NLRI.
    pub attributes: Option<PathAttributes>,
    /// Announced destinations (IPv4 unicast in the NLRI field, VPNv4 in MP_REACH_NLRI).
    pub announced: Vec<Nlri>,
    /// Set when this UPDATE is an End-of-RIB marker for that family (RFC 4724 §2); the
    /// lists are then empty.
    pub end_of_rib: Option<Family>,
    /// Non-fatal attribute errors found while decoding and what was done about them
    /// (RFC 7606: attribute discarded, or the whole UPDATE treated as a withdrawal, in
    /// which case `announced` was already moved to `withdrawn`). Ignored when encoding.
    pub errors: Vec<AttributeError>,
}

impl UpdateMsg {
    /// An End-of-RIB marker for `family` (RFC 4724 §2).
    pub fn end_of_rib(family: Family) -> Self {
        Self {
            end_of_rib: Some(family),
            ..Self::default()
        }
    }

    /// True if the message announces and withdraws nothing and is not an End-of-RIB.
    pub fn is_empty(&self) -> bool {
        self.withdrawn.is_empty() && self.announced.is_empty() && self.end_of_rib.is_none()
    }
}

/// What RFC 7606 says to do about a malformed attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AttrAction {
    /// "Attribute discard" (RFC 7606 §2): drop the attribute, keep the routes.
    Discard,
    /// "Treat-as-withdraw" (RFC 7606 §2): every NLRI in the UPDATE is withdrawn.
    TreatAsWithdraw,
    /// "Session reset" (RFC 7606 §2, RFC 4271 §6): send NOTIFICATION and close.
    SessionReset,
}

/// One non-fatal error inside an UPDATE, kept for logs and counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeError {
    /// Path attribute type code (0 when the attribute list itself was malformed).
    pub type_code: u8,
    /// What was done.
    pub action: AttrAction,
    /// What was wrong, in words.
    pub detail: String,
}

// ===== NOTIFICATION =====

/// NOTIFICATION (RFC 4271 §4.5): error code, subcode and data. Kept as raw numbers so a
/// NOTIFICATION with codes this crate does not know is still received and reported.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NotificationMsg {
    /// Error code (RFC 4271 §4.5, IANA "BGP Error Codes").
    pub code: u8,
    /// Error subcode.
    pub subcode: u8,
    /// Diagnostic data; its meaning depends on code and subcode (RFC 4271 §6).
    pub data: Vec<u8>,
}

/// NOTIFICATION error codes and subcodes (RFC 4271 §4.5, RFC 4486, RFC 6608, RFC 7313).
pub mod notif {
    /// Message Header Error.
    pub const MESSAGE_HEADER: u8 = 1;
    /// OPEN Message Error.
    pub const OPEN: u8 = 2;
    /// UPDATE Message Error.
    pub const UPDATE: u8 = 3;
    /// Hold Timer Expired.
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    /// Finite State Machine Error.
    pub const FSM: u8 = 5;
    /// Cease.
    pub const CEASE: u8 = 6;
    /// ROUTE-REFRESH Message Error (RFC 7313).
    pub const ROUTE_REFRESH: u8 = 7;

    /// Subcode 0 of any code: no specific subcode.
    pub const UNSPECIFIC: u8 = 0;

    /// Message Header Error 1: Connection Not Synchronized (bad marker).
    pub const HDR_NOT_SYNCHRONIZED: u8 = 1;
    /// Message Header Error 2: Bad Message Length; data = the length field.
    pub const HDR_BAD_LENGTH: u8 = 2;
    /// Message Header Error 3: Bad Message Type; data = the type octet.
    pub const HDR_BAD_TYPE: u8 = 3;

    /// OPEN Error 1: Unsupported Version Number; data = largest supported version (2 octets).
    pub const OPEN_UNSUPPORTED_VERSION: u8 = 1;
    /// OPEN Error 2: Bad Peer AS.
    pub const OPEN_BAD_PEER_AS: u8 = 2;
    /// OPEN Error 3: Bad BGP Identifier.
    pub const OPEN_BAD_BGP_ID: u8 = 3;
    /// OPEN Error 4: Unsupported Optional Parameter.
    pub const OPEN_UNSUPPORTED_OPT_PARAM: u8 = 4;
    /// OPEN Error 6: Unacceptable Hold Time.
    pub const OPEN_UNACCEPTABLE_HOLD_TIME: u8 = 6;
    /// OPEN Error 7: Unsupported Capability (RFC 5492 §5).
    pub const OPEN_UNSUPPORTED_CAPABILITY: u8 = 7;

    /// UPDATE Error 1: Malformed Attribute List.
    pub const UPD_MALFORMED_ATTR_LIST: u8 = 1;
    /// UPDATE Error 2: Unrecognized Well-known Attribute; data = the attribute.
    pub const UPD_UNRECOGNIZED_WELL_KNOWN: u8 = 2;
    /// UPDATE Error 3: Missing Well-known Attribute.
    pub const UPD_MISSING_WELL_KNOWN: u8 = 3;
    /// UPDATE Error 4: Attribute Flags Error.
    pub const UPD_ATTR_FLAGS: u8 = 4;
    /// UPDATE Error 5: Attribute Length Error.
    pub const UPD_ATTR_LENGTH: u8 = 5;
    /// UPDATE Error 10: Invalid Network Field.
    pub const UPD_INVALID_NETWORK: u8 = 10;
    /// UPDATE Error 11: Malformed AS_PATH.
    pub const UPD_MALFORMED_AS_PATH: u8 = 11;

    /// FSM Error 1: Receive Unexpected Message in OpenSent State (RFC 6608).
    pub const FSM_IN_OPENSENT: u8 = 1;
    /// FSM Error 2: Receive Unexpected Message in OpenConfirm State (RFC 6608).
    pub const FSM_IN_OPENCONFIRM: u8 = 2;
    /// FSM Error 3: Receive Unexpected Message in Established State (RFC 6608).
    pub const FSM_IN_ESTABLISHED: u8 = 3;

    /// Cease 2: Administrative Shutdown (RFC 4486).
    pub const CEASE_ADMIN_SHUTDOWN: u8 = 2;
    /// Cease 3: Peer De-configured (RFC 4486).
    pub const CEASE_PEER_DECONFIGURED: u8 = 3;
    /// Cease 4: Administrative Reset (RFC 4486).
    pub const CEASE_ADMIN_RESET: u8 = 4;
    /// Cease 5: Connection Rejected (RFC 4486).
    pub const CEASE_CONNECTION_REJECTED: u8 = 5;
    /// Cease 7: Connection Collision Resolution (RFC 4486).
    pub const CEASE_COLLISION: u8 = 7;

    /// ROUTE-REFRESH Error 1: Invalid Message Length (RFC 7313 §5).
    pub const RR_INVALID_LENGTH: u8 = 1;
}

impl NotificationMsg {
    /// A NOTIFICATION with the given code, subcode and data.
    pub fn new(code: u8, subcode: u8, data: impl Into<Vec<u8>>) -> Self {
        Self {
            code,
            subcode,
            data: data.into(),
        }
    }

    /// Cease with a subcode (RFC 4486).
    pub fn cease(subcode: u8) -> Self {
        Self::new(notif::CEASE, subcode, Vec::new())
    }

    /// The name of the code and subcode, as the RFCs spell them.
    pub fn describe(&self) -> String {
        use notif::*;
        let code = match self.code {
            MESSAGE_HEADER => "Message Header Error",
            OPEN => "OPEN Message Error",
            UPDATE => "UPDATE Message Error",
            HOLD_TIMER_EXPIRED => "Hold Timer Expired",
            FSM => "Finite State Machine Error",
            CEASE => "Cease",
            ROUTE_REFRESH => "ROUTE-REFRESH Message Error",
            _ => "unknown error code",
        };
        let sub = match (self.code, self.subcode) {
            (_, 0) => "Unspecific",
            (MESSAGE_HEADER, 1) => "Connection Not Synchronized",
            (MESSAGE_HEADER, 2) => "Bad Message Length",
            (MESSAGE_HEADER, 3) => "Bad Message Type",
            (OPEN, 1) => "Unsupported Version Number",
            (OPEN, 2) => "Bad Peer AS",
            (OPEN, 3) => "Bad BGP Identifier",
            (OPEN, 4) => "Unsupported Optional Parameter",
            (OPEN, 6) => "Unacceptable Hold Time",
            (OPEN, 7) => "Unsupported Capability",
            (UPDATE, 1) => "Malformed Attribute List",
            (UPDATE, 2) => "Unrecognized Well-known Attribute",
            (UPDATE, 3) => "Missing Well-known Attribute",
            (UPDATE, 4) => "Attribute Flags Error",
            (UPDATE, 5) => "Attribute Length Error",
            (UPDATE, 6) => "Invalid ORIGIN Attribute",
            (UPDATE, 8) => "Invalid NEXT_HOP Attribute",
            (UPDATE, 9) => "Optional Attribute Error",
            (UPDATE, 10) => "Invalid Network Field",
            (UPDATE, 11) => "Malformed AS_PATH",
            (FSM, 1) => "Receive Unexpected Message in OpenSent State",
            (FSM, 2) => "Receive Unexpected Message in OpenConfirm State",
            (FSM, 3) => "Receive Unexpected Message in Established State",
            (CEASE, 1) => "Maximum Number of Prefixes Reached",
            (CEASE, 2) => "Administrative Shutdown",
            (CEASE, 3) => "Peer De-configured",
            (CEASE, 4) => "Administrative Reset",
            (CEASE, 5) => "Connection Rejected",
            (CEASE, 6) => "Other Configuration Change",
            (CEASE, 7) => "Connection Collision Resolution",
            (CEASE, 8) => "Out of Resources",
            (CEASE, 9) => "Hard Reset",
            (ROUTE_REFRESH, 1) => "Invalid Message Length",
            _ => "unknown subcode",
        };
        format!("{code} ({}) / {sub} ({})", self.code, self.subcode)
    }
}

impl fmt::Display for NotificationMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

// ===== ROUTE-REFRESH =====

/// ROUTE-REFRESH (RFC 2918 §3, subtypes from RFC 7313). AFI/SAFI are raw numbers because
/// a request for a family that was not negotiated must be ignored, not rejected (RFC 2918 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RouteRefreshMsg {
    /// Address family identifier.
    pub afi: u16,
    /// Message subtype (RFC 7313): 0 = normal request, 1 = BoRR, 2 = EoRR.
    pub subtype: u8,
    /// Subsequent address family identifier.
    pub safi: u8,
}

impl RouteRefreshMsg {
    /// A normal route-refresh request for `family`.
    pub fn request(family: Family) -> Self {
        let (afi, safi) = family.afi_safi();
        Self {
            afi,
            subtype: 0,
            safi,
        }
    }

    /// The requested family, if weft supports it.
    pub fn family(&self) -> Option<Family> {
        Family::from_afi_safi(self.afi, self.safi)
    }
}
