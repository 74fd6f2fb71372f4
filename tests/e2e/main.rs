//! The gateway's end-to-end tests, one module per area, in one test binary: the crate and the
//! test kit (`mailgate-testkit`: the in-process gateway, the line client, the SASL clients,
//! the scripted smarthost) are linked once, not once per file.
//!
//! `cargo test --test e2e smtp::` runs one module's tests.

/// The built gateway binary, for the tests that run `mailgate` as a process.
pub const MAILGATE: &str = env!("CARGO_BIN_EXE_mailgate");

mod admin;
mod admin_metrics;
mod admin_refusals;
mod audit;
mod audit_report;
mod check_config;
mod cli;
mod cli_users;
mod clients;
mod cluster;
mod digest_md5;
mod dovecot_import;
mod durability;
mod external;
// Kerberos logins: only in builds with the `gssapi` feature.
#[cfg(feature = "gssapi")]
mod gssapi;
mod health;
#[cfg(feature = "legacy-tls")]
mod legacy_tls;
mod logs;
mod metrics_flow;
mod ntlm;
mod oauth;
mod old_box;
mod packaging;
mod policy;
mod policy_ops;
mod pop3;
mod proxy_protocol;
mod refusals;
mod relay;
mod relay_e2e;
mod reload;
mod robustness;
mod robustness_limits;
mod scram;
mod smtp;
mod upstream_oauth;

/// With `autotests = false`, Cargo builds only this test binary: a test file added directly
/// under `tests/`, or a file in `tests/e2e/` that no `mod` line names, would never run.
#[test]
fn every_test_file_is_a_module_of_this_binary() {
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let main = std::fs::read_to_string(tests.join("e2e/main.rs")).expect("read main.rs");
    let rs_files = |dir: &std::path::Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".rs").map(str::to_owned))
            .collect();
        names.sort();
        names
    };
    let stray = rs_files(&tests);
    assert!(
        stray.is_empty(),
        "test files outside tests/e2e/ (never built): {stray:?}; move them there and add a mod line"
    );
    let missing: Vec<String> = rs_files(&tests.join("e2e"))
        .into_iter()
        .filter(|m| m != "main" && !main.lines().any(|l| l == format!("mod {m};")))
        .collect();
    assert!(
        missing.is_empty(),
        "tests/e2e/ files without a `mod` line in main.rs: {missing:?}"
    );
}
