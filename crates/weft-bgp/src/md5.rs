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
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

/// The longest key Linux accepts (`TCP_MD5SIG_MAXKEYLEN`).
pub const MAX_KEY_LEN: usize = 80;

/// `struct tcp_md5sig` from `<linux/tcp.h>` (216 bytes).
#[repr(C)]
struct TcpMd5Sig {
    /// The peer's address (`struct __kernel_sockaddr_storage`, 128 bytes, 8-aligned).
    addr: libc::sockaddr_storage,
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
        addr: sockaddr_storage(SocketAddr::new(peer, 0)),
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

/// `addr` as a zero-padded `sockaddr_storage` (port 0: the kernel ignores it).
fn sockaddr_storage(addr: SocketAddr) -> libc::sockaddr_storage {
    // Built field by field in safe code: start from a zeroed storage by value.
    let mut storage = zeroed_storage();
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            write_prefix(&mut storage, &sin);
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            write_prefix(&mut storage, &sin6);
        }
    }
    storage
}

fn zeroed_storage() -> libc::sockaddr_storage {
    #[allow(unsafe_code, reason = "sockaddr_storage has private padding fields")]
    // SAFETY: sockaddr_storage is a C struct of integers and byte arrays; all-zero bytes
    // are a valid value of it.
    unsafe {
        std::mem::zeroed()
    }
}

/// Copies a `sockaddr_in`/`sockaddr_in6` into the front of `storage`.
fn write_prefix<T>(storage: &mut libc::sockaddr_storage, value: &T) {
    const { assert!(std::mem::size_of::<T>() <= std::mem::size_of::<libc::sockaddr_storage>()) };
    #[allow(
        unsafe_code,
        reason = "reinterpreting a sockaddr as the front of sockaddr_storage"
    )]
    // SAFETY: T is sockaddr_in or sockaddr_in6 (plain C structs), no larger than
    // sockaddr_storage (checked above), which is designed to hold any of them; the regions
    // do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            std::ptr::from_ref(value).cast::<u8>(),
            std::ptr::from_mut(storage).cast::<u8>(),
            std::mem::size_of::<T>(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_struct_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<TcpMd5Sig>(), 216);
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
