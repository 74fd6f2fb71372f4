//! The users file on disk: passwd-file line syntax, user-name rules, and the atomic rewrite
//! behind `mailgate passwd`.
//!
//! A line is `user:password[:uid:gid:gecos:home:shell:extra_fields]` (Dovecot passwd-file).
//! [`set_user`] replaces one user's lines and keeps every other byte of the file: it writes a
//! temporary file in the same folder, fsyncs it, renames it over the file and fsyncs the folder,
//! so a crash leaves either the old file or the new one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::scheme::{Form, Rejection};
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
    let new = rewrite(&old, &user, forms);
    write_atomically(path, &new).map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
    })
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

/// Replaces `path` with `bytes`: temp file in the same folder, fsync, rename, folder fsync.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "users file path has no file name",
        )
    })?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    // A temp file left by a crashed run of this same process id is stale.
    let _ = fs::remove_file(&tmp);
    let result = write_then_rename(path, &tmp, &dir, bytes);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_then_rename(path: &Path, tmp: &Path, dir: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(tmp)?;
    // Keep the permissions of the file being replaced.
    if let Ok(meta) = fs::metadata(path) {
        file.set_permissions(meta.permissions())?;
    }
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, path)?;
    File::open(dir)?.sync_all()
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
        let leftovers: Vec<_> = fs::read_dir(dir.path()).expect("dir").collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
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
}
