//! Spool slot files (`mailgate::spool::slot`): a slot of any content is read without a panic
//! or an unbounded allocation, and only records whose checksum holds count as messages.

#![no_main]

use std::io::Write;
use std::os::unix::fs::FileExt;

use libfuzzer_sys::fuzz_target;
use mailgate::spool::slot::{Header, HEADER_LEN, records, verify};

const MAX_ENV: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let _ = Header::decode(data);
    let path = std::env::temp_dir().join(format!("mailgate-fuzz-slot.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("temp file");
    file.write_all(data).expect("write");
    let found = records(&file, MAX_ENV).expect("read");
    let mut end = 0;
    for (base, header, env) in &found {
        assert!(*base >= end, "records overlap");
        assert_eq!(env.len(), header.env_len as usize);
        assert!(env.len() <= MAX_ENV);
        assert!(base + header.env_offset() + env.len() as u64 <= data.len() as u64);
        end = base + header.record_len();
    }
    if let Some((base, header, env)) = found.first() {
        // Flipping a body or envelope byte breaks the checksum.
        if header.env_offset() + (env.len() as u64) > HEADER_LEN {
            let at = (base + HEADER_LEN) as usize;
            file.write_all_at(&[data[at] ^ 1], base + HEADER_LEN).expect("write");
            assert!(verify(&file, *base, MAX_ENV).expect("read").is_none());
        }
    }
});
