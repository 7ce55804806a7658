//! The pods' workload: a TCP and UDP echo server (`weft lab echo`, run by the lab inside
//! each pod namespace), and the probe that talks to it from another pod's namespace.

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest time an echo connection may stay idle.
const ECHO_IDLE: Duration = Duration::from_secs(10);

/// Transport protocol of a probe or echo port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// `PORT/PROTO`, e.g. `80/tcp`; a bare port means TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct PortProto {
    /// Port.
    pub port: u16,
    /// Protocol.
    pub proto: Proto,
}

impl FromStr for PortProto {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("expected PORT/PROTO like 80/tcp, found {s:?} (port 1-65535)"))?;
        let proto = match proto.to_ascii_lowercase().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            other => {
                return Err(format!(
                    "protocol {other:?} is not supported: expected tcp or udp"
                ));
            }
        };
        Ok(PortProto { port, proto })
    }
}

impl fmt::Display for PortProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        write!(f, "{}/{p}", self.port)
    }
}

/// The request that makes the echo server answer with who it is instead of echoing
/// (a line of its own: one datagram, or one write on a TCP connection).
pub const WHOAMI: &[u8] = b"weft-whoami\n";

/// What the server sends back for `data`: its tag line for [`WHOAMI`] (when it has a
/// tag), else `data` itself.
fn answer<'a>(data: &'a [u8], tag: Option<&'a [u8]>) -> &'a [u8] {
    match tag {
        Some(tag) if data == WHOAMI => tag,
        _ => data,
    }
}

/// Serves TCP echo on `tcp` ports and UDP echo on `udp` ports (all addresses), writes
/// `ready_file` once every socket is bound, and runs until killed.
pub async fn serve(tcp: &[u16], udp: &[u16], ready_file: Option<&Path>) -> Result<()> {
    serve_as(None, tcp, udp, ready_file).await
}

/// [`serve`], answering [`WHOAMI`] with `tag` and a newline (the lab passes the pod's
/// `namespace/name`, so a probe through a service sees which backend answered).
pub async fn serve_as(tag: Option<&str>, tcp: &[u16], udp: &[u16], ready_file: Option<&Path>) -> Result<()> {
    let tag: Option<std::sync::Arc<[u8]>> = tag.map(|t| format!("{t}\n").into_bytes().into());
    let mut tasks = tokio::task::JoinSet::new();
    for port in tcp {
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", *port))
            .await
            .with_context(|| format!("binding TCP port {port}"))?;
        let tag = tag.clone();
        tasks.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(echo_tcp(stream, tag.clone()));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
    }
    for port in udp {
        let socket = tokio::net::UdpSocket::bind(("0.0.0.0", *port))
            .await
            .with_context(|| format!("binding UDP port {port}"))?;
        let tag = tag.clone();
        tasks.spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                if let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                    let _ = socket.send_to(answer(&buf[..n], tag.as_deref()), peer).await;
                }
            }
        });
    }
    if let Some(path) = ready_file {
        std::fs::write(path, std::process::id().to_string())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!("echo: serving tcp {tcp:?} udp {udp:?}");
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Reads and writes back until the peer closes (or stays idle too long), then closes.
async fn echo_tcp(mut stream: tokio::net::TcpStream, tag: Option<std::sync::Arc<[u8]>>) {
    let mut buf = vec![0u8; 16384];
    loop {
        match tokio::time::timeout(ECHO_IDLE, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                if stream.write_all(answer(&buf[..n], tag.as_deref())).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = stream.shutdown().await;
}

/// How a probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// Connected and the token came back.
    Connected,
    /// The destination answered with a refusal (TCP RST or ICMP port unreachable).
    Refused,
    /// An ICMP unreachable (host, network, or administratively prohibited), or no route.
    Unreachable,
    /// No answer within the bound.
    Timeout,
    /// Anything else (wrong echo, local error).
    Error,
}

/// Result of one probe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeOutcome {
    /// How it ended.
    pub kind: ProbeKind,
    /// One line of detail.
    pub detail: String,
    /// Time taken.
    pub millis: f64,
}

impl ProbeOutcome {
    /// True when the connection worked end to end.
    pub fn ok(&self) -> bool {
        self.kind == ProbeKind::Connected
    }
}

fn classify(e: &std::io::Error) -> ProbeKind {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused | K::ConnectionReset => ProbeKind::Refused,
        K::TimedOut | K::WouldBlock => ProbeKind::Timeout,
        K::HostUnreachable | K::NetworkUnreachable | K::PermissionDenied => ProbeKind::Unreachable,
        _ => ProbeKind::Error,
    }
}

static TOKEN: AtomicU64 = AtomicU64::new(0);

fn token() -> Vec<u8> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "weft-probe {} {} {nanos}\n",
        std::process::id(),
        TOKEN.fetch_add(1, Ordering::Relaxed)
    )
    .into_bytes()
}

/// Probes `target` from the calling thread's namespace (blocking, bounded by `timeout`
/// per step).
pub fn probe_here(target: SocketAddr, proto: Proto, timeout: Duration) -> ProbeOutcome {
    let start = Instant::now();
    let (kind, detail) = match proto {
        Proto::Tcp => probe_tcp(target, timeout),
        Proto::Udp => probe_udp(target, timeout),
    };
    ProbeOutcome {
        kind,
        detail,
        millis: start.elapsed().as_secs_f64() * 1000.0,
    }
}

fn probe_tcp(target: SocketAddr, timeout: Duration) -> (ProbeKind, String) {
    let mut stream = match TcpStream::connect_timeout(&target, timeout) {
        Ok(s) => s,
        Err(e) => {
            let kind = classify(&e);
            let what = match kind {
                ProbeKind::Refused => "connection refused".to_string(),
                ProbeKind::Timeout => format!("no answer to the connect within {timeout:?}"),
                ProbeKind::Unreachable => format!("unreachable: {e}"),
                _ => format!("connect failed: {e}"),
            };
            return (kind, what);
        }
    };
    let token = token();
    let exchange = || -> std::io::Result<Vec<u8>> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.write_all(&token)?;
        stream.shutdown(std::net::Shutdown::Write)?;
        let mut back = Vec::new();
        stream.take(64 * 1024).read_to_end(&mut back)?;
        Ok(back)
    };
    match exchange() {
        Ok(back) if back == token => (ProbeKind::Connected, "connected, echo ok".to_string()),
        Ok(back) => (
            ProbeKind::Error,
            format!(
                "connected, but the echo differs ({} bytes back, {} sent)",
                back.len(),
                token.len()
            ),
        ),
        Err(e) => (classify(&e), format!("connected, but no echo: {e}")),
    }
}

fn probe_udp(target: SocketAddr, timeout: Duration) -> (ProbeKind, String) {
    let exchange = || -> std::io::Result<(Vec<u8>, Vec<u8>)> {
        let socket = UdpSocket::bind(("0.0.0.0", 0))?;
        socket.connect(target)?;
        socket.set_read_timeout(Some(timeout))?;
        let token = token();
        socket.send(&token)?;
        let mut buf = vec![0u8; 2048];
        let n = socket.recv(&mut buf)?;
        buf.truncate(n);
        Ok((token, buf))
    };
    match exchange() {
        Ok((sent, back)) if sent == back => (ProbeKind::Connected, "datagram echoed".to_string()),
        Ok(_) => (
            ProbeKind::Error,
            "a datagram came back, but not the one sent".to_string(),
        ),
        Err(e) => {
            let kind = classify(&e);
            let what = match kind {
                ProbeKind::Refused => "port unreachable (ICMP)".to_string(),
                ProbeKind::Timeout => format!("no echo within {timeout:?}"),
                ProbeKind::Unreachable => format!("unreachable: {e}"),
                _ => format!("failed: {e}"),
            };
            (kind, what)
        }
    }
}

/// Probes from inside the named network namespace (on a dedicated thread; the caller's
/// namespace is untouched).
pub fn probe_from_netns(netns: &str, target: SocketAddr, proto: Proto, timeout: Duration) -> ProbeOutcome {
    let path = PathBuf::from(crate::names::NETNS_DIR).join(netns);
    match weft_cni::run_in_netns(&path, || probe_here(target, proto, timeout)) {
        Ok(o) => o,
        Err(e) => ProbeOutcome {
            kind: ProbeKind::Error,
            detail: e.to_string(),
            millis: 0.0,
        },
    }
}

/// Asks the echo server at `target` who it is ([`WHOAMI`]) from the calling thread's
/// namespace, on a new TCP connection or one datagram; its tag, or how the attempt
/// ended.
pub fn whoami_here(target: SocketAddr, proto: Proto, timeout: Duration) -> Result<String, ProbeOutcome> {
    let start = Instant::now();
    let fail = |e: std::io::Error| ProbeOutcome {
        kind: classify(&e),
        detail: e.to_string(),
        millis: start.elapsed().as_secs_f64() * 1000.0,
    };
    match proto {
        Proto::Tcp => {
            let mut stream = TcpStream::connect_timeout(&target, timeout).map_err(fail)?;
            whoami_on(&mut stream, timeout).map_err(fail)
        }
        Proto::Udp => {
            let exchange = || -> std::io::Result<String> {
                let socket = UdpSocket::bind(("0.0.0.0", 0))?;
                socket.connect(target)?;
                socket.set_read_timeout(Some(timeout))?;
                socket.send(WHOAMI)?;
                let mut buf = vec![0u8; 2048];
                let n = socket.recv(&mut buf)?;
                Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
            };
            exchange().map_err(fail)
        }
    }
}

/// Asks [`WHOAMI`] on an open connection (which stays open): the tag line.
pub fn whoami_on(stream: &mut TcpStream, timeout: Duration) -> std::io::Result<String> {
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(WHOAMI)?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 512 {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before the answer",
            ));
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// [`whoami_here`] from inside the named network namespace (on a dedicated thread).
pub fn whoami_from_netns(
    netns: &str,
    target: SocketAddr,
    proto: Proto,
    timeout: Duration,
) -> Result<String, ProbeOutcome> {
    let path = PathBuf::from(crate::names::NETNS_DIR).join(netns);
    match weft_cni::run_in_netns(&path, || whoami_here(target, proto, timeout)) {
        Ok(r) => r,
        Err(e) => Err(ProbeOutcome {
            kind: ProbeKind::Error,
            detail: e.to_string(),
            millis: 0.0,
        }),
    }
}

/// Opens a TCP connection from inside the named network namespace; the socket stays in
/// that namespace whatever thread uses it later (for long-lived connection tests).
pub fn connect_from_netns(netns: &str, target: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    let path = PathBuf::from(crate::names::NETNS_DIR).join(netns);
    weft_cni::run_in_netns(&path, || TcpStream::connect_timeout(&target, timeout))
        .with_context(|| format!("entering {netns}"))?
        .with_context(|| format!("connecting to {target} from {netns}"))
}

/// Parses the `--tcp`/`--udp` lists of `weft lab echo`, refusing an empty set.
pub fn check_ports(tcp: &[u16], udp: &[u16]) -> Result<()> {
    if tcp.is_empty() && udp.is_empty() {
        bail!("nothing to serve: give --tcp PORT and/or --udp PORT");
    }
    if tcp.iter().chain(udp).any(|p| *p == 0) {
        bail!("port 0 is not a port to serve on");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_proto_parses() {
        assert_eq!(
            "80/tcp".parse::<PortProto>().unwrap(),
            PortProto {
                port: 80,
                proto: Proto::Tcp
            }
        );
        assert_eq!("53/UDP".parse::<PortProto>().unwrap().proto, Proto::Udp);
        assert_eq!("8080".parse::<PortProto>().unwrap().port, 8080);
        assert!("0/tcp".parse::<PortProto>().is_err());
        assert!("80/sctp".parse::<PortProto>().is_err());
        assert!("x/tcp".parse::<PortProto>().is_err());
        assert_eq!("80/udp".parse::<PortProto>().unwrap().to_string(), "80/udp");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn echo_and_probe_on_loopback() {
        // Pick free ports, then serve on them.
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tport = tcp.local_addr().unwrap().port();
        drop(tcp);
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let uport = udp.local_addr().unwrap().port();
        drop(udp);
        let server = tokio::spawn(async move { serve(&[tport], &[uport], None).await });
        let t = Duration::from_secs(1);
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let mut ok = false;
        for _ in 0..50 {
            let out = tokio::task::spawn_blocking(move || probe_here(addr(tport), Proto::Tcp, t))
                .await
                .unwrap();
            if out.ok() {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ok, "tcp echo answered");
        let out = tokio::task::spawn_blocking(move || probe_here(addr(uport), Proto::Udp, t))
            .await
            .unwrap();
        assert!(out.ok(), "{out:?}");
        server.abort();
        // Nothing listens any more: refused.
        let _ = server.await;
        let out = tokio::task::spawn_blocking(move || probe_here(addr(tport), Proto::Tcp, t))
            .await
            .unwrap();
        assert_eq!(out.kind, ProbeKind::Refused, "{out:?}");

        // With a tag (on fresh ports): who-am-I on both protocols, plain echo otherwise.
        let (tport, uport) = {
            let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            (t.local_addr().unwrap().port(), u.local_addr().unwrap().port())
        };
        let server = tokio::spawn(async move { serve_as(Some("ns/pod"), &[tport], &[uport], None).await });
        let mut who = None;
        for _ in 0..100 {
            if let Ok(w) = tokio::task::spawn_blocking(move || whoami_here(addr(tport), Proto::Tcp, t))
                .await
                .unwrap()
            {
                who = Some(w);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(who.as_deref(), Some("ns/pod"));
        let udp_who = tokio::task::spawn_blocking(move || whoami_here(addr(uport), Proto::Udp, t))
            .await
            .unwrap();
        assert_eq!(udp_who.as_deref().ok(), Some("ns/pod"));
        let out = tokio::task::spawn_blocking(move || probe_here(addr(tport), Proto::Tcp, t))
            .await
            .unwrap();
        assert!(out.ok(), "{out:?}");
        server.abort();
        assert!(check_ports(&[], &[]).is_err());
    }
}
