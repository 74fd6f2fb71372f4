//! Standing in front of the old mail box (issue: front the old box): a private Dovecot holds
//! users mailgate's users file does not, and `[auth.upstream]` checks their passwords by
//! logging in to it, over POP3 or IMAP, in clear or after STARTTLS.

use std::time::Duration;

use mailgate_testkit::oldbox::{self, OldBox};
use mailgate_testkit::{Gateway, extra, host, mech};

/// The gateway's config with `[auth.upstream]` pointed at `old` (`protocol`, `tls`), cleartext
/// logins allowed from loopback, CRAM-MD5 offered, and `more` added to the table.
fn front(old: &OldBox, protocol: &str, tls: &str, more: &str) -> String {
    let addr = if protocol == "imap" {
        old.imap
    } else {
        old.pop3
    };
    let text = extra::set_all(
        &mailgate_testkit::config_text(""),
        &[
            ("auth", "insecure_plaintext_networks", r#"["127.0.0.0/8"]"#),
            ("auth", "mechanisms", r#"["PLAIN", "LOGIN", "CRAM-MD5"]"#),
        ],
    );
    format!(
        "{text}\n[auth.upstream]\naddress = \"{addr}\"\nprotocol = \"{protocol}\"\ntls = \"{tls}\"\n\
         server_name = \"localhost\"\nca_file = \"{}\"\n{more}\n",
        old.ca_file.display()
    )
}

/// Waits until `user` is in the users file with a `{CRAM-MD5}` form (captured).
async fn captured(gw: &Gateway, user: &str) {
    let users = gw.dir.path().join("users");
    let line = format!("{user}:{{CRAM-MD5}}");
    extra::eventually(&format!("{user} captured"), Duration::from_secs(10), || {
        let (users, line) = (users.clone(), line.clone());
        async move {
            std::fs::read_to_string(&users)
                .unwrap_or_default()
                .contains(&line)
        }
    })
    .await;
}

async fn start(text: &str) -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users"), mailgate_testkit::USERS).expect("users file");
    Gateway::start_in(dir, text).await
}

async fn pop_login(gw: &Gateway, user: &str, password: &str) -> String {
    let (mut c, _, _) = mech::pop3(host(1), gw.addr("pop3"), false).await;
    let x = mech::pop_user_pass(&mut c, user, password).await;
    x.lines[0].clone()
}

async fn smtp_plain(gw: &Gateway, user: &str, password: &str) -> (u16, String) {
    let (mut c, _) = mech::smtp(host(1), gw.addr("submission"), false, "client.test").await;
    let x = mech::smtp_plain(&mut c, user, password).await;
    (x.code, x.lines.join(" "))
}

/// A user who exists only on the old box logs in through mailgate over POP3 USER/PASS and
/// SMTP AUTH PLAIN; a wrong password is refused as such (535, not 454); with capture on, the
/// users file gains the user's forms and CRAM-MD5 (which the old box could never check for
/// mailgate) works from then on.
#[tokio::test]
async fn a_user_only_on_the_old_box_logs_in_and_is_captured() {
    if !oldbox::available() {
        return;
    }
    let old = OldBox::start(&[("carol", "carol-old-pw"), ("dave", "dave-pw")]).await;
    let gw = start(&front(&old, "pop3", "starttls", "capture = true")).await;

    // CRAM-MD5 cannot be checked against the old box: refused while carol has no forms here.
    let (mut c, _) = mech::smtp(host(1), gw.addr("submission"), false, "client.test").await;
    assert_eq!(
        mech::smtp_cram(&mut c, "carol", "carol-old-pw").await.code,
        535
    );

    let line = pop_login(&gw, "carol", "carol-old-pw").await;
    assert!(
        line.starts_with("+OK"),
        "POP3 login through the old box: {line}"
    );
    let (code, text) = smtp_plain(&gw, "dave", "dave-pw").await;
    assert_eq!(code, 235, "SMTP AUTH PLAIN through the old box: {text}");
    let (code, text) = smtp_plain(&gw, "dave", "wrong-pw").await;
    assert_eq!(code, 535, "a wrong password is a wrong password: {text}");
    let line = pop_login(&gw, "nobody-here", "x").await;
    assert!(line.starts_with("-ERR"), "{line}");
    assert!(!line.contains("SYS/TEMP"), "{line}");

    // Captured: the users file now holds carol, and CRAM-MD5 works for her.
    captured(&gw, "carol").await;
    let (mut c, _) = mech::smtp(host(1), gw.addr("submission"), false, "client.test").await;
    let x = mech::smtp_cram(&mut c, "carol", "carol-old-pw").await;
    assert_eq!(x.code, 235, "CRAM-MD5 after capture: {:?}", x.lines);
    let text = std::fs::read_to_string(gw.dir.path().join("users")).expect("users file");
    assert!(
        !text.contains("carol-old-pw"),
        "the password itself is never stored"
    );
    assert!(old.log().contains("carol"), "the old box saw carol's login");
}

/// The old box stopped: its users get a temporary failure (SMTP 454 4.7.0, POP3
/// `-ERR [SYS/TEMP]`), never the 535 that makes a client ask for a new password, and nothing
/// counts against them; users of the users file are not affected.
#[tokio::test]
async fn the_old_box_down_is_a_temporary_failure() {
    if !oldbox::available() {
        return;
    }
    let mut old = OldBox::start(&[("carol", "carol-old-pw")]).await;
    // No cache: every login asks the old box.
    let more = "cache_ttl = \"0s\"\nnegative_cache_ttl = \"0s\"\ntimeout = \"3s\"";
    let text = extra::set_all(
        &front(&old, "imap", "starttls", more),
        &[
            ("listeners", "admin", r#""127.0.0.1:0""#),
            ("audit", "enabled", "true"),
        ],
    );
    let gw = start(&text).await;
    let (code, text) = smtp_plain(&gw, "carol", "carol-old-pw").await;
    assert_eq!(code, 235, "over IMAP with STARTTLS: {text}");
    // The dashboard's count of users checked by the old server only (no forms here).
    let admin = gw.admin();
    extra::eventually("carol counted", Duration::from_secs(10), || async move {
        let r = crate::admin::http(admin, "GET", "/api/migration?since=1d", None, None).await;
        r.status == 200 && r.json()["users"] == serde_json::json!(["carol"])
    })
    .await;
    old.stop().await;
    for _ in 0..4 {
        let (code, text) = smtp_plain(&gw, "carol", "carol-old-pw").await;
        assert_eq!(code, 454, "{text}");
        assert!(text.contains("4.7.0"), "{text}");
        let line = pop_login(&gw, "carol", "carol-old-pw").await;
        assert!(line.starts_with("-ERR [SYS/TEMP]"), "{line}");
    }
    // The users file's own users still log in.
    let (code, text) = smtp_plain(&gw, "alice", "secret-pw").await;
    assert_eq!(code, 235, "{text}");
}

/// A Python poplib session against `addr` as `user`: STAT, the UIDL list, every message's
/// bytes (hex), then `dele` (message numbers) and QUIT; printed as JSON.
async fn poplib(
    addr: std::net::SocketAddr,
    user: &str,
    password: &str,
    dele: &[u32],
) -> serde_json::Value {
    let script = format!(
        r#"
import poplib, json
p = poplib.POP3("{ip}", {port}, timeout=10)
p.user("{user}")
p.pass_("{password}")
count, size = p.stat()
uidl = [l.decode() for l in p.uidl()[1]]
msgs = [b"\r\n".join(p.retr(i + 1)[1]).hex() for i in range(count)]
for n in {dele:?}:
    p.dele(n)
p.quit()
print(json.dumps({{"stat": [count, size], "uidl": uidl, "msgs": msgs}}))
"#,
        ip = addr.ip(),
        port = addr.port(),
    );
    let out = mailgate_testkit::run("python3", vec!["-c".into(), script], None).await;
    assert!(
        out.status.success(),
        "poplib: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("poplib's JSON")
}

/// A mailbox not moved yet is served from the old box: a poplib session through mailgate
/// sees exactly what one straight to the old box sees (STAT, UIDL, every message's bytes);
/// a client that leaves without QUIT deletes nothing there; DELE and QUIT through mailgate
/// delete on the old box. A login that carried no password (CRAM-MD5, after capture) is
/// proxied as the master user.
#[tokio::test]
async fn a_mailbox_not_moved_yet_is_served_from_the_old_box() {
    if !oldbox::available() || !mailgate_testkit::have("python3") {
        return;
    }
    let old = OldBox::start(&[("carol", "carol-old-pw")]).await;
    old.deliver(
        "carol",
        &[
            "Subject: one\n\nfirst message\n",
            "Subject: two\n\n.leading dot\n..two dots\nend\n",
            "Subject: three\n\nthird\n",
        ],
    );
    let master = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(master.path(), format!("{}\n", oldbox::MASTER.1)).expect("master password");
    let text = format!(
        "{}\n[pop3.proxy]\naddress = \"{}\"\ntls = \"starttls\"\nserver_name = \"localhost\"\n\
         ca_file = \"{}\"\nmaster_user = \"{}\"\nmaster_password_file = \"{}\"\n",
        front(&old, "pop3", "starttls", "capture = true"),
        old.pop3,
        old.ca_file.display(),
        oldbox::MASTER.0,
        master.path().display(),
    );
    let gw = start(&text).await;

    let direct = poplib(old.pop3, "carol", "carol-old-pw", &[]).await;
    assert_eq!(direct["stat"][0], 3, "{direct}");
    let proxied = poplib(gw.addr("pop3"), "carol", "carol-old-pw", &[]).await;
    assert_eq!(proxied, direct, "the same mailbox, byte for byte");

    // Gone without QUIT: nothing deleted upstream.
    let (mut c, _, _) = mech::pop3(host(1), gw.addr("pop3"), false).await;
    assert_eq!(
        mech::pop_user_pass(&mut c, "carol", "carol-old-pw")
            .await
            .code,
        1
    );
    c.pop_cmd("DELE 1", true).await;
    drop(c);
    // Captured by now: CRAM-MD5 over POP3 AUTH, which carries no password, goes upstream
    // as the master user.
    captured(&gw, "carol").await;
    let (mut c, _, _) = mech::pop3(host(1), gw.addr("pop3"), false).await;
    let x = mech::pop_cram(&mut c, "carol", "carol-old-pw").await;
    assert_eq!(
        x.code, 1,
        "CRAM-MD5 proxied as the master user: {:?}",
        x.lines
    );
    c.pop_cmd("STAT", true).await;
    c.pop_cmd("QUIT", true).await;

    // DELE and QUIT through mailgate delete on the old box.
    let after = poplib(gw.addr("pop3"), "carol", "carol-old-pw", &[2]).await;
    assert_eq!(
        after["stat"][0], 3,
        "the message left without QUIT is still there"
    );
    let left = poplib(old.pop3, "carol", "carol-old-pw", &[]).await;
    assert_eq!(left["stat"][0], 2, "{left}");
}

/// fetchmail (`keep`, `uidl`) through mailgate as `user`; returns how many messages it
/// delivered this run.
async fn fetchmail(
    dir: &std::path::Path,
    addr: std::net::SocketAddr,
    user: &str,
    password: &str,
) -> usize {
    let count = dir.join(format!("fetched-{}", rand_suffix()));
    let rc = dir.join("fetchmailrc");
    std::fs::write(
        &rc,
        format!(
            "set no bouncemail\n\
             poll {ip} port {port} protocol POP3 uidl no dns\n\
             \x20 user \"{user}\" password \"{password}\" is \"{user}\" here\n\
             \x20 keep sslproto ''\n\
             \x20 mda \"/bin/sh -c 'cat > /dev/null; echo x >> {count}'\"\n",
            ip = addr.ip(),
            port = addr.port(),
            count = count.display(),
        ),
    )
    .expect("fetchmailrc");
    std::fs::set_permissions(&rc, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let out = mailgate_testkit::run(
        "fetchmail",
        vec![
            "-f".into(),
            rc.display().to_string(),
            "--idfile".into(),
            dir.join("fetchids").display().to_string(),
            "--nosyslog".into(),
            "-N".into(),
        ],
        None,
    )
    .await;
    // 0: mail fetched; 1: no mail. Anything else is a failure.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "fetchmail: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&count)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Moving a mailbox without duplicate downloads: fetchmail (keep, UIDL) fetches the old box's
/// messages through the proxy once; after `mailgate import pop3` the mailbox is served
/// locally, with the same UIDLs and bytes as the old box, and the same fetchmail run fetches
/// nothing. Importing again copies nothing; the old mailbox is untouched.
#[tokio::test]
async fn an_imported_mailbox_keeps_its_uidls() {
    if !oldbox::available()
        || !mailgate_testkit::have("python3")
        || !mailgate_testkit::have("fetchmail")
    {
        return;
    }
    let old = OldBox::start(&[("erin", "erin-pw")]).await;
    let messages: Vec<String> = (1..=12)
        .map(|i| format!("Subject: message {i}\n\n.dot line {i}\nbody {i}\n"))
        .collect();
    let refs: Vec<&str> = messages.iter().map(String::as_str).collect();
    old.deliver("erin", &refs);
    let text = format!(
        "{}\n[pop3.proxy]\naddress = \"{}\"\ntls = \"starttls\"\nserver_name = \"localhost\"\n\
         ca_file = \"{}\"\n",
        front(&old, "pop3", "starttls", ""),
        old.pop3,
        old.ca_file.display(),
    );
    let gw = start(&text).await;
    let work = tempfile::tempdir().expect("temp dir");
    assert_eq!(
        fetchmail(work.path(), gw.addr("pop3"), "erin", "erin-pw").await,
        12
    );
    assert_eq!(
        fetchmail(work.path(), gw.addr("pop3"), "erin", "erin-pw").await,
        0
    );
    let before = poplib(old.pop3, "erin", "erin-pw", &[]).await;

    let import = |input: &'static str| {
        let config = gw.dir.path().join("mailgate.toml").display().to_string();
        async move {
            let args = [
                "import",
                "pop3",
                "--user",
                "erin",
                "--password-stdin",
                "--config",
            ];
            let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            args.push(config);
            mailgate_testkit::run(crate::MAILGATE, args, Some(input.into())).await
        }
    };
    let out = import("erin-pw\n").await;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("12 copied"), "{said}");
    assert!(gw.dir.path().join("state/maildir/erin/cur").is_dir());

    // Served locally now, with the old UIDLs and bytes: fetchmail fetches nothing again.
    let local = poplib(gw.addr("pop3"), "erin", "erin-pw", &[]).await;
    assert_eq!(local, before, "the same UIDLs and messages after the move");
    assert_eq!(
        fetchmail(work.path(), gw.addr("pop3"), "erin", "erin-pw").await,
        0
    );
    let out = import("erin-pw\n").await;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        said.contains("0 copied") && said.contains("12 already here"),
        "{said}"
    );
    let after = poplib(old.pop3, "erin", "erin-pw", &[]).await;
    assert_eq!(after, before, "the old mailbox is untouched");
}

/// The old box authenticates against a directory: `[auth.ldap]` checks passwords by
/// search-then-bind in a private slapd over StartTLS. A user only in the directory logs in
/// over SMTP and POP3, is captured, then uses CRAM-MD5; a wrong password and a name that
/// would widen the filter are refused; the directory stopped is a temporary failure.
#[tokio::test]
async fn a_directory_checks_the_passwords_of_users_not_moved_yet() {
    use mailgate_testkit::directory::{self, Directory, PEOPLE};
    if !directory::available() {
        return;
    }
    let mut dir = Directory::start(&[("frank", "frank-pw"), ("grace", "grace-pw")]).await;
    let text = extra::set_all(
        &mailgate_testkit::config_text(""),
        &[
            ("auth", "insecure_plaintext_networks", r#"["127.0.0.0/8"]"#),
            ("auth", "mechanisms", r#"["PLAIN", "LOGIN", "CRAM-MD5"]"#),
        ],
    );
    let text = format!(
        "{text}\n[auth.ldap]\nurl = \"ldap://localhost:{port}\"\nca_file = \"{ca}\"\n\
         bind_dn = \"{admin}\"\nbind_password_file = \"{pw}\"\nbase = \"{PEOPLE}\"\n\
         capture = true\nnegative_cache_ttl = \"0s\"\ntimeout = \"3s\"\n",
        port = dir.addr.port(),
        ca = dir.ca_file.display(),
        admin = directory::ADMIN.0,
        pw = dir.admin_password_file().display(),
    );
    let gw = start(&text).await;
    let (code, text) = smtp_plain(&gw, "frank", "frank-pw").await;
    assert_eq!(code, 235, "{text}");
    let (code, text) = smtp_plain(&gw, "frank", "wrong").await;
    assert_eq!(code, 535, "{text}");
    let (code, text) = smtp_plain(&gw, "*", "frank-pw").await;
    assert_eq!(code, 535, "a wildcard name finds nobody: {text}");
    let line = pop_login(&gw, "grace", "grace-pw").await;
    assert!(line.starts_with("+OK"), "{line}");
    captured(&gw, "frank").await;
    let (mut c, _) = mech::smtp(host(1), gw.addr("submission"), false, "client.test").await;
    assert_eq!(mech::smtp_cram(&mut c, "frank", "frank-pw").await.code, 235);
    dir.stop().await;
    // grace's success is cached for a while: a name never checked goes to the directory.
    let (code, text) = smtp_plain(&gw, "henry", "henry-pw").await;
    assert_eq!(code, 454, "{text}");
    let line = pop_login(&gw, "henry", "henry-pw").await;
    assert!(line.starts_with("-ERR [SYS/TEMP]"), "{line}");
}

/// `[delivery] route_unmigrated_to`: mail for local users whose mailbox has not moved yet (no
/// Maildir here, whether or not the users file holds them) goes to the old server's SMTP,
/// never into a new local Maildir that would hide their old mail; once the Maildir exists it
/// is delivered here. Without the route, a user the users file does not hold is refused.
#[tokio::test]
async fn mail_for_users_not_moved_yet_goes_to_the_old_box() {
    use mailgate_testkit::smarthost::{Options, Smarthost};
    let old_smtp = Smarthost::start(Options::default()).await;
    let text = extra::set(
        &mailgate_testkit::config_text(""),
        "delivery",
        "route_unmigrated_to",
        &format!("\"{}\"", old_smtp.addr()),
    );
    let gw = start(&text).await;
    let smtp = gw.addr("smtp");
    let send = |to: &'static str| async move {
        let (mut c, _) = mech::smtp(host(1), smtp, false, "sender.test").await;
        c.cmd("MAIL FROM:<someone@sender.test>", 250).await;
        let (code, _) = {
            c.send(&format!("RCPT TO:<{to}>")).await;
            c.reply().await
        };
        if code == 250 {
            c.cmd("DATA", 354).await;
            c.send(&format!("Subject: to {to}\r\n\r\nhello\r\n.")).await;
            c.expect(250).await;
        }
        code
    };
    assert_eq!(
        send("alice@example.test").await,
        250,
        "in the users file, not moved"
    );
    assert_eq!(send("carol@example.test").await, 250, "only on the old box");
    let got = old_smtp.wait_for(2, Duration::from_secs(10)).await;
    let rcpts: Vec<&str> = got
        .iter()
        .flat_map(|m| m.rcpt_to.iter().map(String::as_str))
        .collect();
    assert!(rcpts.contains(&"alice@example.test"), "{rcpts:?}");
    assert!(rcpts.contains(&"carol@example.test"), "{rcpts:?}");
    assert!(
        gw.mailbox("alice").is_empty(),
        "no local Maildir was made for alice"
    );
    assert!(!gw.dir.path().join("state/maildir/alice").exists());

    // Alice's mailbox moves (her Maildir exists): her mail is delivered here.
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(gw.dir.path().join("state/maildir/alice").join(sub)).unwrap();
    }
    assert_eq!(send("alice@example.test").await, 250);
    gw.wait_for_mail("alice", 1).await;
    assert_eq!(
        old_smtp.messages().len(),
        2,
        "nothing more went to the old box"
    );

    // Without the route, a user the users file does not hold is refused at RCPT.
    let plain = start(&mailgate_testkit::config_text("")).await;
    let (mut c, _) = mech::smtp(host(1), plain.addr("smtp"), false, "sender.test").await;
    c.cmd("MAIL FROM:<someone@sender.test>", 250).await;
    c.cmd("RCPT TO:<carol@example.test>", 550).await;
}

/// `mailgate import maildir` from the old box's Maildir on disk: the UIDLs Dovecot served
/// (from its `dovecot-uidlist`) and the message bytes are what mailgate serves after the move.
#[tokio::test]
async fn a_dovecot_maildir_imports_with_its_uidls() {
    if !oldbox::available() || !mailgate_testkit::have("python3") {
        return;
    }
    let old = OldBox::start(&[("ivan", "ivan-pw")]).await;
    let messages: Vec<String> = (1..=11)
        .map(|i| format!("Subject: m{i}\n\nline {i}\n.dot\n"))
        .collect();
    let refs: Vec<&str> = messages.iter().map(String::as_str).collect();
    old.deliver("ivan", &refs);
    // A POP3 session makes Dovecot number the messages (dovecot-uidlist).
    let before = poplib(old.pop3, "ivan", "ivan-pw", &[]).await;
    assert!(old.maildir("ivan").join("dovecot-uidlist").exists());
    let gw = start(&front(&old, "pop3", "starttls", "")).await;
    let import = || {
        let args = vec![
            "import".to_string(),
            "maildir".into(),
            "--user".into(),
            "ivan".into(),
            old.maildir("ivan").display().to_string(),
            "--config".into(),
            gw.dir.path().join("mailgate.toml").display().to_string(),
        ];
        mailgate_testkit::run(crate::MAILGATE, args, None)
    };
    let out = import().await;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("11 copied"), "{said}");
    let after = poplib(gw.addr("pop3"), "ivan", "ivan-pw", &[]).await;
    assert_eq!(after, before, "the same UIDLs and bytes after the move");
    let said = String::from_utf8_lossy(&import().await.stdout).into_owned();
    assert!(
        said.contains("0 copied") && said.contains("11 already here"),
        "{said}"
    );
}

/// The old server speaks SMTP only (its submission port, over implicit TLS): another mail
/// server, here a second gateway holding the user, checks the password with AUTH PLAIN.
#[tokio::test]
async fn an_old_smtp_server_checks_passwords_over_implicit_tls() {
    let certs = tempfile::tempdir().expect("temp dir");
    let ca = certs.path().join("ca.pem");
    oldbox::write_certificates(certs.path(), &ca);
    let old_dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(old_dir.path().join("users"), "kate:{PLAIN}kate-pw\n").expect("users");
    let old_text = format!(
        "{}\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        mailgate_testkit::config_text(""),
        certs.path().join("cert.pem").display(),
        certs.path().join("key.pem").display()
    );
    let old = Gateway::start_in(old_dir, &old_text).await;
    let text = extra::set_all(
        &mailgate_testkit::config_text(""),
        &[("auth", "insecure_plaintext_networks", r#"["127.0.0.0/8"]"#)],
    );
    let text = format!(
        "{text}\n[auth.upstream]\naddress = \"{}\"\nprotocol = \"smtp\"\ntls = \"implicit\"\n\
         server_name = \"localhost\"\nca_file = \"{}\"\n",
        old.addr("submissions"),
        ca.display()
    );
    let gw = start(&text).await;
    let (code, text) = smtp_plain(&gw, "kate", "kate-pw").await;
    assert_eq!(code, 235, "{text}");
    let (code, text) = smtp_plain(&gw, "kate", "not-kate-pw").await;
    assert_eq!(code, 535, "{text}");
}

/// `mailgate auth test` checks a user the users file does not hold against the old box, as a
/// login would, and says so; a user of the users file is checked against the stored form.
#[tokio::test]
async fn auth_test_asks_the_old_box_for_users_not_moved_yet() {
    if !oldbox::available() {
        return;
    }
    let old = OldBox::start(&[("dave", "dave-pw")]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users"), mailgate_testkit::USERS).expect("users file");
    let config = dir.path().join("mailgate.toml");
    std::fs::write(&config, front(&old, "pop3", "starttls", "")).expect("config");
    let test = |user: &str, password: &str| {
        let args = ["auth", "test", user, "--config"];
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        args.push(config.display().to_string());
        let input = format!("{password}\n");
        async move {
            let out = mailgate_testkit::run(crate::MAILGATE, args, Some(input)).await;
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.code(), said)
        }
    };
    let (code, said) = test("dave", "dave-pw").await;
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("checked by the old server"), "{said}");
    let (code, said) = test("dave", "not-daves").await;
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("does NOT verify"), "{said}");
    let (code, said) = test("alice", mailgate_testkit::PASSWORD).await;
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("stored {PLAIN} form"), "{said}");
    assert!(old.log().contains("dave"), "the old box saw the check");
}
