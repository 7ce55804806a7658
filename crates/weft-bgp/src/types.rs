//! The BGP vocabulary weft uses, independent of any wire library: prefixes, route
//! distinguishers, route targets, path attributes and routes.
//!
//! The codec ([`crate::codec`]) converts between these and netgauze's wire types; the FSM,
//! RIB and speaker only ever see these. Pure data: no I/O.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The 2-octet AS number a 4-octet-AS speaker puts in 2-octet fields (OPEN "My AS",
/// AS_PATH towards old speakers) when its real AS does not fit: RFC 6793 §9.
pub const AS_TRANS: u16 = 23456;

/// The largest value of an MPLS label (20 bits, RFC 3032 §2.1). weft carries the VNI of a
/// virtual network here (tungsten-fabric.md §12.1), so VNIs above this cannot be advertised
/// in VPNv4 routes.
pub const MAX_LABEL: u32 = (1 << 20) - 1;

/// Why a value could not be turned into one of our types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypeError {
    /// A prefix length above 32.
    #[error("prefix length {0} is above 32")]
    PrefixLength(u8),
    /// Text that is not in the expected notation.
    #[error("cannot parse {text:?}: expected {expected}")]
    Syntax {
        /// The text that was given.
        text: String,
        /// The notation that was expected.
        expected: &'static str,
    },
    /// A label that does not fit in 20 bits.
    #[error("label {0} does not fit in 20 bits (max {MAX_LABEL})")]
    Label(u32),
}

// ===== Prefix4 =====

/// An IPv4 prefix whose host bits are always zero (`10.47.255.252/32`, `10.0.0.0/8`), so
/// two equal prefixes always compare equal and hash the same (RIB keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "Ipv4Net", into = "Ipv4Net")]
pub struct Prefix4(Ipv4Net);

impl Prefix4 {
    /// Builds a prefix, clearing host bits; fails only on a length above 32.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Self, TypeError> {
        Ipv4Net::new(addr, len)
            .map(|net| Self(net.trunc()))
            .map_err(|_| TypeError::PrefixLength(len))
    }

    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        self.0.network()
    }

    /// The prefix length in bits.
    #[allow(
        clippy::len_without_is_empty,
        reason = "a prefix length, not a collection size"
    )]
    pub fn len(&self) -> u8 {
        self.0.prefix_len()
    }

    /// True for the default route `0.0.0.0/0` (the only prefix of length zero).
    pub fn is_default(&self) -> bool {
        self.0.prefix_len() == 0
    }

    /// The prefix as an [`Ipv4Net`].
    pub fn net(&self) -> Ipv4Net {
        self.0
    }
}

impl From<Ipv4Net> for Prefix4 {
    fn from(net: Ipv4Net) -> Self {
        Self(net.trunc())
    }
}

impl From<Prefix4> for Ipv4Net {
    fn from(p: Prefix4) -> Self {
        p.0
    }
}

impl fmt::Display for Prefix4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Prefix4 {
    type Err = TypeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(net) = s.parse::<Ipv4Net>() {
            return Ok(Self(net.trunc()));
        }
        if let Ok(addr) = s.parse::<Ipv4Addr>() {
            return Self::new(addr, 32);
        }
        Err(TypeError::Syntax {
            text: s.to_string(),
            expected: "an IPv4 prefix such as 10.0.0.0/8",
        })
    }
}

// ===== Route distinguisher and route target =====

/// A VPN route distinguisher (RFC 4364 §4.2): makes customer prefixes unique inside the
/// provider's VPNv4 table. TF uses type 1 `<vhost IP>:<vrf id>` for agent routes and
/// `<bgp id>:<ri index>` on control nodes (tungsten-fabric.md §12.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RouteDistinguisher {
    /// Type 0: 2-octet AS administrator, 4-octet assigned number.
    As2 {
        /// Administrator AS.
        asn: u16,
        /// Assigned number.
        number: u32,
    },
    /// Type 1: IPv4 address administrator, 2-octet assigned number.
    Ipv4 {
        /// Administrator address.
        ip: Ipv4Addr,
        /// Assigned number.
        number: u16,
    },
    /// Type 2: 4-octet AS administrator, 2-octet assigned number.
    As4 {
        /// Administrator AS.
        asn: u32,
        /// Assigned number.
        number: u16,
    },
}

impl RouteDistinguisher {
    /// The all-zero RD that RFC 4364 §4.3.2 requires in front of a VPN-IPv4 next hop.
    pub const ZERO: Self = Self::As2 { asn: 0, number: 0 };
}

impl fmt::Display for RouteDistinguisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::As2 { asn, number } => write!(f, "{asn}:{number}"),
            Self::Ipv4 { ip, number } => write!(f, "{ip}:{number}"),
            Self::As4 { asn, number } => write!(f, "{asn}:{number}"),
        }
    }
}

/// Parses `admin:number` where admin is an AS or an IPv4 address; an AS that fits in 16
/// bits gives type 0 (unless the number does not fit in 32 bits), a larger one type 2.
fn parse_admin_number(s: &str, expected: &'static str) -> Result<(Admin, u64), TypeError> {
    let err = || TypeError::Syntax {
        text: s.to_string(),
        expected,
    };
    let (admin, number) = s.rsplit_once(':').ok_or_else(err)?;
    let number: u64 = number.parse().map_err(|_| err())?;
    if let Ok(ip) = admin.parse::<Ipv4Addr>() {
        return Ok((Admin::Ip(ip), number));
    }
    let asn: u32 = admin.parse().map_err(|_| err())?;
    Ok((Admin::As(asn), number))
}

enum Admin {
    As(u32),
    Ip(Ipv4Addr),
}

impl FromStr for RouteDistinguisher {
    type Err = TypeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "a route distinguisher such as 64512:1 or 10.0.0.1:7";
        let err = || TypeError::Syntax {
            text: s.to_string(),
            expected: EXPECTED,
        };
        match parse_admin_number(s, EXPECTED)? {
            (Admin::Ip(ip), n) => Ok(Self::Ipv4 {
                ip,
                number: u16::try_from(n).map_err(|_| err())?,
            }),
            (Admin::As(asn), n) => match (u16::try_from(asn), u32::try_from(n)) {
                (Ok(asn), Ok(number)) => Ok(Self::As2 { asn, number }),
                _ => Ok(Self::As4 {
                    asn,
                    number: u16::try_from(n).map_err(|_| err())?,
                }),
            },
        }
    }
}

/// A route target extended community (RFC 4360 §4, RFC 5668): which VRFs import a VPN
/// route. Types 0x00/0x01/0x02 with subtype 0x02.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RouteTarget {
    /// Type 0x00: 2-octet AS, 4-octet value (`target:64512:8000001`, TF's auto RTs).
    As2 {
        /// Global administrator AS.
        asn: u16,
        /// Local administrator value.
        value: u32,
    },
    /// Type 0x01: IPv4 address, 2-octet value.
    Ipv4 {
        /// Global administrator address.
        ip: Ipv4Addr,
        /// Local administrator value.
        value: u16,
    },
    /// Type 0x02: 4-octet AS, 2-octet value (RFC 5668).
    As4 {
        /// Global administrator AS.
        asn: u32,
        /// Local administrator value.
        value: u16,
    },
}

impl fmt::Display for RouteTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::As2 { asn, value } => write!(f, "target:{asn}:{value}"),
            Self::Ipv4 { ip, value } => write!(f, "target:{ip}:{value}"),
            Self::As4 { asn, value } => write!(f, "target:{asn}:{value}"),
        }
    }
}

impl FromStr for RouteTarget {
    type Err = TypeError;
    /// Accepts `target:64512:1`, `64512:1`, `10.0.0.1:5` and `4200000000:5`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "a route target such as target:64512:8000001";
        let body = s.strip_prefix("target:").unwrap_or(s);
        let err = || TypeError::Syntax {
            text: s.to_string(),
            expected: EXPECTED,
        };
        match parse_admin_number(body, EXPECTED)? {
            (Admin::Ip(ip), n) => Ok(Self::Ipv4 {
                ip,
                value: u16::try_from(n).map_err(|_| err())?,
            }),
            (Admin::As(asn), n) => match (u16::try_from(asn), u32::try_from(n)) {
                (Ok(asn), Ok(value)) => Ok(Self::As2 { asn, value }),
                _ => Ok(Self::As4 {
                    asn,
                    value: u16::try_from(n).map_err(|_| err())?,
                }),
            },
        }
    }
}

/// One extended community (RFC 4360). Route targets are typed because weft acts on them;
/// everything else is carried as its 8 wire octets so it is passed on unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ExtCommunity {
    /// A route target.
    RouteTarget(RouteTarget),
    /// Any other extended community, as sent on the wire (type, subtype, value).
    Other([u8; 8]),
}

// ===== Path attributes =====

/// ORIGIN (RFC 4271 §5.1.1). The order is the preference order of the decision process
/// (§9.1.2.2 c: lower is better).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub enum Origin {
    /// Learned from an interior protocol, or originated by weft.
    #[default]
    Igp,
    /// Learned via EGP (historic).
    Egp,
    /// Learned some other way (redistribution).
    Incomplete,
}

/// One AS_PATH segment (RFC 4271 §4.3, path attribute type 2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AsSegment {
    /// An ordered list of ASes the route traversed.
    Sequence(Vec<u32>),
    /// An unordered set of ASes (from aggregation); counts as one AS in path length.
    Set(Vec<u32>),
}

/// AS_PATH with 4-octet AS numbers throughout (RFC 6793: the codec converts to and from
/// 2-octet encodings at the edge).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct AsPath {
    /// The segments, leftmost (most recently traversed) first.
    pub segments: Vec<AsSegment>,
}

/// Most ASes one AS_PATH segment can hold (its length field is one octet).
pub const MAX_SEGMENT_LEN: usize = 255;

impl AsPath {
    /// A path of one AS_SEQUENCE.
    pub fn sequence(asns: impl Into<Vec<u32>>) -> Self {
        let asns = asns.into();
        if asns.is_empty() {
            return Self::default();
        }
        Self {
            segments: vec![AsSegment::Sequence(asns)],
        }
    }

    /// Path length for the decision process: each AS in a sequence counts one, each set
    /// counts one in total (RFC 4271 §9.1.2.2 a).
    pub fn path_len(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s {
                AsSegment::Sequence(v) => v.len(),
                AsSegment::Set(_) => 1,
            })
            .sum()
    }

    /// The AS this route was received from: the first AS of a leading AS_SEQUENCE
    /// (RFC 4271 §9.1.2.2 c, "neighbor AS" for the MED comparison).
    pub fn neighbor_as(&self) -> Option<u32> {
        match self.segments.first() {
            Some(AsSegment::Sequence(v)) => v.first().copied(),
            _ => None,
        }
    }

    /// True if `asn` appears anywhere in the path (loop detection, RFC 4271 §9.1.2).
    pub fn contains(&self, asn: u32) -> bool {
        self.segments.iter().any(|s| match s {
            AsSegment::Sequence(v) | AsSegment::Set(v) => v.contains(&asn),
        })
    }

    /// Prepends `asn` as RFC 4271 §5.1.2 requires when advertising to an external peer:
    /// into the leading AS_SEQUENCE if there is room, otherwise as a new leading segment.
    pub fn prepend(&mut self, asn: u32) {
        match self.segments.first_mut() {
            Some(AsSegment::Sequence(v)) if v.len() < MAX_SEGMENT_LEN => v.insert(0, asn),
            _ => self.segments.insert(0, AsSegment::Sequence(vec![asn])),
        }
    }

    /// Every AS number in order of appearance.
    pub fn asns(&self) -> impl Iterator<Item = u32> + '_ {
        self.segments.iter().flat_map(|s| match s {
            AsSegment::Sequence(v) | AsSegment::Set(v) => v.iter().copied(),
        })
    }
}

impl fmt::Display for AsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for seg in &self.segments {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            match seg {
                AsSegment::Sequence(v) => {
                    let parts: Vec<String> = v.iter().map(u32::to_string).collect();
                    f.write_str(&parts.join(" "))?;
                }
                AsSegment::Set(v) => {
                    let parts: Vec<String> = v.iter().map(u32::to_string).collect();
                    write!(f, "{{{}}}", parts.join(","))?;
                }
            }
        }
        Ok(())
    }
}

/// The path attributes weft reads and writes (RFC 4271 §5, RFC 1997, RFC 4360, RFC 4456).
///
/// Attributes outside this set are not kept: unknown optional transitive attributes are
/// therefore *not* propagated (a deliberate simplification of RFC 4271 §5, documented so
/// nobody relies on it). `next_hop` holds the IPv4 next hop whichever way it arrived:
/// the NEXT_HOP attribute for IPv4 unicast NLRI, or the MP_REACH_NLRI next hop (without
/// its zero RD) for VPNv4 (RFC 4760 §3, RFC 4364 §4.3.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct PathAttributes {
    /// ORIGIN (type 1).
    pub origin: Origin,
    /// AS_PATH (type 2), merged with AS4_PATH when the session is 2-octet (RFC 6793 §4.2.3).
    pub as_path: AsPath,
    /// NEXT_HOP (type 3) or the MP_REACH_NLRI next hop.
    pub next_hop: Option<Ipv4Addr>,
    /// MULTI_EXIT_DISC (type 4).
    pub med: Option<u32>,
    /// LOCAL_PREF (type 5); only meaningful inside an AS.
    pub local_pref: Option<u32>,
    /// ATOMIC_AGGREGATE (type 6).
    pub atomic_aggregate: bool,
    /// AGGREGATOR (type 7): AS and router id of the aggregating speaker.
    pub aggregator: Option<(u32, Ipv4Addr)>,
    /// COMMUNITIES (type 8, RFC 1997) as 32-bit values.
    pub communities: Vec<u32>,
    /// EXTENDED COMMUNITIES (type 16, RFC 4360), route targets among them.
    pub ext_communities: Vec<ExtCommunity>,
    /// ORIGINATOR_ID (type 9, RFC 4456): the iBGP speaker that first injected the route.
    pub originator_id: Option<Ipv4Addr>,
    /// CLUSTER_LIST (type 10, RFC 4456): route-reflection clusters traversed.
    pub cluster_list: Vec<Ipv4Addr>,
}

impl PathAttributes {
    /// The route targets among the extended communities, in order.
    pub fn route_targets(&self) -> Vec<RouteTarget> {
        self.ext_communities
            .iter()
            .filter_map(|c| match c {
                ExtCommunity::RouteTarget(rt) => Some(*rt),
                ExtCommunity::Other(_) => None,
            })
            .collect()
    }
}

// ===== Families, routes, keys =====

/// The address families (AFI/SAFI) weft negotiates (RFC 4760 §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Family {
    /// AFI 1 / SAFI 1.
    Ipv4Unicast,
    /// AFI 1 / SAFI 128: MPLS-labelled VPN-IPv4 (RFC 4364).
    Vpnv4,
}

impl Family {
    /// Every family weft supports, in a stable order.
    pub const ALL: [Family; 2] = [Family::Ipv4Unicast, Family::Vpnv4];

    /// (AFI, SAFI) as IANA numbers them.
    pub fn afi_safi(self) -> (u16, u8) {
        match self {
            Self::Ipv4Unicast => (1, 1),
            Self::Vpnv4 => (1, 128),
        }
    }

    /// The family for an IANA (AFI, SAFI) pair, if weft supports it.
    pub fn from_afi_safi(afi: u16, safi: u8) -> Option<Self> {
        match (afi, safi) {
            (1, 1) => Some(Self::Ipv4Unicast),
            (1, 128) => Some(Self::Vpnv4),
            _ => None,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ipv4Unicast => "ipv4-unicast",
            Self::Vpnv4 => "vpnv4",
        })
    }
}

/// A VPNv4 route as weft uses it: a prefix of one virtual network, made unique by the RD,
/// with the VNI as its label and the route targets that decide who imports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Vpnv4Route {
    /// Route distinguisher.
    pub rd: RouteDistinguisher,
    /// The customer prefix.
    pub prefix: Prefix4,
    /// The label (20 bits; weft puts the VNI here), encoded as a one-entry label stack with
    /// the bottom-of-stack bit set (RFC 8277 §2).
    pub label: u32,
    /// Route targets, carried as extended communities type 0x00/0x01/0x02 subtype 0x02.
    pub route_targets: Vec<RouteTarget>,
}

/// A route weft originates or receives, by family.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Route {
    /// An IPv4 unicast prefix.
    Ipv4(Prefix4),
    /// A VPNv4 route.
    Vpnv4(Vpnv4Route),
}

impl Route {
    /// The route's identity in the RIB (RD + prefix for VPNv4; the label and route targets
    /// are attributes of a path, not part of its identity).
    pub fn key(&self) -> RouteKey {
        match self {
            Self::Ipv4(p) => RouteKey::Ipv4(*p),
            Self::Vpnv4(r) => RouteKey::Vpnv4 {
                rd: r.rd,
                prefix: r.prefix,
            },
        }
    }

    /// The family the route belongs to.
    pub fn family(&self) -> Family {
        self.key().family()
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ipv4(p) => p.fmt(f),
            Self::Vpnv4(r) => write!(f, "{}:{} label {}", r.rd, r.prefix, r.label),
        }
    }
}

/// The identity of a destination in the RIB (one Loc-RIB entry per key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RouteKey {
    /// An IPv4 unicast prefix.
    Ipv4(Prefix4),
    /// A VPN-IPv4 address: RD + prefix.
    Vpnv4 {
        /// Route distinguisher.
        rd: RouteDistinguisher,
        /// Prefix.
        prefix: Prefix4,
    },
}

impl RouteKey {
    /// The family of the key.
    pub fn family(&self) -> Family {
        match self {
            Self::Ipv4(_) => Family::Ipv4Unicast,
            Self::Vpnv4 { .. } => Family::Vpnv4,
        }
    }

    /// The prefix, whatever the family.
    pub fn prefix(&self) -> Prefix4 {
        match self {
            Self::Ipv4(p) | Self::Vpnv4 { prefix: p, .. } => *p,
        }
    }
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ipv4(p) => p.fmt(f),
            Self::Vpnv4 { rd, prefix } => write!(f, "{rd}:{prefix}"),
        }
    }
}

/// One reachable destination as carried in an UPDATE: the key plus, for VPNv4, the label
/// (which travels in the NLRI on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Nlri {
    /// IPv4 unicast prefix (in the UPDATE's NLRI field or in MP_REACH_NLRI).
    Ipv4(Prefix4),
    /// VPN-IPv4 prefix with its label (MP_REACH_NLRI, SAFI 128).
    Vpnv4 {
        /// Route distinguisher.
        rd: RouteDistinguisher,
        /// Prefix.
        prefix: Prefix4,
        /// 20-bit label.
        label: u32,
    },
}

impl Nlri {
    /// The RIB key (drops the label).
    pub fn key(&self) -> RouteKey {
        match self {
            Self::Ipv4(p) => RouteKey::Ipv4(*p),
            Self::Vpnv4 { rd, prefix, .. } => RouteKey::Vpnv4 {
                rd: *rd,
                prefix: *prefix,
            },
        }
    }

    /// The label, for labelled families.
    pub fn label(&self) -> Option<u32> {
        match self {
            Self::Ipv4(_) => None,
            Self::Vpnv4 { label, .. } => Some(*label),
        }
    }

    /// The family of the NLRI.
    pub fn family(&self) -> Family {
        self.key().family()
    }

    /// Rebuilds an NLRI from a key and the label of a path (0 if none was recorded).
    pub fn from_key(key: RouteKey, label: Option<u32>) -> Self {
        match key {
            RouteKey::Ipv4(p) => Self::Ipv4(p),
            RouteKey::Vpnv4 { rd, prefix } => Self::Vpnv4 {
                rd,
                prefix,
                label: label.unwrap_or(0),
            },
        }
    }

    /// The [`Route`] this NLRI announces with `attrs` (route targets come from the
    /// attributes' extended communities).
    pub fn to_route(&self, attrs: &PathAttributes) -> Route {
        match *self {
            Self::Ipv4(p) => Route::Ipv4(p),
            Self::Vpnv4 { rd, prefix, label } => Route::Vpnv4(Vpnv4Route {
                rd,
                prefix,
                label,
                route_targets: attrs.route_targets(),
            }),
        }
    }
}

impl fmt::Display for Nlri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ipv4(p) => p.fmt(f),
            Self::Vpnv4 { rd, prefix, label } => write!(f, "{rd}:{prefix} label {label}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_clears_host_bits_and_parses_hosts() {
        let p: Prefix4 = "10.1.2.3/8".parse().unwrap();
        assert_eq!(p.to_string(), "10.0.0.0/8");
        let h: Prefix4 = "10.47.255.252".parse().unwrap();
        assert_eq!(h.len(), 32);
        assert!(Prefix4::new(Ipv4Addr::LOCALHOST, 33).is_err());
    }

    #[test]
    fn rd_and_rt_parse_all_three_types() {
        assert_eq!(
            "64512:7".parse::<RouteDistinguisher>().unwrap(),
            RouteDistinguisher::As2 {
                asn: 64512,
                number: 7
            }
        );
        assert_eq!(
            "10.0.0.1:7".parse::<RouteDistinguisher>().unwrap(),
            RouteDistinguisher::Ipv4 {
                ip: Ipv4Addr::new(10, 0, 0, 1),
                number: 7
            }
        );
        assert_eq!(
            "4200000000:7".parse::<RouteDistinguisher>().unwrap(),
            RouteDistinguisher::As4 {
                asn: 4_200_000_000,
                number: 7
            }
        );
        assert_eq!(
            "target:64512:8000001".parse::<RouteTarget>().unwrap(),
            RouteTarget::As2 {
                asn: 64512,
                value: 8_000_001
            }
        );
        assert_eq!(
            "target:64512:8000001".parse::<RouteTarget>().unwrap().to_string(),
            "target:64512:8000001"
        );
        assert!("nonsense".parse::<RouteTarget>().is_err());
        assert!("10.0.0.1:70000".parse::<RouteTarget>().is_err());
    }

    #[test]
    fn as_path_length_counts_a_set_as_one() {
        let path = AsPath {
            segments: vec![AsSegment::Sequence(vec![1, 2, 3]), AsSegment::Set(vec![4, 5, 6])],
        };
        assert_eq!(path.path_len(), 4);
        assert_eq!(path.neighbor_as(), Some(1));
        assert!(path.contains(5));
        assert_eq!(path.to_string(), "1 2 3 {4,5,6}");
    }

    #[test]
    fn prepend_opens_a_new_segment_when_the_first_is_a_set_or_full() {
        let mut path = AsPath {
            segments: vec![AsSegment::Set(vec![9])],
        };
        path.prepend(1);
        assert_eq!(path.segments[0], AsSegment::Sequence(vec![1]));
        let mut full = AsPath::sequence(vec![7; MAX_SEGMENT_LEN]);
        full.prepend(1);
        assert_eq!(full.segments.len(), 2);
        let mut empty = AsPath::default();
        empty.prepend(65001);
        assert_eq!(empty, AsPath::sequence(vec![65001]));
    }
}
