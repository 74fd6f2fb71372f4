//! Reading the audit log fast: files are read in large blocks split at line boundaries, worker
//! threads parse the lines into borrowed structs (no allocation per event unless a string has
//! escapes) and feed their own aggregation, and the aggregations are merged at the end. With a
//! time window, a line's `time` is compared as text before the line is parsed, since the writer
//! always uses one format (RFC 3339, UTC, milliseconds), which sorts like the time.
//!
//! Lines are bounded ([`MAX_LINE`]); a line that does not parse, is too long, or lacks a required
//! field (`time`, `kind`, `result`) is skipped and counted with its position.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};
use std::thread;
use std::time::SystemTime;

use memchr::memmem;
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::{
    Collect, Error, Filter, KINDS, LineRef, RESULTS, SKIPPED_SHOWN, Seen, TIME_LEN, parse_time,
};
use crate::audit::event::{Class, classify};

/// Bytes read per block handed to a worker.
const BLOCK: usize = 4 << 20;

/// The longest line accepted; the writer's lines are a few hundred bytes.
pub(crate) const MAX_LINE: usize = 64 << 10;

/// Most worker threads.
const MAX_WORKERS: usize = 4;

/// The filter, resolved against `now` into what the hot loop compares.
#[derive(Debug)]
pub(crate) struct Window {
    since: Option<String>,
    until: Option<String>,
    pub(crate) since_time: Option<SystemTime>,
    pub(crate) until_time: Option<SystemTime>,
    /// Bit n for class n, bit 4 for events without a class; `None`: any.
    classes: Option<u8>,
    /// Bit n for `KINDS[n]`; `None`: any, including kinds this version does not know.
    kinds: Option<u8>,
    users: Vec<String>,
    /// Bit n for `RESULTS[n]`; `None`: any.
    results: Option<u8>,
    rules: Vec<String>,
    time_key: memmem::Finder<'static>,
}

const NO_CLASS: u8 = 1 << 4;

impl Window {
    pub(crate) fn new(f: &Filter, now: SystemTime) -> Window {
        let since_time = f.since.map(|t| t.resolve(now));
        let until_time = f.until.map(|t| t.resolve(now));
        let text = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
        Window {
            since: since_time.map(text),
            until: until_time.map(text),
            since_time,
            until_time,
            classes: f
                .classes
                .as_ref()
                .map(|cs| cs.iter().fold(0, |m, c| m | 1 << *c as u8)),
            kinds: f.kinds.as_ref().map(|ks| {
                ks.iter().fold(0, |m, k| {
                    m | KINDS.iter().position(|(_, x)| x == k).map_or(0, |i| 1 << i)
                })
            }),
            users: f.users.clone(),
            results: f.results.as_ref().map(|rs| {
                rs.iter().fold(0, |m, r| {
                    m | RESULTS.iter().position(|x| x == r).map_or(0, |i| 1 << i)
                })
            }),
            rules: f.rules.clone(),
            time_key: memmem::Finder::new(b"\"time\":\"").into_owned(),
        }
    }

    /// Whether canonical time text `t` is inside the window.
    fn contains(&self, t: &str) -> bool {
        self.since.as_deref().is_none_or(|s| t >= s) && self.until.as_deref().is_none_or(|u| t < u)
    }

    fn bounded(&self) -> bool {
        self.since.is_some() || self.until.is_some()
    }

    /// The `time` of a complete-looking line, if it can be judged without parsing and is
    /// outside the window. Lines that merely look odd go on to the full parse, which counts
    /// them if they are corrupt.
    fn outside(&self, line: &[u8]) -> bool {
        if !(line.first() == Some(&b'{') && line.last() == Some(&b'}')) {
            return false;
        }
        let Some(at) = self.time_key.find(line) else {
            return false;
        };
        let rest = &line[at + self.time_key.needle().len()..];
        match rest.get(..TIME_LEN).map(std::str::from_utf8) {
            Some(Ok(t)) if canonical(t) && rest.get(TIME_LEN) == Some(&b'"') => !self.contains(t),
            _ => false,
        }
    }
}

/// Whether `t` has the writer's exact shape, `YYYY-MM-DDTHH:MM:SS.mmmZ`, so that text order is
/// time order.
pub(crate) fn canonical(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == TIME_LEN
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Seconds since the epoch of a canonical time.
pub(crate) fn canonical_secs(t: &str) -> Option<u64> {
    humantime::parse_rfc3339_weak(t.strip_suffix('Z')?)
        .ok()
        .map(unix_secs)
}

/// Seconds since the epoch (0 before it).
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    crate::clock::unix_secs(t)
}

/// The fields the report reads; the rest of the line is skipped unparsed.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    time: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    result: Cow<'a, str>,
    #[serde(default, borrow)]
    class: Option<Cow<'a, str>>,
    #[serde(default)]
    tls: Option<IgnoredAny>,
    #[serde(default, borrow)]
    user: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    user_given: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    client_ip: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    mechanism: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    client_software: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    client_name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    rule: Option<Cow<'a, str>>,
}

fn present<'a>(v: &'a Option<Cow<'_, str>>) -> Option<&'a str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// A block of whole lines (or the marker for one over-long line).
struct Block {
    seq: usize,
    data: Vec<u8>,
    oversized: bool,
}

/// What one worker (or the single-threaded reader) accumulates.
struct Worker<C> {
    collected: C,
    events: u64,
    skipped: u64,
    /// (block, line in block) of the first skipped lines this worker saw.
    bad: Vec<(usize, u64)>,
    /// (block, lines in block).
    lines: Vec<(usize, u64)>,
    scratch: String,
    max_line: usize,
}

impl<C: Collect> Worker<C> {
    fn new(collected: C, max_line: usize) -> Worker<C> {
        Worker {
            collected,
            events: 0,
            skipped: 0,
            bad: Vec::new(),
            lines: Vec::new(),
            scratch: String::new(),
            max_line,
        }
    }

    fn process(&mut self, block: Block, w: &Window) {
        if block.oversized {
            self.skip(block.seq, 0);
            self.lines.push((block.seq, 1));
            return;
        }
        let data = &block.data;
        // Checked once for the block, UTF-8 need not be checked again string by string; a
        // block with a bad byte is parsed line by line from bytes.
        let text = std::str::from_utf8(data).ok();
        let (mut start, mut n) = (0, 0);
        // Each newline ends a line, and so does the end of a file without a final newline.
        let ends = memchr::memchr_iter(b'\n', data)
            .chain((data.last() != Some(&b'\n')).then_some(data.len()));
        for end in ends {
            // Newlines are ASCII, so these are character boundaries.
            let line_text = text.and_then(|t| t.get(start..end));
            self.line(&data[start..end], line_text, w, block.seq, n);
            n += 1;
            start = end + 1;
        }
        self.lines.push((block.seq, n));
    }

    fn skip(&mut self, seq: usize, n: u64) {
        self.skipped += 1;
        if self.bad.len() < SKIPPED_SHOWN {
            self.bad.push((seq, n));
        }
    }

    /// One line, as bytes and, when known to be UTF-8, as text.
    fn line(&mut self, mut line: &[u8], text: Option<&str>, w: &Window, seq: usize, n: u64) {
        while let [rest @ .., b'\r' | b' ' | b'\t'] = line {
            line = rest;
        }
        let text = text.and_then(|t| t.get(..line.len()));
        if line.is_empty() {
            return;
        }
        if line.len() > self.max_line {
            return self.skip(seq, n);
        }
        if w.bounded() && w.outside(line) {
            return;
        }
        let parsed = match text {
            Some(text) => serde_json::from_str::<Line>(text),
            None => serde_json::from_slice::<Line>(line),
        };
        let Ok(l) = parsed else {
            return self.skip(seq, n);
        };
        let time = if canonical(&l.time) {
            &*l.time
        } else {
            // Another writer's format: normalize so that text comparison still works.
            let Some(t) = parse_time(&l.time) else {
                return self.skip(seq, n);
            };
            self.scratch.clear();
            self.scratch
                .push_str(&humantime::format_rfc3339_millis(t).to_string());
            &self.scratch
        };
        if !w.contains(time) {
            return;
        }
        if let Some(mask) = w.kinds {
            let Some(i) = KINDS.iter().position(|(k, _)| *k == l.kind) else {
                return;
            };
            if mask & (1 << i) == 0 {
                return;
            }
        }
        let mechanism = present(&l.mechanism);
        let class = present(&l.class)
            .and_then(Class::parse)
            .or_else(|| mechanism.map(|m| classify(m, l.tls.is_some())));
        if let Some(mask) = w.classes {
            let bit = class.map_or(NO_CLASS, |c| 1 << c as u8);
            if mask & bit == 0 {
                return;
            }
        }
        let user = present(&l.user).or(present(&l.user_given));
        if !w.users.is_empty() {
            let matches = |u: Option<&str>| {
                u.is_some_and(|u| w.users.iter().any(|x| x.eq_ignore_ascii_case(u)))
            };
            if !matches(present(&l.user)) && !matches(present(&l.user_given)) {
                return;
            }
        }
        // An unknown result (a later version's) counts as neither allowed nor any policy
        // outcome, and only passes a filter that keeps every result.
        let result = RESULTS.iter().position(|r| r.as_str() == l.result);
        if let Some(mask) = w.results
            && result.is_none_or(|i| mask & (1 << i) == 0)
        {
            return;
        }
        let rule = present(&l.rule);
        if !w.rules.is_empty() && !rule.is_some_and(|r| w.rules.iter().any(|x| x == r)) {
            return;
        }
        // An accepted message (one per message, after its authentication) is not a decision
        // of its own: it adds the software and names it carries, and counts as a message.
        let decision = l.kind != "accept";
        let seen = Seen {
            time,
            decision,
            result: result.map(|i| RESULTS[i]),
            rule,
            class,
            user,
            ip: present(&l.client_ip),
            mechanism,
            software: present(&l.client_software),
            name: present(&l.client_name),
        };
        self.events += u64::from(decision);
        self.collected.add(&seen);
    }
}

/// The merged result of a scan.
pub(crate) struct Scan<C> {
    pub(crate) collected: C,
    pub(crate) events: u64,
    pub(crate) skipped: u64,
    pub(crate) skipped_at: Vec<LineRef>,
}

/// Scans `paths` in order with worker threads. A file that vanished since it was listed (a
/// rotation in between) is passed over.
pub(crate) fn files<C: Collect>(
    paths: &[PathBuf],
    window: &Window,
    make: impl Fn() -> C + Sync,
) -> Result<Scan<C>, Error> {
    let workers = thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_WORKERS);
    let mut block_files = Vec::new();
    let (tx, rx) = mpsc::sync_channel::<Block>(workers * 2);
    let rx = Mutex::new(rx);
    let (read, done) = thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (rx, make) = (&rx, &make);
                s.spawn(move || {
                    let mut w = Worker::new(make(), MAX_LINE);
                    loop {
                        // The lock is held only while taking one block.
                        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match next {
                            Ok(block) => w.process(block, window),
                            Err(_) => return w,
                        }
                    }
                })
            })
            .collect();
        let read = read_all(paths, &mut block_files, |block| tx.send(block).is_ok());
        drop(tx);
        let done: Vec<Worker<C>> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        (read, done)
    });
    read?;
    Ok(merge(make(), done, &block_files, |f| paths[f].clone()))
}

fn read_all(
    paths: &[PathBuf],
    block_files: &mut Vec<usize>,
    mut send: impl FnMut(Block) -> bool,
) -> Result<(), Error> {
    for (i, path) in paths.iter().enumerate() {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(Error::Io {
                    path: path.clone(),
                    source,
                });
            }
        };
        blocks(file, BLOCK, MAX_LINE, |data, oversized| {
            let seq = block_files.len();
            block_files.push(i);
            send(Block {
                seq,
                data,
                oversized,
            })
        })
        .map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Scans one reader on the calling thread.
pub(crate) fn reader<C: Collect>(
    r: impl Read,
    name: &Path,
    window: &Window,
    make: impl Fn() -> C,
) -> Result<Scan<C>, Error> {
    reader_with(r, name, window, make, BLOCK, MAX_LINE)
}

/// [`reader`] with explicit sizes, so tests can replay input in small blocks.
pub(crate) fn reader_with<C: Collect>(
    r: impl Read,
    name: &Path,
    window: &Window,
    make: impl Fn() -> C,
    block: usize,
    max_line: usize,
) -> Result<Scan<C>, Error> {
    let mut w = Worker::new(make(), max_line);
    let mut seq = 0;
    blocks(r, block, max_line, |data, oversized| {
        w.process(
            Block {
                seq,
                data,
                oversized,
            },
            window,
        );
        seq += 1;
        true
    })
    .map_err(|source| Error::Io {
        path: name.to_path_buf(),
        source,
    })?;
    Ok(merge(make(), vec![w], &vec![0; seq], |_| {
        name.to_path_buf()
    }))
}

/// Cuts `r` into blocks of about `block` bytes ending at a newline and hands each to `emit`
/// (which returns false to stop). A line longer than `max_line` with no newline in sight is
/// dropped and reported as one oversized block.
pub(crate) fn blocks(
    mut r: impl Read,
    block: usize,
    max_line: usize,
    mut emit: impl FnMut(Vec<u8>, bool) -> bool,
) -> io::Result<()> {
    let mut carry: Vec<u8> = Vec::new();
    let mut skipping = false;
    loop {
        let mut buf = Vec::with_capacity(block + carry.len());
        buf.append(&mut carry);
        let n = (&mut r).take(block as u64).read_to_end(&mut buf)?;
        let eof = n < block;
        if skipping {
            match memchr::memchr(b'\n', &buf) {
                Some(i) => {
                    buf.drain(..=i);
                    skipping = false;
                }
                None if eof => return Ok(()),
                None => continue,
            }
        }
        if eof {
            if !buf.is_empty() {
                emit(buf, false);
            }
            return Ok(());
        }
        match memchr::memrchr(b'\n', &buf) {
            Some(i) => {
                carry.extend_from_slice(&buf[i + 1..]);
                buf.truncate(i + 1);
                if !emit(buf, false) {
                    return Ok(());
                }
            }
            None if buf.len() > max_line => {
                skipping = true;
                if !emit(Vec::new(), true) {
                    return Ok(());
                }
            }
            None => carry = buf,
        }
    }
}

/// Merges the workers and turns block positions into file:line.
fn merge<C: Collect>(
    empty: C,
    workers: Vec<Worker<C>>,
    block_files: &[usize],
    name: impl Fn(usize) -> PathBuf,
) -> Scan<C> {
    let mut counts = vec![0; block_files.len()];
    let mut bad = Vec::new();
    let mut m = Worker::new(empty, 0);
    for w in workers {
        for (seq, n) in w.lines {
            counts[seq] = n;
        }
        bad.extend(w.bad);
        m.events += w.events;
        m.skipped += w.skipped;
        m.collected.merge(w.collected);
    }
    // The first line of each block: lines before it in the same file, plus one.
    let mut starts = vec![0; block_files.len()];
    let mut line = 0;
    for seq in 0..block_files.len() {
        if seq > 0 && block_files[seq] != block_files[seq - 1] {
            line = 0;
        }
        starts[seq] = line + 1;
        line += counts[seq];
    }
    bad.sort_unstable();
    bad.truncate(SKIPPED_SHOWN);
    let skipped_at = bad
        .into_iter()
        .map(|(seq, n)| LineRef {
            file: name(block_files[seq]),
            line: starts[seq] + n,
        })
        .collect();
    Scan {
        collected: m.collected,
        events: m.events,
        skipped: m.skipped,
        skipped_at,
    }
}
