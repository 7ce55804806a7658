//! The one cluster configuration (weft kind `ClusterConfig`): cluster name, ASN and the
//! pod, service and ip-fabric subnets. Every other component reads these values from
//! here, validated once, so no setting is applied by one part and ignored by another
//! (the seeds' `--service-cidr` that never reached the SDN).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::error::FieldError;

/// TF's default cluster name.
pub const DEFAULT_CLUSTER_NAME: &str = "k8s";
/// TF's default autonomous system number.
pub const DEFAULT_ASN: u32 = 64512;
/// TF's default pod subnet (`KUBERNETES_POD_SUBNETS`).
pub const DEFAULT_POD_SUBNET: &str = "10.32.0.0/12";
/// TF's default service subnet (`KUBERNETES_SERVICE_SUBNETS`).
pub const DEFAULT_SERVICE_SUBNET: &str = "10.96.0.0/12";
/// TF's default ip-fabric subnet (`KUBERNETES_IP_FABRIC_SUBNETS`).
pub const DEFAULT_IP_FABRIC_SUBNET: &str = "10.64.0.0/12";

/// The `ClusterConfig` manifest as a user writes it (`apiVersion: weft.dev/v1alpha1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfig {
    /// Always `weft.dev/v1alpha1`.
    pub api_version: String,
    /// Always `ClusterConfig`.
    pub kind: String,
    /// Only `metadata.name` is used.
    pub metadata: ObjectMeta,
    /// The settings.
    #[serde(default)]
    pub spec: ClusterConfigSpec,
}

/// The settings of a cluster, with TF's defaults for anything left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfigSpec {
    /// Prefix of every project and network name (TF `cluster_name`).
    #[serde(default = "default_cluster_name")]
    pub cluster_name: String,
    /// BGP autonomous system number (4-byte ASNs allowed).
    #[serde(default = "default_asn")]
    pub asn: u32,
    /// BGP router ID; when absent the controller uses its own address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_id: Option<String>,
    /// Subnets of the pod IPAM shared by every pod network.
    #[serde(default = "default_pod_subnets")]
    pub pod_subnets: Vec<String>,
    /// Subnets of the service IPAM shared by every service network.
    #[serde(default = "default_service_subnets")]
    pub service_subnets: Vec<String>,
    /// Subnets of the ip-fabric IPAM (pods of ip-fabric-forwarding namespaces).
    #[serde(default = "default_ip_fabric_subnets")]
    pub ip_fabric_subnets: Vec<String>,
    /// Cluster-wide default for `opencontrail.org/ip_fabric_forwarding`.
    #[serde(default)]
    pub ip_fabric_forwarding: bool,
    /// Cluster-wide default for `opencontrail.org/ip_fabric_snat`.
    #[serde(default)]
    pub ip_fabric_snat: bool,
    /// The service range the Kubernetes API server allocates ClusterIPs from
    /// (`--service-cluster-ip-range`), when known. It must lie inside `serviceSubnets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_service_cidr: Option<String>,
    /// Address the controller's BGP speaker listens on (default `0.0.0.0` once BGP is
    /// enabled). BGP is enabled by this, `bgpPort`, `routerId` or any BgpPeer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp_listen_address: Option<String>,
    /// TCP port of the BGP listener (default 179).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp_port: Option<u16>,
    /// Route targets the cluster's shared default pod and service networks import and
    /// export *in addition to* their own `target:<ASN>:<VNI>`: how two clusters federate
    /// their default networks (each exports a target the other imports), as TF control
    /// nodes are configured with the route targets of the VRFs they share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_targets: Option<crate::resources::RouteTargetsSpec>,
    /// The cluster-wide floating-IP pool for LoadBalancer services (TF kube-manager's
    /// `public_fip_pool`), in the `opencontrail.org/fip-pool` format
    /// `{"domain": "default-domain", "project": "k8s-<ns>", "network": "<vn>", "name": "<pool>"}`.
    /// A Service's or its Namespace's annotation takes precedence over it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_fip_pool: Option<String>,
}

fn default_cluster_name() -> String {
    DEFAULT_CLUSTER_NAME.to_string()
}
fn default_asn() -> u32 {
    DEFAULT_ASN
}
fn default_pod_subnets() -> Vec<String> {
    vec![DEFAULT_POD_SUBNET.to_string()]
}
fn default_service_subnets() -> Vec<String> {
    vec![DEFAULT_SERVICE_SUBNET.to_string()]
}
fn default_ip_fabric_subnets() -> Vec<String> {
    vec![DEFAULT_IP_FABRIC_SUBNET.to_string()]
}

impl Default for ClusterConfigSpec {
    fn default() -> Self {
        Self {
            cluster_name: default_cluster_name(),
            asn: default_asn(),
            router_id: None,
            pod_subnets: default_pod_subnets(),
            service_subnets: default_service_subnets(),
            ip_fabric_subnets: default_ip_fabric_subnets(),
            ip_fabric_forwarding: false,
            ip_fabric_snat: false,
            kubernetes_service_cidr: None,
            bgp_listen_address: None,
            bgp_port: None,
            route_targets: None,
            public_fip_pool: None,
        }
    }
}

/// The validated, parsed cluster settings every component works from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveConfig {
    /// Name of the ClusterConfig object these came from (`None` = built-in defaults).
    pub source: Option<String>,
    /// Cluster name prefix.
    pub cluster_name: String,
    /// ASN.
    pub asn: u32,
    /// Router ID, if configured.
    pub router_id: Option<Ipv4Addr>,
    /// Pod IPAM subnets.
    pub pod_subnets: Vec<IpNet>,
    /// Service IPAM subnets.
    pub service_subnets: Vec<IpNet>,
    /// ip-fabric IPAM subnets.
    pub ip_fabric_subnets: Vec<IpNet>,
    /// Cluster default for ip-fabric forwarding.
    pub ip_fabric_forwarding: bool,
    /// Cluster default for ip-fabric SNAT.
    pub ip_fabric_snat: bool,
    /// Where the BGP speaker listens, when `routerId`, `bgpListenAddress` or `bgpPort`
    /// is set (`None`: no listener; BgpPeers alone make the speaker connect out only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp_listen: Option<SocketAddr>,
    /// Extra route targets the default pod and service networks import.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub import_targets: Vec<String>,
    /// Extra route targets the default pod and service networks export.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_targets: Vec<String>,
    /// The cluster-wide floating-IP pool (`spec.publicFipPool`), the last of the three
    /// scopes LoadBalancer services take their pool from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_fip_pool: Option<crate::resources::FipPoolRef>,
}

impl Default for EffectiveConfig {
    fn default() -> Self {
        // The defaults are constants that parse; validation of them is covered by tests.
        ClusterConfigSpec::default()
            .validate("ClusterConfig (built-in defaults)", None)
            .unwrap_or_else(|_| unreachable!("built-in defaults are valid"))
    }
}

fn parse_subnets(object: &str, field: &str, values: &[String]) -> Result<Vec<IpNet>, FieldError> {
    if values.is_empty() {
        return Err(FieldError::new(object, field, "at least one CIDR"));
    }
    values
        .iter()
        .enumerate()
        .map(|(i, text)| parse_cidr(object, &format!("{field}[{i}]"), text))
        .collect()
}

/// Parses a CIDR such as `10.32.0.0/12`, requiring the address to be the network
/// address (no host bits), and names the field on error.
pub fn parse_cidr(object: &str, field: &str, text: &str) -> Result<IpNet, FieldError> {
    let net: IpNet = text
        .trim()
        .parse()
        .map_err(|_| FieldError::new(object, field, "a CIDR such as 10.32.0.0/12").found(text))?;
    if net.trunc() != net {
        return Err(FieldError::new(
            object,
            field,
            format!(
                "a network address without host bits (did you mean {}?)",
                net.trunc()
            ),
        )
        .found(text));
    }
    if net.max_prefix_len() - net.prefix_len() < 3 {
        return Err(FieldError::new(
            object,
            field,
            "a subnet with room for hosts (/29 or larger for IPv4, /125 for IPv6)",
        )
        .found(text));
    }
    Ok(net)
}

/// Checks a route target: `target:<ASN>:<number>` or `target:<IPv4>:<number>`.
pub fn validate_route_target(object: &str, field: &str, rt: &str) -> Result<(), FieldError> {
    let err = || {
        FieldError::new(
            object,
            field,
            "a route target such as target:64512:100 or target:192.0.2.1:100",
        )
        .found(rt)
    };
    let rest = rt.strip_prefix("target:").ok_or_else(err)?;
    let (admin, assigned) = rest.rsplit_once(':').ok_or_else(err)?;
    let admin_ok = admin.parse::<u32>().is_ok() || admin.parse::<std::net::Ipv4Addr>().is_ok();
    let assigned_ok = match (admin.parse::<u32>(), assigned.parse::<u32>()) {
        (Ok(asn), Ok(_)) if asn > u32::from(u16::MAX) => assigned.parse::<u16>().is_ok(),
        (_, Ok(_)) => true,
        _ => false,
    };
    if admin_ok && assigned_ok {
        Ok(())
    } else {
        Err(err())
    }
}

/// True if the two networks share any address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

impl ClusterConfigSpec {
    /// Checks every field and returns the parsed settings, or the first problem found.
    pub fn validate(&self, object: &str, source: Option<String>) -> Result<EffectiveConfig, FieldError> {
        let name = &self.cluster_name;
        let valid_name = !name.is_empty()
            && name.len() <= 40
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if !valid_name {
            return Err(FieldError::new(
                object,
                "spec.clusterName",
                "1-40 lowercase letters, digits or '-', not starting or ending with '-'",
            )
            .found(name));
        }
        if self.asn == 0 || self.asn == 23456 || self.asn == u32::MAX {
            return Err(FieldError::new(
                object,
                "spec.asn",
                "an AS number from 1 to 4294967294 other than 23456 (AS_TRANS)",
            )
            .found(self.asn));
        }
        let router_id = match &self.router_id {
            None => None,
            Some(text) => Some(text.parse::<Ipv4Addr>().map_err(|_| {
                FieldError::new(object, "spec.routerId", "an IPv4 address such as 192.0.2.1").found(text)
            })?),
        };
        let pod = parse_subnets(object, "spec.podSubnets", &self.pod_subnets)?;
        let service = parse_subnets(object, "spec.serviceSubnets", &self.service_subnets)?;
        let fabric = parse_subnets(object, "spec.ipFabricSubnets", &self.ip_fabric_subnets)?;
        let groups = [
            ("spec.podSubnets", &pod),
            ("spec.serviceSubnets", &service),
            ("spec.ipFabricSubnets", &fabric),
        ];
        for (i, (field_a, nets_a)) in groups.iter().enumerate() {
            for (j, a) in nets_a.iter().enumerate() {
                for (field_b, nets_b) in groups.iter().skip(i) {
                    for (k, b) in nets_b.iter().enumerate() {
                        if field_a == field_b && k <= j {
                            continue;
                        }
                        if overlaps(a, b) {
                            return Err(FieldError::new(
                                object,
                                format!("{field_a}[{j}]"),
                                format!("a subnet that does not overlap {field_b}[{k}] ({b})"),
                            )
                            .found(a));
                        }
                    }
                }
            }
        }
        if let Some(text) = &self.kubernetes_service_cidr {
            let k8s = parse_cidr(object, "spec.kubernetesServiceCidr", text)?;
            if !service.iter().any(|s| s.contains(&k8s)) {
                let ours: Vec<String> = service.iter().map(|n| n.to_string()).collect();
                return Err(FieldError::new(
                    object,
                    "spec.kubernetesServiceCidr",
                    format!(
                        "a range inside spec.serviceSubnets ({}): the Kubernetes API server allocates ClusterIPs from {k8s}, which weft's service IPAM does not cover; set spec.serviceSubnets to match the API server's --service-cluster-ip-range",
                        ours.join(", ")
                    ),
                )
                .found(k8s));
            }
        }
        let bgp_listen =
            if self.router_id.is_some() || self.bgp_listen_address.is_some() || self.bgp_port.is_some() {
                let address = match &self.bgp_listen_address {
                    None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    Some(text) => text.trim().parse::<IpAddr>().map_err(|_| {
                        FieldError::new(
                            object,
                            "spec.bgpListenAddress",
                            "an IP address such as 0.0.0.0 or 192.0.2.1",
                        )
                        .found(text)
                    })?,
                };
                let port = self.bgp_port.unwrap_or(179);
                if port == 0 {
                    return Err(
                        FieldError::new(object, "spec.bgpPort", "a TCP port from 1 to 65535").found(port),
                    );
                }
                Some(SocketAddr::new(address, port))
            } else {
                None
            };
        let (import_targets, export_targets) = match &self.route_targets {
            None => (Vec::new(), Vec::new()),
            Some(rts) => {
                for (i, rt) in rts.import.iter().enumerate() {
                    validate_route_target(object, &format!("spec.routeTargets.import[{i}]"), rt)?;
                }
                for (i, rt) in rts.export.iter().enumerate() {
                    validate_route_target(object, &format!("spec.routeTargets.export[{i}]"), rt)?;
                }
                (rts.import.clone(), rts.export.clone())
            }
        };
        let public_fip_pool = self
            .public_fip_pool
            .as_deref()
            .map(|text| crate::resources::FipPoolRef::parse(object, "spec.publicFipPool", text))
            .transpose()?;
        Ok(EffectiveConfig {
            public_fip_pool,
            bgp_listen,
            import_targets,
            export_targets,
            source,
            cluster_name: name.clone(),
            asn: self.asn,
            router_id,
            pod_subnets: pod,
            service_subnets: service,
            ip_fabric_subnets: fabric,
            ip_fabric_forwarding: self.ip_fabric_forwarding,
            ip_fabric_snat: self.ip_fabric_snat,
        })
    }
}

impl EffectiveConfig {
    /// True if `ip` lies in one of the service subnets.
    pub fn in_service_range(&self, ip: IpAddr) -> bool {
        self.service_subnets.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_route_targets_are_checked_and_kept() {
        let spec = ClusterConfigSpec {
            route_targets: Some(crate::resources::RouteTargetsSpec {
                import: vec!["target:64513:100".into()],
                export: vec!["target:64512:100".into()],
            }),
            ..ClusterConfigSpec::default()
        };
        let cfg = spec.validate("ClusterConfig default", None).unwrap();
        assert_eq!(cfg.import_targets, vec!["target:64513:100"]);
        assert_eq!(cfg.export_targets, vec!["target:64512:100"]);
        let bad = ClusterConfigSpec {
            route_targets: Some(crate::resources::RouteTargetsSpec {
                import: vec![],
                export: vec!["64512:100".into()],
            }),
            ..ClusterConfigSpec::default()
        };
        let err = bad
            .validate("ClusterConfig default", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("spec.routeTargets.export[0]"), "{err}");
        assert!(err.contains("target:64512:100"), "{err}");
    }

    #[test]
    fn defaults_are_tf_defaults() {
        let cfg = EffectiveConfig::default();
        assert_eq!(cfg.cluster_name, "k8s");
        assert_eq!(cfg.asn, 64512);
        assert_eq!(cfg.pod_subnets[0].to_string(), "10.32.0.0/12");
        assert_eq!(cfg.service_subnets[0].to_string(), "10.96.0.0/12");
        assert_eq!(cfg.ip_fabric_subnets[0].to_string(), "10.64.0.0/12");
    }

    #[test]
    fn bad_cidr_names_the_field() {
        let spec = ClusterConfigSpec {
            pod_subnets: vec!["10.32.0.0/33".into()],
            ..Default::default()
        };
        let err = spec.validate("ClusterConfig default", None).unwrap_err();
        assert_eq!(err.field, "spec.podSubnets[0]");
        assert!(err.to_string().contains("10.32.0.0/33"), "{err}");
    }

    #[test]
    fn host_bits_are_rejected_with_a_hint() {
        let spec = ClusterConfigSpec {
            service_subnets: vec!["10.96.0.1/12".into()],
            ..Default::default()
        };
        let err = spec.validate("ClusterConfig default", None).unwrap_err();
        assert!(err.expected.contains("10.96.0.0/12"), "{err}");
    }

    #[test]
    fn overlapping_subnets_are_rejected() {
        let spec = ClusterConfigSpec {
            service_subnets: vec!["10.32.0.0/16".into()],
            ..Default::default()
        };
        let err = spec.validate("ClusterConfig default", None).unwrap_err();
        assert!(err.to_string().contains("overlap"), "{err}");
    }

    #[test]
    fn kubernetes_service_range_must_be_covered() {
        let spec = ClusterConfigSpec {
            kubernetes_service_cidr: Some("172.20.0.0/16".into()),
            ..Default::default()
        };
        let err = spec.validate("ClusterConfig default", None).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("172.20.0.0/16") && text.contains("10.96.0.0/12"),
            "{text}"
        );
        let ok = ClusterConfigSpec {
            kubernetes_service_cidr: Some("10.96.0.0/16".into()),
            ..Default::default()
        };
        assert!(ok.validate("x", None).is_ok());
    }

    #[test]
    fn bgp_listener_only_when_configured() {
        assert_eq!(EffectiveConfig::default().bgp_listen, None);
        let spec = ClusterConfigSpec {
            router_id: Some("192.0.2.1".into()),
            ..Default::default()
        };
        assert_eq!(
            spec.validate("x", None).unwrap().bgp_listen,
            Some("0.0.0.0:179".parse().unwrap())
        );
        let spec = ClusterConfigSpec {
            bgp_listen_address: Some("10.0.0.1".into()),
            bgp_port: Some(1790),
            ..Default::default()
        };
        assert_eq!(
            spec.validate("x", None).unwrap().bgp_listen,
            Some("10.0.0.1:1790".parse().unwrap())
        );
        let spec = ClusterConfigSpec {
            bgp_listen_address: Some("any".into()),
            ..Default::default()
        };
        assert_eq!(
            spec.validate("x", None).unwrap_err().field,
            "spec.bgpListenAddress"
        );
    }

    #[test]
    fn public_fip_pool_is_parsed_and_named_on_error() {
        let spec = ClusterConfigSpec {
            public_fip_pool: Some(
                "{'domain': 'default-domain', 'project': 'k8s-public', 'network': 'ext', 'name': 'pool'}"
                    .into(),
            ),
            ..Default::default()
        };
        let pool = spec.validate("x", None).unwrap().public_fip_pool.unwrap();
        assert_eq!(pool.to_string(), "default-domain:k8s-public:ext:pool");
        assert_eq!(pool.namespace("k8s"), Some("public"));
        assert_eq!(pool.namespace("other"), None);
        let spec = ClusterConfigSpec {
            public_fip_pool: Some(
                r#"{"domain": "default-domain", "project": "k8s-public", "name": "pool"}"#.into(),
            ),
            ..Default::default()
        };
        let err = spec.validate("ClusterConfig default", None).unwrap_err();
        assert_eq!(err.field, "spec.publicFipPool");
        assert!(err.expected.contains("\"network\""), "{err}");
        let spec = ClusterConfigSpec {
            public_fip_pool: Some("pool".into()),
            ..Default::default()
        };
        assert_eq!(spec.validate("x", None).unwrap_err().field, "spec.publicFipPool");
    }

    #[test]
    fn bad_asn_and_name() {
        let spec = ClusterConfigSpec {
            asn: 0,
            ..Default::default()
        };
        assert_eq!(spec.validate("x", None).unwrap_err().field, "spec.asn");
        let spec = ClusterConfigSpec {
            cluster_name: "K8S_".into(),
            ..Default::default()
        };
        assert_eq!(spec.validate("x", None).unwrap_err().field, "spec.clusterName");
    }
}
