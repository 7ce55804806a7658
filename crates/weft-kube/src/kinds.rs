//! Where each [`InputKind`] lives in the Kubernetes API.

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::core::{ApiResource, GroupVersionKind};
use weft_model::InputKind;

/// The group, version, kind and plural the API server serves `kind` under.
///
/// Kubernetes' own kinds come from their k8s-openapi types (so they track the
/// `v1_33` API); the Multus NAD and weft's kinds come from weft-model's
/// `apiVersion` and plural, the same names `weft apply` and the CRDs use.
pub fn api_resource(kind: InputKind) -> ApiResource {
    match kind {
        InputKind::Namespace => ApiResource::erase::<Namespace>(&()),
        InputKind::Node => ApiResource::erase::<Node>(&()),
        InputKind::Pod => ApiResource::erase::<Pod>(&()),
        InputKind::Service => ApiResource::erase::<Service>(&()),
        InputKind::EndpointSlice => ApiResource::erase::<EndpointSlice>(&()),
        InputKind::NetworkPolicy => ApiResource::erase::<NetworkPolicy>(&()),
        InputKind::ClusterConfig
        | InputKind::VirtualNetwork
        | InputKind::FloatingIpPool
        | InputKind::FloatingIp
        | InputKind::ServiceChain
        | InputKind::BgpPeer
        | InputKind::NetworkAttachmentDefinition
        | InputKind::AdminNetworkPolicy
        | InputKind::BaselineAdminNetworkPolicy => {
            let api_version = kind.api_version();
            let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
            let gvk = GroupVersionKind::gvk(group, version, kind.kind_name());
            ApiResource::from_gvk_with_plural(&gvk, api_plural(kind))
        }
    }
}

/// The plural the API server serves `kind` under. It is weft's own plural (the
/// store key and `weft get` name) except for the Multus CRD, which Multus
/// registers as `network-attachment-definitions`, with hyphens.
fn api_plural(kind: InputKind) -> &'static str {
    match kind {
        InputKind::NetworkAttachmentDefinition => "network-attachment-definitions",
        other => other.plural(),
    }
}

/// Whether `kind` is served by a CustomResourceDefinition (so a 404 means "CRD not
/// installed" rather than "wrong API server").
pub fn is_custom(kind: InputKind) -> bool {
    matches!(
        kind,
        InputKind::ClusterConfig
            | InputKind::VirtualNetwork
            | InputKind::FloatingIpPool
            | InputKind::FloatingIp
            | InputKind::ServiceChain
            | InputKind::BgpPeer
            | InputKind::NetworkAttachmentDefinition
            | InputKind::AdminNetworkPolicy
            | InputKind::BaselineAdminNetworkPolicy
    )
}

/// The URL path kube-rs lists and watches `kind` at (all namespaces), for messages.
pub fn collection_path(kind: InputKind) -> String {
    let ar = api_resource(kind);
    if ar.group.is_empty() {
        format!("/api/{}/{}", ar.version, ar.plural)
    } else {
        format!("/apis/{}/{}/{}", ar.group, ar.version, ar.plural)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_matches_the_model() {
        for kind in InputKind::ALL {
            let ar = api_resource(kind);
            assert_eq!(ar.api_version, kind.api_version(), "{kind}");
            assert_eq!(ar.kind, kind.kind_name(), "{kind}");
            assert_eq!(ar.plural, api_plural(kind), "{kind}");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(collection_path(InputKind::Pod), "/api/v1/pods");
        assert_eq!(
            collection_path(InputKind::EndpointSlice),
            "/apis/discovery.k8s.io/v1/endpointslices"
        );
        assert_eq!(
            collection_path(InputKind::VirtualNetwork),
            "/apis/weft.dev/v1alpha1/virtualnetworks"
        );
        assert_eq!(
            collection_path(InputKind::NetworkAttachmentDefinition),
            "/apis/k8s.cni.cncf.io/v1/network-attachment-definitions"
        );
        // sig-network's CRDs: optional, so a 404 is "CRD not installed".
        assert_eq!(
            collection_path(InputKind::AdminNetworkPolicy),
            "/apis/policy.networking.k8s.io/v1alpha1/adminnetworkpolicies"
        );
        assert!(is_custom(InputKind::BaselineAdminNetworkPolicy));
    }
}
