//! `mailgate-load`: a load generator for SMTP and POP3 servers (mailgate, Postfix, Dovecot,
//! smtp-sink), used by `bench/compare.sh` and described in `docs/benchmarks.md`.
//!
//! Workers run lockstep sessions (one command, then its reply, no pipelining) for a fixed
//! time and check every reply code; client source addresses rotate over a loopback range so
//! that per-address limits and POP-before-SMTP see many clients. The report gives sessions per
//! second, errors, p50/p99 session latency and, given `--server-pid`, the server's CPU time per
//! session. `--idle N` instead holds N connections open (greeting read) and reports the
//! server's resident memory per connection: SMTP connections, or POP3 ones with
//! `--scenario pop3`.
//!
//! ```text
//! mailgate-load --scenario relay --target 127.0.0.1:2525 --concurrency 16 --duration 10s
//! mailgate-load --scenario pbs --pop3 127.0.0.1:1110 --target 127.0.0.1:2525
//! mailgate-load --scenario relay --target 127.0.0.1:2525 --idle 5000 --server-pid 1234
//! mailgate-load --scenario pop3 --target 127.0.0.1:1110 --idle 5000 --server-pid 1234
//! ```

// A load generator measures wall-clock time; the gateway's rule that only the clock module
// reads it (clippy.toml) is for the gateway.
#![allow(clippy::disallowed_methods)]

mod conn;
mod procfs;
mod session;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;

use session::{Plan, Scenario, TlsMode};

/// Most source addresses in `--sources`.
const MAX_SOURCES: u32 = 65_536;
/// Longest wait for the servers to go idle after a run.
const SETTLE_MAX: Duration = Duration::from_secs(60);
/// Most connections `--idle` opens at once.
const IDLE_OPENERS: usize = 64;

#[derive(Debug, Parser)]
#[command(
    name = "mailgate-load",
    about = "SMTP/POP3 load generator for benchmarks"
)]
struct Args {
    /// What each session does.
    #[arg(long, value_enum, default_value = "relay")]
    scenario: Scenario,
    /// The SMTP server (the POP3 server for `--scenario pop3` and `pop3-uidl`).
    #[arg(long, default_value = "127.0.0.1:2525")]
    target: SocketAddr,
    /// The POP3 server for `--scenario pbs`.
    #[arg(long, default_value = "127.0.0.1:1110")]
    pop3: SocketAddr,
    /// TLS use on every connection.
    #[arg(long, value_enum, default_value = "none")]
    tls: TlsMode,
    /// SNI name sent in TLS handshakes (any certificate is accepted).
    #[arg(long, default_value = "mail.bench.test")]
    tls_name: String,
    /// Sessions in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Length of each measured run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Measured runs; the report gives each and their medians.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// An unmeasured run first (servers that fork workers on demand get to warm up).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Client source addresses, an IPv4 range `A.B.C.D-A.B.C.E`; sessions rotate over them.
    #[arg(long, default_value = "127.0.0.2-127.0.0.251")]
    sources: String,
    /// Number of users; session n logs in as `<user-prefix><n mod users, 4 digits>`.
    #[arg(long, default_value_t = 1000)]
    users: u64,
    /// User name prefix.
    #[arg(long, default_value = "user")]
    user_prefix: String,
    /// Every user's password.
    #[arg(long, default_value = "bench-password")]
    password: String,
    /// The sender's domain (`MAIL FROM:<user@domain>`).
    #[arg(long, default_value = "example.test")]
    sender_domain: String,
    /// The recipient of every message.
    #[arg(long, default_value = "sink@relay.bench.test")]
    rcpt: String,
    /// The EHLO name.
    #[arg(long, default_value = "loadgen.bench.test")]
    helo: String,
    /// Root pid of the server under test (repeatable): CPU and memory of its process tree.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// Idle mode: open and hold this many connections, report memory per connection. The
    /// scenario picks the protocol: `pop3` holds POP3 connections to `--target`, any other
    /// SMTP connections to `--target`; `--tls implicit` holds TLS connections.
    #[arg(long)]
    idle: Option<usize>,
    /// How long the idle mode holds its connections after they are all open.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// A queue folder (mailgate's `spool`, or any folder holding one entry per queued message):
    /// after each run, wait (up to 60 s) until it is empty, so the CPU of delivering what the
    /// sessions queued is counted.
    #[arg(long)]
    settle_dir: Option<std::path::PathBuf>,
    /// A label repeated in the RESULT line, for scripts.
    #[arg(long, default_value = "-")]
    label: String,
}

/// The outcome of one measured run.
#[derive(Debug, Clone, Default)]
struct Run {
    ok: u64,
    errors: u64,
    error_kinds: BTreeMap<String, u64>,
    elapsed: Duration,
    /// Session latencies in microseconds, sorted.
    latencies: Vec<u32>,
    server_cpu: Option<f64>,
    /// Busy CPU seconds of the whole machine over the same span, less the client's own.
    machine_cpu: Option<f64>,
    client_cpu: f64,
    /// Entries still in `--settle-dir` when the wait for it gave up.
    left_queued: usize,
}

impl Run {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        percentile(&self.latencies, p) as f64 / 1000.0
    }

    fn server_cpu_ms(&self) -> Option<f64> {
        self.server_cpu.map(|s| s * 1000.0 / self.ok.max(1) as f64)
    }

    fn machine_cpu_ms(&self) -> Option<f64> {
        self.machine_cpu.map(|s| s * 1000.0 / self.ok.max(1) as f64)
    }
}

/// The `p`-th percentile (0..=100, nearest rank) of sorted `v`; 0 when empty.
fn percentile(v: &[u32], p: f64) -> u32 {
    if v.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// The median of `v` (mean of the middle two for an even count); 0 when empty.
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Parses `A.B.C.D-A.B.C.E` (or a single address) into the addresses it spans.
fn parse_sources(spec: &str) -> Result<Vec<IpAddr>, String> {
    let (a, b) = spec.split_once('-').unwrap_or((spec, spec));
    let parse = |s: &str| {
        s.trim()
            .parse::<Ipv4Addr>()
            .map(u32::from)
            .map_err(|e| format!("--sources {spec:?}: {s:?}: {e}"))
    };
    let (a, b) = (parse(a)?, parse(b)?);
    if b < a || b - a >= MAX_SOURCES {
        return Err(format!(
            "--sources {spec:?}: empty or over {MAX_SOURCES} addresses"
        ));
    }
    Ok((a..=b).map(|n| IpAddr::V4(Ipv4Addr::from(n))).collect())
}

/// Messages queued in `dir`: a mailgate spool (it has `slots/`) is read as such; any other
/// folder counts its entries. 0 if it cannot be read.
fn queued(dir: &std::path::Path) -> usize {
    if dir.join("slots").is_dir() {
        return mailgate::spool::inspect(dir).map_or(0, |q| q.len());
    }
    std::fs::read_dir(dir).map_or(0, |d| d.flatten().count())
}

/// Waits until the servers stop using CPU and `settle_dir` (a queue folder) is empty, so that
/// work the sessions left behind (relaying queued mail) is counted; at most `SETTLE_MAX`.
/// Returns the servers' CPU seconds then and the entries still queued.
async fn settle(pids: &[u32], settle_dir: Option<&std::path::Path>) -> (f64, usize) {
    let mut last = procfs::cpu_seconds(pids);
    let start = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = procfs::cpu_seconds(pids);
        let left = settle_dir.map_or(0, queued);
        // Below two ticks in 250 ms: idle apart from timers.
        if (now - last < 0.02 && left == 0) || start.elapsed() > SETTLE_MAX {
            return (now, left);
        }
        last = now;
    }
}

async fn measure(plan: Arc<Plan>, sources: Arc<Vec<IpAddr>>, args: &Args, length: Duration) -> Run {
    let pids = &args.server_pids;
    let cpu_before = (!pids.is_empty()).then(|| procfs::cpu_seconds(pids));
    let machine_before = procfs::machine_busy_seconds();
    let me = [std::process::id()];
    let client_before = procfs::cpu_seconds(&me);
    let counter = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + length;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (plan, sources, counter) = (plan.clone(), sources.clone(), counter.clone());
        tasks.spawn(async move {
            let mut run = Run::default();
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let source = sources[(n % sources.len() as u64) as usize];
                let t0 = Instant::now();
                match plan.run(n, source).await {
                    Ok(()) => {
                        run.ok += 1;
                        let us = t0.elapsed().as_micros();
                        run.latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
                    }
                    Err(e) => {
                        run.errors += 1;
                        *run.error_kinds.entry(e.to_string()).or_default() += 1;
                        // A refusing server must not turn the worker into a busy loop.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            run
        });
    }
    let mut total = Run::default();
    while let Some(done) = tasks.join_next().await {
        let Ok(run) = done else { continue };
        total.ok += run.ok;
        total.errors += run.errors;
        for (k, n) in run.error_kinds {
            *total.error_kinds.entry(k).or_default() += n;
        }
        total.latencies.extend(run.latencies);
    }
    total.elapsed = start.elapsed();
    total.latencies.sort_unstable();
    total.client_cpu = procfs::cpu_seconds(&me) - client_before;
    if let Some(before) = cpu_before {
        let (after, left) = settle(pids, args.settle_dir.as_deref()).await;
        total.server_cpu = Some(after - before);
        total.left_queued = left;
        let machine = procfs::machine_busy_seconds() - machine_before;
        total.machine_cpu = Some((machine - total.client_cpu).max(0.0));
    }
    total
}

fn print_run(label: &str, run: &Run) {
    let cpu = match (run.server_cpu_ms(), run.machine_cpu_ms()) {
        (Some(ms), Some(all)) => format!("{ms:.3} ms/session (machine {all:.3})"),
        _ => "n/a".to_string(),
    };
    println!(
        "{label}: {:.1} sessions/s ({} ok, {} errors in {:.2} s), p50 {:.2} ms, p99 {:.2} ms, \
         server CPU {cpu}, client CPU {:.3} ms/session",
        run.rate(),
        run.ok,
        run.errors,
        run.elapsed.as_secs_f64(),
        run.percentile_ms(50.0),
        run.percentile_ms(99.0),
        run.client_cpu * 1000.0 / run.ok.max(1) as f64,
    );
    for (kind, n) in run.error_kinds.iter().take(5) {
        println!("  {n} x {kind}");
    }
    if run.left_queued > 0 {
        println!(
            "  {} queue entries still there after {SETTLE_MAX:?}",
            run.left_queued
        );
    }
}

async fn load(args: &Args, plan: Arc<Plan>, sources: Arc<Vec<IpAddr>>) -> ExitCode {
    if !args.warmup.is_zero() {
        let run = measure(plan.clone(), sources.clone(), args, args.warmup).await;
        print_run("warm-up", &run);
    }
    let mut runs = Vec::new();
    for i in 0..args.runs.max(1) {
        let run = measure(plan.clone(), sources.clone(), args, args.duration).await;
        print_run(&format!("run {}/{}", i + 1, args.runs.max(1)), &run);
        runs.push(run);
    }
    let med = |f: &dyn Fn(&Run) -> f64| median(runs.iter().map(f).collect());
    let (cpu, machine) = if args.server_pids.is_empty() {
        ("n/a".to_string(), "n/a".to_string())
    } else {
        (
            format!("{:.3}", med(&|r| r.server_cpu_ms().unwrap_or(0.0))),
            format!("{:.3}", med(&|r| r.machine_cpu_ms().unwrap_or(0.0))),
        )
    };
    let errors: u64 = runs.iter().map(|r| r.errors).sum();
    let left: usize = runs.iter().map(|r| r.left_queued).sum();
    let ok: u64 = runs.iter().map(|r| r.ok).sum();
    println!(
        "RESULT label={} scenario={:?} tls={:?} concurrency={} runs={} rate={:.1} ok={ok} \
         errors={errors} p50_ms={:.2} p99_ms={:.2} cpu_ms={cpu} machine_ms={machine} left={left}",
        args.label,
        args.scenario,
        args.tls,
        args.concurrency,
        runs.len(),
        med(&|r| r.rate()),
        med(&|r| r.percentile_ms(50.0)),
        med(&|r| r.percentile_ms(99.0)),
    );
    if ok == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn idle(args: &Args, plan: Arc<Plan>, sources: Arc<Vec<IpAddr>>, count: usize) -> ExitCode {
    let pids = &args.server_pids;
    let before = procfs::rss_bytes(pids);
    let slots = Arc::new(tokio::sync::Semaphore::new(IDLE_OPENERS));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..count {
        let (plan, sources, slots) = (plan.clone(), sources.clone(), slots.clone());
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await.ok();
            plan.open_idle(sources[n % sources.len()]).await
        });
    }
    let mut held = Vec::with_capacity(count);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(conn)) => held.push(conn),
            Ok(Err(e)) => *errors.entry(e.to_string()).or_default() += 1,
            Err(e) => *errors.entry(e.to_string()).or_default() += 1,
        }
    }
    // Let the server finish whatever it does right after a greeting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = procfs::rss_bytes(pids);
    let per = (after.saturating_sub(before)) as f64 / held.len().max(1) as f64;
    let protocol = match args.scenario {
        Scenario::Pop3 | Scenario::Pop3Uidl => "pop3",
        _ => "smtp",
    };
    println!(
        "idle: {} {protocol} connections held ({} failed); server RSS {} KiB -> {} KiB: {:.0} \
         bytes each",
        held.len(),
        errors.values().sum::<u64>(),
        before / 1024,
        after / 1024,
        per
    );
    for (kind, n) in errors.iter().take(5) {
        println!("  {n} x {kind}");
    }
    tokio::time::sleep(args.hold).await;
    println!(
        "RESULT label={} scenario=idle protocol={protocol} tls={:?} held={} errors={} \
         rss_before={before} rss_after={after} bytes_per_conn={per:.0}",
        args.label,
        args.tls,
        held.len(),
        errors.values().sum::<u64>(),
    );
    drop(held);
    if pids.is_empty() {
        println!("(no --server-pid: memory not measured)");
    }
    ExitCode::SUCCESS
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let sources = match parse_sources(&args.sources) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("mailgate-load: {e}");
            return ExitCode::from(2);
        }
    };
    let tls = match args.tls {
        TlsMode::None => None,
        _ => match conn::Tls::new(&args.tls_name) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("mailgate-load: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let from = format!("{}0000@{}", args.user_prefix, args.sender_domain);
    let plan = Arc::new(Plan {
        scenario: args.scenario,
        tls_mode: args.tls,
        tls,
        smtp: args.target,
        pop3: if matches!(args.scenario, Scenario::Pop3 | Scenario::Pop3Uidl) {
            args.target
        } else {
            args.pop3
        },
        user_prefix: args.user_prefix.clone(),
        users: args.users,
        password: args.password.clone(),
        sender_domain: args.sender_domain.clone(),
        rcpt: args.rcpt.clone(),
        helo: args.helo.clone(),
        message: session::message(&from, &args.rcpt),
    });
    match args.idle {
        Some(n) => idle(&args, plan, sources, n).await,
        None => load(&args, plan, sources).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_ranges() {
        let ok = |s: &str| parse_sources(s).unwrap();
        assert_eq!(ok("127.0.0.2-127.0.0.251").len(), 250);
        assert_eq!(ok("127.0.0.9"), [IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9))]);
        assert_eq!(ok("127.0.0.255-127.0.1.0").len(), 2);
        for bad in [
            "127.0.0.5-127.0.0.4",
            "x-127.0.0.1",
            "127.0.0.0-127.2.0.0",
            "",
        ] {
            assert!(parse_sources(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn percentiles_and_medians() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 99.0), 0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn rate_counts_only_successes() {
        let run = Run {
            ok: 500,
            errors: 20,
            elapsed: Duration::from_secs(2),
            server_cpu: Some(0.25),
            ..Run::default()
        };
        assert_eq!(run.rate(), 250.0);
        assert_eq!(run.server_cpu_ms(), Some(0.5));
    }
}
