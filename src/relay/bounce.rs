//! Settling a message whose recipients are all delivered or failed: it leaves the spool, and
//! failed recipients are reported to the sender in one delivery status notification (the
//! per-recipient fields of RFC 3464 §2.3 in a plain-text message, from the null reverse-path
//! of RFC 5321 §4.5.5), or the message goes to the dead-letter folder when no report can be
//! sent.

use std::io;
use std::time::SystemTime;

use super::{CRASH_RETRY, Ctx, Outcome, audit_delivery, blocking, remove};
use crate::clock::unix_secs;
use crate::spool::{Body, Envelope, Recipient, Status};

/// Most header bytes of the original message quoted in a bounce.
const BOUNCE_HEADERS: usize = 16 * 1024;

/// Finishes a settled message: removes it, after bouncing failed recipients if any.
pub(super) async fn settle(ctx: &Ctx, env: Envelope, body: &Body) -> Outcome {
    let failed: Vec<&Recipient> = env
        .recipients
        .iter()
        .filter(|r| matches!(r.status, Status::Failed { .. }))
        .collect();
    let id = env.id.clone();
    if failed.is_empty() {
        tracing::debug!(id, "relay: all recipients delivered");
        remove(ctx, &id);
        return Outcome::default();
    }
    if !env.is_null_sender() && env.mail_from == printable(&env.mail_from) {
        let headers = original_headers(body).await;
        let (bounce, text) = bounce(
            &ctx.settings.hostname,
            &env,
            &failed,
            &headers,
            ctx.clock.now(),
        );
        let queued = blocking(ctx, move |spool| spool.enqueue_bytes(bounce, &text)).await;
        match queued {
            Ok(bounce_id) => {
                audit_delivery(
                    ctx,
                    &env,
                    crate::audit::Kind::Bounce,
                    Some(format!("bounced as {bounce_id}")),
                );
                tracing::info!(
                    id,
                    bounce = bounce_id,
                    failed = failed.len(),
                    "relay: bounced"
                );
                remove(ctx, &id);
                return Outcome {
                    retry_at: None,
                    queued: vec![bounce_id],
                };
            }
            Err(e) => tracing::error!(id, error = %e, "relay: cannot queue bounce"),
        }
    }
    let dest = ctx.settings.dead_letter.clone();
    let moved = blocking(ctx, {
        let id = id.clone();
        move |spool| spool.move_out(&id, &dest)
    })
    .await;
    match moved {
        Ok(path) => {
            audit_delivery(
                ctx,
                &env,
                crate::audit::Kind::Bounce,
                Some("moved to dead letters".into()),
            );
            tracing::error!(
            id,
            sender = env.mail_from,
            failed = failed.len(),
            path = %path.display(),
            "relay: undeliverable and unreportable; moved to dead letters"
            );
        }
        Err(e) => {
            tracing::error!(id, error = %e, "relay: cannot move to dead letters; will retry");
            return Outcome {
                retry_at: Some(ctx.clock.now() + CRASH_RETRY),
                queued: vec![],
            };
        }
    }
    Outcome::default()
}

/// The bounce for `failed` recipients of `env`: its envelope (null sender, to the original
/// sender's mailbox if they were authorized locally, else relayed) and its text.
fn bounce(
    host: &str,
    env: &Envelope,
    failed: &[&Recipient],
    headers: &str,
    now: SystemTime,
) -> (Envelope, Vec<u8>) {
    let to = Recipient::new(env.mail_from.clone(), env.authorized_as.clone());
    let client = format!("bounce of {}", env.id);
    let envelope = Envelope::new("", vec![to], unix_secs(now), client, None);
    let mut t = String::new();
    let mut line = |s: &str| {
        t.push_str(s);
        t.push_str("\r\n");
    };
    line(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{host}>"
    ));
    line(&format!("To: <{}>", env.mail_from));
    line("Subject: Undelivered Mail Returned to Sender");
    line(&format!("Date: {}", rfc5322_date(unix_secs(now))));
    line(&format!("Message-ID: <{}.bounce@{host}>", env.id));
    line("Auto-Submitted: auto-replied");
    line("MIME-Version: 1.0");
    line("Content-Type: text/plain; charset=utf-8");
    line("Content-Transfer-Encoding: 8bit");
    line("");
    line(&format!("This is the mail system at {host}."));
    line("");
    line("Your message could not be delivered to one or more recipients.");
    line("The recipients and the reasons are listed below.");
    line("");
    line(&format!("Reporting-MTA: dns; {host}"));
    line(&format!("Arrival-Date: {}", rfc5322_date(env.received_at)));
    for r in failed {
        let Status::Failed { code, text } = &r.status else {
            continue;
        };
        line("");
        line(&format!(
            "Final-Recipient: rfc822; {}",
            printable(&r.address)
        ));
        line("Action: failed");
        line(&format!("Status: {}", enhanced_status(*code, text)));
        line(&format!(
            "Diagnostic-Code: smtp; {code} {}",
            printable(text)
        ));
    }
    line("");
    line("--- Headers of the original message follow ---");
    line("");
    t.push_str(headers);
    (envelope, t.into_bytes())
}

/// The RFC 3463 status for the report: the reply's own enhanced code if it starts with one,
/// else the generic one of its class.
fn enhanced_status(code: u16, text: &str) -> String {
    let first = text.split_ascii_whitespace().next().unwrap_or("");
    let parts: Vec<&str> = first.split('.').collect();
    let valid = parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    if valid {
        first.to_string()
    } else if code >= 500 {
        "5.0.0".into()
    } else {
        "4.0.0".into()
    }
}

/// `s` with control characters replaced, safe to put in a header line.
pub(super) fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The header section of the stored message (bounded), with CRLF line ends.
async fn original_headers(body: &Body) -> String {
    let body = body.clone();
    let read = tokio::task::spawn_blocking(move || -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; (BOUNCE_HEADERS as u64).min(body.len()) as usize];
        let n = body.read_at(&mut buf, 0)?;
        buf.truncate(n);
        Ok(buf)
    })
    .await;
    let Ok(Ok(buf)) = read else {
        return "(original message unavailable)\r\n".into();
    };
    let end = match buf.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(pos) => pos + 2,
        // Truncated: keep whole lines only.
        None => buf.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1),
    };
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// `Sat, 28 Nov 2026 21:14:06 +0000` (RFC 5322 §3.3) for Unix seconds `secs`.
fn rfc5322_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian, 400-year eras).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn dates() {
        let cases = [
            (0, "Thu, 01 Jan 1970 00:00:00 +0000"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 +0000"),
            (1_700_000_000, "Tue, 14 Nov 2023 22:13:20 +0000"),
            (1_735_646_400, "Tue, 31 Dec 2024 12:00:00 +0000"),
            // 2100 is not a leap year.
            (4_107_542_399, "Sun, 28 Feb 2100 23:59:59 +0000"),
            (4_107_542_400, "Mon, 01 Mar 2100 00:00:00 +0000"),
        ];
        for (secs, want) in cases {
            assert_eq!(rfc5322_date(secs), want);
        }
    }

    #[test]
    fn enhanced_status_codes() {
        let cases = [
            (550, "5.1.1 no such user", "5.1.1"),
            (451, "4.3.0 try later", "4.3.0"),
            (550, "no such user", "5.0.0"),
            (421, "", "4.0.0"),
            (550, "5.1 broken", "5.0.0"),
            (550, "5.1.1234 long", "5.0.0"),
        ];
        for (code, text, want) in cases {
            assert_eq!(enhanced_status(code, text), want, "{text}");
        }
    }

    #[test]
    fn bounce_lists_failed_recipients() {
        let mut env = Envelope::new(
            "alice@example.org",
            vec![
                Recipient::new("ok@remote.example", None),
                Recipient::new("gone@remote.example", None),
            ],
            1_700_000_000,
            "peer",
            Some("alice".into()),
        );
        env.id = "1700000000.000001.000001.1".into();
        env.recipients[0].status = Status::Delivered;
        env.recipients[1].status = Status::Failed {
            code: 550,
            text: "5.1.1 user unknown\r\nInjected: x".into(),
        };
        let failed: Vec<&Recipient> = env.recipients[1..].iter().collect();
        let headers = "Subject: hello\r\nFrom: alice@example.org\r\n";
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_100);
        let (b, text) = bounce("gw.example", &env, &failed, headers, now);
        assert!(b.is_null_sender());
        assert_eq!(
            b.recipients,
            vec![Recipient::new("alice@example.org", Some("alice".into()))]
        );
        let text = String::from_utf8(text).unwrap();
        for want in [
            "From: Mail Delivery System <MAILER-DAEMON@gw.example>\r\n",
            "To: <alice@example.org>\r\n",
            "Auto-Submitted: auto-replied\r\n",
            "Final-Recipient: rfc822; gone@remote.example\r\n",
            "Status: 5.1.1\r\n",
            "Diagnostic-Code: smtp; 550 5.1.1 user unknown??Injected: x\r\n",
            "\r\nSubject: hello\r\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("ok@remote.example"));
        assert!(!text.contains("\r\nInjected"));
        assert!(text.lines().all(|l| l.len() < 200));
    }
}
