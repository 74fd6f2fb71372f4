//! The session's audit events: what every SMTP and POP3 event carries (protocol, listener,
//! session id, client address and port, TLS, what the client called itself, the client
//! certificate on authentication events, and the fact the
//! core recorded), built once here; the protocols add only their own fields (SMTP: the queue
//! id, recipients and client software of an accepted message).

use crate::audit::{Event, Record};
use crate::gateway::Gateway;

/// Who an event is about: the session as its protocol describes it.
pub struct Who<'a> {
    /// `smtp` or `pop3`.
    pub protocol: &'static str,
    /// The listener role (`smtp`, `submission`, `pop3s`, ...).
    pub listener: &'a str,
    /// The session id.
    pub session: &'a str,
    /// The client's address.
    pub peer: std::net::SocketAddr,
    /// The TLS version and cipher, if any.
    pub tls: Option<&'a str>,
    /// What the client called itself (EHLO name, POP3 client hint).
    pub client_name: Option<String>,
    /// The TLS client certificate from the `[auth.external]` CA, if the session presented one.
    pub client_cert: Option<&'a crate::sasl::ClientCertificate>,
}

/// The event for `record` in the session `who`, stamped now.
pub fn event(shared: &Gateway, who: Who<'_>, record: &Record) -> Event {
    let now = shared.clock.now();
    let mut e = Event::new(
        record.kind,
        who.protocol,
        crate::audit::event::rfc3339(now),
        record.outcome,
    );
    e.listener = Some(who.listener.to_string());
    e.session = Some(who.session.to_string());
    e.client_ip = Some(crate::canonical_ip(who.peer.ip()));
    e.client_port = Some(who.peer.port());
    e.tls = who.tls.map(str::to_string);
    e.client_name = who.client_name;
    e.user_given = record.user_given.clone();
    e.user = record.user.clone();
    e.principal = record.principal.clone();
    e.mechanism = Some(record.mechanism.clone());
    e.class = Some(record.class);
    e.rule = record.rule.clone();
    e.reason = record.reason.clone();
    if record.kind == crate::audit::Kind::Auth
        && let Some(cert) = who.client_cert
    {
        e.cert_subject = Some(cert.subject.clone());
        e.cert_sha256 = Some(cert.sha256.clone());
    }
    e
}

/// Hands `e` to the audit writer, after the notice its policy rule asks for (if any) and
/// remembering the client software it names for the user.
pub fn record(shared: &Gateway, e: Event, record: &Record) {
    if let Some(software) = &e.client_software
        && let Some(user) = &e.user
    {
        shared.notices.saw_software(user, software);
    }
    if record.notify
        && let Some(user) = record.user.as_ref().or(record.notify_to.as_ref())
    {
        shared.notify_user(user, record, &e);
    }
    shared.audit.record(e);
}
