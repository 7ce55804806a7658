//! Client commands: apply/delete, get, describe, status, and their table, JSON and YAML
//! renderings.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use comfy_table::{Table, presets::NOTHING};
use weft_api::client::ApiClient;
use weft_api::manifest::read_manifests;
use weft_api::types::{ApplyRequest, ManifestDocument};
use weft_model::DerivedObject;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts.
    Json,
    /// YAML for scripts.
    Yaml,
}

/// Arguments of apply and delete.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Manifest files or directories; `-` reads standard input.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
    /// Namespace for objects that name none.
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Format,
}

/// Arguments of get.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// What to list.
    pub kind: String,
    /// One object by name.
    pub name: Option<String>,
    /// Only this namespace.
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Format,
}

/// Arguments of describe.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// Kind of object.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its namespace.
    #[arg(short, long)]
    pub namespace: Option<String>,
}

/// Arguments of status.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Format,
}

fn print_structured<T: serde::Serialize>(value: &T, format: Format) -> Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        _ => print!("{}", yaml_serde::to_string(value)?),
    }
    Ok(())
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header(header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    t
}

/// `weft apply` / `weft delete`.
pub async fn apply(server: &str, args: ApplyArgs, delete: bool) -> Result<ExitCode> {
    let mut documents: Vec<ManifestDocument> = Vec::new();
    let mut failed = 0;
    let mut read_errors = Vec::new();
    for doc in read_manifests(&args.files) {
        match doc {
            Ok(d) => documents.push(d),
            Err(e) => {
                failed += 1;
                read_errors.push(e.to_string());
            }
        }
    }
    let client = ApiClient::new(server);
    let report = if documents.is_empty() {
        weft_api::types::ApplyReport::default()
    } else {
        let req = ApplyRequest {
            documents,
            namespace: args.namespace.clone(),
        };
        if delete {
            client.delete(&req).await?
        } else {
            client.apply(&req).await?
        }
    };
    failed += report.errors();
    match args.output {
        Format::Table => {
            for e in &read_errors {
                eprintln!("error: {e}");
            }
            for r in &report.results {
                let object = r.object.clone().unwrap_or_else(|| r.source.clone());
                match (&r.error, &r.pending) {
                    (Some(e), _) => eprintln!("error: {e}"),
                    (None, Some(p)) => println!("{object} {} (pending: {p})", r.action),
                    (None, None) => println!("{object} {}", r.action),
                }
            }
        }
        f => print_structured(
            &serde_json::json!({"readErrors": read_errors, "results": report.results, "revision": report.revision}),
            f,
        )?,
    }
    if delete && report.results.iter().any(|r| r.action == "not-found") {
        failed += 1;
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Normalised kind names: (endpoint family, plural).
fn resolve_kind(kind: &str) -> Option<(&'static str, &'static str)> {
    Some(match kind.to_ascii_lowercase().as_str() {
        "project" | "projects" | "proj" => ("derived", "projects"),
        "network" | "networks" | "net" | "vn" | "vns" => ("derived", "networks"),
        "interface" | "interfaces" | "if" | "vmi" | "vmis" => ("derived", "interfaces"),
        "service" | "services" | "svc" => ("derived", "services"),
        "floatingip" | "floatingips" | "fip" | "fips" => ("derived", "floatingips"),
        "servicechain" | "servicechains" | "chain" | "chains" | "sc" => ("derived", "servicechains"),
        "policy" | "policies" | "networkpolicy" | "networkpolicies" | "netpol" | "firewallpolicies" => {
            ("derived", "policies")
        }
        "pending" | "status" | "statuses" => ("derived", "statuses"),
        "pod" | "pods" | "po" => ("inputs", "pods"),
        "namespace" | "namespaces" | "ns" => ("inputs", "namespaces"),
        "node" | "nodes" | "no" => ("inputs", "nodes"),
        "virtualnetwork" | "virtualnetworks" => ("inputs", "virtualnetworks"),
        "floatingippool" | "floatingippools" | "fippool" => ("inputs", "floatingippools"),
        "networkattachmentdefinition" | "networkattachmentdefinitions" | "nad" => {
            ("inputs", "networkattachmentdefinitions")
        }
        "endpointslice" | "endpointslices" => ("inputs", "endpointslices"),
        "adminnetworkpolicy" | "adminnetworkpolicies" | "anp" => ("inputs", "adminnetworkpolicies"),
        "baselineadminnetworkpolicy" | "baselineadminnetworkpolicies" | "banp" => {
            ("inputs", "baselineadminnetworkpolicies")
        }
        "clusterconfig" | "clusterconfigs" | "config" => ("config", "clusterconfig"),
        _ => return None,
    })
}

fn kinds_help() -> &'static str {
    "projects, networks, interfaces, services, floatingips, servicechains, policies, pending, pods, namespaces, nodes, virtualnetworks, floatingippools, networkattachmentdefinitions, endpointslices, adminnetworkpolicies, baselineadminnetworkpolicies, clusterconfig"
}

fn join<T: ToString>(items: &[T]) -> String {
    items.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

/// The EXTERNAL-IP of a service, as kubectl shows it: its floating IPs and spec
/// external IPs, `<pending>` for a LoadBalancer still without a floating IP, `<none>`
/// otherwise.
fn external_ip_column(s: &weft_model::ServiceRecord) -> String {
    let mut shown: Vec<String> = s.floating_ips.iter().map(|ip| ip.to_string()).collect();
    if shown.is_empty() && s.service_type == "LoadBalancer" {
        shown.push("<pending>".into());
    }
    for ip in &s.external_ips {
        if !shown.contains(ip) {
            shown.push(ip.clone());
        }
    }
    if shown.is_empty() {
        "<none>".into()
    } else {
        shown.join(",")
    }
}

/// One row of `weft get floatingips` after NAMESPACE: NAME, IP (`<pending>` without
/// an address), POOL, POD (`pod/interface` when not `eth0`), NODE (`-` unbound), NOTE.
fn floating_ip_row(f: &weft_model::FloatingIpRecord) -> Vec<String> {
    let pod = if f.interface == weft_model::resources::DEFAULT_FIP_INTERFACE {
        f.pod.clone()
    } else {
        format!("{}/{}", f.pod, f.interface)
    };
    let node = match f.binding() {
        Some((_, _, node)) => node.to_string(),
        None => "-".into(),
    };
    vec![
        f.name.clone(),
        f.ip.map(|ip| ip.to_string())
            .unwrap_or_else(|| "<pending>".into()),
        f.pool.clone(),
        pod,
        node,
        f.note.clone().unwrap_or_default(),
    ]
}

/// The `weft get` table of derived objects (all of one kind).
pub(crate) fn derived_table(objects: &[DerivedObject]) -> Table {
    let Some(first) = objects.first() else {
        return table(&["(none)"]);
    };
    let mut t;
    match first {
        DerivedObject::Project(_) => {
            t = table(&[
                "NAME",
                "NAMESPACE",
                "ISOLATED",
                "POD NETWORK",
                "SERVICE NETWORK",
                "SNAT",
                "FABRIC-FWD",
            ]);
            for o in objects {
                if let DerivedObject::Project(p) = o {
                    t.add_row(vec![
                        p.name.clone(),
                        p.namespace.clone(),
                        p.isolated.to_string(),
                        p.pod_network.clone(),
                        p.service_network.clone(),
                        p.ip_fabric_snat.to_string(),
                        p.ip_fabric_forwarding.to_string(),
                    ]);
                }
            }
        }
        DerivedObject::Network(_) => {
            t = table(&[
                "NETWORK",
                "KIND",
                "VNI",
                "SUBNETS",
                "GATEWAY",
                "IPAM",
                "ROUTING INSTANCE",
                "ROUTE TARGETS",
            ]);
            for o in objects {
                if let DerivedObject::Network(n) = o {
                    t.add_row(vec![
                        n.fq_name.clone(),
                        format!("{:?}", n.kind).to_lowercase(),
                        n.vni.to_string(),
                        join(&n.subnets),
                        n.gateway.map(|g| g.to_string()).unwrap_or_default(),
                        n.ipam.clone(),
                        n.routing_instance.clone(),
                        join(&n.export_targets),
                    ]);
                }
            }
        }
        DerivedObject::Interface(_) => {
            t = table(&[
                "NAMESPACE",
                "POD",
                "INTERFACE",
                "NETWORK",
                "IP",
                "GATEWAY",
                "MAC",
                "NODE",
            ]);
            for o in objects {
                if let DerivedObject::Interface(i) = o {
                    t.add_row(vec![
                        i.namespace.clone(),
                        i.pod.clone(),
                        i.interface.clone(),
                        i.network.clone(),
                        format!("{}/{}", i.ip, i.prefix_len),
                        i.gateway.map(|g| g.to_string()).unwrap_or_default(),
                        i.mac.to_string(),
                        i.node.clone().unwrap_or_else(|| "-".into()),
                    ]);
                }
            }
        }
        DerivedObject::Service(_) => {
            t = table(&[
                "NAMESPACE",
                "NAME",
                "TYPE",
                "VIP",
                "EXTERNAL-IP",
                "PORTS",
                "BACKENDS",
                "NOTE",
            ]);
            for o in objects {
                if let DerivedObject::Service(s) = o {
                    let ports: Vec<String> = s
                        .ports
                        .iter()
                        .map(|p| match p.node_port {
                            Some(np) => format!("{}:{}/{}→{}", p.port, np, p.protocol, p.target_port),
                            None => format!("{}/{}→{}", p.port, p.protocol, p.target_port),
                        })
                        .collect();
                    let ready = s.backends.iter().filter(|b| b.ready).count();
                    let backends: Vec<String> = s.backends.iter().map(|b| b.ip.to_string()).collect();
                    t.add_row(vec![
                        s.namespace.clone(),
                        s.name.clone(),
                        s.service_type.clone(),
                        s.vip.map(|v| v.to_string()).unwrap_or_else(|| "None".into()),
                        external_ip_column(s),
                        ports.join(","),
                        format!("{ready}/{} {}", s.backends.len(), backends.join(",")),
                        s.note.clone().unwrap_or_default(),
                    ]);
                }
            }
        }
        DerivedObject::FloatingIp(_) => {
            t = table(&["NAMESPACE", "NAME", "IP", "POOL", "POD", "NODE", "NOTE"]);
            for o in objects {
                if let DerivedObject::FloatingIp(f) = o {
                    let mut row = vec![f.namespace.clone()];
                    row.extend(floating_ip_row(f));
                    t.add_row(row);
                }
            }
        }
        DerivedObject::ServiceChain(_) => {
            t = table(&[
                "NAMESPACE",
                "NAME",
                "LEFT",
                "RIGHT",
                "SERVICES",
                "PORTS",
                "ON FAILURE",
                "STATE",
            ]);
            for o in objects {
                if let DerivedObject::ServiceChain(c) = o {
                    let short = |fq: &str| fq.rsplit(':').next().unwrap_or(fq).to_string();
                    let services: Vec<String> = c
                        .hops
                        .iter()
                        .map(|h| format!("{}({}>{})", h.pod, h.left_interface, h.right_interface))
                        .collect();
                    let ports: Vec<String> = c
                        .ports
                        .iter()
                        .map(|p| match (p.first, p.last) {
                            (1, u16::MAX) => p.protocol.as_str().to_string(),
                            (a, b) if a == b => format!("{}/{a}", p.protocol.as_str()),
                            (a, b) => format!("{}/{a}-{b}", p.protocol.as_str()),
                        })
                        .collect();
                    let state = if c.missing.is_empty() {
                        "whole".to_string()
                    } else {
                        let effect = match c.on_failure {
                            weft_model::ChainFailure::Drop => "dropping",
                            weft_model::ChainFailure::Bypass => "bypassing",
                        };
                        format!("{effect}: {}", c.missing.join("; "))
                    };
                    t.add_row(vec![
                        c.namespace.clone(),
                        c.name.clone(),
                        short(&c.left_network),
                        short(&c.right_network),
                        services.join(" -> "),
                        if ports.is_empty() {
                            "all".into()
                        } else {
                            ports.join(",")
                        },
                        format!("{:?}", c.on_failure),
                        state,
                    ]);
                }
            }
        }
        DerivedObject::FirewallPolicy(_) => {
            t = table(&[
                "SEQUENCE",
                "FIREWALL POLICY",
                "NAMESPACE",
                "POD SELECTOR",
                "TYPES",
                "INGRESS RULES",
                "EGRESS RULES",
            ]);
            let mut sorted: Vec<&DerivedObject> = objects.iter().collect();
            sorted.sort_by_key(|o| {
                if let DerivedObject::FirewallPolicy(p) = o {
                    p.sequence
                } else {
                    0
                }
            });
            for o in sorted {
                if let DerivedObject::FirewallPolicy(p) = o {
                    t.add_row(vec![
                        p.sequence.to_string(),
                        p.name.clone(),
                        p.namespace.clone(),
                        p.pod_selector.clone(),
                        p.policy_types.join(","),
                        p.ingress_rules.to_string(),
                        p.egress_rules.to_string(),
                    ]);
                }
            }
        }
        DerivedObject::Status(_) => {
            t = table(&["OBJECT", "STATE", "REASON"]);
            for o in objects {
                if let DerivedObject::Status(s) = o {
                    t.add_row(vec![
                        s.object.clone(),
                        format!("{:?}", s.state).to_lowercase(),
                        s.reason.clone().unwrap_or_default(),
                    ]);
                }
            }
        }
    }
    t
}

fn meta_str(v: &serde_json::Value, field: &str) -> String {
    v.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(|x| x.as_str())
        .unwrap_or("")
        .to_string()
}

/// `weft get`.
pub async fn get(server: &str, args: GetArgs) -> Result<ExitCode> {
    let Some((family, plural)) = resolve_kind(&args.kind) else {
        bail!("unknown kind {:?}; expected one of {}", args.kind, kinds_help());
    };
    let client = ApiClient::new(server);
    let ns = args.namespace.as_deref();
    match family {
        "config" => {
            let cfg = client.config().await?;
            if args.output == Format::Table {
                let mut t = table(&[
                    "CLUSTER",
                    "ASN",
                    "POD SUBNETS",
                    "SERVICE SUBNETS",
                    "IP-FABRIC SUBNETS",
                    "SNAT",
                    "FABRIC-FWD",
                    "SOURCE",
                ]);
                t.add_row(vec![
                    cfg.cluster_name.clone(),
                    cfg.asn.to_string(),
                    join(&cfg.pod_subnets),
                    join(&cfg.service_subnets),
                    join(&cfg.ip_fabric_subnets),
                    cfg.ip_fabric_snat.to_string(),
                    cfg.ip_fabric_forwarding.to_string(),
                    cfg.source.clone().unwrap_or_else(|| "built-in defaults".into()),
                ]);
                println!("{t}");
            } else {
                print_structured(&cfg, args.output)?;
            }
        }
        "derived" => {
            let mut objects = client.derived(plural, ns).await?;
            if let Some(name) = &args.name {
                objects.retain(|o| {
                    let full = o.name();
                    full == *name
                        || full.rsplit(['/', ':']).next() == Some(name.as_str())
                        || full.split('/').nth(1) == Some(name.as_str())
                });
                if objects.is_empty() {
                    eprintln!("error: {plural} {name:?} not found");
                    return Ok(ExitCode::from(1));
                }
            }
            match args.output {
                Format::Table => println!("{}", derived_table(&objects)),
                f => print_structured(&objects, f)?,
            }
        }
        _ => {
            let mut objects = client.inputs(plural, ns).await?;
            if let Some(name) = &args.name {
                objects.retain(|o| meta_str(o, "name") == *name);
                if objects.is_empty() {
                    eprintln!("error: {plural} {name:?} not found");
                    return Ok(ExitCode::from(1));
                }
            }
            match args.output {
                Format::Table if plural == "pods" => {
                    let interfaces = client.derived("interfaces", ns).await?;
                    let pending = client.derived("statuses", None).await?;
                    let mut t = table(&["NAMESPACE", "NAME", "NODE", "IP", "NETWORK", "STATUS"]);
                    for o in &objects {
                        let (pns, name) = (meta_str(o, "namespace"), meta_str(o, "name"));
                        let eth0 = interfaces.iter().find_map(|i| match i {
                            DerivedObject::Interface(i)
                                if i.namespace == pns && i.pod == name && i.primary =>
                            {
                                Some(i)
                            }
                            _ => None,
                        });
                        let reason = pending.iter().find_map(|s| match s {
                            DerivedObject::Status(s) if s.object == format!("Pod {pns}/{name}") => {
                                s.reason.clone()
                            }
                            _ => None,
                        });
                        let node = o
                            .get("spec")
                            .and_then(|s| s.get("nodeName"))
                            .and_then(|n| n.as_str())
                            .unwrap_or("-");
                        t.add_row(vec![
                            pns.clone(),
                            name.clone(),
                            node.to_string(),
                            eth0.map(|i| i.ip.to_string()).unwrap_or_else(|| "-".into()),
                            eth0.map(|i| i.network.clone()).unwrap_or_default(),
                            reason
                                .map(|r| format!("Pending: {r}"))
                                .unwrap_or_else(|| "Ready".into()),
                        ]);
                    }
                    println!("{t}");
                }
                Format::Table => {
                    let mut t = table(&["NAMESPACE", "NAME", "KIND"]);
                    for o in &objects {
                        t.add_row(vec![
                            meta_str(o, "namespace"),
                            meta_str(o, "name"),
                            o.get("kind").and_then(|k| k.as_str()).unwrap_or("").to_string(),
                        ]);
                    }
                    println!("{t}");
                }
                f => print_structured(&objects, f)?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `weft describe`: the object in full, as YAML, plus what is waiting on it.
pub async fn describe(server: &str, args: DescribeArgs) -> Result<ExitCode> {
    let get_args = GetArgs {
        kind: args.kind.clone(),
        name: Some(args.name.clone()),
        namespace: args.namespace.clone(),
        output: Format::Yaml,
    };
    let code = get(server, get_args).await?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    let client = ApiClient::new(server);
    let pending = client.derived("statuses", None).await?;
    for p in pending {
        if let DerivedObject::Status(s) = p
            && s.object.ends_with(&format!("/{}", args.name))
        {
            println!("pending: {} — {}", s.object, s.reason.unwrap_or_default());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `weft status`.
pub async fn status(server: &str, args: StatusArgs) -> Result<ExitCode> {
    let client = ApiClient::new(server);
    let status = client.status().await?;
    if args.output != Format::Table {
        print_structured(&status, args.output)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = table(&["COMPONENT", "STATE", "WHY"]);
    for c in &status.components {
        t.add_row(vec![c.component.clone(), c.state.clone(), c.reason.clone()]);
    }
    println!("{t}\n");
    println!(
        "cluster {:?}, store revision {}",
        status.cluster_name, status.revision
    );
    let inputs: Vec<String> = status.inputs.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!(
        "inputs: {}",
        if inputs.is_empty() {
            "none".into()
        } else {
            inputs.join(", ")
        }
    );
    let derived: Vec<String> = status.derived.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!("derived: {}", derived.join(", "));
    for p in &status.pools {
        println!("ipam {}: {} of {} addresses in use", p.name, p.in_use, p.capacity);
    }
    if !status.pending.is_empty() {
        println!("\nwaiting:");
        for p in &status.pending {
            println!("  {}: {}", p.object, p.reason.clone().unwrap_or_default());
        }
    }
    // `standby` (BGP on an HA follower) and `elsewhere` (an agent watching another HA
    // replica) are normal states of a healthy replicated controller.
    let ready = status
        .components
        .iter()
        .all(|c| matches!(c.state.as_str(), "ready" | "standby" | "elsewhere"));
    Ok(if ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(service_type: &str, fips: &[&str], external: &[&str]) -> weft_model::ServiceRecord {
        weft_model::ServiceRecord {
            namespace: "default".into(),
            name: "web".into(),
            service_type: service_type.into(),
            vip: None,
            network: String::new(),
            ports: vec![],
            session_affinity: "None".into(),
            external_ips: external.iter().map(|s| s.to_string()).collect(),
            backends: vec![],
            backends_from: "none".into(),
            note: None,
            floating_ips: fips.iter().map(|s| s.parse().expect("ip")).collect(),
            fip_pool: None,
            fip_network: None,
        }
    }

    #[test]
    fn floating_ip_rows_show_binding_pending_and_interface() {
        let mut f = weft_model::FloatingIpRecord {
            namespace: "default".into(),
            name: "web-fip".into(),
            ip: Some("203.0.113.7".parse().expect("ip")),
            pool: "public/pool".into(),
            network: Some("default-domain:k8s-public:ext".into()),
            pod: "web".into(),
            interface: "eth0".into(),
            fixed_ip: Some("10.47.255.252".parse().expect("ip")),
            node: Some("node-1".into()),
            note: None,
        };
        assert_eq!(
            floating_ip_row(&f),
            ["web-fip", "203.0.113.7", "public/pool", "web", "node-1", ""]
        );
        f.fixed_ip = None;
        f.node = None;
        f.interface = "net1".into();
        f.note = Some("not bound: Pod default/web does not exist".into());
        assert_eq!(
            floating_ip_row(&f),
            [
                "web-fip",
                "203.0.113.7",
                "public/pool",
                "web/net1",
                "-",
                "not bound: Pod default/web does not exist"
            ]
        );
        f.ip = None;
        assert_eq!(floating_ip_row(&f)[1], "<pending>");
        assert_eq!(resolve_kind("fip"), Some(("derived", "floatingips")));
        assert_eq!(
            weft_model::DerivedKind::from_plural("floatingips"),
            Some(weft_model::DerivedKind::FloatingIp)
        );
    }

    #[test]
    fn external_ip_column_shows_fips_pending_or_none() {
        assert_eq!(
            external_ip_column(&record("LoadBalancer", &["203.0.113.252"], &[])),
            "203.0.113.252"
        );
        assert_eq!(external_ip_column(&record("LoadBalancer", &[], &[])), "<pending>");
        assert_eq!(external_ip_column(&record("ClusterIP", &[], &[])), "<none>");
        assert_eq!(
            external_ip_column(&record("ClusterIP", &[], &["198.51.100.10"])),
            "198.51.100.10"
        );
    }
}
