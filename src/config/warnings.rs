//! Settings that are valid but risky: open relays, cleartext passwords across networks,
//! self-signed certificates on public addresses, timeouts below what RFC 5321 §4.5.3.2 and
//! RFC 1939 §3 ask for, the POP-before-SMTP NAT hazard, and PROXY protocol sources wider than
//! a few balancers. The gateway logs each at start.

use std::time::Duration;

use ipnet::IpNet;

use super::{Config, UpstreamTls};

/// Valid but risky settings; see [`Config::warnings`].
pub(super) fn warnings(c: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for net in &c.auth.insecure_plaintext_networks {
        if !is_private(net) {
            out.push(format!(
                "auth.insecure_plaintext_networks: {net} is not a private or loopback range; \
                 passwords from there cross networks you do not control in the clear"
            ));
        }
    }
    for net in &c.relay.trusted_networks {
        let wide = match net {
            IpNet::V4(n) => n.prefix_len() < 8,
            IpNet::V6(n) => n.prefix_len() < 32,
        };
        if wide {
            out.push(format!(
                "relay.trusted_networks: {net} is wider than a /8 (IPv6: /32); \
                 everyone in it may relay without logging in"
            ));
        }
    }
    for net in &c.listeners.proxy_protocol_from {
        let wide = match net {
            IpNet::V4(n) => n.prefix_len() < 24,
            IpNet::V6(n) => n.prefix_len() < 64,
        };
        if wide {
            out.push(format!(
                "listeners.proxy_protocol_from: {net} is wider than a /24 (IPv6: /64); every \
                 host in it may claim to be any client (list the load balancers themselves)"
            ));
        }
    }
    if let Some(addr) = c.listeners.admin
        && !crate::canonical_ip(addr.ip()).is_loopback()
        && !c.admin_tls
    {
        out.push(format!(
            "listeners.admin: {addr} is not loopback and [admin] tls is off; the bearer token \
             and the report cross the network in the clear (set [admin] tls = true)"
        ));
    }
    if c.tls.cert.is_none() {
        let l = &c.listeners;
        let public = [&l.pop3, &l.pop3s, &l.smtp, &l.submission, &l.submissions]
            .into_iter()
            .flatten()
            .find(|a| !a.ip().is_loopback());
        if let Some(addr) = public {
            out.push(format!(
                "listeners: {addr} is not loopback but [tls] has no cert and key; clients \
                 will be shown a self-signed certificate, which trains users to click through"
            ));
        }
    }
    old_server(c, &mut out);
    let p = &c.pop_before_smtp;
    if p.enabled && p.listeners.is_empty() {
        out.push("pop_before_smtp.listeners is empty, so enabled = true has no effect".into());
    }
    if p.enabled && p.ttl > Duration::from_secs(2 * 3600) {
        out.push(format!(
            "pop_before_smtp.ttl is {}; behind a NAT every user of the address may relay \
             for that long after one login",
            humantime::format_duration(p.ttl)
        ));
    }
    if let Some(u) = &c.delivery.upstream {
        if u.danger_accept_invalid_certs {
            out.push(format!(
                "delivery.upstream.danger_accept_invalid_certs: the certificate of {} is not \
                 checked; anyone on the path can read and change relayed mail",
                u.address
            ));
        }
        if u.tls == UpstreamTls::None && u.password.is_some() {
            out.push(
                "delivery.upstream: tls = \"none\" sends the upstream password in the clear".into(),
            );
        }
        if u.tls == UpstreamTls::None && u.oauth.is_some() {
            out.push(
                "delivery.upstream: tls = \"none\" sends the OAuth access token in the clear"
                    .into(),
            );
        }
        if u.oauth
            .as_ref()
            .is_some_and(|o| o.danger_accept_invalid_certs)
        {
            out.push(
                "delivery.upstream.oauth.danger_accept_invalid_certs: the token endpoint's \
                 certificate is not checked"
                    .into(),
            );
        }
    }
    if c.auth.oauth.as_ref().is_some_and(|o| {
        o.introspection
            .as_ref()
            .is_some_and(|i| i.danger_accept_invalid_certs)
    }) {
        out.push(
            "auth.oauth.danger_accept_invalid_certs: the introspection endpoint's certificate is \
             not checked"
                .into(),
        );
    }
    if c.auth.ntlm_v1 {
        out.push(
            "auth.ntlm_v1 = true: NTLMv1 responses reveal the NT hash to modest brute force; \
             enable only for clients that cannot do NTLMv2"
                .into(),
        );
    }
    let lim = &c.limits;
    if lim.smtp_idle_timeout < Duration::from_secs(5 * 60) {
        out.push("limits.smtp_idle_timeout is under 5m (RFC 5321 §4.5.3.2.7 SHOULD)".into());
    }
    if lim.pop3_idle_timeout < Duration::from_secs(10 * 60) {
        out.push("limits.pop3_idle_timeout is under 10m (RFC 1939 §3 MUST)".into());
    }
    if lim.max_recipients < 100 {
        out.push("limits.max_recipients is under 100 (RFC 5321 §4.5.3.1.8 MUST)".into());
    }
    if lim.max_connections_per_ip > lim.max_connections {
        out.push("limits.max_connections_per_ip exceeds limits.max_connections".into());
    }
    if lim.max_connections_per_ip > lim.max_connections_per_network {
        out.push("limits.max_connections_per_ip exceeds limits.max_connections_per_network".into());
    }
    if c.relay.local_domains.is_empty() && !c.listeners.smtp.is_empty() {
        out.push("relay.local_domains is empty: the smtp listener accepts no inbound mail".into());
    }
    out
}

/// Whether `net` lies inside loopback, RFC 1918, link-local or IPv6 unique-local space.
fn is_private(net: &IpNet) -> bool {
    const PRIVATE: &[&str] = &[
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    ];
    PRIVATE
        .iter()
        .filter_map(|p| p.parse::<IpNet>().ok())
        .any(|p| p.contains(net))
}

/// `[auth.upstream]` and `[pop3.proxy]`: what the old server cannot do for mailgate, and
/// passwords sent to it in clear.
fn old_server(c: &Config, out: &mut Vec<String>) {
    if let Some(up) = &c.auth.upstream {
        let challenge: Vec<&str> = c
            .auth
            .mechanisms
            .iter()
            .map(String::as_str)
            .filter(|m| m.starts_with("CRAM-") || m.starts_with("SCRAM-") || *m == "NTLM")
            .chain(c.auth.apop.then_some("APOP"))
            .collect();
        if !challenge.is_empty() {
            out.push(format!(
                "auth.upstream: {} never carry the password, so they cannot be checked against \
                 the old server; they fail for users with no stored forms here{}",
                challenge.join(", "),
                if up.capture {
                    " until their first cleartext login is captured"
                } else {
                    " (set capture = true to store the forms at each user's first login)"
                }
            ));
        }
        if let Some(server) = up.server()
            && server.tls == UpstreamTls::None
            && !server.address.ip().is_loopback()
        {
            out.push(format!(
                "auth.upstream: tls = \"none\" sends every password checked there to {} in \
                 the clear",
                server.address
            ));
        }
    }
    if let Some(p) = &c.pop3_proxy
        && p.server.tls == UpstreamTls::None
        && !p.server.address.ip().is_loopback()
    {
        out.push(format!(
            "pop3.proxy: tls = \"none\" sends passwords and mail to {} in the clear",
            p.server.address
        ));
    }
}
