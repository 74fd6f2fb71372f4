//! A private MIT Kerberos KDC (Debian's `krb5-kdc`, `krb5-admin-server` for `kadmin.local`,
//! `krb5-user` for `kinit`) on a free loopback port, for the GSSAPI tests: its own realm
//! [`REALM`], database, `krb5.conf` (`KRB5_CONFIG`) and `kdc.conf` (`KRB5_KDC_PROFILE`) in a
//! temporary folder; users with passwords; the service principals `smtp/<host>` and
//! `pop/<host>` in a keytab. Host names are taken as written (no DNS canonicalization, no
//! reverse lookups), so a test host name needs no resolver. `krb5kdc` runs in the foreground
//! as this test's child and is stopped, by its pid, when dropped.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The test realm.
pub const REALM: &str = "MAILGATE.TEST";

/// The database master password (a throwaway database).
const MASTER: &str = "kdc-master-pw";

/// Whether a KDC can be started here (the MIT tools are installed); otherwise the test is
/// skipped with a notice, unless `MAILGATE_REQUIRE_CLIENTS=1`.
pub fn available() -> bool {
    ["krb5kdc", "kdb5_util", "kadmin.local", "kinit"]
        .iter()
        .all(|p| crate::have(p))
}

/// A running KDC.
pub struct Kdc {
    dir: tempfile::TempDir,
    /// Its port (UDP and TCP) on 127.0.0.1.
    pub port: u16,
    /// The keytab holding `smtp/<host>` and `pop/<host>`.
    pub keytab: PathBuf,
    child: Option<Child>,
}

impl Kdc {
    /// Creates the realm with `users` (name, password) and the services of `host`, and starts
    /// the KDC.
    pub async fn start(host: &str, users: &[(&str, &str)]) -> Kdc {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = crate::extra::free_port();
        let keytab = dir.path().join("mailgate.keytab");
        let mut kdc = Kdc {
            port,
            keytab,
            child: None,
            dir,
        };
        let d = kdc.dir.path().to_path_buf();
        std::fs::write(d.join("krb5.conf"), krb5_conf(port)).expect("krb5.conf");
        std::fs::write(d.join("kdc.conf"), kdc_conf(&d, port)).expect("kdc.conf");
        std::fs::write(d.join("kadm5.acl"), "").expect("acl");
        let out = kdc
            .run(
                "kdb5_util",
                &["create", "-s", "-r", REALM, "-P", MASTER],
                None,
                None,
            )
            .await;
        assert!(out.status.success(), "kdb5_util: {}", text(&out));
        for (user, password) in users {
            kdc.kadmin(&format!("addprinc -pw {password} {user}")).await;
        }
        for service in ["smtp", "pop"] {
            kdc.kadmin(&format!("addprinc -randkey {service}/{host}"))
                .await;
        }
        let keytab = kdc.keytab.display().to_string();
        kdc.kadmin(&format!("ktadd -k {keytab} smtp/{host} pop/{host}"))
            .await;
        let child = Command::new("krb5kdc")
            .args(["-n", "-r", REALM, "-P"])
            .arg(d.join("kdc.pid"))
            .envs(kdc.env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start krb5kdc");
        kdc.child = Some(child);
        crate::extra::wait_listening(crate::extra::local(port)).await;
        kdc
    }

    /// The environment that points the MIT tools, and the gateway, at this realm (and keeps
    /// the acceptor's replay cache in the test's folder).
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        let d = self.dir.path();
        vec![
            ("KRB5_CONFIG", d.join("krb5.conf").into()),
            ("KRB5_KDC_PROFILE", d.join("kdc.conf").into()),
            ("KRB5RCACHEDIR", d.into()),
        ]
    }

    /// Runs one `kadmin.local` query on the realm's database; panics if it fails.
    pub async fn kadmin(&self, query: &str) {
        let out = self.run("kadmin.local", &["-q", query], None, None).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !err.contains("rror"),
            "kadmin.local -q {query:?}: {}",
            text(&out)
        );
    }

    /// Gets `principal`'s ticket-granting ticket with its password into a fresh credential
    /// cache, and returns the cache's path (for `KRB5CCNAME`). `extra` are more kinit
    /// arguments.
    pub async fn kinit(&self, principal: &str, password: &str, extra: &[&str]) -> PathBuf {
        let name = principal.replace(['/', '@'], "_");
        let cache = self.dir.path().join(format!("ccache-{name}"));
        let mut args: Vec<&str> = extra.to_vec();
        args.push(principal);
        let out = self
            .run("kinit", &args, Some(&cache), Some(format!("{password}\n")))
            .await;
        assert!(out.status.success(), "kinit {principal}: {}", text(&out));
        cache
    }

    /// Runs `program` with this realm's environment (and `KRB5CCNAME=FILE:<cache>` if
    /// given), off the runtime's threads, feeding it `stdin`.
    pub async fn run(
        &self,
        program: &str,
        args: &[&str],
        cache: Option<&Path>,
        stdin: Option<String>,
    ) -> Output {
        let mut cmd = Command::new(program);
        cmd.args(args).envs(self.env());
        if let Some(c) = cache {
            let mut v = OsString::from("FILE:");
            v.push(c);
            cmd.env("KRB5CCNAME", v);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = cmd.spawn().expect("start program");
            if let Some(text) = stdin
                && let Some(mut s) = child.stdin.take()
            {
                let _ = s.write_all(text.as_bytes());
            }
            child.stdin.take();
            child.wait_with_output().expect("program output")
        })
        .await
        .expect("join")
    }
}

impl Drop for Kdc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Both output streams, for failure messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn krb5_conf(port: u16) -> String {
    format!(
        "[libdefaults]\n  default_realm = {REALM}\n  dns_lookup_kdc = false\n  \
         dns_lookup_realm = false\n  dns_canonicalize_hostname = false\n  rdns = false\n  \
         udp_preference_limit = 1\n\
         [realms]\n  {REALM} = {{\n    kdc = 127.0.0.1:{port}\n  }}\n"
    )
}

fn kdc_conf(d: &Path, port: u16) -> String {
    let d = d.display();
    format!(
        "[kdcdefaults]\n  kdc_listen = 127.0.0.1:{port}\n  kdc_tcp_listen = 127.0.0.1:{port}\n\
         [realms]\n  {REALM} = {{\n    database_name = {d}/principal\n    \
         key_stash_file = {d}/stash\n    acl_file = {d}/kadm5.acl\n    max_life = 1h\n  }}\n\
         [logging]\n  kdc = FILE:{d}/kdc.log\n"
    )
}
