//! The spool's start-up: indexing every slot file (checksums checked), attaching the newer
//! envelopes of `env/`, converting a spool in the older one-file-per-message layout, and
//! moving what cannot be read into `corrupt/`.

use super::*;

impl Spool {
    /// Start-up: indexes every slot file.
    pub(super) fn scan_slots(&self) -> Result<(), Error> {
        let mut index = Index::default();
        for path in read_dir(&self.slots)? {
            let Some(n) = path
                .file_name()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u32>().ok())
            else {
                tracing::warn!(path = %path.display(), "spool: ignoring unexpected file");
                continue;
            };
            index.next = index.next.max(n.saturating_add(1));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err("open", &path))?;
            let found =
                slot::records(&file, entry::MAX_ENVELOPE_LEN).map_err(io_err("read", &path))?;
            let mut live = 0;
            for (base, header, env) in found {
                let usable = check_id(&header.id)
                    .and_then(|()| parse(&path, &env))
                    .and_then(|e| match e.id == header.id {
                        true => Ok(()),
                        false => Err(Error::Envelope {
                            path: path.clone(),
                            source: FormatError::BadId(e.id),
                        }),
                    });
                if let Err(e) = usable {
                    tracing::error!(slot = n, error = %e, "spool: unreadable message, moving aside");
                    self.quarantine_record(&file, base, &header, &env)?;
                    continue;
                }
                if index.queued.contains_key(&header.id) {
                    tracing::warn!(
                        id = header.id,
                        slot = n,
                        "spool: duplicate record, freeing it"
                    );
                    slot::mark_free(&file, base).map_err(io_err("free", &path))?;
                    continue;
                }
                let id = header.id.clone();
                let queued = Queued {
                    slot: n,
                    base,
                    header,
                    overridden: false,
                };
                index.queued.insert(id, queued);
                live += 1;
            }
            if live == 0 {
                index.free.push(n);
            } else {
                index.live.insert(n, live);
            }
        }
        // Keep the lowest numbers in use; surplus free slots are deleted.
        index.free.sort_unstable_by(|a, b| b.cmp(a));
        while index.free.len() > MAX_FREE_SLOTS {
            if let Some(n) = index.free.first().copied() {
                index.free.remove(0);
                self.delete_slot(n)?;
            }
        }
        *self.lock() = index;
        Ok(())
    }

    /// Start-up: ties each `env/<id>.json` to its message; envelopes of messages that are
    /// gone (removed before a crash) are deleted.
    pub(super) fn attach_overrides(&self) -> Result<(), Error> {
        for path in read_dir(&self.env)? {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let Some(id) = name.strip_suffix(".json") else {
                tracing::warn!(path = %path.display(), "spool: ignoring unexpected file");
                continue;
            };
            let mut index = self.lock();
            match index.queued.get_mut(id) {
                Some(q) => q.overridden = true,
                None => {
                    drop(index);
                    tracing::debug!(id, "spool: removing envelope of a finished message");
                    remove_if_exists(&path)?;
                }
            }
        }
        Ok(())
    }

    /// Start-up: moves messages of the older layout (`msg/<id>` with `env/<id>.json`) into
    /// slots, then removes the old files. Bodies without an envelope were never accepted.
    pub(super) fn convert_old_layout(&self) -> Result<(), Error> {
        let msg = self.root.join("msg");
        if !msg.is_dir() {
            return Ok(());
        }
        for body in read_dir(&msg)? {
            let id = body.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let env_path = self.envelope_path(id);
            if check_id(id).is_err() || !env_path.exists() {
                tracing::info!(id, "spool: removing body without envelope (never accepted)");
                remove_if_exists(&body)?;
                continue;
            }
            let env = match read_bounded(&env_path, entry::MAX_ENVELOPE_LEN)
                .and_then(|b| parse(&env_path, &b))
            {
                Ok(env) if env.id == id => env,
                Ok(_) | Err(_) => {
                    tracing::error!(id, "spool: unreadable envelope, moving aside");
                    self.quarantine_files(id, &body, &env_path)?;
                    continue;
                }
            };
            let bytes = fs::read(&body).map_err(io_err("read", &body))?;
            let mut env = env;
            self.write_new(id, &bytes, &mut env)?;
            remove_if_exists(&env_path)?;
            remove_if_exists(&body)?;
        }
        sync_dir(&self.env)?;
        fs::remove_dir(&msg).map_err(io_err("remove", &msg))?;
        tracing::info!("spool: converted to the slot layout");
        Ok(())
    }

    /// Stores a whole message as `id` in a free slot, durably.
    pub(super) fn write_new(
        &self,
        id: &str,
        bytes: &[u8],
        env: &mut Envelope,
    ) -> Result<(), Error> {
        let taken = self.take_slot()?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(bytes);
        let path = self.slot_path(taken.n);
        taken
            .file
            .write_all_at(bytes, slot::HEADER_LEN)
            .map_err(io_err("write", &path))?;
        self.seal(id, taken, bytes.len() as u64, hasher, env)
    }

    /// Copies a record's message into `corrupt/` (`<id>` and `<id>.json`) and frees it.
    pub(super) fn quarantine_record(
        &self,
        file: &File,
        base: u64,
        header: &slot::Header,
        env: &[u8],
    ) -> Result<(), Error> {
        let dir = self.corrupt_dir()?;
        let name = if check_id(&header.id).is_ok() {
            header.id.clone()
        } else {
            new_id()
        };
        let body = Body {
            source: Source::File(Arc::new(file.try_clone().map_err(io_err("open", &dir))?)),
            path: dir.clone(),
            offset: base + slot::HEADER_LEN,
            len: header.body_len,
        };
        write_durably(&dir.join(&name), |f| {
            io::copy(&mut body.reader(), f).map(|_| ())
        })?;
        write_durably(&dir.join(format!("{name}.json")), |f| f.write_all(env))?;
        sync_dir(&dir)?;
        slot::mark_free(file, base).map_err(io_err("free", &dir))
    }

    /// Moves an old-layout message into `corrupt/`.
    pub(super) fn quarantine_files(&self, id: &str, body: &Path, env: &Path) -> Result<(), Error> {
        let dir = self.corrupt_dir()?;
        fs::rename(env, dir.join(format!("{id}.json"))).map_err(io_err("move aside", env))?;
        fs::rename(body, dir.join(id)).map_err(io_err("move aside", body))?;
        sync_dir(&dir)
    }

    /// An unreadable `env/<id>.json`: moved aside, and the envelope in the slot is used
    /// instead (recipients already done may get the message again: at least once).
    pub(super) fn distrust_override(&self, id: &str, err: &Error) {
        tracing::error!(id, error = %err, "spool: unreadable envelope, using the one accepted");
        let path = self.envelope_path(id);
        let moved = self.corrupt_dir().and_then(|dir| {
            fs::rename(&path, dir.join(format!("{id}.json"))).map_err(io_err("move aside", &path))
        });
        if let Err(e) = moved {
            tracing::error!(id, error = %e, "spool: cannot move bad envelope aside");
        }
        if let Some(q) = self.lock().queued.get_mut(id) {
            q.overridden = false;
        }
    }

    pub(super) fn corrupt_dir(&self) -> Result<PathBuf, Error> {
        let dir = self.root.join("corrupt");
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        Ok(dir)
    }

    pub(super) fn write_envelope(&self, env: &Envelope) -> Result<(), Error> {
        let path = self.envelope_path(&env.id);
        let bytes = env.to_bytes().map_err(|source| Error::Envelope {
            path: path.clone(),
            source,
        })?;
        let tmp = self.tmp.join(format!("{}.json", env.id));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        let written = file.write_all(&bytes).and_then(|()| file.sync_all());
        drop(file);
        if let Err(source) = written {
            let _ = fs::remove_file(&tmp);
            return Err(Error::Io {
                op: "write",
                path: tmp,
                source,
            });
        }
        fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
        self.env_sync.sync(&self.env)
    }
}
