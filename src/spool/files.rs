//! The spool's helpers and its read-only view: message ids, bounded reads, durable writes and
//! directory syncs, running blocking work from async code, and [`inspect`] for operators and
//! tests looking at a spool that a running gateway owns.

use super::*;

/// Lists the messages queued in the spool at `dir` without opening it for writing: for
/// operators and tests looking at a spool that a running gateway owns. Each slot is read and
/// checked like at start-up, and the newer envelope in `env/` is preferred; a slot being
/// written at that moment may be missed. Oldest id first.
pub fn inspect(dir: &Path) -> Result<Vec<Envelope>, Error> {
    let slots = dir.join("slots");
    let mut out = Vec::new();
    let paths = match read_dir(&slots) {
        Ok(paths) => paths,
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => vec![],
        Err(e) => return Err(e),
    };
    for path in paths {
        let file = match File::open(&path) {
            Ok(f) => f,
            // Deleted as surplus since the listing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let found = slot::records(&file, entry::MAX_ENVELOPE_LEN).map_err(io_err("read", &path))?;
        for (_, header, bytes) in found {
            let Ok(accepted) = parse(&path, &bytes) else {
                continue;
            };
            let newer = dir.join("env").join(format!("{}.json", header.id));
            let env = read_bounded(&newer, entry::MAX_ENVELOPE_LEN)
                .and_then(|b| parse(&newer, &b))
                .ok()
                .filter(|e| e.id == header.id)
                .unwrap_or(accepted);
            out.push(env);
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// A fresh id: `<unix secs>.<micros>.<counter>.<pid>`, sortable by time within a second's
/// digits, unique per process by the counter and across processes by the pid.
pub(super) fn new_id() -> String {
    let now = SystemClock
        .now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:010}.{:06}.{n:06}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id()
    )
}

/// When the message with this id (as [`new_id`] makes them) arrived; `None` for an id of
/// another form (made by hand, or by an older layout).
pub fn arrival(id: &str) -> Option<SystemTime> {
    let mut parts = id.splitn(3, '.');
    let (secs, micros) = (parts.next()?, parts.next()?);
    if secs.len() != 10 || micros.len() != 6 {
        return None;
    }
    let secs: u64 = secs.parse().ok()?;
    let micros: u64 = micros.parse().ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs) + Duration::from_micros(micros))
}

pub(super) fn check_id(id: &str) -> Result<(), Error> {
    if entry::is_valid_id(id) {
        Ok(())
    } else {
        Err(Error::InvalidId(id.to_string()))
    }
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

pub(super) fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("read", dir))? {
        out.push(entry.map_err(io_err("read", dir))?.path());
    }
    Ok(out)
}

pub(super) fn read_bounded(path: &Path, limit: usize) -> Result<Vec<u8>, Error> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err("read", path))?;
    if bytes.len() > limit {
        let source = FormatError::TooLarge {
            size: bytes.len() as u64,
            limit,
        };
        return Err(Error::Envelope {
            path: path.to_path_buf(),
            source,
        });
    }
    Ok(bytes)
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))
}

pub(super) fn remove_if_exists(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(Error::Io {
            op: "remove",
            path: path.to_path_buf(),
            source: err,
        }),
        _ => Ok(()),
    }
}

/// Slot files grow in whole steps of this many bytes.
const SLOT_STEP: u64 = 4096;

/// Rounds a slot file that now ends at `end` up to the next [`SLOT_STEP`]. Messages of about
/// the same size then reuse the slot without changing its length, and `fdatasync` has only
/// data to write: a length that grew by a few bytes (a longer `Received:` line) would make
/// it write the inode too, every other message.
pub(super) fn grow_in_steps(file: &File, end: u64) -> io::Result<()> {
    let step_end = end.div_ceil(SLOT_STEP) * SLOT_STEP;
    if file.metadata()?.len() < step_end {
        file.set_len(step_end)?;
    }
    Ok(())
}

/// Creates `path` (replacing it), fills it with `write` and fsyncs it.
pub(super) fn write_durably(
    path: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), Error> {
    let mut file = File::create(path).map_err(io_err("create", path))?;
    write(&mut file)
        .and_then(|()| file.sync_all())
        .map_err(io_err("write", path))
}

pub(super) fn parse(path: &Path, bytes: &[u8]) -> Result<Envelope, Error> {
    Envelope::parse(bytes).map_err(|source| Error::Envelope {
        path: path.to_path_buf(),
        source,
    })
}
