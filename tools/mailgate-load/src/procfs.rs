//! Server-side measurements from Linux `/proc` (proc(5)): CPU time and resident memory of a
//! server's process tree.
//!
//! A server is named by the pid of its root process (mailgate itself, the Postfix `master`, the
//! Dovecot master). CPU time of the tree is the sum over the root and every live descendant of
//! `utime + stime + cutime + cstime`: a child that exits is reaped by its parent, which moves
//! its time into the parent's `cutime`/`cstime`, so the sum only ever grows and the difference
//! of two readings is the CPU the whole instance spent between them, including short-lived
//! processes (Postfix `smtpd`, Dovecot `pop3`).

use std::collections::HashMap;
use std::fs;

/// Clock ticks per second of the `/proc/<pid>/stat` times (USER_HZ, 100 on every Linux port
/// that matters here).
const TICKS_PER_SEC: f64 = 100.0;

/// One process's parent and CPU ticks (own and reaped children's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    ppid: u32,
    ticks: u64,
}

/// Parses the text of `/proc/<pid>/stat`. The command name is in parentheses and may hold
/// spaces and parentheses itself, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    let num = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(Stat {
        ppid: u32::try_from(num(1)?).ok()?,
        ticks: num(11)? + num(12)? + num(13)? + num(14)?,
    })
}

fn all_stats() -> HashMap<u32, Stat> {
    let mut out = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(stat) = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|t| parse_stat(&t))
        {
            out.insert(pid, stat);
        }
    }
    out
}

/// The pids in the trees rooted at `roots` (the roots included, if alive).
fn tree(stats: &HashMap<u32, Stat>, roots: &[u32]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, s) in stats {
        children.entry(s.ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut todo: Vec<u32> = roots
        .iter()
        .copied()
        .filter(|p| stats.contains_key(p))
        .collect();
    while let Some(pid) = todo.pop() {
        if out.contains(&pid) {
            continue;
        }
        out.push(pid);
        if let Some(kids) = children.get(&pid) {
            todo.extend(kids);
        }
    }
    out
}

/// Busy CPU seconds of the whole machine so far, from the first line of `/proc/stat`: user,
/// nice, system, irq and softirq time (not idle, iowait or steal). Counts what a server leaves
/// to kernel threads (writeback of the files it wrote, for one) as well as every other process.
pub fn machine_busy_seconds() -> f64 {
    fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|t| parse_machine_busy(&t))
        .map_or(0.0, |ticks| ticks as f64 / TICKS_PER_SEC)
}

fn parse_machine_busy(text: &str) -> Option<u64> {
    let line = text.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal ...
    Some(f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)?)
}

/// CPU seconds used so far by the process trees rooted at `roots`.
pub fn cpu_seconds(roots: &[u32]) -> f64 {
    let stats = all_stats();
    let ticks: u64 = tree(&stats, roots)
        .iter()
        .filter_map(|p| stats.get(p))
        .map(|s| s.ticks)
        .sum();
    ticks as f64 / TICKS_PER_SEC
}

/// Resident memory in bytes of the process trees rooted at `roots` (sum of `VmRSS`).
pub fn rss_bytes(roots: &[u32]) -> u64 {
    let stats = all_stats();
    tree(&stats, roots)
        .iter()
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn machine_busy_counts_user_system_and_interrupts() {
        let text = "cpu  100 5 50 9000 30 7 8 4 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(super::parse_machine_busy(text), Some(100 + 5 + 50 + 7 + 8));
        assert_eq!(super::parse_machine_busy("cpu0 1 2\n"), None);
        assert_eq!(super::parse_machine_busy("cpu  1 2 x\n"), None);
    }

    use super::*;

    #[test]
    fn parses_stat_lines() {
        let cases: &[(&str, Option<Stat>)] = &[
            (
                "42 (smtpd) S 7 42 42 0 -1 4194560 100 0 0 0 15 6 3 2 20 0 1 0 9 1 2",
                Some(Stat {
                    ppid: 7,
                    ticks: 15 + 6 + 3 + 2,
                }),
            ),
            // A name with spaces and a closing parenthesis.
            (
                "9 (a b) c) R 1 9 9 0 -1 0 0 0 0 0 1 2 3 4 20 0 1 0 9 1 2",
                Some(Stat { ppid: 1, ticks: 10 }),
            ),
            ("9 (short) R 1 2", None),
            ("garbage", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_stat(text), *want, "{text}");
        }
    }

    #[test]
    fn tree_follows_descendants_only() {
        let s = |ppid| Stat { ppid, ticks: 1 };
        let stats: HashMap<u32, Stat> =
            [(1, s(0)), (10, s(1)), (11, s(10)), (12, s(11)), (20, s(1))].into();
        let mut t = tree(&stats, &[10]);
        t.sort();
        assert_eq!(t, [10, 11, 12]);
        assert!(tree(&stats, &[99]).is_empty());
    }

    #[test]
    fn own_process_is_measured() {
        let me = std::process::id();
        // Burn a little CPU so the reading is above zero even at 10 ms ticks.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds(&[me]) > 0.0);
        assert!(rss_bytes(&[me]) > 0);
        assert_eq!(cpu_seconds(&[u32::MAX]), 0.0);
    }
}
