//! The configuration file (`mailgate::config::Config::from_toml`): never panics on any text,
//! whether it builds a configuration or reports problems; every problem names the file.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mailgate::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent/fuzz.toml");
    match Config::from_toml(text, path) {
        Ok(config) => {
            let _ = config.warnings();
        }
        Err(errors) => {
            assert!(!errors.problems.is_empty());
            for problem in &errors.problems {
                assert_eq!(problem.file, path);
                let _ = problem.to_string();
            }
        }
    }
});
