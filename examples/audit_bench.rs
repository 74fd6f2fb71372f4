//! Times the audit report: writes N synthetic events (default 1,000,000) as the gateway's audit
//! writer would, split over the current log and three rotations, then runs
//! `mailgate::audit::report::report` over them with the default filter and a few variants.
//!
//! ```sh
//! cargo run --release --example audit_bench -- 1000000 [DIR|-] [spread]
//! ```
//!
//! With DIR the log is written there and kept (to time `mailgate audit --file DIR/audit.log`);
//! without (or with "-"), a temporary directory is used and removed. With "spread", fields are
//! drawn independently of the user (a worst case; see `event`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use mailgate::audit::report::{self, Filter, GroupBy, TimeSpec};
use mailgate::audit::{Event, Kind, Outcome, classify, files, rotated};

const MECHANISMS: [(&str, bool); 9] = [
    ("PLAIN", true),
    ("LOGIN", true),
    ("USER", false),
    ("APOP", false),
    ("CRAM-MD5", false),
    ("NTLMv2", true),
    ("SCRAM-SHA-256", true),
    ("XOAUTH2", true),
    ("pop-before-smtp", false),
];

const SOFTWARE: [&str; 5] = [
    "Microsoft Outlook 16.0",
    "Mozilla Thunderbird 115.3",
    "Apple Mail (2.3731)",
    "scanner-fw/1.2",
    "PHPMailer 6.8.1",
];

/// A small deterministic generator (64-bit LCG), so runs compare.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// One event. Users mostly keep to their own client, mechanism, addresses and host names, as
/// real ones do; with `spread`, every field is drawn independently (a worst case for the
/// per-group lists: every user shows hundreds of addresses and hosts).
fn event(rng: &mut Lcg, t: SystemTime, spread: bool) -> Event {
    let u = rng.next(2000);
    let usual = !spread && rng.next(10) != 0;
    let pick = |rng: &mut Lcg, n: u64, own: u64| if usual { own % n } else { rng.next(n) };
    let (mechanism, tls) = MECHANISMS[pick(rng, MECHANISMS.len() as u64, u) as usize];
    let kind = match (mechanism, rng.next(10)) {
        ("pop-before-smtp", _) => Kind::Relay,
        (_, 0..=1) => Kind::Accept,
        _ => Kind::Auth,
    };
    let result = if rng.next(8) == 0 {
        Outcome::Failure
    } else {
        Outcome::Success
    };
    let mut e = Event::new(kind, "smtp", mailgate::audit::event::rfc3339(t), result);
    e.listener = Some("submission".into());
    e.session = Some(format!("{:08x}", rng.next(u64::from(u32::MAX))));
    let own_ip = u * 7 + rng.next(3);
    let ip = pick(rng, 500, own_ip);
    e.client_ip = Some(
        format!("198.51.{}.{}", ip / 250, ip % 250)
            .parse()
            .expect("ip"),
    );
    e.client_port = Some(1024 + rng.next(60_000) as u16);
    if tls {
        e.tls = Some("TLSv1.3 TLS13_AES_256_GCM_SHA384".into());
    }
    let own_host = u + rng.next(2);
    e.client_name = Some(format!("host-{}.example.net", pick(rng, 300, own_host)));
    let user = format!("user{u:04}");
    e.user_given = Some(user.clone());
    e.user = Some(user);
    e.mechanism = Some(mechanism.into());
    e.class = Some(classify(mechanism, tls));
    if kind == Kind::Accept {
        e.client_software = Some(SOFTWARE[pick(rng, SOFTWARE.len() as u64, u) as usize].into());
        e.queue_id = Some(format!("{:016x}", rng.next(u64::MAX)));
        e.recipients = Some(1 + rng.next(3) as u32);
    }
    e
}

/// Writes `n` events over `audit.log.3` (oldest) .. `audit.log` (newest), ending at `end`.
fn generate(path: &Path, n: u64, end: SystemTime, spread: bool) -> std::io::Result<()> {
    let mut rng = Lcg(1);
    let step = Duration::from_millis(2600);
    let mut t = end - step * n as u32;
    let per_file = n.div_ceil(4);
    for part in (0..4).rev() {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(rotated(path, part))?);
        for _ in 0..per_file.min(n - per_file * (3 - part) as u64) {
            serde_json::to_writer(&mut out, &event(&mut rng, t, spread))?;
            out.write_all(b"\n")?;
            t += step;
        }
        out.flush()?;
    }
    Ok(())
}

// Wall-clock time is what a benchmark measures.
#[allow(clippy::disallowed_methods)]
fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let r = f();
    println!("{what}: {:.3} s", start.elapsed().as_secs_f64());
    r
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let kept = args.next().filter(|a| a != "-").map(PathBuf::from);
    let spread = args.next().is_some_and(|a| a == "spread");
    let temp = tempfile::tempdir()?;
    let dir = kept.clone().unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("audit.log");
    let end = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    timed(&format!("generate {n} events"), || {
        generate(&path, n, end, spread)
    })?;
    let logs = files(&path, 3);
    let bytes: u64 = logs
        .iter()
        .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .sum();
    println!("{} files, {:.1} MB", logs.len(), bytes as f64 / 1e6);

    let all = Filter {
        classes: None,
        kinds: None,
        ..Filter::default()
    };
    let week = Filter {
        since: Some(TimeSpec::Ago(Duration::from_secs(7 * 86_400))),
        ..Filter::default()
    };
    let runs: [(&str, &Filter, GroupBy); 4] = [
        (
            "default (legacy, by user)",
            &Filter::default(),
            GroupBy::User,
        ),
        ("every event, by user", &all, GroupBy::User),
        ("legacy, by client", &Filter::default(), GroupBy::Client),
        ("legacy, last 7 days, by user", &week, GroupBy::User),
    ];
    for (what, filter, by) in runs {
        let r = timed(what, || report::report(&logs, filter, by, end))?;
        println!(
            "  {} events in {} groups, {} skipped",
            r.events,
            r.groups.len(),
            r.skipped
        );
    }
    if let Some(dir) = kept {
        println!(
            "kept: mailgate audit --file {}",
            dir.join("audit.log").display()
        );
    }
    Ok(())
}
