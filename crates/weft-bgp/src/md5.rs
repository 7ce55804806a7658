//! TCP MD5 signatures (RFC 2385) for peers configured with a password.
//!
//! Linux signs and checks the segments itself once a key is installed on a socket with
//! `setsockopt(TCP_MD5SIG)`, keyed by the remote address: on the listening socket (one key
//! per peer address, inherited by accepted connections) and on each outgoing socket before
//! `connect`. A segment without the right signature is dropped by the kernel, so a peer
//! with a wrong or missing password never gets past the TCP handshake; there is nothing
//! for the BGP layer to check.
//!
//! This module holds the crate's only `unsafe` code: the `setsockopt` call, with the
//! kernel's `struct tcp_md5sig` laid out here because the `libc` crate does not define it.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

/// The longest key Linux accepts.
pub const MAX_KEY_LEN: usize = libc::TCP_MD5SIG_MAXKEYLEN;

/// `struct tcp_md5sig` from `<linux/tcp.h>` (216 bytes).
#[repr(C)]
struct TcpMd5Sig {
    /// The peer's address.
    addr: SockaddrStorage,
    /// `TCP_MD5SIG_FLAG_*`; 0: match `addr` exactly, any interface.
    flags: u8,
    /// Prefix length (only with `TCP_MD5SIG_FLAG_PREFIX`).
    prefixlen: u8,
    /// Key length; 0 deletes the key for `addr`.
    keylen: u16,
    /// Interface index (only with `TCP_MD5SIG_FLAG_IFINDEX`).
    ifindex: libc::c_int,
    /// The key.
    key: [u8; MAX_KEY_LEN],
}

/// Checks a configured password: 1 to 80 bytes (the kernel's limit).
pub fn validate(password: &str) -> Result<(), String> {
    if password.is_empty() || password.len() > MAX_KEY_LEN {
        return Err(format!(
            "password must be 1 to {MAX_KEY_LEN} bytes long (TCP MD5, RFC 2385), got {}",
            password.len()
        ));
    }
    Ok(())
}

/// Installs (`Some(password)`) or removes (`None`) the MD5 key for `peer` on `socket`.
///
/// `ipv6_socket` says the socket is AF_INET6: an IPv4 peer is then keyed by its
/// IPv4-mapped address, which is how such a socket sees it.
pub fn set_key(
    socket: &impl AsRawFd,
    ipv6_socket: bool,
    peer: IpAddr,
    password: Option<&str>,
) -> io::Result<()> {
    let key = password.unwrap_or("").as_bytes();
    if key.len() > MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TCP MD5 key longer than {MAX_KEY_LEN} bytes"),
        ));
    }
    let peer = match (peer, ipv6_socket) {
        (IpAddr::V4(a), true) => IpAddr::V6(a.to_ipv6_mapped()),
        (a, _) => a,
    };
    let mut sig = TcpMd5Sig {
        addr: SockaddrStorage::new(peer),
        flags: 0,
        prefixlen: 0,
        keylen: key.len() as u16,
        ifindex: 0,
        key: [0; MAX_KEY_LEN],
    };
    sig.key[..key.len()].copy_from_slice(key);
    #[allow(unsafe_code, reason = "setsockopt has no safe wrapper for TCP_MD5SIG")]
    // SAFETY: `sig` is a live, properly aligned `struct tcp_md5sig` and the length passed is
    // exactly its size; the kernel only reads it for the duration of the call. An invalid
    // fd or option value is reported through the return value, not undefined behaviour.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            (&raw const sig).cast::<libc::c_void>(),
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `struct __kernel_sockaddr_storage`: 128 bytes, 8-aligned. Filled byte by byte in safe
/// code with a `sockaddr_in` / `sockaddr_in6` (port, flow info and scope id 0: the kernel
/// matches keys on the family and the address only).
#[repr(C, align(8))]
struct SockaddrStorage([u8; 128]);

impl SockaddrStorage {
    fn new(addr: IpAddr) -> Self {
        let mut s = [0u8; 128];
        match addr {
            IpAddr::V4(a) => {
                s[..2].copy_from_slice(&(libc::AF_INET as libc::sa_family_t).to_ne_bytes());
                // sin_port (2..4), then sin_addr.
                s[4..8].copy_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                s[..2].copy_from_slice(&(libc::AF_INET6 as libc::sa_family_t).to_ne_bytes());
                // sin6_port (2..4), sin6_flowinfo (4..8), then sin6_addr.
                s[8..24].copy_from_slice(&a.octets());
            }
        }
        Self(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_struct_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<TcpMd5Sig>(), 216);
        assert_eq!(std::mem::align_of::<TcpMd5Sig>(), 8);
    }

    #[test]
    fn an_ipv6_socket_takes_ipv4_peers_mapped_and_ipv6_peers() {
        // The kernel checks the address family against the socket's: a wrong family or
        // layout is refused (EINVAL).
        let Ok(l) = std::net::TcpListener::bind("[::1]:0") else {
            return; // no IPv6 on this host
        };
        for peer in ["127.0.0.9", "2001:db8::9"] {
            let peer: IpAddr = peer.parse().unwrap();
            set_key(&l, true, peer, Some("s3cret")).unwrap();
            set_key(&l, true, peer, None).unwrap();
        }
        // An IPv4 address on an IPv6 socket without the mapping is refused.
        let peer: IpAddr = "127.0.0.9".parse().unwrap();
        assert!(set_key(&l, false, peer, Some("s3cret")).is_err());
    }

    #[test]
    fn passwords_are_checked_for_length() {
        assert!(validate("").is_err());
        assert!(validate(&"x".repeat(81)).is_err());
        assert!(validate("s3cret").is_ok());
    }

    #[test]
    fn a_key_can_be_set_and_removed_on_a_tcp_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer: IpAddr = "127.0.0.9".parse().unwrap();
        set_key(&l, false, peer, Some("s3cret")).unwrap();
        set_key(&l, false, peer, None).unwrap();
        // A UDP socket has no TCP options: the kernel refuses, and we report it.
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(set_key(&u, false, peer, Some("s3cret")).is_err());
    }
}
