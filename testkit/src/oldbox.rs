//! A private Dovecot (Debian's `dovecot-core`, `dovecot-pop3d`, `dovecot-imapd`) on loopback:
//! the "old mail box" the migration tests put mailgate in front of. POP3 and IMAP on free
//! ports, STARTTLS with a certificate from a throwaway CA, users in a passwd-file, a master
//! user (`user*master`), mailboxes in Maildir owned by `nobody`. Stopped (by its own pid) when
//! dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A running Dovecot.
pub struct OldBox {
    dir: tempfile::TempDir,
    /// Its POP3 listener (STLS offered).
    pub pop3: SocketAddr,
    /// Its IMAP listener (STARTTLS offered).
    pub imap: SocketAddr,
    /// The PEM file of the CA that issued its certificate (for `localhost`).
    pub ca_file: PathBuf,
    pid: Option<u32>,
}

/// The master user's login name and password.
pub const MASTER: (&str, &str) = ("master", "master-secret");

/// Whether an old box can be started here: Dovecot installed, and root (Dovecot drops to its
/// own users). Without them the test is skipped with a notice, unless
/// `MAILGATE_REQUIRE_CLIENTS=1`.
pub fn available() -> bool {
    if !crate::have("dovecot") {
        return false;
    }
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    if !root {
        if std::env::var("MAILGATE_REQUIRE_CLIENTS").as_deref() == Ok("1") {
            panic!("the old-box tests run Dovecot, which needs root");
        }
        eprintln!("SKIPPED: the old-box tests run Dovecot, which needs root");
    }
    root
}

impl OldBox {
    /// Starts Dovecot with `users` (name, password) stored `{PLAIN}`.
    pub async fn start(users: &[(&str, &str)]) -> OldBox {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        for sub in ["run", "state", "mail"] {
            std::fs::create_dir_all(d.join(sub)).expect("folders");
        }
        let passwd: String = users
            .iter()
            .map(|(u, p)| format!("{u}:{{PLAIN}}{p}\n"))
            .collect();
        std::fs::write(d.join("users"), passwd).expect("users");
        std::fs::write(
            d.join("masters"),
            format!("{}:{{PLAIN}}{}\n", MASTER.0, MASTER.1),
        )
        .expect("masters");
        let ca_file = d.join("ca.pem");
        write_certificates(d, &ca_file);
        let (pop3, imap) = (crate::extra::free_port(), crate::extra::free_port());
        let conf = config(d, pop3, imap);
        std::fs::write(d.join("dovecot.conf"), conf).expect("dovecot.conf");
        chown_nobody(&d.join("mail"));
        // Dovecot forks into the background: its output goes to its log, not to a pipe this
        // side would wait on for ever.
        let conf = d.join("dovecot.conf");
        let status = tokio::task::spawn_blocking(move || {
            std::process::Command::new("dovecot")
                .arg("-c")
                .arg(conf)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
        })
        .await
        .expect("join")
        .expect("run dovecot");
        assert!(
            status.success(),
            "dovecot did not start: {}",
            std::fs::read_to_string(d.join("dovecot.log")).unwrap_or_default()
        );
        // The master writes its pid file once it runs; without it the box could not be
        // stopped, so wait for it.
        let pid = Some(wait_pid(&d.join("run/master.pid")).await);
        let old = OldBox {
            pop3: crate::extra::local(pop3),
            imap: crate::extra::local(imap),
            ca_file,
            pid,
            dir,
        };
        crate::extra::wait_listening(old.pop3).await;
        crate::extra::wait_listening(old.imap).await;
        old
    }

    /// The Maildir of `user` on the old box.
    pub fn maildir(&self, user: &str) -> PathBuf {
        self.dir.path().join("mail").join(user)
    }

    /// Puts `messages` into `user`'s mailbox (as already-seen mail in `cur/`).
    pub fn deliver(&self, user: &str, messages: &[&str]) {
        let md = self.maildir(user);
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(md.join(sub)).expect("maildir");
        }
        for (i, m) in messages.iter().enumerate() {
            let name = format!("{}.M{i}P1.oldbox:2,S", 1_700_000_000 + i);
            std::fs::write(md.join("cur").join(name), m.replace('\n', "\r\n")).expect("message");
        }
        chown_nobody(&self.dir.path().join("mail"));
    }

    /// Dovecot's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// Stops Dovecot and waits until its ports refuse connections.
    pub async fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            stop(pid, &[self.pop3, self.imap]).await;
        }
    }
}

/// The pid in `file`, once the daemon has written it (within 5 s).
pub(crate) async fn wait_pid(file: &Path) -> u32 {
    for _ in 0..200 {
        if let Some(pid) = std::fs::read_to_string(file)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{} was never written", file.display());
}

/// Stops the daemon `pid` (one this test started) and waits until `addrs` refuse connections.
pub(crate) async fn stop(pid: u32, addrs: &[SocketAddr]) {
    let _ = std::process::Command::new("kill")
        .arg(pid.to_string())
        .status();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for addr in addrs {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            assert!(tokio::time::Instant::now() < deadline, "{pid} did not stop");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for OldBox {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
    }
}

fn chown_nobody(path: &Path) {
    let _ = std::process::Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(path)
        .status();
}

/// A CA (written to `ca_file`) and a `localhost` certificate it issued (`cert.pem`, `key.pem`
/// in `dir`), for the old servers' TLS.
pub fn write_certificates(dir: &Path, ca_file: &Path) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "old box test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("certificate");
    std::fs::write(ca_file, ca_cert.pem()).expect("ca.pem");
    std::fs::write(dir.join("cert.pem"), leaf.pem()).expect("cert.pem");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("key.pem");
}

fn config(d: &Path, pop3: u16, imap: u16) -> String {
    let d = d.display();
    format!(
        r#"base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = pop3 imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_master_user_separator = *
mail_location = maildir:{d}/mail/%u
first_valid_uid = 1
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/masters
  master = yes
  pass = yes
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={d}/mail/%u
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"#
    )
}
