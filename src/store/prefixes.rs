//! The prefix lengths of the networks an allowlist holds, so that finding the entry that
//! covers an address costs one map lookup per length in use, not a walk of every entry.
//!
//! Logins store one length (an IPv4 address, an IPv6 network at `ipv6_prefix`); an admin may
//! add any network (`10.1.2.0/24`, an IPv6 host as `/128`). Lengths are only ever added: a
//! length whose last entry is gone costs one map miss per lookup until the next start, which
//! is cheaper than counting entries per length on every change.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use ipnet::IpNet;

/// A set of (family, prefix length) pairs, lock-free: bit `n` of `v4` is IPv4 `/n`, bit `n`
/// of `v6[n / 64]` is IPv6 `/n`.
#[derive(Debug, Default)]
pub struct PrefixSet {
    v4: AtomicU64,
    v6: [AtomicU64; 3],
}

impl PrefixSet {
    /// Records the length of `net`.
    pub fn add(&self, net: IpNet) {
        let len = usize::from(net.prefix_len());
        match net {
            IpNet::V4(_) => self.v4.fetch_or(1 << len, Ordering::Relaxed),
            IpNet::V6(_) => self.v6[len / 64].fetch_or(1 << (len % 64), Ordering::Relaxed),
        };
    }

    /// The networks of `ip` at every recorded length of its family, narrowest first, except
    /// `skip` (the one the caller has looked up already).
    pub fn covering(&self, ip: IpAddr, skip: IpNet) -> impl Iterator<Item = IpNet> + use<> {
        let (max, words): (u8, Vec<u64>) = match ip {
            IpAddr::V4(_) => (32, vec![self.v4.load(Ordering::Relaxed)]),
            IpAddr::V6(_) => (
                128,
                self.v6.iter().map(|w| w.load(Ordering::Relaxed)).collect(),
            ),
        };
        (0..=max)
            .rev()
            .filter(move |&len| {
                let len = usize::from(len);
                words
                    .get(len / 64)
                    .is_some_and(|w| w & (1 << (len % 64)) != 0)
            })
            .filter_map(move |len| IpNet::new(ip, len).ok().map(|n| n.trunc()))
            .filter(move |net| *net != skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covering_lists_recorded_lengths_narrowest_first() {
        let set = PrefixSet::default();
        for net in [
            "10.1.2.3/32",
            "10.0.0.0/16",
            "2001:db8::/64",
            "2001:db8::1/128",
            "::/0",
        ] {
            set.add(net.parse().unwrap());
        }
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let skip: IpNet = "10.1.2.3/32".parse().unwrap();
        let nets: Vec<String> = set.covering(ip, skip).map(|n| n.to_string()).collect();
        assert_eq!(nets, ["10.1.0.0/16"]);
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let skip: IpNet = "2001:db8::/64".parse().unwrap();
        let nets: Vec<String> = set.covering(ip, skip).map(|n| n.to_string()).collect();
        assert_eq!(nets, ["2001:db8::1/128", "::/0"]);
    }
}
