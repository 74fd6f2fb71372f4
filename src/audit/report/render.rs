//! Writing a [`Report`] as an aligned table for people, or as JSON or CSV for programs. JSON is
//! the array of [`Group`](super::Group)s with their field names; CSV has a header row and joins
//! lists with ';'. Output depends only on the report (and `now`, for the table's ages).

use std::io::{self, Write};
use std::str::FromStr;
use std::time::SystemTime;

use super::{Error, GroupBy, Report, Values, param};

/// Values of a list shown in a table cell; JSON and CSV carry every kept value.
const TABLE_VALUES: usize = 3;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Aligned columns, times as "YYYY-MM-DD HH:MM" UTC with an age.
    #[default]
    Table,
    /// A JSON array of groups.
    Json,
    /// CSV with a header row; lists joined with ';'.
    Csv,
}

impl FromStr for Format {
    type Err = Error;

    fn from_str(s: &str) -> Result<Format, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            _ => Err(param("format", s, "expected table, json or csv")),
        }
    }
}

/// The CSV columns, which are also the JSON field names.
pub const CSV_HEADER: [&str; 18] = [
    "key",
    "events",
    "successes",
    "failures",
    "first_seen",
    "last_seen",
    "classes",
    "mechanisms",
    "users",
    "client_ips",
    "client_software",
    "client_names",
    "denied",
    "warned",
    "brownout",
    "would_deny",
    "rules",
    "messages",
];

/// Writes `report`, grouped by `group_by`, in `format`; `now` dates the table's ages.
pub fn render(
    report: &Report,
    group_by: GroupBy,
    format: Format,
    now: SystemTime,
    out: &mut impl Write,
) -> io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &report.groups)?;
            writeln!(out)
        }
        Format::Csv => csv(report, out),
        Format::Table => table(report, group_by, now, out),
    }
}

fn list(v: &Values, sep: &str, shown: usize) -> String {
    let mut items: Vec<String> = v.values.iter().take(shown).cloned().collect();
    let more = v.more + (v.values.len().saturating_sub(shown)) as u64;
    if more > 0 {
        items.push(format!("+{more} more"));
    }
    items.join(sep)
}

fn classes(c: &[super::Class], sep: &str) -> String {
    c.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(sep)
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv(report: &Report, out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "{}", CSV_HEADER.join(","))?;
    for g in &report.groups {
        let all = usize::MAX;
        let cells = [
            g.key.clone(),
            g.events.to_string(),
            g.successes.to_string(),
            g.failures.to_string(),
            g.first_seen.clone(),
            g.last_seen.clone(),
            classes(&g.classes, ";"),
            list(&g.mechanisms, ";", all),
            list(&g.users, ";", all),
            list(&g.client_ips, ";", all),
            list(&g.client_software, ";", all),
            list(&g.client_names, ";", all),
            g.denied.to_string(),
            g.warned.to_string(),
            g.brownout.to_string(),
            g.would_deny.to_string(),
            list(&g.rules, ";", all),
            g.messages.to_string(),
        ];
        let row: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
        writeln!(out, "{}", row.join(","))?;
    }
    Ok(())
}

/// `s` with control characters escaped: keys and lists come from clients (EHLO names,
/// `User-Agent`), and a table goes to a terminal.
fn clean(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// "2026-11-28T21:05:05.123Z" as "2026-11-28 21:05".
fn short_time(t: &str) -> String {
    match (t.get(..10), t.get(11..16)) {
        (Some(d), Some(hm)) => format!("{d} {hm}"),
        _ => t.to_string(),
    }
}

/// How long before `now` the canonical time `t` was, e.g. "3h".
fn age(t: &str, now: SystemTime) -> String {
    let Some(then) = super::scan::canonical_secs(t) else {
        return "?".into();
    };
    let secs = super::scan::unix_secs(now).saturating_sub(then);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn table(report: &Report, by: GroupBy, now: SystemTime, out: &mut impl Write) -> io::Result<()> {
    let n = TABLE_VALUES;
    // The policy columns appear once a rule decided something in the report.
    let policy = report
        .groups
        .iter()
        .any(|g| g.denied + g.warned + g.brownout + g.would_deny > 0 || !g.rules.values.is_empty());
    // (header, right-aligned, shown for this grouping)
    let columns = [
        (by.as_str().to_ascii_uppercase(), false, true),
        ("EVENTS".into(), true, true),
        ("OK".into(), true, true),
        ("FAIL".into(), true, true),
        ("MSGS".into(), true, true),
        ("DENIED".into(), true, policy),
        ("WARNED".into(), true, policy),
        ("BROWNOUT".into(), true, policy),
        ("WOULD DENY".into(), true, policy),
        ("RULES".into(), false, policy),
        ("LAST SEEN (UTC)".into(), false, true),
        ("AGO".into(), true, true),
        ("FIRST SEEN (UTC)".into(), false, true),
        ("CLASSES".into(), false, by != GroupBy::Class),
        ("MECHANISMS".into(), false, by != GroupBy::Mechanism),
        ("USERS".into(), false, by != GroupBy::User),
        ("IPS".into(), false, by != GroupBy::Ip),
        ("CLIENTS".into(), false, by != GroupBy::Client),
    ];
    let mut rows: Vec<Vec<String>> = vec![columns.iter().map(|c| c.0.clone()).collect()];
    for g in &report.groups {
        rows.push(vec![
            clean(&g.key),
            g.events.to_string(),
            g.successes.to_string(),
            g.failures.to_string(),
            g.messages.to_string(),
            g.denied.to_string(),
            g.warned.to_string(),
            g.brownout.to_string(),
            g.would_deny.to_string(),
            clean(&list(&g.rules, ", ", n)),
            short_time(&g.last_seen),
            age(&g.last_seen, now),
            short_time(&g.first_seen),
            classes(&g.classes, ","),
            clean(&list(&g.mechanisms, ", ", n)),
            clean(&list(&g.users, ", ", n)),
            clean(&list(&g.client_ips, ", ", n)),
            clean(&list(&g.client_software, ", ", n)),
        ]);
    }
    let shown: Vec<usize> = (0..columns.len()).filter(|i| columns[*i].2).collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let mut line = String::new();
        for (j, &i) in shown.iter().enumerate() {
            let cell = &row[i];
            let pad = widths[i] - cell.chars().count();
            if j > 0 {
                line.push_str("  ");
            }
            if columns[i].1 {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                // The last column is not padded.
                if j + 1 < shown.len() {
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    let groups = report.groups.len();
    write!(
        out,
        "{} event{} in {groups} group{}",
        report.events,
        if report.events == 1 { "" } else { "s" },
        if groups == 1 { "" } else { "s" },
    )?;
    if report.skipped > 0 {
        write!(out, "; {} corrupt line(s) skipped", report.skipped)?;
    }
    writeln!(out)
}
