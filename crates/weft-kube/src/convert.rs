//! Turns one kind's kube-rs watcher stream into [`KubeEvent`]s.

use kube::runtime::watcher;
use serde_json::Value;
use weft_model::{FieldError, InputChange, InputKey, InputKind, InputObject};

use crate::KubeEvent;
use crate::kinds::{collection_path, is_custom};
use crate::raw::RawObject;

/// Decodes one object of `kind` as the API server sent it.
///
/// List items of Kubernetes' own kinds carry no `apiVersion`/`kind` (only watch events
/// and custom resources do), so they are filled in from `kind` before decoding.
/// `metadata.managedFields` is dropped: the translator never reads it and it is often
/// the largest part of an object.
pub(crate) fn to_input(kind: InputKind, raw: RawObject) -> Result<InputObject, FieldError> {
    let mut value = raw.value;
    if let Some(map) = value.as_object_mut() {
        map.entry("apiVersion")
            .or_insert_with(|| Value::from(kind.api_version()));
        map.entry("kind").or_insert_with(|| Value::from(kind.kind_name()));
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
    }
    let object = InputObject::from_value(value)?;
    if object.kind() != kind {
        return Err(FieldError::new(
            object.key().to_string(),
            "kind",
            format!("{kind}, the kind served at {}", collection_path(kind)),
        )
        .found(object.kind()));
    }
    Ok(object)
}

/// The key of a deleted object. Only the name (and namespace) are needed, so a
/// deletion goes through even when the rest of the object would not decode.
pub(crate) fn key_of(kind: InputKind, raw: &RawObject) -> Result<InputKey, FieldError> {
    let meta = &raw.metadata;
    let Some(name) = meta.name.as_deref() else {
        return Err(FieldError::new(
            format!("{kind} (no name)"),
            "metadata.name",
            "a name",
        ));
    };
    Ok(if kind.namespaced() {
        // Same defaulting rule as `InputObject::key`, so the key matches the upsert's.
        InputKey::namespaced(kind, meta.namespace.as_deref().unwrap_or("default"), name)
    } else {
        InputKey::cluster(kind, name)
    })
}

/// Per-kind state between watcher events: the objects of a (re)list in progress.
pub(crate) struct KindState {
    kind: InputKind,
    listed: Vec<InputObject>,
}

impl KindState {
    /// A fresh state for `kind`.
    pub(crate) fn new(kind: InputKind) -> Self {
        Self {
            kind,
            listed: Vec::new(),
        }
    }

    /// Handles one item of the watcher stream; at most one event comes of it.
    pub(crate) fn handle(
        &mut self,
        item: Result<watcher::Event<RawObject>, watcher::Error>,
    ) -> Option<KubeEvent> {
        let kind = self.kind;
        match item {
            Ok(watcher::Event::Init) => {
                tracing::debug!(%kind, "listing");
                self.listed.clear();
                None
            }
            Ok(watcher::Event::InitApply(raw)) => match to_input(kind, raw) {
                Ok(object) => {
                    self.listed.push(object);
                    None
                }
                Err(err) => Some(self.decode_error(&err)),
            },
            Ok(watcher::Event::InitDone) => {
                let objects = std::mem::take(&mut self.listed);
                tracing::debug!(%kind, count = objects.len(), "list complete");
                Some(KubeEvent::Snapshot { kind, objects })
            }
            Ok(watcher::Event::Apply(raw)) => match to_input(kind, raw) {
                Ok(object) => Some(KubeEvent::Change(InputChange::Upsert(object))),
                Err(err) => Some(self.decode_error(&err)),
            },
            Ok(watcher::Event::Delete(raw)) => match key_of(kind, &raw) {
                Ok(key) => Some(KubeEvent::Change(InputChange::Delete(key))),
                Err(err) => Some(self.decode_error(&err)),
            },
            Err(err) => self.watch_error(&err),
        }
    }

    fn decode_error(&self, err: &FieldError) -> KubeEvent {
        let message = format!("cannot decode {err}; object ignored");
        tracing::warn!(kind = %self.kind, "{message}");
        KubeEvent::WatchError {
            kind: self.kind,
            message,
        }
    }

    fn watch_error(&self, err: &watcher::Error) -> Option<KubeEvent> {
        let kind = self.kind;
        let path = collection_path(kind);
        let message = match err {
            // The resourceVersion is too old: kube-rs relists (after one backoff) and the
            // consumer gets a fresh Snapshot. Routine, so not reported as a failure.
            watcher::Error::WatchError(status) if status.code == 410 => {
                tracing::info!(%kind, reason = %status.reason, "watch expired (410 Gone); relisting");
                return None;
            }
            watcher::Error::InitialListFailed(kube::Error::Api(status)) if status.code == 404 => {
                if is_custom(kind) {
                    format!(
                        "{path} is not served (404): is the CRD for {kind} installed? Retrying with backoff"
                    )
                } else {
                    format!("{path} is not served (404) by this API server; retrying with backoff")
                }
            }
            other => format!("watch of {path} failed: {other}; retrying with backoff"),
        };
        tracing::warn!(%kind, "{message}");
        Some(KubeEvent::WatchError { kind, message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(value: Value) -> RawObject {
        RawObject::new(value)
    }

    fn expect_upsert(event: Option<KubeEvent>) -> InputObject {
        match event {
            Some(KubeEvent::Change(InputChange::Upsert(object))) => object,
            other => panic!("expected an upsert, got {other:?}"),
        }
    }

    #[test]
    fn list_items_without_type_meta_decode() {
        let object = to_input(
            InputKind::Pod,
            raw(
                json!({"metadata": {"name": "web", "namespace": "dev", "managedFields": [{"manager": "x"}]},
                       "spec": {"containers": [{"name": "c"}]}}),
            ),
        )
        .expect("decodes");
        assert_eq!(object.key(), InputKey::namespaced(InputKind::Pod, "dev", "web"));
        assert!(object.metadata().managed_fields.is_none());
    }

    #[test]
    fn wrong_kind_is_a_field_error() {
        let err = to_input(
            InputKind::Pod,
            raw(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "a"}})),
        )
        .expect_err("a Service is not a Pod");
        assert_eq!(err.field, "kind");
    }

    #[test]
    fn snapshot_collects_the_list() {
        let mut state = KindState::new(InputKind::Namespace);
        assert!(state.handle(Ok(watcher::Event::Init)).is_none());
        assert!(
            state
                .handle(Ok(watcher::Event::InitApply(raw(
                    json!({"metadata": {"name": "a"}})
                ))))
                .is_none()
        );
        let bad = state.handle(Ok(watcher::Event::InitApply(raw(
            json!({"metadata": {"name": "Bad_Name"}}),
        ))));
        assert!(
            matches!(bad, Some(KubeEvent::WatchError { kind: InputKind::Namespace, ref message })
            if message.contains("Namespace Bad_Name") && message.contains("metadata.name"))
        );
        match state.handle(Ok(watcher::Event::InitDone)) {
            Some(KubeEvent::Snapshot {
                kind: InputKind::Namespace,
                objects,
            }) => {
                assert_eq!(objects.len(), 1);
                assert_eq!(objects[0].key(), InputKey::cluster(InputKind::Namespace, "a"));
            }
            other => panic!("expected a snapshot, got {other:?}"),
        }
        // A relist starts from an empty buffer.
        assert!(state.handle(Ok(watcher::Event::Init)).is_none());
        assert!(
            matches!(state.handle(Ok(watcher::Event::InitDone)), Some(KubeEvent::Snapshot { objects, .. }) if objects.is_empty())
        );
    }

    #[test]
    fn apply_and_delete() {
        let mut state = KindState::new(InputKind::Node);
        let object = expect_upsert(state.handle(Ok(watcher::Event::Apply(raw(
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}),
        )))));
        assert_eq!(object.key(), InputKey::cluster(InputKind::Node, "n1"));
        // A deletion needs only the name, even if the rest is garbage.
        let event = state.handle(Ok(watcher::Event::Delete(raw(
            json!({"metadata": {"name": "n1"}, "spec": 5}),
        ))));
        assert_eq!(
            event,
            Some(KubeEvent::Change(InputChange::Delete(InputKey::cluster(
                InputKind::Node,
                "n1"
            ))))
        );
        let event = state.handle(Ok(watcher::Event::Delete(raw(json!({"metadata": {}})))));
        assert!(matches!(event, Some(KubeEvent::WatchError { .. })));
    }

    #[test]
    fn gone_is_not_reported_but_not_found_is() {
        let mut state = KindState::new(InputKind::VirtualNetwork);
        let gone = kube::core::Status::failure("too old resource version", "Expired").with_code(410);
        assert!(
            state
                .handle(Err(watcher::Error::WatchError(gone.boxed())))
                .is_none()
        );
        let missing =
            kube::core::Status::failure("the server could not find the requested resource", "NotFound")
                .with_code(404);
        let event = state.handle(Err(watcher::Error::InitialListFailed(kube::Error::Api(
            missing.boxed(),
        ))));
        assert!(
            matches!(event, Some(KubeEvent::WatchError { kind: InputKind::VirtualNetwork, ref message })
            if message.contains("CRD") && message.contains("/apis/weft.dev/v1alpha1/virtualnetworks"))
        );
    }
}
