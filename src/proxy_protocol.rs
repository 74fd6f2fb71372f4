//! The PROXY protocol header (versions 1 and 2, as HAProxy's `proxy-protocol.txt` defines
//! them): a load balancer in front of the gateway opens each connection with one header naming
//! the client it relays, so the gateway can judge the client rather than the balancer.
//!
//! This module is sans-IO: [`parse`] takes the bytes received so far and answers
//! [`Parsed::Incomplete`], a complete [`Header`] with the number of bytes it took, or why the
//! bytes are no header ([`Invalid`]). It never allocates and never reads past the header: what
//! follows (a greeting's answer, a TLS ClientHello) belongs to the session. Its bounds:
//!
//! - version 1 is one text line of at most [`V1_MAX`] bytes (107, the spec's worst case: `PROXY
//!   TCP6` with two full IPv6 addresses and ports, and CRLF);
//! - version 2 is a 16-byte fixed part and a length field that could announce up to 65,535
//!   more bytes; the gateway takes at most [`V2_MAX_PAYLOAD`] (the largest address block, 216
//!   bytes for two UNIX paths, and some 1.8 KiB of TLVs: more than balancers send with
//!   ALPN, SNI, unique ids and TLS details) and refuses a longer header before reading it.
//!
//! [`sniff`] answers whether the first bytes of a stream could start a header, for connections
//! from sources that may not send one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The longest version 1 header, CRLF included (spec §2.1).
pub const V1_MAX: usize = 107;
/// The version 2 signature (spec §2.2): it cannot start a valid SMTP or POP3 command and ends
/// in `QUIT\n`, so a server that does not expect it ends the session.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The fixed part of a version 2 header: signature, version and command, family, length.
pub const V2_FIXED: usize = 16;
/// The most the gateway takes after a version 2 header's fixed part (addresses and TLVs).
pub const V2_MAX_PAYLOAD: usize = 2048;
/// The longest header the gateway takes, of either version.
pub const MAX_HEADER: usize = V2_FIXED + V2_MAX_PAYLOAD;

const V1_PREFIX: &[u8] = b"PROXY ";

/// What the bytes received so far amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A header has begun; more bytes are needed.
    Incomplete,
    /// A complete header.
    Header(Header),
    /// No valid header.
    Invalid(Invalid),
}

/// A complete header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// 1 (text) or 2 (binary).
    pub version: u8,
    /// What the sender asks for.
    pub command: Command,
    /// The relayed connection's endpoints, as far as the header names them.
    pub addresses: Addresses,
    /// How many bytes the header takes; the session's bytes start after them.
    pub len: usize,
}

/// A header's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// A relayed client connection (every version 1 header).
    Proxy,
    /// A connection of the balancer's own (a health check): no client is relayed, and the
    /// connection's own endpoints stand (version 2 only).
    Local,
}

/// The endpoints a header names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addresses {
    /// TCP over IPv4 or IPv6: the client (`source`) and the address it connected to.
    Inet {
        /// The client.
        source: SocketAddr,
        /// The address the client connected to (on the balancer).
        destination: SocketAddr,
    },
    /// Version 1 `UNKNOWN` or version 2 `AF_UNSPEC` (or a `LOCAL` header): the sender does
    /// not name the client, and the connection's own endpoints stand.
    Unspecified,
    /// Version 2 `AF_UNIX`: the client is a local socket on the balancer, with no IP address;
    /// the connection's own endpoints stand.
    Unix,
}

/// Why bytes are not a valid header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// The bytes start with neither `PROXY ` nor the version 2 signature.
    #[error("no PROXY protocol header")]
    NotAHeader,
    /// A version 1 line without its CRLF within 107 bytes.
    #[error("PROXY v1 line longer than {V1_MAX} bytes")]
    V1TooLong,
    /// A version 1 line that does not follow the grammar.
    #[error("malformed PROXY v1 line: {0}")]
    V1Malformed(&'static str),
    /// A version 2 header whose version nibble is not 2.
    #[error("PROXY v2 header with version {0}")]
    V2Version(u8),
    /// A version 2 header whose command is neither LOCAL nor PROXY.
    #[error("PROXY v2 header with command {0:#x}")]
    V2Command(u8),
    /// A version 2 header with an undefined family and transport byte, or one that is not TCP.
    #[error("PROXY v2 header with family/transport {0:#04x} (not TCP, UNIX or unspecified)")]
    V2Family(u8),
    /// A version 2 header that announces more than the gateway takes.
    #[error("PROXY v2 header of {0} bytes after its fixed part (at most {V2_MAX_PAYLOAD})")]
    V2TooLong(usize),
    /// A version 2 header too short for its family's addresses.
    #[error("PROXY v2 header too short for its addresses")]
    V2Short,
    /// A version 2 header whose TLVs do not fill its length exactly.
    #[error("PROXY v2 header with malformed TLVs")]
    V2Tlv,
}

/// Whether a stream that starts with `bytes` could open with a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// The bytes start with `PROXY ` or the whole version 2 signature.
    Header,
    /// The bytes so far are a beginning of one of them.
    Maybe,
    /// They start with something else.
    No,
}

/// Whether a stream that starts with `bytes` opens with a PROXY header (see [`Sniff`]).
pub fn sniff(bytes: &[u8]) -> Sniff {
    let mut maybe = false;
    for prefix in [V1_PREFIX, &V2_SIGNATURE[..]] {
        let n = bytes.len().min(prefix.len());
        if bytes[..n] == prefix[..n] {
            if n == prefix.len() {
                return Sniff::Header;
            }
            maybe = true;
        }
    }
    if maybe { Sniff::Maybe } else { Sniff::No }
}

/// Reads a header from the start of `input` (the bytes received so far).
pub fn parse(input: &[u8]) -> Parsed {
    match input.first() {
        None => Parsed::Incomplete,
        Some(b'P') => v1(input),
        Some(b'\r') => v2(input),
        Some(_) => Parsed::Invalid(Invalid::NotAHeader),
    }
}

/// Version 1: `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n` or `PROXY UNKNOWN...\r\n`.
fn v1(input: &[u8]) -> Parsed {
    let n = input.len().min(V1_PREFIX.len());
    if input[..n] != V1_PREFIX[..n] {
        return Parsed::Invalid(Invalid::NotAHeader);
    }
    let window = &input[..input.len().min(V1_MAX)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if input.len() >= V1_MAX {
            Parsed::Invalid(Invalid::V1TooLong)
        } else {
            Parsed::Incomplete
        };
    };
    let Some(line) = window[..lf].strip_suffix(b"\r") else {
        return Parsed::Invalid(Invalid::V1Malformed("the line does not end in CRLF"));
    };
    let len = lf + 1;
    let header = |addresses| {
        Parsed::Header(Header {
            version: 1,
            command: Command::Proxy,
            addresses,
            len,
        })
    };
    let rest = &line[V1_PREFIX.len()..];
    // UNKNOWN: whatever follows up to CRLF is ignored (spec §2.1).
    if rest == b"UNKNOWN" || rest.starts_with(b"UNKNOWN ") {
        return header(Addresses::Unspecified);
    }
    match v1_inet(rest) {
        Ok(addresses) => header(addresses),
        Err(why) => Parsed::Invalid(Invalid::V1Malformed(why)),
    }
}

/// The fields of a version 1 TCP4 or TCP6 line after `PROXY `.
fn v1_inet(rest: &[u8]) -> Result<Addresses, &'static str> {
    let mut fields = rest.split(|&b| b == b' ');
    let mut next = || fields.next().ok_or("too few fields");
    let family = next()?;
    let (src, dst) = (next()?, next()?);
    let (sport, dport) = (next()?, next()?);
    if fields.next().is_some() {
        return Err("too many fields");
    }
    let (src, dst) = match family {
        b"TCP4" => (
            IpAddr::V4(text::<Ipv4Addr>(src).ok_or("a bad IPv4 address")?),
            IpAddr::V4(text::<Ipv4Addr>(dst).ok_or("a bad IPv4 address")?),
        ),
        b"TCP6" => (
            IpAddr::V6(text::<Ipv6Addr>(src).ok_or("a bad IPv6 address")?),
            IpAddr::V6(text::<Ipv6Addr>(dst).ok_or("a bad IPv6 address")?),
        ),
        _ => return Err("the protocol is not TCP4, TCP6 or UNKNOWN"),
    };
    Ok(Addresses::Inet {
        source: SocketAddr::new(src, port(sport).ok_or("a bad port")?),
        destination: SocketAddr::new(dst, port(dport).ok_or("a bad port")?),
    })
}

/// Parses ASCII text with `FromStr`.
fn text<T: std::str::FromStr>(bytes: &[u8]) -> Option<T> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// A decimal port, 0 to 65535, without sign or leading zeros.
fn port(bytes: &[u8]) -> Option<u16> {
    let digits = !bytes.is_empty() && bytes.len() <= 5 && bytes.iter().all(u8::is_ascii_digit);
    if !digits || (bytes.len() > 1 && bytes[0] == b'0') {
        return None;
    }
    text(bytes)
}

/// Version 2: the signature, version and command, family and transport, length, addresses and
/// TLVs (spec §2.2).
fn v2(input: &[u8]) -> Parsed {
    let n = input.len().min(V2_SIGNATURE.len());
    if input[..n] != V2_SIGNATURE[..n] {
        return Parsed::Invalid(Invalid::NotAHeader);
    }
    if input.len() < V2_FIXED {
        return Parsed::Incomplete;
    }
    let (ver_cmd, family) = (input[12], input[13]);
    if ver_cmd >> 4 != 2 {
        return Parsed::Invalid(Invalid::V2Version(ver_cmd >> 4));
    }
    let command = match ver_cmd & 0x0f {
        0 => Command::Local,
        1 => Command::Proxy,
        other => return Parsed::Invalid(Invalid::V2Command(other)),
    };
    let payload_len = usize::from(u16::from_be_bytes([input[14], input[15]]));
    if payload_len > V2_MAX_PAYLOAD {
        return Parsed::Invalid(Invalid::V2TooLong(payload_len));
    }
    let len = V2_FIXED + payload_len;
    if input.len() < len {
        return Parsed::Incomplete;
    }
    let payload = &input[V2_FIXED..len];
    // The family is checked even for LOCAL, whose addresses are then ignored (spec §2.2:
    // undefined values are rejected).
    let block = match family {
        0x00 => 0,
        0x11 => 12,
        0x21 => 36,
        0x31 => 216,
        other => return Parsed::Invalid(Invalid::V2Family(other)),
    };
    let Some((block_bytes, tlvs)) = payload.split_at_checked(block) else {
        return Parsed::Invalid(Invalid::V2Short);
    };
    if !tlvs_fit(tlvs) {
        return Parsed::Invalid(Invalid::V2Tlv);
    }
    let addresses = match (command, family) {
        (Command::Local, _) | (_, 0x00) => Addresses::Unspecified,
        (_, 0x31) => Addresses::Unix,
        (_, 0x11) => {
            let ip = |at: usize| {
                let octets: [u8; 4] = block_bytes[at..at + 4].try_into().unwrap_or_default();
                IpAddr::V4(Ipv4Addr::from(octets))
            };
            inet(ip(0), ip(4), &block_bytes[8..12])
        }
        _ => {
            let ip = |at: usize| {
                let octets: [u8; 16] = block_bytes[at..at + 16].try_into().unwrap_or_default();
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            inet(ip(0), ip(16), &block_bytes[32..36])
        }
    };
    Parsed::Header(Header {
        version: 2,
        command,
        addresses,
        len,
    })
}

/// The endpoints of an INET or INET6 block, whose ports are the last four bytes.
fn inet(src: IpAddr, dst: IpAddr, ports: &[u8]) -> Addresses {
    let port = |at: usize| u16::from_be_bytes([ports[at], ports[at + 1]]);
    Addresses::Inet {
        source: SocketAddr::new(src, port(0)),
        destination: SocketAddr::new(dst, port(2)),
    }
}

/// Whether `tlvs` is a sequence of type-length-value records that ends exactly at its end.
/// Their contents are not used: none changes how a mail session is judged.
fn tlvs_fit(mut tlvs: &[u8]) -> bool {
    while !tlvs.is_empty() {
        let [_, hi, lo, ref rest @ ..] = *tlvs else {
            return false;
        };
        let Some(after) = rest.get(usize::from(u16::from_be_bytes([hi, lo]))..) else {
            return false;
        };
        tlvs = after;
    }
    true
}

#[cfg(test)]
mod tests;
