//! A private Redis server on loopback (Debian's `redis-server`), for the cluster tests: its
//! own port and folder, no persistence, stopped when dropped. [`Redis::stop`] and
//! [`Redis::start_again`] take it down and bring it back on the same port, for the outage
//! tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running private Redis.
pub struct Redis {
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
}

impl Redis {
    /// Starts one on a free loopback port; `None` (with the skip notice of [`crate::have`])
    /// when `redis-server` is not installed.
    pub async fn start() -> Option<Redis> {
        Redis::start_with(Vec::new()).await
    }

    /// As [`Redis::start`], with more `redis-server` arguments (a TLS port, ...); the plain
    /// port stays for the test's own commands.
    pub async fn start_with(extra: Vec<String>) -> Option<Redis> {
        if !crate::have("redis-server") {
            return None;
        }
        let dir = tempfile::tempdir().expect("redis folder");
        let mut redis = Redis {
            addr: crate::extra::local(crate::extra::free_port()),
            dir,
            child: None,
            extra,
        };
        redis.start_again().await;
        Some(redis)
    }

    /// The URL for `[cluster] redis`.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// Its folder (for certificates and the like).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The server's log.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Starts it (again) on its port and waits until it answers PING.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.addr.port().to_string())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--protected-mode", "no", "--dir"])
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        for _ in 0..200 {
            if self.command(&["PING"]).await.as_deref() == Some("+PONG") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "redis-server did not answer on {}: {}",
            self.addr,
            std::fs::read_to_string(self.log()).unwrap_or_default()
        );
    }

    /// Stops it (SIGTERM, then waits), keeping its port and folder for [`Redis::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// Sends one command (inline form) and returns the first line of the answer, or `None`
    /// when the server does not answer.
    pub async fn command(&self, args: &[&str]) -> Option<String> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let stream = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(self.addr),
        )
        .await
        .ok()?
        .ok()?;
        let (r, mut w) = stream.into_split();
        let mut line = String::new();
        // RESP array of bulk strings: safe for any argument.
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        w.write_all(req.as_bytes()).await.ok()?;
        let mut r = BufReader::new(r);
        tokio::time::timeout(Duration::from_secs(2), r.read_line(&mut line))
            .await
            .ok()?
            .ok()?;
        Some(line.trim_end().to_string())
    }

    /// A whole answer as text lines (bulk strings and arrays flattened), for `INFO`,
    /// `MEMORY USAGE` and the like; `None` when the server does not answer.
    pub async fn query(&self, args: &[&str]) -> Option<Vec<String>> {
        let out = tokio::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p"])
            .arg(self.addr.port().to_string())
            .args(args)
            .output()
            .await
            .ok()?;
        out.status.success().then(|| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        })
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
