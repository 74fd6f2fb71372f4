//! The users file on disk: passwd-file line syntax, user-name rules, and the atomic rewrite
//! behind `mailgate passwd`.
//!
//! A line is `user:password[:uid:gid:gecos:home:shell:extra_fields]` (Dovecot passwd-file).
//! [`set_user`] replaces one user's lines and keeps every other byte of the file: it writes a
//! temporary file in the same folder, fsyncs it, renames it over the file and fsyncs the folder,
//! so a crash leaves either the old file or the new one. Writers of this process and of
//! `mailgate passwd` take an exclusive lock on a `.NAME.lock` file beside the users file first
//! ([`lock`]), so that one never writes over another's change.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;
use std::time::Duration;

use super::Rejection;
use super::scheme::Form;
use super::{Error, MAX_FILE_BYTES, MAX_USER_LEN};

/// The fields of one passwd-file line.
pub(crate) struct Line<'a> {
    /// The user name as written.
    pub user: &'a str,
    /// The password field.
    pub password: &'a str,
}

/// Splits a (non-comment, non-blank) line at its first two colons.
pub(crate) fn split_line(line: &str) -> Result<Line<'_>, Rejection> {
    let mut fields = line.splitn(3, ':');
    let user = fields.next().unwrap_or_default();
    let Some(password) = fields.next() else {
        // The line may be a bare password: do not quote it.
        return Err(Rejection {
            message: "line has no `:` between user name and password".into(),
            hint: "write user:{SCHEME}data, e.g. alice:{PLAIN}secret".into(),
        });
    };
    Ok(Line { user, password })
}

/// Checks a user name and returns its canonical (lower-case) form. The name is also a Maildir
/// folder name, so it may not start with `.` nor hold `/`, `\`, `:`, spaces or controls.
pub(crate) fn normalize_user(name: &str) -> Result<String, Rejection> {
    let hint = "use letters, digits and . _ - @ + (e.g. alice or alice@example.org)";
    let bad = |message: String| {
        Err(Rejection {
            message,
            hint: hint.into(),
        })
    };
    if name.is_empty() {
        return bad("empty user name".into());
    }
    if name.len() > MAX_USER_LEN {
        return bad(format!("user name is longer than {MAX_USER_LEN} bytes"));
    }
    if name.starts_with('.') {
        return bad(format!("user name {name:?} starts with `.`"));
    }
    let forbidden = |c: char| matches!(c, '/' | '\\' | ':') || c.is_whitespace() || c.is_control();
    if name.chars().any(forbidden) {
        return bad(format!(
            "user name {name:?} holds `/`, `\\`, `:`, a space or a control"
        ));
    }
    Ok(name.to_lowercase())
}

/// Rewrites the users file at `path` so that `user` has exactly one line per entry of `forms`
/// (password fields such as [`stored_forms`](super::stored_forms) returns). Other lines and
/// comments stay in place, byte for byte; the new lines take the place of the user's first
/// existing line and keep its trailing fields (uid..extra_fields). A user without lines is
/// appended; a missing file is created (mode 0600).
pub fn set_user(path: &Path, user: &str, forms: &[String]) -> Result<(), Error> {
    let argument = |what, r: Rejection| Error::Argument {
        what,
        message: r.message,
        hint: r.hint,
    };
    let user = normalize_user(user).map_err(|r| argument("user name", r))?;
    if forms.is_empty() {
        let r = Rejection {
            message: "no password forms".into(),
            hint: "pass at least one".into(),
        };
        return Err(argument("password forms", r));
    }
    for form in forms {
        if form.contains(['\n', '\r', ':']) {
            let r = Rejection {
                message: "a password form holds a newline or `:`".into(),
                hint: "pass fields as stored_forms returns them".into(),
            };
            return Err(argument("password form", r));
        }
        Form::parse(form).map_err(|r| argument("password form", r))?;
    }
    let _lock = lock(path)?;
    let old = read_bounded(path)?;
    let new = rewrite(&old, &user, forms);
    crate::durable::replace(path, &new).map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
    })
}

/// Removes every line of `user` from the users file at `path`, keeping every other byte;
/// `Ok(false)`, with the file untouched, if the user has no line.
pub fn remove_user(path: &Path, user: &str) -> Result<bool, Error> {
    let user = normalize_user(user).map_err(|r| Error::Argument {
        what: "user name",
        message: r.message,
        hint: r.hint,
    })?;
    let _lock = lock(path)?;
    let old = read_bounded(path)?;
    let body = old.strip_suffix(b"\n").unwrap_or(&old);
    let mut new = Vec::with_capacity(old.len());
    let mut removed = false;
    for line in body.split(|&b| b == b'\n').filter(|_| !old.is_empty()) {
        if user_line_rest(line, &user).is_some() {
            removed = true;
        } else {
            new.extend_from_slice(line);
            new.push(b'\n');
        }
    }
    if !removed {
        return Ok(false);
    }
    crate::durable::replace(path, &new).map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
    })?;
    Ok(true)
}

/// The users file's bytes (none if it does not exist yet), refused above [`MAX_FILE_BYTES`].
fn read_bounded(path: &Path) -> Result<Vec<u8>, Error> {
    let old = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(Error::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    if old.len() as u64 > MAX_FILE_BYTES {
        return Err(Error::TooLarge {
            path: path.to_owned(),
            limit: MAX_FILE_BYTES,
        });
    }
    Ok(old)
}

/// The file `old` with `user`'s lines replaced by one line per form.
fn rewrite(old: &[u8], user: &str, forms: &[String]) -> Vec<u8> {
    let new_lines = |rest: Option<&[u8]>| {
        let mut out = Vec::new();
        for form in forms {
            out.extend_from_slice(format!("{user}:{form}").as_bytes());
            if let Some(rest) = rest {
                out.push(b':');
                out.extend_from_slice(rest);
            }
            out.push(b'\n');
        }
        out
    };
    let mut out = Vec::with_capacity(old.len() + 256);
    let mut placed = false;
    let body = old.strip_suffix(b"\n").unwrap_or(old);
    for line in body.split(|&b| b == b'\n').filter(|_| !old.is_empty()) {
        match user_line_rest(line, user) {
            None => {
                out.extend_from_slice(line);
                out.push(b'\n');
            }
            Some(_) if placed => {}
            Some(rest) => {
                out.extend_from_slice(&new_lines(rest));
                placed = true;
            }
        }
    }
    if !placed {
        out.extend_from_slice(&new_lines(None));
    }
    out
}

/// The file `old` with one line per form added for `user` right after the user's last line,
/// each with the trailing fields (uid..extra_fields) of the user's first line; appended at the
/// end if the user has no line.
pub(crate) fn append_forms(old: &[u8], user: &str, forms: &[String]) -> Vec<u8> {
    let body = old.strip_suffix(b"\n").unwrap_or(old);
    let lines: Vec<&[u8]> = if old.is_empty() {
        Vec::new()
    } else {
        body.split(|&b| b == b'\n').collect()
    };
    let mine: Vec<usize> = (0..lines.len())
        .filter(|&i| user_line_rest(lines[i], user).is_some())
        .collect();
    let rest = mine
        .first()
        .and_then(|&i| user_line_rest(lines[i], user).flatten());
    let mut added = Vec::new();
    for form in forms {
        added.extend_from_slice(format!("{user}:{form}").as_bytes());
        if let Some(rest) = rest {
            added.push(b':');
            added.extend_from_slice(rest.strip_suffix(b"\r").unwrap_or(rest));
        }
        added.push(b'\n');
    }
    let mut out = Vec::with_capacity(old.len() + added.len());
    let after = mine.last().copied();
    for (i, line) in lines.iter().enumerate() {
        out.extend_from_slice(line);
        out.push(b'\n');
        if Some(i) == after {
            out.extend_from_slice(&added);
        }
    }
    if after.is_none() {
        out.extend_from_slice(&added);
    }
    out
}

/// How often [`lock`] tries, [`LOCK_RETRY`] apart, before giving up (about 5 s).
const LOCK_TRIES: u32 = 500;
/// The pause between two tries of [`lock`].
const LOCK_RETRY: Duration = Duration::from_millis(10);

/// Takes the exclusive writer lock of the users file at `path` (an OS file lock on
/// `.NAME.lock` in the same folder, created if missing); released when the returned file is
/// dropped. Waits up to [`LOCK_TRIES`] times [`LOCK_RETRY`].
pub(crate) fn lock(path: &Path) -> Result<File, Error> {
    let err = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    let (dir, name) = crate::durable::dir_and_name(path).map_err(err)?;
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options
        .open(dir.join(format!(".{name}.lock")))
        .map_err(err)?;
    for _ in 0..LOCK_TRIES {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(fs::TryLockError::WouldBlock) => std::thread::sleep(LOCK_RETRY),
            Err(fs::TryLockError::Error(e)) => return Err(err(e)),
        }
    }
    Err(err(io::Error::new(
        io::ErrorKind::WouldBlock,
        "another writer holds the users-file lock",
    )))
}

/// If `line` belongs to `user`, its trailing fields after the password (if any).
fn user_line_rest<'a>(line: &'a [u8], user: &str) -> Option<Option<&'a [u8]>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.starts_with(b"#") {
        return None;
    }
    let mut fields = line.splitn(3, |&b| b == b':');
    let name = fields.next()?;
    fields.next()?;
    (String::from_utf8_lossy(name).to_lowercase() == user).then(|| fields.next())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMS: [&str; 2] = [
        "{PLAIN}new",
        "{CRAM-MD5}9186d855e11eba527a7a52ca82b313e180d62234f0acc9051b527243d41e2740",
    ];

    fn forms() -> Vec<String> {
        FORMS.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn rewrite_table() {
        let cram = FORMS[1];
        let cases: Vec<(&str, String)> = vec![
            ("", format!("bob:{{PLAIN}}new\nbob:{cram}\n")),
            (
                "# users\n",
                format!("# users\nbob:{{PLAIN}}new\nbob:{cram}\n"),
            ),
            (
                "alice:{PLAIN}a",
                format!("alice:{{PLAIN}}a\nbob:{{PLAIN}}new\nbob:{cram}\n"),
            ),
            (
                "# top\nBob:{PLAIN}old:1000:1000::/home/bob::quota=1G\nalice:{PLAIN}a\n\
                 bob:{NTLM}8846F7EAEE8FB117AD06BDD830B7586C\n# end\n",
                format!(
                    "# top\nbob:{{PLAIN}}new:1000:1000::/home/bob::quota=1G\nbob:{cram}:1000:1000::\
                     /home/bob::quota=1G\nalice:{{PLAIN}}a\n# end\n"
                ),
            ),
            (
                "alice:{PLAIN}a\r\n#bob:{PLAIN}commented\r\nbob:{PLAIN}old\r\n",
                format!(
                    "alice:{{PLAIN}}a\r\n#bob:{{PLAIN}}commented\r\nbob:{{PLAIN}}new\nbob:{cram}\n"
                ),
            ),
            (
                "bobby:{PLAIN}x\n",
                format!("bobby:{{PLAIN}}x\nbob:{{PLAIN}}new\nbob:{cram}\n"),
            ),
        ];
        for (old, want) in cases {
            let got = rewrite(old.as_bytes(), "bob", &forms());
            assert_eq!(String::from_utf8_lossy(&got), want, "from {old:?}");
        }
    }

    #[test]
    fn append_forms_table() {
        let add = vec!["{NTLM}00".to_string(), "{PLAIN}y".to_string()];
        let cases: [(&str, &str); 5] = [
            ("", "bob:{NTLM}00\nbob:{PLAIN}y\n"),
            (
                "alice:{PLAIN}a",
                "alice:{PLAIN}a\nbob:{NTLM}00\nbob:{PLAIN}y\n",
            ),
            (
                "Bob:{PLAIN}x:1:2::/h\r\nalice:{PLAIN}a\r\nbob:{NTLM}11\n# end\n",
                "Bob:{PLAIN}x:1:2::/h\r\nalice:{PLAIN}a\r\nbob:{NTLM}11\nbob:{NTLM}00:1:2::/h\n\
                 bob:{PLAIN}y:1:2::/h\n# end\n",
            ),
            (
                "#bob:{PLAIN}c\nbob:{PLAIN}x\nbobby:{PLAIN}z\n",
                "#bob:{PLAIN}c\nbob:{PLAIN}x\nbob:{NTLM}00\nbob:{PLAIN}y\nbobby:{PLAIN}z\n",
            ),
            ("bob:{PLAIN}x", "bob:{PLAIN}x\nbob:{NTLM}00\nbob:{PLAIN}y\n"),
        ];
        for (old, want) in cases {
            let got = append_forms(old.as_bytes(), "bob", &add);
            assert_eq!(String::from_utf8_lossy(&got), want, "from {old:?}");
        }
    }

    #[test]
    fn the_lock_excludes_a_second_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users");
        let held = lock(&path).expect("first lock");
        let other = OpenOptions::new()
            .write(true)
            .open(dir.path().join(".users.lock"))
            .expect("open lock file");
        assert!(matches!(
            other.try_lock(),
            Err(fs::TryLockError::WouldBlock)
        ));
        drop(held);
        other.try_lock().expect("free after drop");
    }

    #[test]
    fn user_names() {
        for ok in ["alice", "Alice@Example.ORG", "a.b-c_d+e"] {
            assert_eq!(
                normalize_user(ok).as_deref(),
                Ok(ok.to_lowercase().as_str())
            );
        }
        let long = "a".repeat(MAX_USER_LEN + 1);
        for bad in [
            "",
            ".hidden",
            "a/b",
            "a\\b",
            "a b",
            "a\tb",
            "a\u{7}",
            long.as_str(),
        ] {
            assert!(normalize_user(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn set_user_creates_and_replaces_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users");
        set_user(&path, "Bob", &forms()).expect("create");
        let text = fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("bob:{PLAIN}new\n"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::write(&path, "# keep\nalice:{PLAIN}a:1:2\nbob:{PLAIN}new\n").expect("write");
        set_user(&path, "alice", &["{PLAIN}b".to_string()]).expect("replace");
        let text = fs::read_to_string(&path).expect("read");
        assert_eq!(text, "# keep\nalice:{PLAIN}b:1:2\nbob:{PLAIN}new\n");
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".lock"))
            .collect();
        assert_eq!(leftovers, ["users"], "no temp file left behind");
    }

    #[test]
    fn set_user_rejects_bad_arguments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users");
        let cases: [(&str, Vec<String>); 4] = [
            ("a b", forms()),
            ("bob", vec![]),
            ("bob", vec!["{PLAIN}a:b".into()]),
            ("bob", vec!["{NOPE}x".into()]),
        ];
        for (user, forms) in cases {
            let err = set_user(&path, user, &forms).expect_err("rejected");
            assert!(matches!(err, Error::Argument { .. }), "{err}");
        }
        assert!(!path.exists());
    }

    #[test]
    fn remove_user_drops_only_that_users_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let text = "# admins\nalice:{PLAIN}a\nbob:{PLAIN}b\nALICE:{CRAM-MD5}00:1000\n";
        fs::write(&path, text).unwrap();
        assert!(remove_user(&path, "Alice").unwrap());
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "# admins\nbob:{PLAIN}b\n"
        );
        assert!(!remove_user(&path, "alice").unwrap());
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "# admins\nbob:{PLAIN}b\n"
        );
    }
}
