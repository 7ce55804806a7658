//! The CNI protocol as container runtimes speak it (spec 0.3.0 … 1.1.0): environment
//! variables, the network configuration on stdin, the result and error objects on
//! stdout, and the error codes.
//!
//! Written by hand rather than taken from a CNI crate: the surface weft needs is small,
//! and owning it lets every decode error name the field that was wrong.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Every CNI spec version this plugin accepts in `cniVersion`.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest spec version implemented; used for VERSION output and for errors raised
/// before the configuration's version is known.
pub const LATEST_VERSION: &str = "1.1.0";

/// Where the local weft agent listens when the configuration does not say otherwise.
pub const DEFAULT_AGENT_SOCKET: &str = "/run/weft/agent.sock";

/// Default bound on how long ADD keeps asking an agent that answers "try again later".
pub const DEFAULT_ADD_TIMEOUT_SECONDS: u64 = 30;

/// CNI error codes: the spec's well-known ones (1–99) and weft's own (≥ 100).
pub mod codes {
    /// Incompatible CNI version (unsupported `cniVersion`, or STATUS/GC below 1.1.0).
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist (e.g. its network namespace is gone); the
    /// runtime need not call DEL afterwards.
    pub const CONTAINER_UNKNOWN: u32 = 3;
    /// Invalid or missing `CNI_*` environment variable (or `CNI_ARGS` entry).
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure (e.g. writing a sysctl, reading stdin).
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content: stdin is not JSON.
    pub const DECODE_FAILURE: u32 = 6;
    /// Invalid network configuration: JSON, but a field is missing or has the wrong
    /// type or value.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later: a transient condition (agent not reachable, or the agent has no
    /// interface for the pod yet).
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin is not available (the agent does not answer).
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// STATUS: limited connectivity (reported by the agent).
    pub const LIMITED_CONNECTIVITY: u32 = 51;

    /// weft: the agent answered, but not with a valid response of the agent protocol.
    pub const AGENT_PROTOCOL: u32 = 101;
    /// weft: a netlink operation on links, addresses or routes failed.
    pub const NETLINK: u32 = 102;
    /// weft: entering the pod's network namespace failed (not a netns, setns refused).
    pub const NETNS: u32 = 103;
    /// weft: CHECK found the interface differing from `prevResult`.
    pub const CHECK_MISMATCH: u32 = 104;
    /// weft: the agent's interface configuration is unusable (no entry for
    /// `CNI_IFNAME`, bad MAC, route of the wrong family…).
    pub const AGENT_CONFIG: u32 = 105;
    /// weft: ADD for an attachment that already exists (its host veth is present);
    /// DEL it first.
    pub const ALREADY_ATTACHED: u32 = 106;
}

/// A CNI error: code, short message and details, printed as the spec's error object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI error {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniError {
    /// One of [`codes`].
    pub code: u32,
    /// Short, human-readable message.
    pub msg: String,
    /// Longer explanation or the underlying cause; may be empty.
    pub details: String,
}

impl CniError {
    /// An error with no details.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// The same error with `details` set.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The spec's error object for this error, stamped with `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> String {
        let out = ErrorOutput {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        };
        serde_json::to_string(&out).unwrap_or_else(|_| {
            format!(
                r#"{{"cniVersion":"{LATEST_VERSION}","code":{},"msg":"error"}}"#,
                self.code
            )
        })
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorOutput<'a> {
    cni_version: &'a str,
    code: u32,
    msg: &'a str,
    details: &'a str,
}

/// A CNI spec version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CniVersion(pub u16, pub u16, pub u16);

impl CniVersion {
    /// 0.4.0: CHECK was introduced.
    pub const V0_4_0: CniVersion = CniVersion(0, 4, 0);
    /// 1.0.0: `version` dropped from `ips`.
    pub const V1_0_0: CniVersion = CniVersion(1, 0, 0);
    /// 1.1.0: STATUS and GC, `mtu` on interfaces.
    pub const V1_1_0: CniVersion = CniVersion(1, 1, 0);

    /// Parses `a.b.c` (every part a number).
    pub fn parse(s: &str) -> Option<CniVersion> {
        let mut parts = s.split('.').map(|p| p.parse::<u16>().ok());
        let v = CniVersion(parts.next()??, parts.next()??, parts.next()??);
        if parts.next().is_some() {
            return None;
        }
        Some(v)
    }

    /// Parses and accepts only [`SUPPORTED_VERSIONS`]; error code 1 otherwise.
    pub fn supported(s: &str) -> Result<CniVersion, CniError> {
        match CniVersion::parse(s) {
            Some(v) if SUPPORTED_VERSIONS.contains(&s) => Ok(v),
            _ => Err(CniError::new(
                codes::INCOMPATIBLE_VERSION,
                format!("cniVersion {s:?} is not supported by weft"),
            )
            .with_details(format!("supported versions: {}", SUPPORTED_VERSIONS.join(", ")))),
        }
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The `CNI_COMMAND` verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach the container to the network.
    Add,
    /// Detach; idempotent.
    Del,
    /// Verify an earlier ADD is still in place.
    Check,
    /// Report supported versions.
    Version,
    /// Is the plugin ready to serve ADDs (1.1.0)?
    Status,
    /// Remove leftovers of attachments the runtime no longer knows (1.1.0).
    Gc,
}

impl Command {
    /// Parses the `CNI_COMMAND` value (exact, upper case as runtimes send it).
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }
}

/// Pod identity from `CNI_ARGS` (`K8S_POD_NAMESPACE=..;K8S_POD_NAME=..;…`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    /// Every `KEY=VALUE` pair, as given.
    pub pairs: BTreeMap<String, String>,
}

impl CniArgs {
    /// Parses `CNI_ARGS`; an entry without `=` is error code 4.
    pub fn parse(s: &str) -> Result<CniArgs, CniError> {
        let mut pairs = BTreeMap::new();
        for entry in s.split(';').filter(|e| !e.is_empty()) {
            let (k, v) = entry.split_once('=').ok_or_else(|| {
                CniError::new(
                    codes::INVALID_ENV,
                    format!("CNI_ARGS entry {entry:?} is not KEY=VALUE"),
                )
            })?;
            pairs.insert(k.to_string(), v.to_string());
        }
        Ok(CniArgs { pairs })
    }

    /// A value, `None` when absent or empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// A value that must be there (error code 4 naming it otherwise).
    pub fn require(&self, key: &str) -> Result<&str, CniError> {
        self.get(key).ok_or_else(|| {
            CniError::new(codes::INVALID_ENV, format!("CNI_ARGS has no {key}"))
                .with_details("weft needs the pod's identity: K8S_POD_NAMESPACE and K8S_POD_NAME")
        })
    }
}

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID`, if set and non-empty.
    pub container_id: Option<String>,
    /// `CNI_NETNS`, if set and non-empty.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`, if set and non-empty.
    pub if_name: Option<String>,
    /// `CNI_ARGS`, parsed.
    pub args: CniArgs,
    /// `CNI_PATH` (unused: weft delegates to no other plugin).
    pub path: Option<String>,
}

impl CniEnv {
    /// Reads the environment through `var` (so tests need not touch the process env).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<CniEnv, CniError> {
        let get = |k: &str| var(k).filter(|v| !v.is_empty());
        let raw =
            get("CNI_COMMAND").ok_or_else(|| CniError::new(codes::INVALID_ENV, "CNI_COMMAND is not set"))?;
        let command = Command::parse(&raw).ok_or_else(|| {
            CniError::new(
                codes::INVALID_ENV,
                format!("CNI_COMMAND={raw} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC"),
            )
        })?;
        let args = match get("CNI_ARGS") {
            Some(a) => CniArgs::parse(&a)?,
            None => CniArgs::default(),
        };
        Ok(CniEnv {
            command,
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS").map(PathBuf::from),
            if_name: get("CNI_IFNAME"),
            args,
            path: get("CNI_PATH"),
        })
    }

    /// `CNI_CONTAINERID`, required and validated (alphanumerics plus `_.-`, as the spec
    /// says); error code 4 otherwise.
    pub fn require_container_id(&self) -> Result<&str, CniError> {
        let id = self
            .container_id
            .as_deref()
            .ok_or_else(|| missing("CNI_CONTAINERID"))?;
        let ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && id.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return Err(
                CniError::new(codes::INVALID_ENV, format!("CNI_CONTAINERID {id:?} is invalid")).with_details(
                    "expected letters, digits, '_', '.' and '-', starting with a letter or digit",
                ),
            );
        }
        Ok(id)
    }

    /// `CNI_NETNS`, required; error code 4 otherwise.
    pub fn require_netns(&self) -> Result<&std::path::Path, CniError> {
        self.netns.as_deref().ok_or_else(|| missing("CNI_NETNS"))
    }

    /// `CNI_IFNAME`, required and a valid Linux interface name; error code 4 otherwise.
    pub fn require_if_name(&self) -> Result<&str, CniError> {
        let name = self.if_name.as_deref().ok_or_else(|| missing("CNI_IFNAME"))?;
        if !valid_if_name(name) {
            return Err(CniError::new(
                codes::INVALID_ENV,
                format!("CNI_IFNAME {name:?} is not a valid interface name"),
            )
            .with_details("expected 1 to 15 characters, none of them '/', ':' or whitespace"));
        }
        Ok(name)
    }
}

fn missing(var: &str) -> CniError {
    CniError::new(codes::INVALID_ENV, format!("{var} is not set"))
        .with_details(format!("the runtime must set {var} for this command"))
}

/// Linux's rule for interface names (`dev_valid_name`).
pub fn valid_if_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attachment {
    /// The container the attachment belongs to.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Its interface name inside the container.
    #[serde(rename = "ifname")]
    pub if_name: String,
}

/// The network configuration on stdin, as far as weft reads it. Unknown keys
/// (`runtimeConfig`, `args`, `capabilities`, …) are ignored, as the spec asks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// Spec version the runtime speaks; the result is written in it.
    pub cni_version: String,
    /// Network name.
    pub name: String,
    /// Plugin type (`weft`).
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// The local agent's unix socket.
    #[serde(default = "default_agent_socket")]
    pub agent_socket: PathBuf,
    /// Append logs here (stderr, warnings only, when absent).
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    /// Log filter for `logFile` (`info` when absent), e.g. `debug`.
    #[serde(default)]
    pub log_level: Option<String>,
    /// How long ADD waits for an agent answering "try again later" (code 11).
    #[serde(default = "default_add_timeout")]
    pub add_timeout_seconds: u64,
    /// The previous result (CHECK, DEL).
    #[serde(default)]
    pub prev_result: Option<CniResult>,
    /// Attachments the runtime still knows (GC).
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
}

fn default_agent_socket() -> PathBuf {
    PathBuf::from(DEFAULT_AGENT_SOCKET)
}

fn default_add_timeout() -> u64 {
    DEFAULT_ADD_TIMEOUT_SECONDS
}

impl NetConf {
    /// Decodes and validates stdin: not JSON is code 6; JSON with a missing or
    /// ill-typed field is code 7 naming the field; an unsupported `cniVersion` is code 1.
    pub fn parse(stdin: &[u8]) -> Result<(NetConf, CniVersion), CniError> {
        let value: serde_json::Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(codes::DECODE_FAILURE, "network config on stdin is not valid JSON")
                .with_details(e.to_string())
        })?;
        if !value.is_object() {
            return Err(CniError::new(
                codes::DECODE_FAILURE,
                "network config on stdin must be a JSON object",
            ));
        }
        let conf: NetConf = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let msg = if path == "." {
                format!("invalid network config: {inner}")
            } else {
                format!("invalid network config field `{path}`: {inner}")
            };
            CniError::new(codes::INVALID_CONFIG, msg)
        })?;
        let version = CniVersion::supported(&conf.cni_version)?;
        if !valid_network_name(&conf.name) {
            return Err(CniError::new(
                codes::INVALID_CONFIG,
                format!("invalid network config field `name`: {:?}", conf.name),
            )
            .with_details("expected letters, digits, '_', '.' and '-', starting with a letter or digit"));
        }
        if conf.plugin_type.is_empty() {
            return Err(CniError::new(
                codes::INVALID_CONFIG,
                "invalid network config field `type`: expected \"weft\", found an empty string",
            ));
        }
        if conf.agent_socket.as_os_str().is_empty() {
            return Err(CniError::new(
                codes::INVALID_CONFIG,
                "invalid network config field `agentSocket`: expected a socket path, found an empty string",
            ));
        }
        if conf.add_timeout_seconds > 600 {
            return Err(CniError::new(
                codes::INVALID_CONFIG,
                format!(
                    "invalid network config field `addTimeoutSeconds`: expected at most 600, found {}",
                    conf.add_timeout_seconds
                ),
            ));
        }
        Ok((conf, version))
    }
}

fn valid_network_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// The ADD result (also `prevResult` on CHECK/DEL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    /// Spec version of this result.
    #[serde(default)]
    pub cni_version: String,
    /// Interfaces created: host end (no sandbox) and the container end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    /// Routes installed in the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS settings for the container.
    #[serde(default)]
    pub dns: Dns,
}

/// One interface of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Interface name (in its namespace).
    pub name: String,
    /// MAC address, `xx:xx:…`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// MTU (1.1.0 and later only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Network namespace path for a container-side interface; absent on the host end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// One address of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// `"4"` or `"6"`: required before 1.0.0, gone since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Address with prefix length, e.g. `10.47.255.252/12`.
    pub address: IpNet,
    /// Default gateway for this address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces` of the interface carrying the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// One route of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination prefix.
    pub dst: IpNet,
    /// Next hop; absent for a route straight out of the interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// DNS settings of a result (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers, in order of preference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl CniResult {
    /// The result as the given spec version spells it: `version` on each address before
    /// 1.0.0, interface `mtu` only from 1.1.0.
    pub fn for_version(mut self, version: CniVersion) -> CniResult {
        self.cni_version = version.to_string();
        for ip in &mut self.ips {
            ip.version = (version < CniVersion::V1_0_0)
                .then(|| if ip.address.addr().is_ipv4() { "4" } else { "6" }.to_string());
        }
        if version < CniVersion::V1_1_0 {
            for iface in &mut self.interfaces {
                iface.mtu = None;
            }
        }
        self
    }
}

/// VERSION's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// The newest version ([`LATEST_VERSION`]).
    pub cni_version: String,
    /// [`SUPPORTED_VERSIONS`].
    pub supported_versions: Vec<String>,
}

impl VersionInfo {
    /// weft's version report.
    pub fn weft() -> VersionInfo {
        VersionInfo {
            cni_version: LATEST_VERSION.to_string(),
            supported_versions: SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn versions() {
        assert!(CniVersion::supported("1.1.0").is_ok());
        assert!(CniVersion::supported("0.3.1").is_ok());
        assert_eq!(CniVersion::supported("0.2.0").unwrap_err().code, 1);
        assert_eq!(CniVersion::supported("1.1").unwrap_err().code, 1);
        assert!(CniVersion::parse("1.0.0") < CniVersion::parse("1.1.0"));
        assert_eq!(CniVersion::parse("0.4.0"), Some(CniVersion::V0_4_0));
    }

    #[test]
    fn env_parsing() {
        let e = CniEnv::from_lookup(env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=dev;K8S_POD_NAME=web",
            ),
        ]))
        .unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.args.get("K8S_POD_NAME"), Some("web"));
        assert_eq!(e.require_netns().unwrap_err().code, 4);
        assert!(e.require_netns().unwrap_err().msg.contains("CNI_NETNS"));
        assert_eq!(e.require_if_name().unwrap(), "eth0");
        assert!(
            e.args
                .require("K8S_POD_UID")
                .unwrap_err()
                .msg
                .contains("K8S_POD_UID")
        );

        let err = CniEnv::from_lookup(env(&[("CNI_COMMAND", "FROB")])).unwrap_err();
        assert_eq!(err.code, 4);
        let err = CniEnv::from_lookup(env(&[])).unwrap_err();
        assert!(err.msg.contains("CNI_COMMAND"));
        let err = CniEnv::from_lookup(env(&[("CNI_COMMAND", "ADD"), ("CNI_ARGS", "a=b;junk")])).unwrap_err();
        assert!(err.msg.contains("junk"));
        let bad = CniEnv::from_lookup(env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "a/b"),
            ("CNI_IFNAME", "this-name-is-too-long"),
        ]))
        .unwrap();
        assert_eq!(bad.require_container_id().unwrap_err().code, 4);
        assert_eq!(bad.require_if_name().unwrap_err().code, 4);
    }

    #[test]
    fn config_errors_name_the_field() {
        let err = NetConf::parse(b"{not json").unwrap_err();
        assert_eq!(err.code, 6);
        let err = NetConf::parse(br#"{"cniVersion":"1.0.0","type":"weft"}"#).unwrap_err();
        assert_eq!(err.code, 7);
        assert!(err.msg.contains("name"), "{err}");
        let err = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"weft","agentSocket":5}"#)
            .unwrap_err();
        assert_eq!(err.code, 7);
        assert!(
            err.msg.contains("agentSocket") && err.msg.contains("string"),
            "{err}"
        );
        let err = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"weft","prevResult":{"ips":[{"address":"nope"}]}}"#,
        )
        .unwrap_err();
        assert_eq!(err.code, 7);
        assert!(err.msg.contains("prevResult.ips[0].address"), "{err}");
        let err = NetConf::parse(br#"{"cniVersion":"9.9.9","name":"n","type":"weft"}"#).unwrap_err();
        assert_eq!(err.code, 1);
        let (conf, v) = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"weft","type":"weft","runtimeConfig":{"x":1},
                "cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(v, CniVersion::V1_1_0);
        assert_eq!(conf.agent_socket, PathBuf::from(DEFAULT_AGENT_SOCKET));
        assert_eq!(conf.valid_attachments.unwrap()[0].container_id, "c1");
    }

    #[test]
    fn example_conflist_parses_as_the_runtime_passes_it() {
        let list: serde_json::Value =
            serde_json::from_str(include_str!("../examples/10-weft.conflist")).unwrap();
        for version in ["1.0.0", "1.1.0"] {
            // The runtime hands each plugin its entry plus the list's name and version.
            let mut plugin = list["plugins"][0].clone();
            plugin["name"] = list["name"].clone();
            plugin["cniVersion"] = version.into();
            let (conf, _) = NetConf::parse(plugin.to_string().as_bytes()).unwrap();
            assert_eq!(conf.plugin_type, "weft");
            assert_eq!(conf.agent_socket, PathBuf::from(DEFAULT_AGENT_SOCKET));
        }
    }

    #[test]
    fn result_per_version() {
        let r = CniResult {
            cni_version: String::new(),
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "02:00:00:00:00:01".into(),
                mtu: Some(1450),
                sandbox: Some("/var/run/netns/x".into()),
            }],
            ips: vec![IpConfig {
                version: None,
                address: "10.47.255.252/12".parse().unwrap(),
                gateway: Some("10.47.255.254".parse().unwrap()),
                interface: Some(0),
            }],
            routes: vec![],
            dns: Dns::default(),
        };
        let old = serde_json::to_value(r.clone().for_version(CniVersion(0, 3, 1))).unwrap();
        assert_eq!(old["ips"][0]["version"], "4");
        assert!(old["interfaces"][0].get("mtu").is_none());
        let new = serde_json::to_value(r.for_version(CniVersion::V1_1_0)).unwrap();
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["interfaces"][0]["mtu"], 1450);
        assert_eq!(new["ips"][0]["address"], "10.47.255.252/12");
    }

    #[test]
    fn error_json() {
        let e = CniError::new(4, "CNI_NETNS is not set").with_details("x");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("1.0.0")).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["code"], 4);
        assert_eq!(v["msg"], "CNI_NETNS is not set");
        assert_eq!(v["details"], "x");
    }
}
