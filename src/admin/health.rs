//! `GET /healthz`: whether the gateway can do its job, checked when asked: the audit writer
//! runs (when the audit log is on), the spool takes a write (a probe file created, synced and
//! removed), and the file systems of the spool and the Maildirs have at least
//! `[limits] min_free_disk` free. A failure names what and where,
//! for the load balancer's log and the admin.

use std::io::Write as _;
use std::path::Path;

use crate::gateway::Gateway;

/// Runs the checks (blocking: call it off the async workers). `Err` says what failed.
pub fn check(shared: &Gateway) -> Result<(), String> {
    if shared.audit.writer_stopped() {
        return Err("the audit writer has stopped: authentications are no longer recorded".into());
    }
    let spool = &shared.config.delivery.spool;
    writable(spool).map_err(|e| format!("spool {} is not writable: {e}", spool.display()))?;
    let min = shared.config.limits.min_free_disk;
    for dir in [spool, &shared.config.delivery.maildir] {
        if let Some(free) = free_share(dir)
            && free < min
        {
            return Err(format!(
                "{} has {:.2}% of its disk free, below limits.min_free_disk ({:.2}%)",
                dir.display(),
                free * 100.0,
                min * 100.0
            ));
        }
    }
    Ok(())
}

fn writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".healthz-{}", std::process::id()));
    let result = std::fs::File::create(&probe).and_then(|mut f| {
        f.write_all(b"ok")?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    result
}

/// The share of `dir`'s file system free for unprivileged writers; `None` if it cannot be
/// read (the folder does not exist yet: nothing to report).
fn free_share(dir: &Path) -> Option<f64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    if s.f_blocks == 0 {
        return None;
    }
    Some(s.f_bavail as f64 / s.f_blocks as f64)
}
