//! Running code inside another network namespace, safely for async programs.
//!
//! `setns(2)` changes the namespace of the calling **thread** only. Doing it on a tokio
//! worker would leave that worker (and every task later scheduled on it) in the wrong
//! namespace, so this module never does: each call spawns a short-lived, dedicated OS
//! thread, moves *that* thread into the namespace, runs the closure there and lets the
//! thread exit. Sockets opened on that thread (a netlink connection, a TCP listener)
//! stay bound to the namespace after the thread is gone, which is how netavark works
//! too.
//!
//! * [`run_in_netns`] / [`Netns::run`]: run any blocking closure in the namespace.
//! * [`with_netlink_in_netns`] / [`Netns::run_netlink`]: the same, with a
//!   current-thread tokio runtime and an rtnetlink connection opened inside the
//!   namespace, for async netlink work.
//!
//! Used by the CNI plugin (pod side of the veth, CHECK), and meant for the agent and the
//! lab as well.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

/// Why a namespace operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace path does not exist (e.g. the sandbox is already gone).
    #[error("network namespace {path} does not exist")]
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// Opening the namespace path failed for another reason.
    #[error("cannot open network namespace {path}: {source}")]
    Open {
        /// The path given.
        path: PathBuf,
        /// The open error.
        source: io::Error,
    },
    /// `setns` refused (not a network namespace, or no privilege).
    #[error("cannot enter network namespace {path}: {source}")]
    Enter {
        /// The path given.
        path: PathBuf,
        /// The errno from `setns`.
        source: nix::Error,
    },
    /// The dedicated thread could not be spawned, or a runtime / netlink socket could
    /// not be created on it.
    #[error("cannot set up work in network namespace {path}: {source}")]
    Setup {
        /// The path given.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The closure panicked on the namespace thread.
    #[error("work in network namespace {path} panicked")]
    Panicked {
        /// The path given.
        path: PathBuf,
    },
}

impl NetnsError {
    /// True when the namespace simply does not exist (any longer).
    pub fn is_not_found(&self) -> bool {
        matches!(self, NetnsError::NotFound { .. })
    }
}

/// An open handle on a network namespace (the file `/var/run/netns/<name>` or
/// `/proc/<pid>/ns/net`). Holding it keeps the namespace alive and lets links be moved
/// into it by file descriptor (`IFLA_NET_NS_FD`).
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
}

impl Netns {
    /// Opens the namespace at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Netns, NetnsError> {
        let path = path.as_ref().to_path_buf();
        match File::open(&path) {
            Ok(file) => Ok(Netns { file, path }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(NetnsError::NotFound { path }),
            Err(source) => Err(NetnsError::Open { path, source }),
        }
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a fresh OS thread that has entered this namespace, and waits for it.
    /// The calling thread's namespace is never changed.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name("weft-netns".to_string())
                .spawn_scoped(scope, || {
                    setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| {
                        NetnsError::Enter {
                            path: self.path.clone(),
                            source,
                        }
                    })?;
                    Ok(f())
                })
                .map_err(|source| NetnsError::Setup {
                    path: self.path.clone(),
                    source,
                })?;
            handle.join().map_err(|_| NetnsError::Panicked {
                path: self.path.clone(),
            })?
        })
    }

    /// Like [`Netns::run`], with a current-thread tokio runtime built on the namespace
    /// thread and an rtnetlink connection opened inside the namespace; `f` gets the
    /// connection's handle and its future is driven to completion there.
    pub fn run_netlink<T, F, Fut>(&self, f: F) -> Result<T, NetnsError>
    where
        T: Send,
        F: FnOnce(rtnetlink::Handle) -> Fut + Send,
        Fut: Future<Output = T>,
    {
        let path = self.path.clone();
        self.run(move || {
            let setup = |source| NetnsError::Setup {
                path: path.clone(),
                source,
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(setup)?;
            rt.block_on(async {
                let (conn, handle, _) = rtnetlink::new_connection().map_err(setup)?;
                let conn_task = tokio::spawn(conn);
                let out = f(handle).await;
                conn_task.abort();
                Ok(out)
            })
        })?
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Runs `f` inside the network namespace at `path` on a dedicated thread (see the
/// module docs) and returns its result.
pub fn run_in_netns<T: Send>(path: impl AsRef<Path>, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    Netns::open(path)?.run(f)
}

/// Runs an async netlink job inside the network namespace at `path`: `f` receives an
/// rtnetlink handle whose socket lives in that namespace.
pub fn with_netlink_in_netns<T, F, Fut>(path: impl AsRef<Path>, f: F) -> Result<T, NetnsError>
where
    T: Send,
    F: FnOnce(rtnetlink::Handle) -> Fut + Send,
    Fut: Future<Output = T>,
{
    Netns::open(path)?.run_netlink(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_namespace_is_not_found() {
        let err = run_in_netns("/var/run/netns/weft-definitely-missing", || ()).unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }

    #[test]
    fn not_a_namespace_is_refused() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = run_in_netns(file.path(), || ()).unwrap_err();
        assert!(matches!(err, NetnsError::Enter { .. }), "{err}");
    }

    #[test]
    fn own_namespace_runs_and_caller_is_untouched() {
        let before = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        // Our own namespace: entering it is allowed for anyone with CAP_SYS_ADMIN; without
        // it, setns fails and that is the error we expect.
        match run_in_netns("/proc/self/ns/net", || 42) {
            Ok(v) => assert_eq!(v, 42),
            Err(NetnsError::Enter { .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
        assert_eq!(std::fs::read_link("/proc/thread-self/ns/net").unwrap(), before);
    }
}
