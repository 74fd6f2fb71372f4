//! SKELETON: serde mirror of the TOML file.
