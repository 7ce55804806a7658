//! The `BgpPeer` kind (`weft.dev/v1alpha1`, cluster-scoped): one BGP neighbour of the
//! controller's speaker, and the routes learned through BGP that land in node tables.
//!
//! ```text
//! BgpPeer (weft apply / CRD watch) ──validate──> EffectiveBgpPeer
//!        │                                         │ weft-api::bgp reconciles the speaker's peers
//!        v                                         v
//!   ClusterConfig (ASN, router ID, listen)    VPNv4 routes in ──> ImportedRoute ──> weft-routing
//! ```
//!
//! Two roles: a `router` is a gateway router (plain IPv4 unicast towards it, next hop =
//! the node hosting the endpoint, and VPNv4 if it negotiates it); a `cluster` is the
//! controller of another weft cluster (VPNv4 both ways, imported into the networks whose
//! import route targets match). Before routes are exchanged with a `cluster` peer its
//! subnets (`remoteSubnets`) are compared with ours; any overlap refuses the exchange.
//! This module is pure data and validation; the speaker lives in `weft-api`.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::config::{overlaps, parse_cidr};
use crate::error::FieldError;
use crate::ids::{MacAddr, Vni};

/// The `BgpPeer` manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpPeer {
    /// `weft.dev/v1alpha1`.
    pub api_version: String,
    /// `BgpPeer`.
    pub kind: String,
    /// Name (cluster-scoped).
    pub metadata: ObjectMeta,
    /// The neighbour's settings.
    pub spec: BgpPeerSpec,
}

/// Settings of one BGP neighbour, as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpPeerSpec {
    /// The neighbour's IPv4 or IPv6 address.
    pub address: String,
    /// Its AS number (equal to ours for iBGP).
    pub asn: u32,
    /// Its TCP port; 179 when absent (tests and labs use others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `router` (a gateway router) or `cluster` (another weft cluster's controller).
    #[serde(default)]
    pub role: BgpPeerRole,
    /// Address families: `ipv4-unicast`, `vpnv4`. Default: both for a router, `vpnv4`
    /// for a cluster.
    #[serde(default)]
    pub families: Vec<String>,
    /// TCP MD5 password (RFC 2385).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Never connect out; wait for the neighbour to connect.
    #[serde(default)]
    pub passive: bool,
    /// Local address to connect from (a controller with several addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_address: Option<String>,
    /// The other cluster's pod, service and ip-fabric subnets, compared with ours before
    /// any route is exchanged (role `cluster`).
    #[serde(default)]
    pub remote_subnets: Vec<String>,
    /// Act as a route reflector for this neighbour (RFC 4456): routes learned from
    /// other iBGP neighbours are reflected to it. Only meaningful for a neighbour in our
    /// own AS (e.g. several gateways or control nodes in one AS).
    #[serde(default)]
    pub route_reflector_client: bool,
}

/// What a neighbour is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BgpPeerRole {
    /// A gateway router: learns the cluster's routes.
    #[default]
    Router,
    /// Another weft cluster: routes flow both ways as VPNv4.
    Cluster,
}

impl std::fmt::Display for BgpPeerRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BgpPeerRole::Router => "router",
            BgpPeerRole::Cluster => "cluster",
        })
    }
}

/// An address family of a BGP session, as weft's kinds name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BgpFamily {
    /// `ipv4-unicast`.
    Ipv4Unicast,
    /// `vpnv4` (MPLS-labelled VPN-IPv4, the label carrying the VNI).
    Vpnv4,
}

impl BgpFamily {
    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BgpFamily::Ipv4Unicast => "ipv4-unicast",
            BgpFamily::Vpnv4 => "vpnv4",
        }
    }
}

/// A validated neighbour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveBgpPeer {
    /// Object name.
    pub name: String,
    /// Neighbour address.
    pub address: IpAddr,
    /// Neighbour AS.
    pub asn: u32,
    /// TCP port.
    pub port: u16,
    /// Role.
    pub role: BgpPeerRole,
    /// Families, sorted, no duplicates, at least one.
    pub families: Vec<BgpFamily>,
    /// MD5 password.
    pub password: Option<String>,
    /// Passive.
    pub passive: bool,
    /// Local address to connect from.
    pub local_address: Option<IpAddr>,
    /// The other cluster's subnets.
    pub remote_subnets: Vec<IpNet>,
    /// A route-reflector client.
    pub route_reflector_client: bool,
}

impl BgpPeerSpec {
    /// Checks every field; errors name `object` and the field.
    pub fn validate(&self, object: &str, name: &str) -> Result<EffectiveBgpPeer, FieldError> {
        let address: IpAddr = self.address.trim().parse().map_err(|_| {
            FieldError::new(
                object,
                "spec.address",
                "an IPv4 or IPv6 address such as 192.0.2.1",
            )
            .found(&self.address)
        })?;
        if address.is_unspecified() || address.is_multicast() {
            return Err(
                FieldError::new(object, "spec.address", "a unicast address of the neighbour").found(address),
            );
        }
        if self.asn == 0 || self.asn == 23456 || self.asn == u32::MAX {
            return Err(FieldError::new(
                object,
                "spec.asn",
                "an AS number from 1 to 4294967294 other than 23456 (AS_TRANS)",
            )
            .found(self.asn));
        }
        if self.port == Some(0) {
            return Err(FieldError::new(object, "spec.port", "a TCP port from 1 to 65535").found(0));
        }
        let mut families = Vec::new();
        for (i, f) in self.families.iter().enumerate() {
            let family = match f.as_str() {
                "ipv4-unicast" => BgpFamily::Ipv4Unicast,
                "vpnv4" => BgpFamily::Vpnv4,
                _ => {
                    return Err(FieldError::new(
                        object,
                        format!("spec.families[{i}]"),
                        "one of ipv4-unicast, vpnv4",
                    )
                    .found(f));
                }
            };
            families.push(family);
        }
        if families.is_empty() {
            families = match self.role {
                BgpPeerRole::Router => vec![BgpFamily::Ipv4Unicast, BgpFamily::Vpnv4],
                BgpPeerRole::Cluster => vec![BgpFamily::Vpnv4],
            };
        }
        families.sort();
        families.dedup();
        if self.role == BgpPeerRole::Cluster && !families.contains(&BgpFamily::Vpnv4) {
            return Err(FieldError::new(
                object,
                "spec.families",
                "vpnv4 among the families of a peer with role cluster (clusters exchange VPNv4 routes)",
            ));
        }
        if let Some(p) = &self.password
            && (p.is_empty() || p.len() > 80)
        {
            return Err(FieldError::new(
                object,
                "spec.password",
                "a TCP MD5 key of 1 to 80 characters (RFC 2385), or no password field",
            ));
        }
        let local_address = match &self.local_address {
            None => None,
            Some(text) => Some(text.trim().parse::<IpAddr>().map_err(|_| {
                FieldError::new(object, "spec.localAddress", "an IP address of this controller").found(text)
            })?),
        };
        let remote_subnets = self
            .remote_subnets
            .iter()
            .enumerate()
            .map(|(i, s)| parse_cidr(object, &format!("spec.remoteSubnets[{i}]"), s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EffectiveBgpPeer {
            name: name.to_string(),
            address,
            asn: self.asn,
            port: self.port.unwrap_or(179),
            role: self.role,
            families,
            password: self.password.clone(),
            passive: self.passive,
            local_address,
            remote_subnets,
            route_reflector_client: self.route_reflector_client,
        })
    }
}

/// One of our subnets, with the field it comes from, for overlap messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSubnet {
    /// `podSubnets`, `serviceSubnets`, `ipFabricSubnets` or a network's name.
    pub what: String,
    /// The range.
    pub net: IpNet,
}

/// Every pair (ours, theirs) of overlapping ranges, as `"our pod subnet 10.32.0.0/12
/// overlaps the peer's 10.32.0.0/16"` sentences. Empty: the clusters can exchange routes.
pub fn subnet_overlaps(ours: &[LocalSubnet], theirs: &[IpNet]) -> Vec<String> {
    let mut out = Vec::new();
    for o in ours {
        for t in theirs {
            if overlaps(&o.net, t) {
                out.push(format!("our {} {} overlaps the peer's {}", o.what, o.net, t));
            }
        }
    }
    out
}

/// A route learned over BGP and imported into one virtual network's table (on every
/// node hosting that network): the agent encapsulates straight to `address` with `vni`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ImportedRoute {
    /// FQ name of the importing network (its table gets the route).
    pub network: String,
    /// Destination.
    pub prefix: IpNet,
    /// BGP next hop: the remote node's underlay address (the VXLAN outer destination).
    pub address: IpAddr,
    /// VNI from the VPNv4 label (the remote node decapsulates into that network's table).
    pub vni: Vni,
    /// MAC of the remote node's VXLAN device (from the route's router-MAC extended
    /// community), the inner destination MAC it accepts.
    pub vtep_mac: MacAddr,
    /// Route distinguisher, as text.
    pub rd: String,
    /// Route targets the route carried, as text.
    pub route_targets: Vec<String>,
    /// Name of the BgpPeer it came from.
    pub peer: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BgpPeerSpec {
        BgpPeerSpec {
            address: "192.0.2.1".into(),
            asn: 64513,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_by_role() {
        let p = spec().validate("BgpPeer gw", "gw").unwrap();
        assert_eq!(p.families, vec![BgpFamily::Ipv4Unicast, BgpFamily::Vpnv4]);
        assert_eq!(p.port, 179);
        let c = BgpPeerSpec {
            role: BgpPeerRole::Cluster,
            ..spec()
        }
        .validate("BgpPeer c2", "c2")
        .unwrap();
        assert_eq!(c.families, vec![BgpFamily::Vpnv4]);
    }

    #[test]
    fn errors_name_the_field() {
        let err = BgpPeerSpec {
            address: "gw.example".into(),
            ..spec()
        }
        .validate("BgpPeer gw", "gw")
        .unwrap_err();
        assert_eq!(
            (err.object.as_str(), err.field.as_str()),
            ("BgpPeer gw", "spec.address")
        );
        let err = BgpPeerSpec { asn: 0, ..spec() }
            .validate("BgpPeer gw", "gw")
            .unwrap_err();
        assert_eq!(err.field, "spec.asn");
        let err = BgpPeerSpec {
            families: vec!["ipv4-unicast".into(), "evpn".into()],
            ..spec()
        }
        .validate("BgpPeer gw", "gw")
        .unwrap_err();
        assert_eq!(err.field, "spec.families[1]");
        let err = BgpPeerSpec {
            role: BgpPeerRole::Cluster,
            families: vec!["ipv4-unicast".into()],
            ..spec()
        }
        .validate("BgpPeer c", "c")
        .unwrap_err();
        assert_eq!(err.field, "spec.families");
        let err = BgpPeerSpec {
            remote_subnets: vec!["10.48.0.0/12".into(), "10.1.2.3/8".into()],
            ..spec()
        }
        .validate("BgpPeer c", "c")
        .unwrap_err();
        assert_eq!(err.field, "spec.remoteSubnets[1]");
    }

    #[test]
    fn overlaps_name_both_ranges() {
        let ours = vec![
            LocalSubnet {
                what: "pod subnet".into(),
                net: "10.32.0.0/12".parse().unwrap(),
            },
            LocalSubnet {
                what: "service subnet".into(),
                net: "10.96.0.0/12".parse().unwrap(),
            },
        ];
        let disjoint: Vec<IpNet> = vec!["10.48.0.0/12".parse().unwrap(), "10.112.0.0/12".parse().unwrap()];
        assert!(subnet_overlaps(&ours, &disjoint).is_empty());
        let clash: Vec<IpNet> = vec!["10.40.0.0/16".parse().unwrap()];
        assert_eq!(
            subnet_overlaps(&ours, &clash),
            vec!["our pod subnet 10.32.0.0/12 overlaps the peer's 10.40.0.0/16".to_string()]
        );
    }
}
