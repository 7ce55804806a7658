//! The agent's state directory (`--state-dir`, default `/var/lib/weft/agent`): the last
//! [`NodeState`] received and the CNI [`Attachments`], as JSON.
//!
//! Why: a restarted agent programs the last state at once, before (or without) reaching
//! the controller, so forwarding survives an agent restart during a controller outage;
//! and attachments exist nowhere else (only the plugin knew the host veth names).
//!
//! Every write is atomic: a temporary file in the same directory, `fsync`, `rename`
//! over the old file, so a crash leaves either the old or the new content, never a
//! torn file.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use weft_model::node::NodeState;

use crate::attachment::Attachments;

/// File holding the last [`NodeState`].
pub const NODE_STATE_FILE: &str = "node-state.json";

/// File holding the [`Attachments`].
pub const ATTACHMENTS_FILE: &str = "attachments.json";

/// File holding the agent's last reconcile outcome ([`crate::agent::AppliedStatus`]):
/// which state revision the kernel was last programmed from, so tools (the lab, tests)
/// can wait until a change is in the kernel instead of sleeping.
pub const APPLIED_FILE: &str = "applied.json";

/// A state-directory operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// Reading, writing or renaming a file failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A file is not valid JSON of the expected shape.
    #[error("{path} is not a valid weft agent file: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The decode error.
        source: serde_json::Error,
    },
}

/// The agent's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens (creating it if needed) the directory `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<StateDir, StateDirError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| StateDirError::Io {
            what: "creating state directory",
            path: dir.clone(),
            source,
        })?;
        Ok(StateDir { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The last saved node state; `None` when none was ever saved.
    pub fn load_node_state(&self) -> Result<Option<NodeState>, StateDirError> {
        self.load(NODE_STATE_FILE)
    }

    /// The saved attachments; empty when none were ever saved.
    pub fn load_attachments(&self) -> Result<Attachments, StateDirError> {
        Ok(self.load(ATTACHMENTS_FILE)?.unwrap_or_default())
    }

    /// Saves the node state atomically.
    pub fn save_node_state(&self, state: &NodeState) -> Result<(), StateDirError> {
        self.save(NODE_STATE_FILE, state)
    }

    /// Saves the attachments atomically.
    pub fn save_attachments(&self, attachments: &Attachments) -> Result<(), StateDirError> {
        self.save(ATTACHMENTS_FILE, attachments)
    }

    /// Saves the outcome of the last reconcile pass atomically.
    pub fn save_applied(&self, status: &crate::agent::AppliedStatus) -> Result<(), StateDirError> {
        self.save(APPLIED_FILE, status)
    }

    /// The outcome of the last reconcile pass, if one was saved.
    pub fn load_applied(&self) -> Result<Option<crate::agent::AppliedStatus>, StateDirError> {
        self.load(APPLIED_FILE)
    }

    fn load<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StateDirError> {
        let path = self.dir.join(name);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateDirError::Io {
                    what: "reading",
                    path,
                    source,
                });
            }
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|source| StateDirError::Corrupt { path, source })
    }

    fn save<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StateDirError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let io_err = |what: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| StateDirError::Io {
                what,
                path: p,
                source,
            }
        };
        let mut body = serde_json::to_vec_pretty(value).map_err(|e| StateDirError::Io {
            what: "encoding",
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        body.push(b'\n');
        let write = || -> io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err("writing", &tmp)(e));
        }
        std::fs::rename(&tmp, &path).map_err(io_err("renaming into place", &path))?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::attachment::Attachment;
    use weft_model::node::vtep_mac;

    #[test]
    fn round_trip_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::open(dir.path().join("sub")).unwrap();
        assert_eq!(sd.load_node_state().unwrap(), None);
        assert!(sd.load_attachments().unwrap().is_empty());

        let state = NodeState {
            node: "n1".into(),
            revision: 7,
            underlay_ip: Some("192.0.2.1".parse().unwrap()),
            vtep_mac: vtep_mac("n1"),
            peers: vec![],
            networks: vec![],
            interfaces: vec![],
            services: vec![],
            service_routes: vec![],
            warnings: vec![],
            policies: vec![],
        };
        sd.save_node_state(&state).unwrap();
        let mut atts = Attachments::new();
        atts.insert(
            "dev/web/eth0".into(),
            Attachment {
                container_id: "c".into(),
                if_name: "eth0".into(),
                host_if_name: "weft0".into(),
            },
        );
        sd.save_attachments(&atts).unwrap();
        assert_eq!(sd.load_node_state().unwrap(), Some(state));
        assert_eq!(sd.load_attachments().unwrap(), atts);
        // No temporary files left behind.
        let names: Vec<String> = std::fs::read_dir(sd.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn corrupt_file_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::open(dir.path()).unwrap();
        std::fs::write(dir.path().join(ATTACHMENTS_FILE), "{not json").unwrap();
        let err = sd.load_attachments().unwrap_err();
        assert!(err.to_string().contains(ATTACHMENTS_FILE), "{err}");
    }
}
