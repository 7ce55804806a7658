//! Tungsten Fabric's naming rules (reference §2.2, §3.3), in one place so the
//! translator, the CLI and the agents spell every name the same way.
//!
//! For cluster `k8s`: namespace `dev` → project `k8s-dev`; shared networks
//! `default-domain:k8s-default:k8s-default-pod-network` and `…-service-network`; an
//! isolated namespace gets `default-domain:k8s-dev:k8s-dev-pod-network`.

/// The only domain weft uses, as TF's kube-manager does.
pub const DEFAULT_DOMAIN: &str = "default-domain";

/// Namespace annotation: `"true"` gives the namespace its own pod and service networks.
pub const ANNOTATION_ISOLATION: &str = "opencontrail.org/isolation";
/// Pod or namespace annotation naming a custom VirtualNetwork as a dict literal
/// `{"domain": …, "project": …, "name": …}`.
pub const ANNOTATION_NETWORK: &str = "opencontrail.org/network";
/// Namespace, Service or Ingress annotation naming a floating-IP pool.
pub const ANNOTATION_FIP_POOL: &str = "opencontrail.org/fip-pool";
/// Namespace annotation: pods reach the fabric through SNAT to the node address.
pub const ANNOTATION_IP_FABRIC_SNAT: &str = "opencontrail.org/ip_fabric_snat";
/// Namespace annotation: pods take ip-fabric addresses and are routed in the underlay.
pub const ANNOTATION_IP_FABRIC_FORWARDING: &str = "opencontrail.org/ip_fabric_forwarding";
/// NetworkAttachmentDefinition annotation giving the attachment network's CIDR.
pub const ANNOTATION_CIDR: &str = "opencontrail.org/cidr";
/// Pod annotation listing extra networks (Multus form: names or a JSON list).
pub const ANNOTATION_NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";

/// Project of a namespace: `<cluster>-<namespace>`.
pub fn project_name(cluster: &str, namespace: &str) -> String {
    format!("{cluster}-{namespace}")
}

/// Fully qualified name of a network: `default-domain:<project>:<network>`.
pub fn fq_name(project: &str, network: &str) -> String {
    format!("{DEFAULT_DOMAIN}:{project}:{network}")
}

/// Shared pod network of the cluster (used by `default` and every non-isolated namespace).
pub fn default_pod_network(cluster: &str) -> String {
    format!("{cluster}-default-pod-network")
}

/// Shared service network of the cluster.
pub fn default_service_network(cluster: &str) -> String {
    format!("{cluster}-default-service-network")
}

/// Pod network of an isolated namespace.
pub fn namespace_pod_network(cluster: &str, namespace: &str) -> String {
    format!("{cluster}-{namespace}-pod-network")
}

/// Service network of an isolated namespace.
pub fn namespace_service_network(cluster: &str, namespace: &str) -> String {
    format!("{cluster}-{namespace}-service-network")
}

/// Network created for a NetworkAttachmentDefinition that carries `opencontrail.org/cidr`.
pub fn attachment_network(cluster: &str, nad: &str) -> String {
    format!("{cluster}-{nad}-pod-network")
}

/// Routing instance of a network: TF names it after the network, under the network's FQ
/// name (`default-domain:k8s-default:k8s-default-pod-network:k8s-default-pod-network`).
pub fn routing_instance(fq_network: &str) -> String {
    let leaf = fq_network.rsplit(':').next().unwrap_or(fq_network);
    format!("{fq_network}:{leaf}")
}

/// Firewall policy translated from NetworkPolicy `<np>` in `<namespace>`.
pub fn firewall_policy_name(cluster: &str, namespace: &str, policy: &str) -> String {
    format!("{cluster}-{namespace}-{policy}")
}

/// TF's virtual-machine name for a pod: `<cluster>__<namespace>__<pod>`.
pub fn pod_vm_name(cluster: &str, namespace: &str, pod: &str) -> String {
    format!("{cluster}__{namespace}__{pod}")
}

/// The flat-subnet IPAM shared by every pod network of the cluster.
pub fn pod_ipam(cluster: &str) -> String {
    format!("{cluster}-pod-ipam")
}

/// The flat-subnet IPAM shared by every service network of the cluster.
pub fn service_ipam(cluster: &str) -> String {
    format!("{cluster}-service-ipam")
}

/// The flat-subnet IPAM for ip-fabric-forwarded pods.
pub fn ip_fabric_ipam(cluster: &str) -> String {
    format!("{cluster}-ip-fabric-ipam")
}

/// Splits an FQ network name into (domain, project, network).
pub fn split_fq_name(fq: &str) -> Option<(&str, &str, &str)> {
    let mut parts = fq.split(':');
    let domain = parts.next()?;
    let project = parts.next()?;
    let network = parts.next()?;
    if parts.next().is_some() || domain.is_empty() || project.is_empty() || network.is_empty() {
        return None;
    }
    Some((domain, project, network))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_tf() {
        assert_eq!(project_name("k8s", "dev"), "k8s-dev");
        assert_eq!(
            fq_name(&project_name("k8s", "default"), &default_pod_network("k8s")),
            "default-domain:k8s-default:k8s-default-pod-network"
        );
        assert_eq!(
            fq_name(
                &project_name("k8s", "ns-isolated"),
                &namespace_service_network("k8s", "ns-isolated")
            ),
            "default-domain:k8s-ns-isolated:k8s-ns-isolated-service-network"
        );
        assert_eq!(
            attachment_network("k8s", "vn-left-1"),
            "k8s-vn-left-1-pod-network"
        );
        assert_eq!(
            routing_instance("default-domain:k8s-default:k8s-default-pod-network"),
            "default-domain:k8s-default:k8s-default-pod-network:k8s-default-pod-network"
        );
        assert_eq!(pod_vm_name("k8s", "dev", "web"), "k8s__dev__web");
    }

    #[test]
    fn fq_names_split() {
        assert_eq!(
            split_fq_name("default-domain:k8s-a:vn"),
            Some(("default-domain", "k8s-a", "vn"))
        );
        assert_eq!(split_fq_name("a:b"), None);
        assert_eq!(split_fq_name("a:b:c:d"), None);
        assert_eq!(split_fq_name("a::c"), None);
    }
}
