//! Messages on their way into the spool ([`Incoming`]) and bodies on their way out
//! ([`Body`]): the two places where message bytes cross between sessions and slot files.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Envelope, Error, Spool, WRITE_BUFFER, blocking, io_err, slot};

/// The body of a spooled message: a window of its slot file, or bytes read into memory.
/// Cloning is cheap; reads are positional, so clones do not disturb each other.
#[derive(Debug, Clone)]
pub struct Body {
    pub(super) source: Source,
    /// The slot file, for error messages.
    pub(super) path: PathBuf,
    /// Where the body starts in the slot file.
    pub(super) offset: u64,
    pub(super) len: u64,
}

#[derive(Debug, Clone)]
pub(super) enum Source {
    File(Arc<File>),
    Memory(Arc<[u8]>),
}

impl Body {
    /// A body held in memory (tests, tools).
    pub fn from_bytes(bytes: impl Into<Arc<[u8]>>) -> Body {
        let bytes: Arc<[u8]> = bytes.into();
        Body {
            len: bytes.len() as u64,
            source: Source::Memory(bytes),
            path: PathBuf::from("(memory)"),
            offset: 0,
        }
    }

    /// Its length in octets.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes, if they are held in memory.
    pub fn in_memory(&self) -> Option<&[u8]> {
        match &self.source {
            Source::Memory(b) => Some(b),
            Source::File(_) => None,
        }
    }

    /// The file it is read from, for error messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads up to `buf.len()` bytes at offset `pos` of the body (blocking when on disk);
    /// returns 0 at the end.
    pub fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        if pos >= self.len {
            return Ok(0);
        }
        let n = buf.len().min((self.len - pos) as usize);
        match &self.source {
            Source::Memory(b) => buf[..n].copy_from_slice(&b[pos as usize..pos as usize + n]),
            Source::File(f) => f.read_exact_at(&mut buf[..n], self.offset + pos)?,
        }
        Ok(n)
    }

    /// A blocking reader over the whole body.
    pub fn reader(&self) -> BodyReader<'_> {
        BodyReader { body: self, pos: 0 }
    }
}

/// A blocking [`Read`] over a [`Body`].
#[derive(Debug)]
pub struct BodyReader<'a> {
    body: &'a Body,
    pos: u64,
}

impl Read for BodyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.body.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A message being received. Bytes are buffered up to [`WRITE_BUFFER`]; the first write to
/// disk takes a slot. Dropping it without [`commit`](Incoming::commit) discards the message.
#[derive(Debug)]
pub struct Incoming {
    spool: Spool,
    id: String,
    /// The slot taken by the first flush; `None` before, and while a flush runs.
    slot: Option<Taken>,
    /// An earlier write failed or was interrupted; the message can only be aborted.
    broken: bool,
    buf: Vec<u8>,
    /// Body bytes already in the slot file.
    written: u64,
    /// Checksum of the bytes already in the slot file (a message committed from memory is
    /// checksummed by the group commit instead).
    hasher: crc32fast::Hasher,
    /// Counted among the messages a group commit may wait for (until it commits from
    /// memory, spills to a slot of its own, or is dropped).
    counted: bool,
}

impl Incoming {
    pub(super) fn new(spool: Spool, id: String) -> Incoming {
        spool.receiving_started();
        Incoming {
            spool,
            id,
            slot: None,
            broken: false,
            buf: Vec::new(),
            written: 0,
            hasher: crc32fast::Hasher::new(),
            counted: true,
        }
    }

    /// The id the message will have once committed.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Octets received so far.
    pub fn size(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    /// Appends message bytes (CRLF line endings, already dot-unstuffed).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= WRITE_BUFFER {
            self.flush().await?;
        }
        Ok(())
    }

    /// Makes the message durable with `envelope` (its id and size are set here): the rest of
    /// the body, the envelope and the header in one blocking step ending in `fdatasync`.
    /// Returns the id; only now may the server answer 250.
    pub async fn commit(mut self, mut envelope: Envelope) -> Result<String, Error> {
        if self.broken {
            return Err(Error::Broken(self.id.clone()));
        }
        let spool = self.spool.clone();
        let id = self.id.clone();
        let buf = std::mem::take(&mut self.buf);
        let Some(taken) = self.slot.take() else {
            // Nothing written yet: the whole message is in memory and joins a group commit.
            let counted = std::mem::replace(&mut self.counted, false);
            spool
                .commit_small(id.clone(), buf, envelope, counted)
                .await?;
            return Ok(id);
        };
        let written = self.written;
        let mut hasher = self.hasher.clone();
        hasher.update(&buf);
        blocking(move || {
            let path = spool.slot_path(taken.n);
            taken
                .file
                .write_all_at(&buf, slot::HEADER_LEN + written)
                .map_err(io_err("write", &path))?;
            let size = written + buf.len() as u64;
            spool.seal(&id, taken, size, hasher, &mut envelope)
        })
        .await?;
        Ok(self.id.clone())
    }

    /// Discards the message.
    pub fn abort(self) {
        drop(self);
    }

    async fn flush(&mut self) -> Result<(), Error> {
        if self.broken {
            return Err(Error::Broken(self.id.clone()));
        }
        if std::mem::replace(&mut self.counted, false) {
            // Too large for a group commit: it goes to a slot of its own.
            self.spool.receiving_ended();
        }
        let slot = self.slot.take();
        // If this future is dropped mid-write, the slot is released when the task's result
        // is dropped, and the message is broken.
        self.broken = true;
        let spool = self.spool.clone();
        let buf = std::mem::take(&mut self.buf);
        self.hasher.update(&buf);
        let at = slot::HEADER_LEN + self.written;
        let (taken, mut buf) = blocking(move || {
            let taken = match slot {
                Some(t) => t,
                None => spool.take_slot()?,
            };
            taken
                .file
                .write_all_at(&buf, at)
                .map_err(io_err("write", &spool.slot_path(taken.n)))?;
            Ok((taken, buf))
        })
        .await?;
        self.written += buf.len() as u64;
        buf.clear();
        self.buf = buf;
        self.slot = Some(taken);
        self.broken = false;
        Ok(())
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if self.counted {
            self.spool.receiving_ended();
        }
    }
}

/// A slot taken for a message being written. Dropped before it is sealed, it goes back to
/// the free list as it is: its header, if any, is that of a freed message or of none.
#[derive(Debug)]
pub(super) struct Taken {
    spool: Spool,
    pub(super) n: u32,
    pub(super) file: Arc<File>,
    pub(super) sealed: bool,
}

impl Taken {
    pub(super) fn new(spool: &Spool, n: u32, file: Arc<File>) -> Taken {
        Taken {
            spool: spool.clone(),
            n,
            file,
            sealed: false,
        }
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        if !self.sealed {
            self.spool.release(self.n);
        }
    }
}
