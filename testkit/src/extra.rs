//! Helpers for the robustness and relay end-to-end tests: editing keys of the base test config
//! (TOML tables cannot be repeated, so `extra` alone cannot change `[auth]` or `[limits]`),
//! running the built binary on free loopback ports, and waiting for conditions.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// Sets `key = value` in `[section]` of a TOML text: replaces the key's line if the section has
/// it, else adds it right after the section header, adding the section at the end if missing.
/// `value` is raw TOML (`"5s"`, `2`, `["a"]`).
pub fn set(text: &str, section: &str, key: &str, value: &str) -> String {
    let header = format!("[{section}]");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let Some(start) = lines.iter().position(|l| l.trim() == header) else {
        return format!("{}\n{header}\n{key} = {value}\n", text.trim_end());
    };
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.trim_start().starts_with('['))
        .map_or(lines.len(), |i| start + 1 + i);
    let prefix = format!("{key} =");
    let line = format!("{key} = {value}");
    match lines[start + 1..end]
        .iter()
        .position(|l| l.trim_start().starts_with(&prefix))
    {
        Some(i) => lines[start + 1 + i] = line,
        None => lines.insert(start + 1, line),
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Applies [`set`] for each `(section, key, value)` in turn.
pub fn set_all(text: &str, edits: &[(&str, &str, &str)]) -> String {
    edits
        .iter()
        .fold(text.to_string(), |t, (s, k, v)| set(&t, s, k, v))
}

/// A loopback port that was free a moment ago (the binary binds it by number).
///
/// Chosen below Linux's ephemeral range (32768-60999 by default), from a per-process
/// sequence that starts at a place set by the process id: a port picked by asking the kernel for any free
/// one could be handed out again, to another test's `127.0.0.1:0` or client socket, before the
/// binary binds it, and the gateway would then fail to start.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const LOW: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    if NEXT.load(Ordering::Relaxed) == 0 {
        let start = LOW + (std::process::id() % u32::from(SPAN)) as u16;
        let _ = NEXT.compare_exchange(0, start, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOW + (n.wrapping_sub(LOW)) % SPAN;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// `127.0.0.1:port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The built gateway binary, serving `config`; its log goes to `<config dir>/gateway.log`.
pub struct Binary {
    /// The running process.
    pub child: Child,
    /// Its log file.
    pub log: PathBuf,
}

impl Binary {
    /// Starts `<exe> serve --config <config>`; `exe` is the built gateway binary (in a test of
    /// the mailgate package, `env!("CARGO_BIN_EXE_mailgate")`).
    pub fn start(exe: impl AsRef<Path>, config: &Path) -> Binary {
        Self::start_with_log(exe, config, "info")
    }

    /// Starts `<exe> serve --config <config>` logging at `level` (`MAILGATE_LOG`).
    pub fn start_with_log(exe: impl AsRef<Path>, config: &Path, level: &str) -> Binary {
        Self::start_with_env(exe, config, level, &[])
    }

    /// As [`Binary::start_with_log`], with more environment variables (a Kerberos realm's
    /// `KRB5_CONFIG`, ...).
    pub fn start_with_env(
        exe: impl AsRef<Path>,
        config: &Path,
        level: &str,
        env: &[(&str, std::ffi::OsString)],
    ) -> Binary {
        let dir = config.parent().expect("config folder");
        let log = dir.join("gateway.log");
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(exe.as_ref())
            .args(["serve", "--config"])
            .arg(config)
            .env("MAILGATE_LOG", level)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start mailgate");
        Binary { child, log }
    }

    /// The log written so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM with the system's `kill` program.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit, up to `limit`; `None` if it is still running.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        // A test that failed half-way must not leave a gateway running.
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// Waits until something accepts connections on `addr` (the binary has started).
pub async fn wait_listening(addr: SocketAddr) {
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("gateway did not start listening on {addr}");
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts Debian's HAProxy in the foreground on the config at `cfg` (stopped when dropped, or
/// by [`stop_child`]).
pub fn haproxy(cfg: &Path) -> tokio::process::Child {
    tokio::process::Command::new("haproxy")
        .arg("-f")
        .arg(cfg)
        .arg("-db")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start haproxy")
}

/// Stops a child this test started (SIGTERM by its pid) and waits for it, at most 5 s.
pub async fn stop_child(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = tokio::process::Command::new("kill")
            .arg(pid.to_string())
            .status()
            .await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_replaces_inserts_and_appends() {
        let text = "a = 1\n[x]\nk = 1\n[y]\nm = 2\n";
        // (section, key, value, expected text)
        let cases = [
            ("x", "k", "5", "a = 1\n[x]\nk = 5\n[y]\nm = 2\n"),
            ("x", "n", "6", "a = 1\n[x]\nn = 6\nk = 1\n[y]\nm = 2\n"),
            ("y", "m", "7", "a = 1\n[x]\nk = 1\n[y]\nm = 7\n"),
            ("z", "q", "8", "a = 1\n[x]\nk = 1\n[y]\nm = 2\n[z]\nq = 8\n"),
        ];
        for (section, key, value, want) in cases {
            assert_eq!(set(text, section, key, value), want, "{section}.{key}");
        }
    }
}
