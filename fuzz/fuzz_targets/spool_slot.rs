//! Spool slot files (`mailgate::spool::slot`): a slot of any content is read without a panic
//! or an unbounded allocation, and only a slot whose checksum holds counts as a message.

#![no_main]

use std::io::Write;
use std::os::unix::fs::FileExt;

use libfuzzer_sys::fuzz_target;
use mailgate::spool::slot::{Header, HEADER_LEN, verify};

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
    if let Some((header, env)) = verify(&file, MAX_ENV).expect("read") {
        assert_eq!(env.len(), header.env_len as usize);
        assert!(env.len() <= MAX_ENV);
        assert!(header.env_offset() + env.len() as u64 <= data.len() as u64);
        // Flipping a body or envelope byte breaks the checksum.
        if header.env_offset() + (env.len() as u64) > HEADER_LEN {
            let at = HEADER_LEN as usize;
            file.write_all_at(&[data[at] ^ 1], HEADER_LEN).expect("write");
            assert!(verify(&file, MAX_ENV).expect("read").is_none());
        }
    }
});
