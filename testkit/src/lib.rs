//! What mailgate's end-to-end tests, fuzz targets, benchmarks and load generator share.
//!
//! At the root, the end-to-end harness: [`Gateway`] starts the real gateway in-process on
//! ephemeral loopback ports with its own state folder, from [`config_text`] and [`USERS`].
//! The modules:
//!
//! - [`client`]: a line client for SMTP and POP3 ("send AUTH PLAIN ..., expect 235"), plain
//!   or over TLS, from a chosen loopback source address;
//! - [`sasl`]: one client-side encoder per SASL mechanism (PLAIN, LOGIN, CRAM-MD5, NTLM,
//!   SCRAM-SHA-1/256, XOAUTH2, OAUTHBEARER) and APOP;
//! - [`jwt`]: minting HS256 and RS256 tokens, and the JWKS for them;
//! - [`mech`]: a client exchange for each SASL mechanism and POP3 login method over a
//!   [`client::Client`], and reading the audit log;
//! - [`devices`]: a device CA, its client certificates and CRL (SASL EXTERNAL);
//! - [`extra`]: editing test configs, running the built binary, waiting for conditions;
//! - [`smarthost`]: a scriptable upstream SMTP server;
//! - [`kdc`]: a private MIT Kerberos KDC on loopback, for the GSSAPI tests;
//! - [`redis`]: a private Redis on loopback, for the cluster tests.

pub mod client;
pub mod devices;
pub mod directory;
pub mod extra;
pub mod jwt;
pub mod kdc;
pub mod mech;
pub mod oldbox;
pub mod redis;
pub mod sasl;
pub mod smarthost;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use mailgate::config::Config;
use mailgate::gateway::Gateway as State;
use mailgate::server::{Role, Server};

/// The demo password of every test user.
pub const PASSWORD: &str = "secret-pw";

/// Users written to every test users file (all `{PLAIN}` unless a test writes its own).
pub const USERS: &str = "\
alice:{PLAIN}secret-pw
bob:{PLAIN}secret-pw
postmaster:{PLAIN}secret-pw
";

/// A running gateway.
pub struct Gateway {
    /// The folder holding the config, the users file and the state folder.
    pub dir: tempfile::TempDir,
    /// Every listener's role and bound address.
    pub addrs: Vec<(Role, SocketAddr)>,
    /// The control socket's address, when `[listeners] control` is set.
    pub control: Option<SocketAddr>,
    /// The admin endpoint, when `[listeners] admin` is set.
    pub admin_addr: Option<SocketAddr>,
    /// The running gateway's state (reload, allowlist, metrics).
    pub shared: Arc<State>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// The base config: every listener on 127.0.0.1:0; `extra` is appended (TOML tables).
pub fn config_text(extra: &str) -> String {
    format!(
        r#"hostname = "mail.example.test"
state_dir = "state"

[listeners]
pop3 = ["127.0.0.1:0"]
pop3s = ["127.0.0.1:0"]
smtp = ["127.0.0.1:0"]
submission = ["127.0.0.1:0"]
submissions = ["127.0.0.1:0"]
control = "127.0.0.1:0"

[auth]
users_file = "users"
failure_delay = "10ms"

[auth.throttle]
base_delay = "10ms"
max_delay = "50ms"

[relay]
local_domains = ["example.test"]

[limits]
smtp_idle_timeout = "3s"
pop3_idle_timeout = "3s"
preauth_idle_timeout = "3s"
shutdown_grace = "2s"
{extra}
"#
    )
}

impl Gateway {
    /// Starts a gateway with the base config plus `extra`, in a fresh folder.
    pub async fn start(extra: &str) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("users"), USERS).expect("users file");
        Self::start_in(dir, &config_text(extra)).await
    }

    /// Starts a gateway from a full config text in `dir` (which holds its users file).
    pub async fn start_in(dir: tempfile::TempDir, text: &str) -> Gateway {
        Self::start_with_clock(dir, text, Arc::new(mailgate::clock::SystemClock)).await
    }

    /// As [`Gateway::start_in`], with a chosen clock.
    pub async fn start_with_clock(
        dir: tempfile::TempDir,
        text: &str,
        clock: Arc<dyn mailgate::clock::Clock>,
    ) -> Gateway {
        let path = dir.path().join("mailgate.toml");
        std::fs::write(&path, text).expect("config file");
        let config = Config::load(&path).unwrap_or_else(|e| panic!("test config invalid: {e}"));
        let server = Server::bind_with_clock(config, clock)
            .await
            .expect("gateway binds");
        let addrs = server.local_addrs();
        let control = server.control_addr();
        let admin_addr = server.admin_addr();
        let shared = server.gateway();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        Gateway {
            dir,
            addrs,
            control,
            admin_addr,
            shared,
            shutdown,
            task,
        }
    }

    /// The address of the first listener of `role` (by config name: "smtp", "pop3", ...).
    pub fn addr(&self, role: &str) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(r, _)| r.name() == role)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no {role} listener"))
    }

    /// The admin endpoint's address (the config must set `[listeners] admin`).
    pub fn admin(&self) -> SocketAddr {
        self.admin_addr.expect("no admin listener configured")
    }

    /// The state folder.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The Maildir `new/` + `cur/` files of `user`, contents.
    pub fn mailbox(&self, user: &str) -> Vec<String> {
        mailbox_files(&self.state().join("maildir").join(user))
    }

    /// Waits until `user` has `n` messages (delivery runs in the background).
    pub async fn wait_for_mail(&self, user: &str, n: usize) -> Vec<String> {
        for _ in 0..200 {
            let got = self.mailbox(user);
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!(
            "{user} did not receive {n} message(s); has {:?}",
            self.mailbox(user)
        );
    }

    /// Stops the gateway and waits for it.
    pub async fn stop(self) -> tempfile::TempDir {
        self.shutdown.cancel();
        let _ = self.task.await;
        self.dir
    }
}

/// The contents of every message file in a Maildir's `new/` and `cur/`.
pub fn mailbox_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
            let mut names: Vec<_> = rd.flatten().map(|e| e.path()).collect();
            names.sort();
            for p in names {
                out.push(
                    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned(),
                );
            }
        }
    }
    out
}

/// Whether an external client program is installed. When missing, the test is skipped with a
/// notice, unless `MAILGATE_REQUIRE_CLIENTS=1` (set by CI) turns the skip into a failure.
pub fn have(program: &str) -> bool {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("MAILGATE_REQUIRE_CLIENTS").as_deref() == Ok("1") {
            panic!("{program} is required (MAILGATE_REQUIRE_CLIENTS=1) but not installed");
        }
        eprintln!("SKIPPED: {program} not installed; set MAILGATE_REQUIRE_CLIENTS=1 to require it");
    }
    found
}

/// Runs an external program to completion off the runtime's threads.
pub async fn run(program: &str, args: Vec<String>, stdin: Option<String>) -> std::process::Output {
    let program = program.to_string();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new(&program)
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        if let Some(input) = stdin
            && let Some(mut pipe) = child.stdin.take()
        {
            let _ = pipe.write_all(input.as_bytes());
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("wait for child")
    })
    .await
    .expect("join")
}

/// Runs `program` as [`run`] does; whether it succeeded, and its standard output followed by
/// its standard error, for assertions that show both.
pub async fn run_text(program: &str, args: Vec<String>, stdin: Option<String>) -> (bool, String) {
    let out = run(program, args, stdin).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A loopback source address other than 127.0.0.1, to act as a different host.
pub fn host(n: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, n])
}
