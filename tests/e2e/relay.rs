//! End-to-end tests of the delivery worker: spool in a temp directory, local Maildirs, and the
//! scripted smarthost on loopback.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mailgate::clock::{Clock, SystemClock, unix_secs};
use mailgate::relay::{self, Notifier, Settings};
use mailgate::spool::{Envelope, Recipient, Spool, Status};
use mailgate_testkit::smarthost;
use smarthost::{Fault, Options, Smarthost, Stage};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);
const BODY: &[u8] = b"From: alice@local.test\r\nSubject: hi\r\n\r\n.leading dot\r\nbye\r\n";

struct Env {
    _dir: tempfile::TempDir,
    spool_dir: PathBuf,
    maildir: PathBuf,
    dead: PathBuf,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        Env {
            spool_dir: root.join("spool"),
            maildir: root.join("mail"),
            dead: root.join("dead"),
            _dir: dir,
        }
    }

    fn settings(&self, upstream: Option<mailgate::config::Upstream>) -> Settings {
        Settings {
            hostname: "gw.test".into(),
            maildir: self.maildir.clone(),
            dead_letter: self.dead.clone(),
            upstream,
            unmigrated: None,
            audit: mailgate::audit::Auditor::disabled(),
            metrics: mailgate::metrics::Metrics::new(),
        }
    }

    fn start(
        &self,
        settings: Settings,
    ) -> (Arc<Spool>, JoinHandle<()>, Notifier, CancellationToken) {
        let spool = Arc::new(Spool::open(&self.spool_dir).expect("open spool"));
        let token = CancellationToken::new();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let (handle, notifier) = relay::spawn(settings, spool.clone(), clock, token.clone());
        (spool, handle, notifier, token)
    }

    /// Files in `user`'s `new/` folder.
    fn mailbox(&self, user: &str) -> Vec<Vec<u8>> {
        let dir = self.maildir.join(user).join("new");
        let Ok(entries) = fs::read_dir(dir) else {
            return vec![];
        };
        entries
            .map(|e| fs::read(e.expect("dir entry").path()).expect("read mail"))
            .collect()
    }
}

fn envelope(from: &str, rcpts: Vec<Recipient>, authorized_as: Option<&str>) -> Envelope {
    let now = unix_secs(SystemClock.now());
    Envelope::new(
        from,
        rcpts,
        now,
        "[127.0.0.1]:1",
        authorized_as.map(str::to_string),
    )
}

/// Receives a message the way an SMTP session does.
async fn submit(spool: &Spool, env: Envelope) -> String {
    let mut incoming = spool.receive().await.expect("receive");
    for chunk in BODY.chunks(7) {
        incoming.write(chunk).await.expect("write");
    }
    incoming.commit(env).await.expect("commit")
}

/// Polls `cond` until it holds; panics after [`WAIT`].
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn stop(handle: JoinHandle<()>, token: CancellationToken) {
    token.cancel();
    tokio::time::timeout(WAIT, handle)
        .await
        .expect("worker stops")
        .expect("worker ok");
}

#[tokio::test]
async fn delivers_local_and_remote_over_starttls_with_auth() {
    let env = Env::new();
    let smarthost = Smarthost::start(Options {
        auth: Some(("gw".into(), "secret".into())),
        starttls: true,
        implicit_tls: false,
        faults: vec![],
    })
    .await;
    let settings = env.settings(Some(smarthost.upstream(vec![Duration::from_millis(100)])));
    let (spool, handle, notifier, token) = env.start(settings);

    let rcpts = vec![
        Recipient::new("bob@local.test", Some("bob".into())),
        Recipient::new("carol@remote.test", None),
        Recipient::new("dave@remote.test", None),
    ];
    let id = submit(&spool, envelope("alice@local.test", rcpts, Some("alice"))).await;
    notifier.notify(&id);

    let got = smarthost.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mail_from, "alice@local.test");
    assert_eq!(
        got[0].rcpt_to,
        vec!["carol@remote.test", "dave@remote.test"]
    );
    assert_eq!(got[0].data, BODY);
    assert_eq!(got[0].auth_user.as_deref(), Some("gw"));
    assert!(got[0].tls);

    eventually("spool to empty", || spool.is_empty()).await;
    let mail = env.mailbox("bob");
    assert_eq!(mail.len(), 1);
    assert_eq!(
        mail[0],
        [b"Return-Path: <alice@local.test>\r\n".as_slice(), BODY].concat()
    );
    assert!(!spool.contains(&id));
    stop(handle, token).await;
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let env = Env::new();
    let smarthost = Smarthost::start(Options {
        faults: vec![Fault::first(Stage::Rcpt, 451, 2)],
        ..Options::default()
    })
    .await;
    let retry = vec![Duration::from_millis(100); 5];
    let (spool, handle, notifier, token) = env.start(env.settings(Some(smarthost.upstream(retry))));
    let rcpts = vec![Recipient::new("carol@remote.test", None)];
    let id = submit(&spool, envelope("alice@local.test", rcpts, None)).await;
    notifier.notify(&id);

    let got = smarthost.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_to, vec!["carol@remote.test"]);
    assert_eq!(smarthost.sessions(), 3, "two deferrals, then delivery");
    eventually("spool to empty", || spool.is_empty()).await;
    stop(handle, token).await;
}

#[tokio::test]
async fn permanent_failure_bounces_to_senders_mailbox() {
    let env = Env::new();
    let smarthost = Smarthost::start(Options {
        faults: vec![Fault::always(Stage::Rcpt, 550).for_rcpt("nobody@remote.test")],
        ..Options::default()
    })
    .await;
    let settings = env.settings(Some(smarthost.upstream(vec![Duration::from_millis(100)])));
    let (spool, handle, notifier, token) = env.start(settings);
    let rcpts = vec![
        Recipient::new("nobody@remote.test", None),
        Recipient::new("ok@remote.test", None),
    ];
    let id = submit(&spool, envelope("alice@local.test", rcpts, Some("alice"))).await;
    notifier.notify(&id);

    let got = smarthost.wait_for(1, WAIT).await;
    assert_eq!(got[0].rcpt_to, vec!["ok@remote.test"]);
    eventually("bounce in alice's mailbox", || {
        env.mailbox("alice").len() == 1
    })
    .await;
    let bounce = String::from_utf8(env.mailbox("alice").remove(0)).expect("utf-8 bounce");
    assert!(bounce.starts_with("Return-Path: <>\r\n"), "{bounce}");
    assert!(bounce.contains("MAILER-DAEMON@gw.test"), "{bounce}");
    assert!(
        bounce.contains("Final-Recipient: rfc822; nobody@remote.test"),
        "{bounce}"
    );
    assert!(
        bounce.contains("Diagnostic-Code: smtp; 550 5.0.0 scripted failure"),
        "{bounce}"
    );
    assert!(
        bounce.contains("Subject: hi"),
        "original headers quoted: {bounce}"
    );
    assert!(!bounce.contains("ok@remote.test"), "{bounce}");
    assert!(!bounce.contains("leading dot"), "body not quoted: {bounce}");
    eventually("spool to empty", || spool.is_empty()).await;
    stop(handle, token).await;
}

#[tokio::test]
async fn exhausted_schedule_bounces_with_last_error() {
    let env = Env::new();
    let smarthost = Smarthost::start(Options {
        faults: vec![Fault::always(Stage::Mail, 451)],
        ..Options::default()
    })
    .await;
    let retry = vec![Duration::from_millis(50), Duration::from_millis(50)];
    let (spool, handle, notifier, token) = env.start(env.settings(Some(smarthost.upstream(retry))));
    let rcpts = vec![Recipient::new("carol@remote.test", None)];
    let id = submit(&spool, envelope("alice@local.test", rcpts, Some("alice"))).await;
    notifier.notify(&id);

    eventually("bounce in alice's mailbox", || {
        env.mailbox("alice").len() == 1
    })
    .await;
    let bounce = String::from_utf8(env.mailbox("alice").remove(0)).expect("utf-8 bounce");
    assert!(bounce.contains("gave up after 3 attempts"), "{bounce}");
    assert!(bounce.contains("Status: 4.0.0"), "{bounce}");
    assert_eq!(smarthost.sessions(), 3);
    assert!(smarthost.messages().is_empty());
    eventually("spool to empty", || spool.is_empty()).await;
    stop(handle, token).await;
}

#[tokio::test]
async fn restart_picks_up_the_spool_without_delivering_twice() {
    let env = Env::new();
    let smarthost = Smarthost::start(Options::default()).await;

    // Accepted before a crash: one message untouched, one whose local part was delivered.
    let spool = Spool::open(&env.spool_dir).expect("open spool");
    let fresh = submit(
        &spool,
        envelope(
            "a@local.test",
            vec![Recipient::new("r1@remote.test", None)],
            None,
        ),
    )
    .await;
    let rcpts = vec![
        Recipient::new("bob@local.test", Some("bob".into())),
        Recipient::new("r2@remote.test", None),
    ];
    let half = submit(&spool, envelope("a@local.test", rcpts, None)).await;
    let mut partial = spool.load(&half).expect("load");
    partial.recipients[0].status = Status::Delivered;
    partial.attempts = 1;
    spool.update(&partial).expect("update");
    // A half-written message from the crashed process is discarded at open.
    fs::write(env.spool_dir.join("tmp").join("1.2.3.4"), b"partial").expect("write tmp");
    drop(spool);

    let settings = env.settings(Some(smarthost.upstream(vec![Duration::from_millis(100)])));
    let (spool, handle, _notifier, token) = env.start(settings);
    let got = smarthost.wait_for(2, WAIT).await;
    let mut rcpts: Vec<String> = got.iter().flat_map(|m| m.rcpt_to.clone()).collect();
    rcpts.sort();
    assert_eq!(rcpts, vec!["r1@remote.test", "r2@remote.test"]);
    eventually("spool to empty", || spool.is_empty()).await;
    assert!(
        env.mailbox("bob").is_empty(),
        "local part must not be delivered again"
    );
    assert!(
        fs::read_dir(env.spool_dir.join("tmp"))
            .expect("tmp")
            .next()
            .is_none()
    );
    let _ = fresh;
    stop(handle, token).await;
}

#[tokio::test]
async fn unreportable_failure_goes_to_dead_letters() {
    let env = Env::new();
    // No smarthost configured: remote recipients fail permanently; a null sender gets no bounce.
    let (spool, handle, notifier, token) = env.start(env.settings(None));
    let id = submit(
        &spool,
        envelope("", vec![Recipient::new("x@remote.test", None)], None),
    )
    .await;
    notifier.notify(&id);

    let dead_body = env.dead.join(format!("{id}.eml"));
    let dead_env = env.dead.join(format!("{id}.json"));
    // The body and the envelope move one after the other; wait for the whole move.
    eventually("dead letter", || dead_body.exists() && dead_env.exists()).await;
    eventually("spool empty", || spool.is_empty()).await;
    assert_eq!(fs::read(&dead_body).expect("dead body"), BODY);
    let text = fs::read(env.dead.join(format!("{id}.json"))).expect("dead envelope");
    let dead = Envelope::parse(&text).expect("parse dead envelope");
    assert!(
        matches!(&dead.recipients[0].status, Status::Failed { text, .. }
        if text.contains("no smarthost"))
    );
    assert!(spool.is_empty());
    stop(handle, token).await;
}

#[tokio::test]
async fn local_only_delivery_and_prompt_shutdown() {
    let env = Env::new();
    let (spool, handle, notifier, token) = env.start(env.settings(None));
    let rcpts = vec![
        Recipient::new("bob@local.test", Some("bob".into())),
        Recipient::new("carol@local.test", Some("carol".into())),
    ];
    let id = submit(&spool, envelope("alice@local.test", rcpts, None)).await;
    notifier.notify(&id);
    eventually("both mailboxes", || {
        env.mailbox("bob").len() == 1 && env.mailbox("carol").len() == 1
    })
    .await;
    eventually("spool to empty", || spool.is_empty()).await;
    stop(handle, token).await;
}
