//! Parsing of the Tungsten Fabric annotations weft honours, with errors that name the
//! object, the annotation and what was expected.
//!
//! TF parses dict-valued annotations with Python's `ast.literal_eval`, so users write
//! both `{'domain': 'default-domain', …}` and JSON. [`parse_flat_dict`] accepts both.

use std::collections::BTreeMap;

use weft_model::FieldError;
use weft_model::naming::DEFAULT_DOMAIN;

/// Field path of an annotation, as shown in errors.
pub fn annotation_field(key: &str) -> String {
    format!("metadata.annotations[\"{key}\"]")
}

/// Parses a boolean annotation (`"true"`/`"false"`, case-insensitive, as TF does).
pub fn parse_bool(object: &str, key: &str, value: &str) -> Result<bool, FieldError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(FieldError::new(object, annotation_field(key), "\"true\" or \"false\"").found(value)),
    }
}

/// Parses a flat dictionary of strings written either as JSON (`{"a": "b"}`) or as a
/// Python literal (`{'a': 'b'}`), the two forms TF users write. The parser itself
/// lives in weft-model (the ClusterConfig's `publicFipPool` uses it too).
pub fn parse_flat_dict(object: &str, key: &str, value: &str) -> Result<BTreeMap<String, String>, FieldError> {
    weft_model::resources::parse_flat_dict(object, &annotation_field(key), value)
}

/// Parses `opencontrail.org/network` into the FQ name of the network it names. All
/// three keys are mandatory, as in TF.
pub fn parse_network_ref(object: &str, key: &str, value: &str) -> Result<String, FieldError> {
    let dict = parse_flat_dict(object, key, value)?;
    let mut parts = Vec::new();
    for name in ["domain", "project", "name"] {
        match dict.get(name) {
            Some(v) if !v.is_empty() && !v.contains(':') => parts.push(v.clone()),
            _ => {
                return Err(FieldError::new(
                    object,
                    annotation_field(key),
                    format!("key \"{name}\" with a non-empty name (keys domain, project and name are all required)"),
                )
                .found(value));
            }
        }
    }
    if let Some(extra) = dict
        .keys()
        .find(|k| !["domain", "project", "name"].contains(&k.as_str()))
    {
        return Err(FieldError::new(
            object,
            annotation_field(key),
            "only the keys domain, project and name",
        )
        .found(extra));
    }
    if parts[0] != DEFAULT_DOMAIN {
        return Err(FieldError::new(
            object,
            annotation_field(key),
            format!("domain \"{DEFAULT_DOMAIN}\""),
        )
        .found(&parts[0]));
    }
    Ok(parts.join(":"))
}

/// One entry of `k8s.v1.cni.cncf.io/networks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSelection {
    /// Namespace of the NetworkAttachmentDefinition or VirtualNetwork (defaults to the pod's).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Requested interface name inside the pod, if any.
    pub interface: Option<String>,
}

/// Parses the Multus annotation: either a comma-separated list of `[ns/]name[@ifname]`
/// or a JSON list of `{"name": …, "namespace": …, "interface": …}`.
pub fn parse_network_selections(
    object: &str,
    pod_namespace: &str,
    value: &str,
) -> Result<Vec<NetworkSelection>, FieldError> {
    let key = weft_model::naming::ANNOTATION_NETWORKS;
    let field = annotation_field(key);
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let check = |name: &str| -> Result<(), FieldError> {
        if weft_model::input::is_dns_subdomain(name) {
            Ok(())
        } else {
            Err(FieldError::new(object, &field, "network names that are DNS-1123 names").found(name))
        }
    };
    if trimmed.starts_with('[') {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Entry {
            name: String,
            #[serde(default)]
            namespace: Option<String>,
            #[serde(default)]
            interface: Option<String>,
            #[serde(default)]
            #[allow(dead_code)]
            ips: Option<serde_json::Value>,
            #[serde(default)]
            #[allow(dead_code)]
            mac: Option<String>,
        }
        let entries: Vec<Entry> = serde_json::from_str(trimmed).map_err(|e| {
            FieldError::new(
                object,
                &field,
                format!("a JSON list of {{\"name\": …, \"namespace\": …, \"interface\": …}} ({e})"),
            )
            .found(value)
        })?;
        let mut out = Vec::new();
        for e in entries {
            check(&e.name)?;
            out.push(NetworkSelection {
                namespace: e.namespace.unwrap_or_else(|| pod_namespace.to_string()),
                name: e.name,
                interface: e.interface,
            });
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    for item in trimmed.split(',') {
        let item = item.trim();
        let (path, interface) = match item.split_once('@') {
            Some((p, i)) => (p, Some(i.to_string())),
            None => (item, None),
        };
        let (namespace, name) = match path.split_once('/') {
            Some((ns, n)) => (ns.to_string(), n.to_string()),
            None => (pod_namespace.to_string(), path.to_string()),
        };
        check(&name)?;
        out.push(NetworkSelection {
            namespace,
            name,
            interface,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_ref_python_and_json() {
        let py = "{'domain': 'default-domain', 'project': 'k8s-dev', 'name': 'vn1'}";
        let js = r#"{"domain":"default-domain","project":"k8s-dev","name":"vn1"}"#;
        assert_eq!(
            parse_network_ref("Pod a/b", "k", py).unwrap(),
            "default-domain:k8s-dev:vn1"
        );
        assert_eq!(
            parse_network_ref("Pod a/b", "k", js).unwrap(),
            "default-domain:k8s-dev:vn1"
        );
    }

    #[test]
    fn network_ref_errors_name_the_problem() {
        let err = parse_network_ref(
            "Pod a/b",
            "opencontrail.org/network",
            "{'domain': 'default-domain'",
        )
        .unwrap_err();
        assert_eq!(err.object, "Pod a/b");
        assert_eq!(err.field, "metadata.annotations[\"opencontrail.org/network\"]");
        let err = parse_network_ref("Pod a/b", "k", "{'domain': 'default-domain', 'name': 'x'}").unwrap_err();
        assert!(err.expected.contains("project"), "{err}");
        let err = parse_network_ref("Pod a/b", "k", "not a dict").unwrap_err();
        assert!(err.expected.contains("dictionary"));
    }

    #[test]
    fn bools() {
        assert!(parse_bool("o", "k", "TRUE").unwrap());
        assert!(!parse_bool("o", "k", "false").unwrap());
        assert!(parse_bool("o", "k", "yes").is_err());
    }

    #[test]
    fn multus_forms() {
        let v = parse_network_selections("Pod a/p", "a", "left, other/right@net5").unwrap();
        assert_eq!(
            v[0],
            NetworkSelection {
                namespace: "a".into(),
                name: "left".into(),
                interface: None
            }
        );
        assert_eq!(v[1].namespace, "other");
        assert_eq!(v[1].interface.as_deref(), Some("net5"));
        let v = parse_network_selections("Pod a/p", "a", r#"[{"name":"left","interface":"n1"}]"#).unwrap();
        assert_eq!(v[0].interface.as_deref(), Some("n1"));
        let err = parse_network_selections("Pod a/p", "a", "[{\"nam\": 1}]").unwrap_err();
        assert!(err.expected.contains("JSON list"), "{err}");
        assert!(parse_network_selections("Pod a/p", "a", "Bad_Name").is_err());
    }
}
