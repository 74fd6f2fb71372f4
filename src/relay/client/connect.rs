//! Setting up an upstream session: TCP connect, implicit TLS (RFC 8314) or STARTTLS
//! (RFC 3207), the greeting, EHLO with HELO fallback (RFC 5321 §4.1.1.1) and the capabilities
//! it lists, and AUTH (RFC 4954) with PLAIN, LOGIN, XOAUTH2 or OAUTHBEARER (RFC 7628).

use super::*;

/// Longest AUTH command with an initial response; a longer one is sent as a reply to an empty
/// challenge instead (RFC 4954 §4, with the 512-octet command line of RFC 5321 §4.5.3.1.4).
pub const MAX_AUTH_LINE: usize = 512;

impl Connector {
    pub(super) async fn open(&self, helo: &str, token: Option<&Secret>) -> Result<Session, Error> {
        let up = &self.upstream;
        let t = up.command_timeout;
        let tcp = tokio::time::timeout(t, TcpStream::connect(up.address))
            .await
            .map_err(|_| Error::Timeout {
                stage: Stage::Connect,
                after: t,
            })?
            .map_err(|source| Error::Io {
                addr: up.address,
                stage: Stage::Connect,
                source,
            })?;
        // Commands are written whole; without this, the final ".\r\n" waits for the
        // smarthost's delayed ACK (about 40 ms per message).
        let _ = tcp.set_nodelay(true);
        let mut s = Session {
            io: Box::new(tcp),
            buf: Vec::new(),
            timeout: t,
            addr: up.address,
            size: false,
            pipelining: false,
            chunking: false,
            token: None,
            transactions: 0,
        };
        if up.tls == UpstreamTls::Tls {
            s = self.handshake(s).await?;
        }
        let greeting = s.read_reply(Stage::Greeting).await?;
        if !greeting.is_success() {
            return Err(Error::Rejected {
                stage: Stage::Greeting,
                reply: greeting,
            });
        }
        let mut caps = s.ehlo(helo).await?;
        if up.tls == UpstreamTls::Starttls {
            if !caps.starttls {
                return Err(Error::StartTlsUnavailable);
            }
            s.command(Stage::StartTls, "STARTTLS").await?;
            if !s.buf.is_empty() {
                return Err(Error::PipelinedTls);
            }
            s = self.handshake(s).await?;
            caps = s.ehlo(helo).await?;
        }
        s.size = caps.size;
        s.pipelining = caps.pipelining;
        s.chunking = caps.chunking;
        match (up.auth, &up.username, &up.password) {
            (UpstreamAuth::Xoauth2 | UpstreamAuth::Oauthbearer, user, _) => {
                let bearer = Bearer {
                    oauthbearer: up.auth == UpstreamAuth::Oauthbearer,
                    user: user.as_deref().unwrap_or_default(),
                    host: &up.server_name,
                    port: up.address.port(),
                };
                let token = token.ok_or(Error::NoToken(bearer.name()))?;
                s.auth_bearer(&caps, &bearer, token).await?;
                s.token = Some(token.clone());
            }
            (_, Some(user), Some(pass)) => s.auth(&caps, up.auth, user, pass).await?,
            _ => {}
        }
        Ok(s)
    }

    async fn handshake(&self, s: Session) -> Result<Session, Error> {
        let Some((connector, name)) = &self.tls else {
            return Err(Error::TlsConfig(
                "TLS requested without a TLS configuration".into(),
            ));
        };
        let t = s.timeout;
        let addr = s.addr;
        let tls = tokio::time::timeout(t, connector.connect(name.clone(), s.io))
            .await
            .map_err(|_| Error::Timeout {
                stage: Stage::Handshake,
                after: t,
            })?
            .map_err(|source| Error::Io {
                addr,
                stage: Stage::Handshake,
                source,
            })?;
        Ok(Session {
            io: Box::new(tls),
            buf: Vec::new(),
            timeout: t,
            addr,
            size: false,
            pipelining: false,
            chunking: false,
            token: None,
            transactions: 0,
        })
    }
}

/// What the server said it supports in its EHLO reply (RFC 5321 §4.1.1.1).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Caps {
    pub(super) size: bool,
    pub(super) starttls: bool,
    pub(super) pipelining: bool,
    pub(super) chunking: bool,
    pub(super) auth: Vec<String>,
}

impl Caps {
    pub(super) fn parse(ehlo: &Reply) -> Caps {
        let mut caps = Caps::default();
        for line in ehlo.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "SIZE" => caps.size = true,
                "PIPELINING" => caps.pipelining = true,
                "CHUNKING" => caps.chunking = true,
                "STARTTLS" => caps.starttls = true,
                "AUTH" => caps.auth.extend(words.map(|w| w.to_ascii_uppercase())),
                _ => {}
            }
        }
        caps
    }
}

impl Session {
    async fn ehlo(&mut self, helo: &str) -> Result<Caps, Error> {
        self.send_line(Stage::Ehlo, &format!("EHLO {helo}")).await?;
        let reply = self.read_reply(Stage::Ehlo).await?;
        if reply.is_success() {
            return Ok(Caps::parse(&reply));
        }
        if !reply.is_permanent() {
            return Err(Error::Rejected {
                stage: Stage::Ehlo,
                reply,
            });
        }
        // An old server that does not know EHLO (RFC 5321 §4.1.1.1 / §3.2).
        self.command(Stage::Ehlo, &format!("HELO {helo}")).await?;
        Ok(Caps::default())
    }

    async fn auth(
        &mut self,
        caps: &Caps,
        mechanism: UpstreamAuth,
        user: &str,
        pass: &str,
    ) -> Result<(), Error> {
        let offered = |m: &str| caps.auth.iter().any(|a| a == m);
        let plain = match mechanism {
            UpstreamAuth::Plain if offered("PLAIN") => true,
            UpstreamAuth::Plain => return Err(Error::AuthUnavailable { wanted: "PLAIN" }),
            UpstreamAuth::Login if offered("LOGIN") => false,
            UpstreamAuth::Login => return Err(Error::AuthUnavailable { wanted: "LOGIN" }),
            _ if offered("PLAIN") => true,
            _ if offered("LOGIN") => false,
            _ => {
                return Err(Error::AuthUnavailable {
                    wanted: "PLAIN or LOGIN",
                });
            }
        };
        if plain {
            let token = Zeroizing::new(format!("\0{user}\0{pass}"));
            let line = Zeroizing::new(format!("AUTH PLAIN {}", BASE64.encode(token.as_bytes())));
            self.command(Stage::Auth, &line).await?;
        } else {
            self.send_line(Stage::Auth, "AUTH LOGIN").await?;
            for secret in [user, pass] {
                let reply = self.read_reply(Stage::Auth).await?;
                if reply.code != 334 {
                    return Err(Error::Rejected {
                        stage: Stage::Auth,
                        reply,
                    });
                }
                let line = Zeroizing::new(BASE64.encode(secret.as_bytes()));
                self.send_line(Stage::Auth, &line).await?;
            }
            let reply = self.read_reply(Stage::Auth).await?;
            if !reply.is_success() {
                return Err(Error::Rejected {
                    stage: Stage::Auth,
                    reply,
                });
            }
        }
        Ok(())
    }

    /// AUTH XOAUTH2 or OAUTHBEARER with `token`. The initial response goes on the AUTH line
    /// if it fits in [`MAX_AUTH_LINE`], else after an empty 334 (RFC 4954 §4). A 334 in reply
    /// is the server's error report (RFC 7628 §3.2.2; XOAUTH2 servers do the same): we answer
    /// with the dummy response it asks for and return the failure that follows.
    async fn auth_bearer(
        &mut self,
        caps: &Caps,
        bearer: &Bearer<'_>,
        token: &Secret,
    ) -> Result<(), Error> {
        let name = bearer.name();
        if !caps.auth.iter().any(|a| a == name) {
            return Err(Error::AuthUnavailable { wanted: name });
        }
        let response = bearer.initial_response(token);
        let line = Zeroizing::new(format!("AUTH {name} {}", response.as_str()));
        if line.len() + 2 <= MAX_AUTH_LINE {
            self.send_line(Stage::Auth, &line).await?;
        } else {
            self.send_line(Stage::Auth, &format!("AUTH {name}")).await?;
            let reply = self.read_reply(Stage::Auth).await?;
            if reply.code != 334 {
                return Err(Error::Rejected {
                    stage: Stage::Auth,
                    reply,
                });
            }
            self.send_line(Stage::Auth, &response).await?;
        }
        let mut reply = self.read_reply(Stage::Auth).await?;
        if reply.code == 334 {
            let detail = BASE64.decode(reply.text().trim()).unwrap_or_default();
            let detail = String::from_utf8_lossy(&detail[..detail.len().min(512)]).into_owned();
            tracing::debug!(addr = %self.addr, mechanism = name, detail, "smarthost: AUTH error");
            // RFC 7628 §3.2.3: a single %x01 (base64 "AQ=="); XOAUTH2 expects an empty line.
            let dummy = if bearer.oauthbearer { "AQ==" } else { "" };
            self.send_line(Stage::Auth, dummy).await?;
            reply = self.read_reply(Stage::Auth).await?;
            if reply.code == 334 {
                // A server that keeps challenging is broken; do not loop.
                return Err(Error::Malformed(
                    "second AUTH challenge after an error".into(),
                ));
            }
        }
        if !reply.is_success() {
            return Err(Error::Rejected {
                stage: Stage::Auth,
                reply,
            });
        }
        Ok(())
    }
}

/// The parameters of an XOAUTH2 or OAUTHBEARER exchange.
pub(super) struct Bearer<'a> {
    pub(super) oauthbearer: bool,
    pub(super) user: &'a str,
    pub(super) host: &'a str,
    pub(super) port: u16,
}

impl Bearer<'_> {
    pub(super) fn name(&self) -> &'static str {
        if self.oauthbearer {
            "OAUTHBEARER"
        } else {
            "XOAUTH2"
        }
    }

    /// The base64 initial response: for XOAUTH2 `user=U^Aauth=Bearer T^A^A`; for OAUTHBEARER
    /// the GS2 header `n,a=U,` (RFC 5801 saslname escaping) then `^Ahost=H^Aport=P^Aauth=Bearer
    /// T^A^A` (RFC 7628 §3.1).
    pub(super) fn initial_response(&self, token: &Secret) -> Zeroizing<String> {
        let t = token.expose();
        let raw = Zeroizing::new(if self.oauthbearer {
            let user = self.user.replace('=', "=3D").replace(',', "=2C");
            format!(
                "n,a={user},\x01host={}\x01port={}\x01auth=Bearer {t}\x01\x01",
                self.host, self.port
            )
        } else {
            format!("user={}\x01auth=Bearer {t}\x01\x01", self.user)
        });
        Zeroizing::new(BASE64.encode(raw.as_bytes()))
    }
}

pub(super) fn tls_config(accept_any: bool) -> Result<ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::TlsConfig(e.to_string()))?;
    if accept_any {
        let verifier = Arc::new(crate::tls::AcceptAnyCert::new(provider));
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth());
    }
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for err in &found.errors {
        tracing::warn!(error = %err, "relay: problem loading system trust roots");
    }
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!(
            ignored,
            "relay: no system trust roots; smarthost TLS will fail"
        );
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}
