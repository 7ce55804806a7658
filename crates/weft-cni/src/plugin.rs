//! The six CNI commands: what ADD, DEL, CHECK, VERSION, STATUS and GC do, from parsed
//! environment and config to the result or error object.
//!
//! [`run`] is the whole plugin minus process plumbing (the binary only reads stdin,
//! calls it, prints and exits). Every failure becomes a [`CniError`] with a spec or weft
//! code ([`codes`]); ADD undoes what it built before returning one.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::runtime::Runtime;

use crate::agent::{AgentCallError, AgentClient};
use crate::agent_proto::{AddReply, AddRequest, AttachedRequest, DelRequest, InterfaceConfig};
use crate::link::{self, KernelError, LinkState, Mac, PodPlan};
use crate::netns::{Netns, NetnsError};
use crate::spec::{
    CniEnv, CniError, CniResult, CniVersion, Command, Dns, Interface, IpConfig, LATEST_VERSION, NetConf,
    Route, SUPPORTED_VERSIONS, VersionInfo, codes,
};

/// What the process prints on stdout and exits with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Result, version report or error object (may be empty on success).
    pub stdout: String,
    /// 0 on success, 1 on error.
    pub exit_code: u8,
}

/// Runs one CNI invocation: `var` looks up environment variables, `stdin` is the
/// network configuration.
pub fn run(var: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    let fallback_version = guess_version(stdin);
    let env = match CniEnv::from_lookup(&var) {
        Ok(env) => env,
        Err(e) => return failure(&e, &fallback_version),
    };
    if env.command == Command::Version {
        return Outcome {
            stdout: to_json(&VersionInfo::weft()),
            exit_code: 0,
        };
    }
    let (conf, version) = match NetConf::parse(stdin) {
        Ok(parsed) => parsed,
        Err(e) => return failure(&e, &fallback_version),
    };
    init_logging(&conf);
    let span = tracing::info_span!(
        "cni",
        command = ?env.command,
        container = env.container_id.as_deref().unwrap_or(""),
        ifname = env.if_name.as_deref().unwrap_or(""),
    );
    let _enter = span.enter();
    match dispatch(&env, &conf, version) {
        Ok(Some(result)) => {
            let result = result.for_version(version);
            tracing::info!(result = %to_json(&result), "done");
            Outcome {
                stdout: to_json(&result),
                exit_code: 0,
            }
        }
        Ok(None) => {
            tracing::info!("done");
            Outcome {
                stdout: String::new(),
                exit_code: 0,
            }
        }
        Err(e) => {
            tracing::error!(code = e.code, msg = %e.msg, details = %e.details, "failed");
            failure(&e, &conf.cni_version)
        }
    }
}

fn failure(e: &CniError, version: &str) -> Outcome {
    Outcome {
        stdout: e.to_json(version),
        exit_code: 1,
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v)
        .unwrap_or_else(|e| CniError::new(codes::IO_FAILURE, e.to_string()).to_json(LATEST_VERSION))
}

/// The config's `cniVersion` if it can be read and is supported, for stamping errors
/// raised before the config is fully parsed.
fn guess_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(|v| v.as_str()).map(str::to_string))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| LATEST_VERSION.to_string())
}

fn init_logging(conf: &NetConf) {
    use tracing_subscriber::EnvFilter;
    if let Some(path) = &conf.log_file {
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        if let Ok(file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let filter = EnvFilter::try_new(conf.log_level.as_deref().unwrap_or("info"))
                .unwrap_or_else(|_| EnvFilter::new("info"));
            let _ = tracing_subscriber::fmt()
                .with_writer(std::sync::Mutex::new(file))
                .with_ansi(false)
                .with_env_filter(filter)
                .try_init();
            return;
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(EnvFilter::new("warn"))
        .try_init();
}

struct Ctx<'a> {
    env: &'a CniEnv,
    conf: &'a NetConf,
    version: CniVersion,
    rt: Runtime,
}

fn dispatch(env: &CniEnv, conf: &NetConf, version: CniVersion) -> Result<Option<CniResult>, CniError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            CniError::new(codes::IO_FAILURE, "cannot start the async runtime").with_details(e.to_string())
        })?;
    let ctx = Ctx {
        env,
        conf,
        version,
        rt,
    };
    match env.command {
        Command::Add => cmd_add(&ctx).map(Some),
        Command::Del => cmd_del(&ctx).map(|()| None),
        Command::Check => cmd_check(&ctx).map(|()| None),
        Command::Status => cmd_status(&ctx).map(|()| None),
        Command::Gc => cmd_gc(&ctx).map(|()| None),
        Command::Version => Ok(None),
    }
}

fn require_version(ctx: &Ctx<'_>, min: CniVersion, what: &str) -> Result<(), CniError> {
    if ctx.version < min {
        return Err(CniError::new(
            codes::INCOMPATIBLE_VERSION,
            format!(
                "{what} requires cniVersion {min} or later, the config says {}",
                ctx.conf.cni_version
            ),
        ));
    }
    Ok(())
}

fn kernel_err(e: KernelError) -> CniError {
    let code = match e {
        KernelError::Io { .. } => codes::IO_FAILURE,
        _ => codes::NETLINK,
    };
    CniError::new(code, e.to_string())
}

fn netns_err(e: NetnsError) -> CniError {
    let code = if e.is_not_found() {
        codes::CONTAINER_UNKNOWN
    } else {
        codes::NETNS
    };
    CniError::new(code, e.to_string())
}

fn agent_err(e: AgentCallError) -> CniError {
    match e {
        AgentCallError::Agent(a) => {
            let code = if a.code == 0 {
                codes::AGENT_PROTOCOL
            } else {
                a.code
            };
            CniError {
                code,
                msg: a.msg,
                details: a.details,
            }
        }
        AgentCallError::Protocol { .. } => CniError::new(codes::AGENT_PROTOCOL, e.to_string()),
        AgentCallError::Unreachable { .. } | AgentCallError::Timeout { .. } | AgentCallError::Io { .. } => {
            CniError::new(codes::TRY_AGAIN_LATER, e.to_string()).with_details(
                "is weft-agent running on this node? its socket is set by `agentSocket` in the CNI config",
            )
        }
    }
}

fn host_netlink(rt: &Runtime) -> Result<rtnetlink::Handle, CniError> {
    // The socket registers with the runtime's reactor, so it is created inside it.
    let _guard = rt.enter();
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| {
        CniError::new(codes::NETLINK, "cannot open a netlink socket").with_details(e.to_string())
    })?;
    rt.spawn(conn);
    Ok(handle)
}

/// ADD: agent `add` → veth → host end → pod end → agent `attached` → result.
fn cmd_add(ctx: &Ctx<'_>) -> Result<CniResult, CniError> {
    let env = ctx.env;
    let container_id = env.require_container_id()?;
    let netns_path = env.require_netns()?;
    let if_name = env.require_if_name()?;
    let pod_namespace = env.args.require("K8S_POD_NAMESPACE")?;
    let pod_name = env.args.require("K8S_POD_NAME")?;
    let pod_uid = env.args.get("K8S_POD_UID").unwrap_or_default();
    let netns = Netns::open(netns_path).map_err(netns_err)?;

    let client = AgentClient::new(&ctx.conf.agent_socket);
    let request = AddRequest {
        container_id: container_id.to_string(),
        netns: netns_path.display().to_string(),
        if_name: if_name.to_string(),
        pod_namespace: pod_namespace.to_string(),
        pod_name: pod_name.to_string(),
        pod_uid: pod_uid.to_string(),
    };
    let timeout = Duration::from_secs(ctx.conf.add_timeout_seconds);
    let reply = ctx.rt.block_on(agent_add(&client, request, timeout))?;
    let AddReply { interfaces, dns } = reply;
    let names: Vec<String> = interfaces.iter().map(|i| i.if_name.clone()).collect();
    let iface = interfaces
        .into_iter()
        .find(|i| i.if_name == if_name)
        .ok_or_else(|| {
            CniError::new(
                codes::AGENT_CONFIG,
                format!("the agent has no interface {if_name} for pod {pod_namespace}/{pod_name}"),
            )
            .with_details(format!("interfaces it returned: {names:?}"))
        })?;
    let (plan, mac, mtu) = pod_plan(&iface)?;

    let handle = host_netlink(&ctx.rt)?;
    let host_name = link::host_if_name(container_id, if_name);
    if ctx
        .rt
        .block_on(link::link_by_name(&handle, &host_name))
        .map_err(kernel_err)?
        .is_some()
    {
        return Err(CniError::new(
            codes::ALREADY_ATTACHED,
            format!("{container_id}/{if_name} is already attached: host veth {host_name} exists"),
        )
        .with_details("run DEL for this container and interface first"));
    }

    let mut progress = Progress::default();
    let attempt = build_attachment(
        ctx,
        &mut progress,
        &client,
        &handle,
        &netns,
        &host_name,
        &plan,
        mac,
        mtu,
    );
    match attempt {
        Ok((host, pod)) => {
            let pod_mtu = pod.mtu.or(mtu);
            Ok(CniResult {
                cni_version: String::new(),
                interfaces: vec![
                    Interface {
                        name: host.name.clone(),
                        mac: host.mac.map(|m| m.to_string()).unwrap_or_default(),
                        mtu: host.mtu,
                        sandbox: None,
                    },
                    Interface {
                        name: if_name.to_string(),
                        mac: pod.mac.map(|m| m.to_string()).unwrap_or_default(),
                        mtu: pod_mtu,
                        sandbox: Some(netns_path.display().to_string()),
                    },
                ],
                ips: vec![IpConfig {
                    version: None,
                    address: iface.address,
                    gateway: iface.gateway,
                    interface: Some(1),
                }],
                routes: plan
                    .routes
                    .iter()
                    .map(|(dst, gw)| Route { dst: *dst, gw: *gw })
                    .collect(),
                dns: dns
                    .map(|d| Dns {
                        nameservers: d.nameservers,
                        domain: d.domain,
                        search: d.search,
                        options: d.options,
                    })
                    .unwrap_or_default(),
            })
        }
        Err(e) => {
            tracing::warn!(code = e.code, msg = %e.msg, "ADD failed, undoing");
            if progress.veth_created
                && let Err(undo) = ctx.rt.block_on(link::delete_link_by_name(&handle, &host_name))
            {
                tracing::error!(error = %undo, "could not delete veth {host_name} while undoing ADD");
            }
            if progress.attached_sent {
                let del = del_request(ctx.env, container_id, if_name, &host_name);
                if let Err(undo) = ctx.rt.block_on(client.del(del)) {
                    tracing::warn!(error = %undo, "agent del while undoing ADD failed");
                }
            }
            Err(e)
        }
    }
}

#[derive(Default)]
struct Progress {
    veth_created: bool,
    attached_sent: bool,
}

#[allow(clippy::too_many_arguments)]
fn build_attachment(
    ctx: &Ctx<'_>,
    progress: &mut Progress,
    client: &AgentClient,
    handle: &rtnetlink::Handle,
    netns: &Netns,
    host_name: &str,
    plan: &PodPlan,
    mac: Option<Mac>,
    mtu: Option<u32>,
) -> Result<(LinkState, LinkState), CniError> {
    let env = ctx.env;
    let container_id = env.require_container_id()?;
    let if_name = env.require_if_name()?;
    ctx.rt
        .block_on(link::create_veth(
            handle,
            host_name,
            if_name,
            std::os::fd::AsFd::as_fd(netns),
            mac,
            mtu,
        ))
        .map_err(kernel_err)?;
    progress.veth_created = true;
    let alias = link::host_if_alias(container_id, if_name);
    let host = ctx
        .rt
        .block_on(link::configure_host_end(handle, host_name, &alias))
        .map_err(kernel_err)?;
    link::write_host_sysctls(host_name).map_err(kernel_err)?;
    let pod = netns
        .run_netlink(|h| async move { link::configure_pod_end(&h, plan).await })
        .map_err(netns_err)?
        .map_err(kernel_err)?;
    progress.attached_sent = true;
    let attached = AttachedRequest {
        container_id: container_id.to_string(),
        if_name: if_name.to_string(),
        host_if_name: host_name.to_string(),
        pod_namespace: env.args.get("K8S_POD_NAMESPACE").unwrap_or_default().to_string(),
        pod_name: env.args.get("K8S_POD_NAME").unwrap_or_default().to_string(),
        pod_uid: env.args.get("K8S_POD_UID").unwrap_or_default().to_string(),
    };
    ctx.rt.block_on(client.attached(attached)).map_err(agent_err)?;
    Ok((host, pod))
}

/// Asks the agent for the pod's interfaces, retrying while it answers "try again later"
/// (code 11) until `timeout` has passed.
async fn agent_add(client: &AgentClient, req: AddRequest, timeout: Duration) -> Result<AddReply, CniError> {
    let deadline = Instant::now() + timeout;
    loop {
        match client.add(req.clone()).await {
            Ok(reply) => return Ok(reply),
            Err(AgentCallError::Agent(e)) if e.code == codes::TRY_AGAIN_LATER => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(agent_err(AgentCallError::Agent(e)));
                }
                tracing::info!(msg = %e.msg, "agent says try again later");
                tokio::time::sleep(left.min(Duration::from_secs(1))).await;
            }
            Err(e) => return Err(agent_err(e)),
        }
    }
}

/// Validates the agent's interface config into what the kernel work needs.
fn pod_plan(iface: &InterfaceConfig) -> Result<(PodPlan, Option<Mac>, Option<u32>), CniError> {
    let bad = |msg: String| CniError::new(codes::AGENT_CONFIG, msg);
    let name = &iface.if_name;
    let mac = match &iface.mac {
        Some(s) => {
            Some(Mac::parse(s).ok_or_else(|| bad(format!("agent sent an invalid MAC {s:?} for {name}")))?)
        }
        None => None,
    };
    if let Some(m) = mac
        && (m.0[0] & 1 == 1 || m.0 == [0; 6])
    {
        return Err(bad(format!(
            "agent sent MAC {m} for {name}, which is not a unicast address"
        )));
    }
    if let Some(mtu) = iface.mtu
        && !(68..=65535).contains(&mtu)
    {
        return Err(bad(format!(
            "agent sent MTU {mtu} for {name}, expected 68 to 65535"
        )));
    }
    let v4 = iface.address.addr().is_ipv4();
    let mut routes: Vec<(IpNet, Option<std::net::IpAddr>)> = Vec::new();
    if let Some(gw) = iface.gateway {
        if gw.is_ipv4() != v4 {
            return Err(bad(format!(
                "agent sent gateway {gw} for address {} on {name}",
                iface.address
            )));
        }
        let default = if v4 {
            IpNet::V4(Default::default())
        } else {
            IpNet::V6(Default::default())
        };
        routes.push((default, Some(gw)));
    }
    for r in &iface.routes {
        if let Some(gw) = r.gw
            && gw.is_ipv4() != r.dst.addr().is_ipv4()
        {
            return Err(bad(format!(
                "agent sent route {} via {gw} on {name}: mixed address families",
                r.dst
            )));
        }
        let dst = r.dst.trunc();
        if !routes.iter().any(|(d, _)| *d == dst) {
            routes.push((dst, r.gw));
        }
    }
    let plan = PodPlan {
        if_name: name.clone(),
        addresses: vec![iface.address],
        routes,
    };
    Ok((plan, mac, iface.mtu))
}

fn del_request(env: &CniEnv, container_id: &str, if_name: &str, host_name: &str) -> DelRequest {
    DelRequest {
        container_id: container_id.to_string(),
        if_name: if_name.to_string(),
        host_if_name: host_name.to_string(),
        netns: env
            .netns
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        pod_namespace: env.args.get("K8S_POD_NAMESPACE").unwrap_or_default().to_string(),
        pod_name: env.args.get("K8S_POD_NAME").unwrap_or_default().to_string(),
        pod_uid: env.args.get("K8S_POD_UID").unwrap_or_default().to_string(),
    }
}

/// DEL: idempotent. Tells the agent if it can (failure is only logged), deletes the
/// host veth if it is there (which deletes the pod end too). A missing netns, veth or
/// agent is success.
fn cmd_del(ctx: &Ctx<'_>) -> Result<(), CniError> {
    let container_id = ctx.env.require_container_id()?;
    let if_name = ctx.env.require_if_name()?;
    let host_name = link::host_if_name(container_id, if_name);
    // A sick agent must not hold DEL up for long: it is told best-effort only.
    let client = AgentClient::new(&ctx.conf.agent_socket)
        .with_timeouts(Duration::from_secs(2), Duration::from_secs(5));
    if let Err(e) = ctx
        .rt
        .block_on(client.del(del_request(ctx.env, container_id, if_name, &host_name)))
    {
        tracing::warn!(error = %e, "agent del failed; deleting the veth anyway");
    }
    let handle = host_netlink(&ctx.rt)?;
    let existing = ctx
        .rt
        .block_on(link::link_by_name(&handle, &host_name))
        .map_err(kernel_err)?;
    if let Some(link) = existing {
        let owner = link.alias.as_deref().and_then(link::parse_host_if_alias);
        if owner.is_some_and(|o| o != (container_id, if_name)) {
            tracing::warn!(alias = ?link.alias, "host veth {host_name} belongs to another attachment; leaving it");
            return Ok(());
        }
        ctx.rt
            .block_on(link::delete_link_by_name(&handle, &host_name))
            .map_err(kernel_err)?;
    }
    Ok(())
}

/// CHECK: the host veth and the pod interface exist, are up, and carry the MAC,
/// addresses and routes of `prevResult`.
fn cmd_check(ctx: &Ctx<'_>) -> Result<(), CniError> {
    require_version(ctx, CniVersion::V0_4_0, "CHECK")?;
    let container_id = ctx.env.require_container_id()?;
    let netns_path = ctx.env.require_netns()?;
    let if_name = ctx.env.require_if_name()?;
    let prev = ctx.conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            codes::INVALID_CONFIG,
            "CHECK needs `prevResult` in the network config",
        )
    })?;
    let netns = Netns::open(netns_path).map_err(netns_err)?;
    let mismatch = |msg: String| CniError::new(codes::CHECK_MISMATCH, msg);

    let handle = host_netlink(&ctx.rt)?;
    let host_name = link::host_if_name(container_id, if_name);
    let host = ctx
        .rt
        .block_on(link::link_by_name(&handle, &host_name))
        .map_err(kernel_err)?
        .ok_or_else(|| {
            mismatch(format!(
                "host veth {host_name} for {container_id}/{if_name} is missing"
            ))
        })?;
    let alias = link::host_if_alias(container_id, if_name);
    if host.alias.as_deref() != Some(alias.as_str()) {
        return Err(mismatch(format!(
            "host veth {host_name} has alias {:?}, expected {alias:?}",
            host.alias
        )));
    }
    if !host.up {
        return Err(mismatch(format!("host veth {host_name} is down")));
    }
    if link::read_host_sysctl(&host_name, "proxy_arp").ok().as_deref() != Some("1") {
        return Err(mismatch(format!("proxy_arp is not 1 on host veth {host_name}")));
    }

    let observed = netns
        .run_netlink(|h| async move {
            let Some(link) = link::link_by_name(&h, if_name).await? else {
                return Ok(None);
            };
            let addrs = link::addresses_of(&h, link.index).await?;
            let routes = link::main_routes(&h).await?;
            Ok::<_, KernelError>(Some((link, addrs, routes)))
        })
        .map_err(netns_err)?
        .map_err(kernel_err)?;
    let ns = netns_path.display();
    let (pod, addrs, routes) = observed
        .ok_or_else(|| mismatch(format!("interface {if_name} not found in network namespace {ns}")))?;
    if !pod.up {
        return Err(mismatch(format!("interface {if_name} in {ns} is down")));
    }
    let pod_indices: Vec<usize> = prev
        .interfaces
        .iter()
        .enumerate()
        .filter(|(_, i)| i.name == if_name && i.sandbox.is_some())
        .map(|(n, _)| n)
        .collect();
    for idx in &pod_indices {
        let want = &prev.interfaces[*idx].mac;
        if !want.is_empty() {
            let want_mac = Mac::parse(want);
            if want_mac.is_none() || want_mac != pod.mac {
                return Err(mismatch(format!(
                    "interface {if_name} in {ns} has MAC {}, prevResult says {want}",
                    pod.mac.map(|m| m.to_string()).unwrap_or_else(|| "none".into())
                )));
            }
        }
    }
    for ip in &prev.ips {
        let ours = match ip.interface {
            Some(i) => pod_indices.contains(&i),
            None => true,
        };
        if ours && !addrs.contains(&ip.address) {
            let have: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
            return Err(mismatch(format!(
                "interface {if_name} in {ns} lacks address {} (it has: {})",
                ip.address,
                if have.is_empty() {
                    "none".to_string()
                } else {
                    have.join(", ")
                }
            )));
        }
    }
    for r in &prev.routes {
        let found = routes.iter().any(|(dst, gw, oif)| {
            *dst == r.dst.trunc()
                && (r.gw.is_none() || *gw == r.gw)
                && (oif.is_none() || *oif == Some(pod.index))
        });
        if !found {
            let via = r.gw.map(|g| format!(" via {g}")).unwrap_or_default();
            return Err(mismatch(format!("route {}{via} is missing in {ns}", r.dst)));
        }
    }
    Ok(())
}

/// STATUS: ready when the agent answers `status`; 50 when it cannot be reached, the
/// agent's own code (e.g. 51) when it answers with an error.
fn cmd_status(ctx: &Ctx<'_>) -> Result<(), CniError> {
    require_version(ctx, CniVersion::V1_1_0, "STATUS")?;
    let client = AgentClient::new(&ctx.conf.agent_socket);
    match ctx.rt.block_on(client.status()) {
        Ok(()) => Ok(()),
        Err(AgentCallError::Agent(e)) => Err(agent_err(AgentCallError::Agent(e))),
        Err(e) => Err(
            CniError::new(codes::PLUGIN_NOT_AVAILABLE, "weft agent not available")
                .with_details(e.to_string()),
        ),
    }
}

/// GC: deletes host veths weft made (name `weft…`, alias `weft:<cid>:<ifname>`) whose
/// attachment is not in `cni.dev/valid-attachments`, and tells the agent about each.
fn cmd_gc(ctx: &Ctx<'_>) -> Result<(), CniError> {
    require_version(ctx, CniVersion::V1_1_0, "GC")?;
    let valid = ctx.conf.valid_attachments.as_ref().ok_or_else(|| {
        CniError::new(
            codes::INVALID_CONFIG,
            "GC needs `cni.dev/valid-attachments` in the network config",
        )
    })?;
    let keep: HashSet<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.if_name.as_str()))
        .collect();
    let handle = host_netlink(&ctx.rt)?;
    let links = ctx.rt.block_on(link::all_links(&handle)).map_err(kernel_err)?;
    let client = AgentClient::new(&ctx.conf.agent_socket)
        .with_timeouts(Duration::from_secs(2), Duration::from_secs(5));
    let mut failures = Vec::new();
    for l in links
        .iter()
        .filter(|l| l.is_veth && l.name.starts_with(link::HOST_IF_PREFIX))
    {
        let Some((cid, ifname)) = l.alias.as_deref().and_then(link::parse_host_if_alias) else {
            continue;
        };
        if link::host_if_name(cid, ifname) != l.name || keep.contains(&(cid, ifname)) {
            continue;
        }
        tracing::info!(veth = %l.name, container = cid, ifname, "GC: deleting stale attachment");
        let del = DelRequest {
            container_id: cid.to_string(),
            if_name: ifname.to_string(),
            host_if_name: l.name.clone(),
            netns: String::new(),
            pod_namespace: String::new(),
            pod_name: String::new(),
            pod_uid: String::new(),
        };
        if let Err(e) = ctx.rt.block_on(client.del(del)) {
            tracing::warn!(error = %e, "agent del during GC failed");
        }
        if let Err(e) = ctx.rt.block_on(link::delete_link_by_name(&handle, &l.name)) {
            failures.push(e.to_string());
        }
    }
    if !failures.is_empty() {
        return Err(CniError::new(
            codes::NETLINK,
            format!("GC could not delete {} stale veth(s)", failures.len()),
        )
        .with_details(failures.join("; ")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_proto::RouteConfig;

    fn iface() -> InterfaceConfig {
        InterfaceConfig {
            if_name: "eth0".into(),
            network: "n".into(),
            address: "10.47.255.252/12".parse().unwrap(),
            gateway: Some("10.47.255.254".parse().unwrap()),
            mac: Some("02:00:00:00:00:01".into()),
            routes: vec![
                RouteConfig {
                    dst: "0.0.0.0/0".parse().unwrap(),
                    gw: Some("10.47.255.254".parse().unwrap()),
                },
                RouteConfig {
                    dst: "10.96.0.0/12".parse().unwrap(),
                    gw: None,
                },
            ],
            mtu: Some(1450),
        }
    }

    #[test]
    fn plan_merges_default_route() {
        let (plan, mac, mtu) = pod_plan(&iface()).unwrap();
        assert_eq!(plan.routes.len(), 2);
        assert_eq!(plan.routes[0].0.to_string(), "0.0.0.0/0");
        assert_eq!(mac.unwrap().to_string(), "02:00:00:00:00:01");
        assert_eq!(mtu, Some(1450));
    }

    #[test]
    fn plan_rejects_bad_agent_input() {
        let mut i = iface();
        i.mac = Some("nope".into());
        assert_eq!(pod_plan(&i).unwrap_err().code, codes::AGENT_CONFIG);
        let mut i = iface();
        i.mac = Some("01:00:00:00:00:01".into());
        assert_eq!(pod_plan(&i).unwrap_err().code, codes::AGENT_CONFIG);
        let mut i = iface();
        i.gateway = Some("fe80::1".parse().unwrap());
        assert_eq!(pod_plan(&i).unwrap_err().code, codes::AGENT_CONFIG);
        let mut i = iface();
        i.mtu = Some(10);
        assert_eq!(pod_plan(&i).unwrap_err().code, codes::AGENT_CONFIG);
    }

    #[test]
    fn version_and_errors_without_kernel() {
        let env = |cmd: &'static str| move |k: &str| (k == "CNI_COMMAND").then(|| cmd.to_string());
        let out = run(env("VERSION"), b"");
        assert_eq!(out.exit_code, 0);
        assert_eq!(
            out.stdout,
            r#"{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#
        );
        let out = run(
            env("STATUS"),
            br#"{"cniVersion":"1.0.0","name":"n","type":"weft"}"#,
        );
        assert_eq!(out.exit_code, 1);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["code"], 1);
        assert_eq!(v["cniVersion"], "1.0.0");
        let out = run(env("GC"), br#"{"cniVersion":"0.4.0","name":"n","type":"weft"}"#);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["code"], 1);
        let out = run(env("ADD"), b"{\"cniVersion\":");
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["code"], 6);
    }
}
