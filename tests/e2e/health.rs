//! `/healthz` says whether the gateway can do its job: 200 while the spool takes writes and the
//! disks have room, 503 with the reason when the spool is gone or the free disk is below
//! `[limits] min_free_disk`. `mailgate_build_info` names the version.

use mailgate_testkit::{self as common, Gateway, extra};

async fn start(edits: &[(&str, &str, &str)]) -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("users"), common::USERS).expect("users file");
    let mut all = vec![("listeners", "admin", r#""127.0.0.1:0""#)];
    all.extend_from_slice(edits);
    Gateway::start_in(dir, &extra::set_all(&common::config_text(""), &all)).await
}

#[tokio::test]
async fn health_fails_with_the_reason_when_the_spool_cannot_take_mail() {
    let gw = start(&[]).await;
    let admin = gw.admin();
    let r = crate::admin::http(admin, "GET", "/healthz", None, None).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    let metrics = crate::admin::http(admin, "GET", "/metrics", None, None)
        .await
        .body;
    let build = format!(
        "mailgate_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(metrics.contains(&build), "{metrics}");

    // The spool's folder gone (a file where it was): no mail could be accepted.
    let spool = gw.state().join("spool");
    let aside = gw.state().join("spool.aside");
    std::fs::rename(&spool, &aside).expect("move the spool aside");
    std::fs::write(&spool, b"not a folder").expect("a file in its place");
    let r = crate::admin::http(admin, "GET", "/healthz", None, None).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body.contains("spool") && r.body.contains("not writable"),
        "{}",
        r.body
    );
    std::fs::remove_file(&spool).expect("remove the file");
    std::fs::rename(&aside, &spool).expect("the spool back");
    let r = crate::admin::http(admin, "GET", "/healthz", None, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn health_fails_when_the_disk_is_nearly_full() {
    // No file system here has all of its space free.
    let gw = start(&[("limits", "min_free_disk", r#""100%""#)]).await;
    let r = crate::admin::http(gw.admin(), "GET", "/healthz", None, None).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("min_free_disk"), "{}", r.body);
}
