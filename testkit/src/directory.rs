//! A private OpenLDAP `slapd` (Debian's `slapd` and `ldap-utils`) on loopback: the directory
//! an old mail box authenticates against, for the `[auth.ldap]` tests. StartTLS with a
//! certificate for `localhost` from a throwaway CA, an `mdb` database under
//! `dc=example,dc=test`, people under `ou=people` with cleartext `userPassword`s (slapd checks
//! binds against them). Stopped, by its own pid, when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The search account and its password.
pub const ADMIN: (&str, &str) = ("cn=admin,dc=example,dc=test", "admin-secret");

/// Where people live.
pub const PEOPLE: &str = "ou=people,dc=example,dc=test";

/// A running slapd.
pub struct Directory {
    dir: tempfile::TempDir,
    /// Its listener.
    pub addr: SocketAddr,
    /// The PEM file of the CA that issued its certificate (for `localhost`).
    pub ca_file: PathBuf,
    pid: Option<u32>,
}

/// Whether slapd can be started here (installed, and ldapadd to load it); otherwise the test
/// is skipped with a notice, unless `MAILGATE_REQUIRE_CLIENTS=1`.
pub fn available() -> bool {
    crate::have("slapd") && crate::have("ldapadd")
}

impl Directory {
    /// Starts slapd with `people` (uid, password).
    pub async fn start(people: &[(&str, &str)]) -> Directory {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        std::fs::create_dir_all(d.join("db")).expect("db folder");
        let ca_file = d.join("ca.pem");
        crate::oldbox::write_certificates(d, &ca_file);
        let port = crate::extra::free_port();
        std::fs::write(d.join("slapd.conf"), config(d)).expect("slapd.conf");
        let url = format!("ldap://127.0.0.1:{port}/");
        let (conf, url2) = (d.join("slapd.conf"), url.clone());
        let status = tokio::task::spawn_blocking(move || {
            std::process::Command::new("slapd")
                .arg("-f")
                .arg(conf)
                .arg("-h")
                .arg(url2)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
        })
        .await
        .expect("join")
        .expect("run slapd");
        assert!(status.success(), "slapd did not start: {status:?}");
        let addr = crate::extra::local(port);
        crate::extra::wait_listening(addr).await;
        let pid = Some(crate::oldbox::wait_pid(&d.join("slapd.pid")).await);
        let directory = Directory {
            addr,
            ca_file,
            pid,
            dir,
        };
        directory.load(people, &url).await;
        directory
    }

    async fn load(&self, people: &[(&str, &str)], url: &str) {
        let mut ldif = String::from(
            "dn: dc=example,dc=test\nobjectClass: dcObject\nobjectClass: organization\n\
             o: Example\ndc: example\n\n\
             dn: ou=people,dc=example,dc=test\nobjectClass: organizationalUnit\nou: people\n\n",
        );
        for (uid, pw) in people {
            ldif.push_str(&format!(
                "dn: uid={uid},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\n\
                 sn: {uid}\nuserPassword: {pw}\n\n"
            ));
        }
        let path = self.dir.path().join("people.ldif");
        std::fs::write(&path, ldif).expect("ldif");
        let out = crate::run(
            "ldapadd",
            vec![
                "-x".into(),
                "-H".into(),
                url.into(),
                "-D".into(),
                ADMIN.0.into(),
                "-w".into(),
                ADMIN.1.into(),
                "-f".into(),
                path.display().to_string(),
            ],
            None,
        )
        .await;
        assert!(
            out.status.success(),
            "ldapadd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A file holding the search account's password.
    pub fn admin_password_file(&self) -> PathBuf {
        let path = self.dir.path().join("admin-password");
        std::fs::write(&path, format!("{}\n", ADMIN.1)).expect("password file");
        path
    }

    /// Stops slapd and waits until its port refuses connections.
    pub async fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            crate::oldbox::stop(pid, &[self.addr]).await;
        }
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
    }
}

fn config(d: &Path) -> String {
    let d = d.display();
    format!(
        r#"include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {d}/slapd.pid
TLSCACertificateFile {d}/ca.pem
TLSCertificateFile {d}/cert.pem
TLSCertificateKeyFile {d}/key.pem
database mdb
maxsize 10485760
suffix "dc=example,dc=test"
rootdn "{admin}"
rootpw {password}
directory {d}/db
access to attrs=userPassword by anonymous auth by self write by * none
access to * by * read
"#,
        admin = ADMIN.0,
        password = ADMIN.1,
    )
}
