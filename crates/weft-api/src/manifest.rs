//! Reading manifests the way kubectl does: multi-document YAML (or JSON), `kind: List`
//! unwrapped, files and directories (`*.yaml`, `*.yml`, `*.json`, sorted), `-` for stdin.
//! Pure parsing lives in [`parse_manifest_text`]; reading files is in [`read_manifests`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::types::ManifestDocument;

/// A manifest that could not be read or parsed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ManifestError {
    /// The file or directory could not be read.
    #[error("{path}: cannot read: {reason}")]
    Read {
        /// The path.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// A document is not valid YAML.
    #[error("{document}: invalid YAML: {reason}")]
    Syntax {
        /// `file#document`.
        document: String,
        /// The parser's message (with line and column).
        reason: String,
    },
    /// A document is not a mapping.
    #[error("{document}: expected a mapping with apiVersion, kind and metadata, found {found}")]
    NotAnObject {
        /// `file#document`.
        document: String,
        /// What was found instead.
        found: String,
    },
}

/// Parses one file's text into documents. Empty documents are skipped; a `List` yields
/// its items. Each document gets a result of its own, so one bad document does not hide
/// the good ones.
pub fn parse_manifest_text(text: &str, origin: &str) -> Vec<Result<ManifestDocument, ManifestError>> {
    let mut out = Vec::new();
    for (index, document) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let source = format!("{origin}#{}", index + 1);
        let value = match serde_json::Value::deserialize(document) {
            Ok(v) => v,
            Err(e) => {
                out.push(Err(ManifestError::Syntax {
                    document: source,
                    reason: e.to_string(),
                }));
                // The YAML stream cannot be resynchronised after a syntax error.
                break;
            }
        };
        match value {
            serde_json::Value::Null => {}
            serde_json::Value::Object(ref map)
                if map.get("kind").and_then(|k| k.as_str()) == Some("List") =>
            {
                let items = map
                    .get("items")
                    .and_then(|i| i.as_array())
                    .cloned()
                    .unwrap_or_default();
                for (i, item) in items.into_iter().enumerate() {
                    let source = format!("{source}.items[{i}]");
                    if item.is_object() {
                        out.push(Ok(ManifestDocument { source, object: item }));
                    } else {
                        out.push(Err(ManifestError::NotAnObject {
                            document: source,
                            found: kind_of(&item),
                        }));
                    }
                }
            }
            serde_json::Value::Object(_) => out.push(Ok(ManifestDocument {
                source,
                object: value,
            })),
            other => out.push(Err(ManifestError::NotAnObject {
                document: source,
                found: kind_of(&other),
            })),
        }
    }
    out
}

fn kind_of(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "nothing".into(),
        serde_json::Value::Bool(_) => "a boolean".into(),
        serde_json::Value::Number(_) => "a number".into(),
        serde_json::Value::String(s) => format!("the text {:?}", s.chars().take(40).collect::<String>()),
        serde_json::Value::Array(_) => "a list".into(),
        serde_json::Value::Object(_) => "a mapping".into(),
    }
}

fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let read_err = |e: std::io::Error| ManifestError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read_err)? {
        let p = entry.map_err(read_err)?.path();
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        if p.is_file() && ["yaml", "yml", "json"].contains(&ext) {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads every manifest under the given paths (`-` = standard input).
pub fn read_manifests(paths: &[String]) -> Vec<Result<ManifestDocument, ManifestError>> {
    let mut out = Vec::new();
    for path in paths {
        if path == "-" {
            let mut text = String::new();
            match std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
                Ok(_) => out.extend(parse_manifest_text(&text, "(stdin)")),
                Err(e) => out.push(Err(ManifestError::Read {
                    path: "(stdin)".into(),
                    reason: e.to_string(),
                })),
            }
            continue;
        }
        match manifest_files(Path::new(path)) {
            Err(e) => out.push(Err(e)),
            Ok(files) => {
                for file in files {
                    match std::fs::read_to_string(&file) {
                        Ok(text) => out.extend(parse_manifest_text(&text, &file.display().to_string())),
                        Err(e) => out.push(Err(ManifestError::Read {
                            path: file.display().to_string(),
                            reason: e.to_string(),
                        })),
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_with_list_and_empty() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: p}}\n- 3\n";
        let docs = parse_manifest_text(text, "f.yaml");
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0].as_ref().unwrap().source, "f.yaml#1");
        assert_eq!(docs[1].as_ref().unwrap().source, "f.yaml#3.items[0]");
        assert!(matches!(docs[2], Err(ManifestError::NotAnObject { .. })));
    }

    #[test]
    fn syntax_error_names_the_document() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkind: [unclosed\n";
        let docs = parse_manifest_text(text, "bad.yaml");
        assert!(docs[0].is_ok());
        let err = docs[1].as_ref().unwrap_err().to_string();
        assert!(err.starts_with("bad.yaml#2: invalid YAML"), "{err}");
    }

    #[test]
    fn scalar_document_is_refused() {
        let docs = parse_manifest_text("just text\n", "x.yaml");
        assert!(
            matches!(&docs[0], Err(ManifestError::NotAnObject { found, .. }) if found.contains("just text"))
        );
    }
}
