//! The dashboard's data beyond the audit report: `GET /api/refusals` lists the last SMTP
//! refusals, newest first, with listener, client, HELO, sender, recipient, reply and reason;
//! `GET /api/report?group_by=user` marks each name as a real user or not, so that guesses at
//! names that do not exist stay out of the users table.

use mailgate_testkit::{host, mech};

use crate::admin::{http, poll_json, start};

#[tokio::test(flavor = "multi_thread")]
async fn the_last_refusals_and_unknown_names() {
    let gw = start(&[]).await;
    let admin = gw.admin();
    let r = http(admin, "GET", "/api/refusals", None, None).await;
    assert_eq!((r.status, r.json()), (200, serde_json::json!([])));

    let (mut c, _) = mech::smtp(host(23), gw.addr("smtp"), false, "printer.office.test").await;
    c.cmd("MAIL FROM:<printer@office.test>", 250).await;
    c.cmd("RCPT TO:<someone@elsewhere.test>", 554).await;
    c.cmd("RCPT TO:<nobody@example.test>", 550).await;
    c.cmd("QUIT", 221).await;

    let r = http(admin, "GET", "/api/refusals", None, None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let list = r.json();
    let list = list.as_array().expect("a list");
    assert_eq!(list.len(), 2, "{list:#?}");
    let (newest, oldest) = (&list[0], &list[1]);
    assert_eq!(newest["reason"], "unknown-recipient", "{newest}");
    assert_eq!(newest["to"], "nobody@example.test");
    assert_eq!(oldest["reason"], "relay-denied", "{oldest}");
    assert_eq!(oldest["listener"], "smtp");
    assert_eq!(oldest["client"], "127.0.0.23");
    assert_eq!(oldest["helo"], "printer.office.test");
    assert_eq!(oldest["from"], "printer@office.test");
    assert_eq!(oldest["to"], "someone@elsewhere.test");
    assert!(
        oldest["reply"]
            .as_str()
            .is_some_and(|r| r.starts_with("554 ")),
        "{oldest}"
    );
    assert!(oldest["time"].as_str().is_some_and(|t| t.ends_with('Z')));

    // A wrong password for alice, and guesses at a name that does not exist.
    let (mut c, _) = mech::smtp(host(24), gw.addr("submissions"), true, "bot").await;
    assert_eq!(mech::smtp_plain(&mut c, "alice", "wrong").await.code, 535);
    assert_eq!(mech::smtp_plain(&mut c, "admin", "admin").await.code, 535);
    let report = poll_json(&gw, "/api/report?since=1d&group_by=user", |v| {
        v["groups"].as_array().is_some_and(|g| g.len() == 2)
    })
    .await;
    let known = |name: &str| {
        let groups = report["groups"].as_array().expect("groups");
        let g = groups.iter().find(|g| g["key"] == name);
        g.map(|g| g["known"].clone())
    };
    assert_eq!(known("alice"), Some(serde_json::json!(true)), "{report:#}");
    assert_eq!(known("admin"), Some(serde_json::json!(false)), "{report:#}");

    // Without a user grouping there is nothing to mark.
    let r = http(admin, "GET", "/api/report?since=1d&group_by=ip", None, None).await;
    let groups = r.json()["groups"].clone();
    assert!(
        groups
            .as_array()
            .is_some_and(|g| g.iter().all(|g| g.get("known").is_none())),
        "{groups:#}"
    );
}
