//! [`RawObject`]: one object from the API server, kept as raw JSON.
//!
//! kube-rs decodes a whole LIST page (or watch event) into the watched type at once, so
//! a single object that fails to decode would fail the whole page and stall the kind
//! forever (every relist fails the same way). Typed `Api<Pod>` and even
//! [`kube::core::DynamicObject`] (whose `metadata` is a strict `ObjectMeta`) have that
//! problem. [`RawObject`] decodes *anything* that is JSON: it keeps the document as it
//! came and pulls out, leniently, only the few metadata fields the watcher itself needs
//! (`name`, `namespace`, `uid`, `resourceVersion`). The real decode into a
//! [`weft_model::InputObject`] then happens per object, where a failure can be
//! reported as a [`weft_model::FieldError`] naming the object and the field.

use std::borrow::Cow;

use kube::core::{ApiResource, DynamicResourceScope, ObjectMeta, Resource};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// One object as the API server sent it, plus the metadata the kube-rs watcher reads.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawObject {
    /// `metadata.name`, `namespace`, `uid` and `resourceVersion`, where they are strings.
    pub(crate) metadata: ObjectMeta,
    /// The whole document, untouched.
    pub(crate) value: Value,
}

impl RawObject {
    /// Wraps a JSON document, reading its identifying metadata leniently.
    pub(crate) fn new(value: Value) -> Self {
        let meta = value.get("metadata");
        let text = |field: &str| {
            meta.and_then(|m| m.get(field))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let metadata = ObjectMeta {
            name: text("name"),
            namespace: text("namespace"),
            uid: text("uid"),
            resource_version: text("resourceVersion"),
            ..ObjectMeta::default()
        };
        Self { metadata, value }
    }
}

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(RawObject::new)
    }
}

impl Resource for RawObject {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }

    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }

    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }

    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }

    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_metadata_leniently() {
        let raw: RawObject = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "dev", "resourceVersion": "7", "labels": 5},
            "spec": {"containers": "nope"}
        }))
        .expect("any JSON decodes");
        assert_eq!(raw.metadata.name.as_deref(), Some("web"));
        assert_eq!(raw.metadata.namespace.as_deref(), Some("dev"));
        assert_eq!(raw.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(raw.value["spec"]["containers"], "nope");
    }

    #[test]
    fn non_object_still_decodes() {
        let raw: RawObject = serde_json::from_value(json!("text")).expect("any JSON decodes");
        assert_eq!(raw.metadata, ObjectMeta::default());
    }
}
