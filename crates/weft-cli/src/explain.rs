//! `weft explain NS/POD -> NS/POD|IP:PORT/PROTO`: the decision for one flow and why
//! (routing table and route, service translation, NetworkPolicy on both sides).

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;
use weft_api::client::ApiClient;
use weft_api::explain::ExplainRequest;

use crate::output::Format;

/// Arguments of `weft explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// `NS/POD -> NS/POD:PORT/PROTO` or `NS/POD IP:PORT/PROTO` (the arrow is optional).
    #[arg(required = true, num_args = 2..=3, allow_hyphen_values = true)]
    pub flow: Vec<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Format,
}

/// Splits `DEST:PORT/PROTO` into its parts (`PROTO` defaults to tcp).
fn parse_destination(text: &str) -> Result<(String, u16, String)> {
    let (dest, port_proto) = text.rsplit_once(':').ok_or_else(|| {
        anyhow::anyhow!("destination {text:?}: expected NS/POD:PORT/PROTO or IP:PORT/PROTO")
    })?;
    let (port, proto) = port_proto.split_once('/').unwrap_or((port_proto, "tcp"));
    let port: u16 = port.parse().map_err(|_| {
        anyhow::anyhow!("destination {text:?}: port {port:?} is not a number from 1 to 65535")
    })?;
    Ok((dest.to_string(), port, proto.to_ascii_lowercase()))
}

/// Runs `weft explain`; exit 0 when allowed, 1 when denied or it depends.
pub async fn run(server: &str, args: ExplainArgs) -> Result<ExitCode> {
    let parts: Vec<&String> = args.flow.iter().filter(|p| p.as_str() != "->").collect();
    let [from, to] = parts.as_slice() else {
        bail!("expected `weft explain NS/POD -> NS/POD:PORT/PROTO`");
    };
    let (dest, port, protocol) = parse_destination(to)?;
    let req = ExplainRequest {
        from: from.to_string(),
        to: dest,
        port,
        protocol,
    };
    let explanation = ApiClient::new(server).explain(&req).await?;
    match args.output {
        Format::Table => {
            println!("{} -> {}:{}/{}", req.from, req.to, req.port, req.protocol);
            for s in &explanation.steps {
                println!("  {:<12} {}", s.stage, s.detail);
            }
            println!(
                "verdict: {} — {}",
                explanation.verdict.to_uppercase(),
                explanation.reason
            );
        }
        Format::Json => println!("{}", serde_json::to_string_pretty(&explanation)?),
        Format::Yaml => print!("{}", yaml_serde::to_string(&explanation)?),
    }
    Ok(if explanation.verdict == "allowed" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse() {
        assert_eq!(
            parse_destination("ns-user/web:80/tcp").unwrap(),
            ("ns-user/web".into(), 80, "tcp".into())
        );
        assert_eq!(
            parse_destination("10.96.0.10:53/UDP").unwrap(),
            ("10.96.0.10".into(), 53, "udp".into())
        );
        assert_eq!(
            parse_destination("a/b:81").unwrap(),
            ("a/b".into(), 81, "tcp".into())
        );
        assert!(parse_destination("a/b").is_err());
        assert!(parse_destination("a/b:http/tcp").is_err());
    }
}
