//! The slot file: spooled messages (body and envelope) in a file that is reused, batch after
//! batch, instead of a file being created and unlinked for each message.
//!
//! Why slots: on ext4 every file created and deleted costs an inode allocation, which scans
//! for inodes that were not recently deleted, and an exclusive lock on the parent directory;
//! under a steady stream of messages these dominated the gateway's profile and grew worse as
//! deleted inodes piled up. Overwriting an already allocated file and `fdatasync`ing it is a
//! plain data write, about ten times cheaper here, and needs no directory fsync at all.
//!
//! A slot holds one or more records, one after the other from offset 0, each starting at a
//! multiple of [`ALIGN`]; the first position that holds no record header ends the slot (a
//! batch writes eight zero bytes there). Concurrent commits share one slot and one
//! `fdatasync` (group commit); a slot is reused once every record in it is freed. Layout of a
//! record, offsets from its start (all integers little-endian):
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 8 | magic `MGSLOT01` |
//! | 8 | 4 | state: [`QUEUED`] or anything else (free) |
//! | 12 | 4 | CRC-32 of bytes 16..256, then the body, then the envelope |
//! | 16 | 8 | body length |
//! | 24 | 4 | envelope length |
//! | 28 | 2 | id length |
//! | 30 | 2 | zero |
//! | 32 | 128 | id, zero padded |
//! | 160 | 96 | zero |
//! | 256 | body length | the message, CRLF line endings, exactly as accepted |
//! | after the body | envelope length | the envelope as accepted ([`super::entry`] JSON) |
//!
//! A record counts as a message only if its state is [`QUEUED`] and the checksum matches. The
//! whole batch is written before the one `fdatasync` that precedes its 250s, so a crash before
//! that fsync can leave a torn mixture of old and new bytes, which the checksum rejects: no
//! 250 was sent for it. Freeing a record rewrites only its state word, unsynced; a crash that
//! undoes it brings the delivered message back (delivered at least once, never lost). The
//! state word lies outside the checksum for that reason.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::entry::MAX_ID_LEN;

/// Bytes before the body.
pub const HEADER_LEN: u64 = 256;

const MAGIC: &[u8; 8] = b"MGSLOT01";

/// The state word of a slot that holds a message.
pub const QUEUED: u32 = 0x5155_4555;

/// The state word written when a slot is freed.
pub const FREE: u32 = 0;

/// Offset of the state word in a record.
const STATE_AT: u64 = 8;

/// Records start at multiples of this.
pub const ALIGN: u64 = 256;

/// The bytes written after a batch's last record, where the next record's magic would be.
pub const END: [u8; 8] = [0; 8];

/// What the header of a valid slot says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The message id.
    pub id: String,
    /// Length of the body, which starts at [`HEADER_LEN`].
    pub body_len: u64,
    /// Length of the envelope, which follows the body.
    pub env_len: u32,
    /// The checksum stored in the header.
    pub crc: u32,
}

impl Header {
    /// Where the envelope starts, from the record's start.
    pub fn env_offset(&self) -> u64 {
        HEADER_LEN.saturating_add(self.body_len)
    }

    /// Where the next record may start, from this record's start.
    pub fn record_len(&self) -> u64 {
        let end = self.env_offset().saturating_add(u64::from(self.env_len));
        end.div_ceil(ALIGN).saturating_mul(ALIGN)
    }

    /// The 256 header bytes, state [`QUEUED`]. `crc` must be [`Header::checksum`]'s result.
    pub fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut h = self.fields();
        h[..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&QUEUED.to_le_bytes());
        h[12..16].copy_from_slice(&self.crc.to_le_bytes());
        h
    }

    /// The checksummed part of the header (bytes 16..256) inside a zeroed header.
    fn fields(&self) -> [u8; HEADER_LEN as usize] {
        let mut h = [0u8; HEADER_LEN as usize];
        h[16..24].copy_from_slice(&self.body_len.to_le_bytes());
        h[24..28].copy_from_slice(&self.env_len.to_le_bytes());
        let id = self.id.as_bytes();
        // Ids are checked by the spool (at most MAX_ID_LEN); clamp rather than panic anyway.
        let n = id.len().min(MAX_ID_LEN);
        h[28..30].copy_from_slice(&(n as u16).to_le_bytes());
        h[32..32 + n].copy_from_slice(&id[..n]);
        h
    }

    /// Finishes a checksum whose hasher has seen the body and then the envelope.
    pub fn checksum(&self, mut body_then_env: crc32fast::Hasher) -> u32 {
        body_then_env.update(&self.fields()[16..]);
        body_then_env.finalize()
    }

    /// Parses the header of a queued record; `None` for a freed record or bytes that are no
    /// record header.
    pub fn decode(h: &[u8]) -> Option<Header> {
        Header::decode_any(h).and_then(|(header, queued)| queued.then_some(header))
    }

    /// Parses a record header whatever its state; also says whether it is queued.
    pub fn decode_any(h: &[u8]) -> Option<(Header, bool)> {
        if h.len() < HEADER_LEN as usize || &h[..8] != MAGIC {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let queued = u32_at(8) == QUEUED;
        let mut body = [0u8; 8];
        body.copy_from_slice(&h[16..24]);
        let id_len = usize::from(u16::from_le_bytes([h[28], h[29]]));
        if id_len == 0 || id_len > MAX_ID_LEN {
            return None;
        }
        let id = std::str::from_utf8(&h[32..32 + id_len]).ok()?.to_string();
        let header = Header {
            id,
            body_len: u64::from_le_bytes(body),
            env_len: u32_at(24),
            crc: u32_at(12),
        };
        Some((header, queued))
    }
}

/// Reads and checks the record at `base` in `file`: its header, then the whole body and
/// envelope against the checksum. Returns the header and the envelope bytes, or `None` when
/// no complete message starts there. `max_env` bounds the envelope read.
pub fn verify(file: &File, base: u64, max_env: usize) -> io::Result<Option<(Header, Vec<u8>)>> {
    let mut h = [0u8; HEADER_LEN as usize];
    match file.read_exact_at(&mut h, base) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let Some(header) = Header::decode(&h) else {
        return Ok(None);
    };
    let len = file.metadata()?.len();
    let env_len = header.env_len as usize;
    let Some(end) = base
        .checked_add(header.env_offset())
        .and_then(|e| e.checked_add(env_len as u64))
    else {
        return Ok(None);
    };
    if env_len > max_env || end > len {
        return Ok(None);
    }
    let mut hasher = crc32fast::Hasher::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut pos = base + HEADER_LEN;
    let env_at = base + header.env_offset();
    while pos < env_at {
        let n = (env_at - pos).min(chunk.len() as u64) as usize;
        file.read_exact_at(&mut chunk[..n], pos)?;
        hasher.update(&chunk[..n]);
        pos += n as u64;
    }
    let mut env = vec![0u8; env_len];
    file.read_exact_at(&mut env, env_at)?;
    hasher.update(&env);
    if header.checksum(hasher) != header.crc {
        return Ok(None);
    }
    Ok(Some((header, env)))
}

/// Every queued, complete record in `file` with its offset. Freed records are stepped over
/// (their headers were whole once); the scan ends at the first position that holds no record
/// header, or at a queued record whose checksum fails: that one and whatever follows belong
/// to a batch whose fsync never completed, so none of them got a 250.
pub fn records(file: &File, max_env: usize) -> io::Result<Vec<(u64, Header, Vec<u8>)>> {
    let len = file.metadata()?.len();
    let mut out = Vec::new();
    let mut base = 0u64;
    let mut h = [0u8; HEADER_LEN as usize];
    while base < len {
        match file.read_exact_at(&mut h, base) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let Some((header, queued)) = Header::decode_any(&h) else {
            break;
        };
        let next = base.saturating_add(header.record_len());
        if queued {
            match verify(file, base, max_env)? {
                Some((header, env)) => out.push((base, header, env)),
                None => break,
            }
        }
        base = next;
    }
    Ok(out)
}

/// Reads the envelope of the record at `base` whose header is known (no checksum: the
/// record was verified when it was written or at start-up).
pub fn read_envelope(file: &File, base: u64, header: &Header) -> io::Result<Vec<u8>> {
    let mut env = vec![0u8; header.env_len as usize];
    file.read_exact_at(&mut env, base + header.env_offset())?;
    Ok(env)
}

/// Marks the record at `base` free (not synced; see the module notes).
pub fn mark_free(file: &File, base: u64) -> io::Result<()> {
    file.write_all_at(&FREE.to_le_bytes(), base + STATE_AT)
}

/// Appends one record (header, body, envelope) for `id` to `out`, padded to [`ALIGN`];
/// returns its header.
pub fn encode_record(out: &mut Vec<u8>, id: &str, body: &[u8], env: &[u8]) -> Header {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(body);
    hasher.update(env);
    let mut header = Header {
        id: id.to_string(),
        body_len: body.len() as u64,
        env_len: env.len() as u32,
        crc: 0,
    };
    header.crc = header.checksum(hasher);
    let start = out.len();
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(body);
    out.extend_from_slice(env);
    out.resize(start + header.record_len() as usize, 0);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_slot(file: &File, id: &str, body: &[u8], env: &[u8]) -> Header {
        let mut record = Vec::new();
        let header = encode_record(&mut record, id, body, env);
        file.write_all_at(&record, 0).unwrap();
        header
    }

    fn slot() -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("0"))
            .unwrap();
        (dir, file)
    }

    #[test]
    fn round_trip_and_free() {
        let (_dir, file) = slot();
        let header = write_slot(&file, "1.2.3", b"Subject: x\r\n\r\nhi\r\n", b"{\"v\":1}");
        let (got, env) = verify(&file, 0, 1024).unwrap().unwrap();
        assert_eq!((got, env.as_slice()), (header.clone(), &b"{\"v\":1}"[..]));
        assert_eq!(read_envelope(&file, 0, &header).unwrap(), b"{\"v\":1}");
        mark_free(&file, 0).unwrap();
        assert_eq!(verify(&file, 0, 1024).unwrap(), None);
    }

    #[test]
    fn a_torn_or_stale_slot_is_not_a_message() {
        let (_dir, file) = slot();
        // An empty or short file.
        assert_eq!(verify(&file, 0, 1024).unwrap(), None);
        file.write_all_at(b"MGSLOT01", 0).unwrap();
        assert_eq!(verify(&file, 0, 1024).unwrap(), None);
        // A longer message was here; a shorter one overwrote only part of the body.
        write_slot(&file, "old", &[b'a'; 4000], b"{}");
        file.write_all_at(b"new body", HEADER_LEN).unwrap();
        assert_eq!(verify(&file, 0, 1024).unwrap(), None);
        // The new header landed but the body did not.
        let h = write_slot(&file, "new", b"new body", b"{}");
        file.write_all_at(b"xew", HEADER_LEN).unwrap();
        assert_eq!(verify(&file, 0, 1024).unwrap(), None);
        // A header that points past the end of the file, or an envelope over the bound.
        let h2 = write_slot(&file, "ok", b"body", b"{}");
        assert!(verify(&file, 0, 1024).unwrap().is_some());
        assert_eq!(verify(&file, 0, 1).unwrap(), None);
        let long = Header {
            body_len: 1 << 40,
            ..h2.clone()
        };
        file.write_all_at(&long.encode(), 0).unwrap();
        assert_eq!(verify(&file, 0, 1024).unwrap(), None);
        let overflow = Header {
            body_len: u64::MAX,
            ..h2
        };
        file.write_all_at(&overflow.encode(), 0).unwrap();
        assert_eq!(verify(&file, 0, 1024).unwrap(), None);
        assert_eq!(h.id, "new");
    }

    #[test]
    fn several_records_follow_each_other_until_the_end_marker() {
        let (_dir, file) = slot();
        let mut batch = Vec::new();
        let a = encode_record(&mut batch, "a", b"first body\r\n", b"{}");
        let b = encode_record(&mut batch, "b", &[b'x'; 700], b"{\"v\":2}");
        batch.extend_from_slice(&END);
        file.write_all_at(&batch, 0).unwrap();
        let found = records(&file, 1024).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].0, &found[0].1), (0, &a));
        assert_eq!((found[1].0, &found[1].1), (a.record_len(), &b));
        assert_eq!(found[1].2, b"{\"v\":2}");
        assert_eq!(a.record_len() % ALIGN, 0);
        // A freed record is stepped over: the records after it are still found.
        mark_free(&file, 0).unwrap();
        let found = records(&file, 1024).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1, b);
    }

    #[test]
    fn decode_refuses_bad_ids() {
        let h = Header {
            id: "abc".into(),
            body_len: 1,
            env_len: 2,
            crc: 3,
        };
        let mut bytes = h.encode();
        assert_eq!(Header::decode(&bytes), Some(h));
        bytes[28] = 0;
        assert_eq!(Header::decode(&bytes), None);
        bytes[28] = 200;
        assert_eq!(Header::decode(&bytes), None);
        bytes[28] = 3;
        bytes[32] = 0xff;
        assert_eq!(Header::decode(&bytes), None);
        assert_eq!(Header::decode(&bytes[..100]), None);
    }
}
