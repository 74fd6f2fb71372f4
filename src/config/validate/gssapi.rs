//! Value checks for `[auth.gssapi]` (Kerberos logins): the keytab, the realms and the
//! principal map. A build without the `gssapi` feature parses the table and refuses it by
//! name, so that `check-config` says what to do instead of "unknown key".

use std::path::Path;

use super::Checker;
use crate::config::GssapiConfig;
use crate::config::file::File;

/// What to do about a configuration that asks for GSSAPI in a build without it.
pub(super) const REBUILD: &str =
    "rebuild with --features gssapi or install the Debian package, or remove it";

impl Checker<'_> {
    /// The `[auth.gssapi]` table, checked against `mechanisms` (the valid `[auth] mechanisms`).
    pub(super) fn gssapi(
        &mut self,
        base: &Path,
        f: &File,
        mechanisms: &[String],
    ) -> Option<GssapiConfig> {
        let key = "auth.gssapi";
        let Some(g) = &f.auth.gssapi else {
            if let Some(i) = mechanisms.iter().position(|m| m == "GSSAPI") {
                self.bad(
                    "auth.mechanisms",
                    Some(i),
                    "GSSAPI needs a keytab, and [auth.gssapi] is not set".into(),
                    "add an [auth.gssapi] table (keytab, realms), or remove it",
                );
            }
            return None;
        };
        if !cfg!(feature = "gssapi") {
            self.bad(
                key,
                None,
                "is set, and this build of mailgate has no GSSAPI".into(),
                REBUILD,
            );
            return None;
        }
        let keytab = match &g.keytab {
            Some(p) => self.path(base, &format!("{key}.keytab"), p),
            None => {
                self.bad(
                    key,
                    None,
                    "has no keytab".into(),
                    "write keytab = \"/etc/mailgate/mailgate.keytab\" (the keytab holding \
                     smtp/<hostname> and pop/<hostname>)",
                );
                Default::default()
            }
        };
        let mut realms: Vec<String> = Vec::new();
        for (i, realm) in g.realms.iter().enumerate() {
            if realm.is_empty()
                || realm.contains(['@', '/', '\\'])
                || realm.contains(char::is_whitespace)
            {
                self.bad(
                    &format!("{key}.realms"),
                    Some(i),
                    format!("\"{realm}\" is not a Kerberos realm"),
                    "write the realm as Kerberos spells it, e.g. \"EXAMPLE.ORG\"",
                );
            } else if !realms.contains(realm) {
                realms.push(realm.clone());
            }
        }
        let mut user_map = std::collections::BTreeMap::new();
        for (principal, user) in &g.user_map {
            let at = format!("{key}.user_map");
            if crate::auth::principal::split(principal).is_none() {
                self.bad(
                    &at,
                    None,
                    format!("\"{principal}\" is not a principal name@REALM"),
                    "write the whole principal, e.g. \"jdoe@PARTNER.EXAMPLE\" = \"john\"",
                );
            }
            match crate::auth::principal::user_name(user) {
                Some(canonical) => {
                    user_map.insert(principal.clone(), canonical);
                }
                None => self.bad(
                    &at,
                    None,
                    format!("\"{user}\" is not a valid user name"),
                    "write a users-file name: letters, digits and . _ - @ +",
                ),
            }
        }
        if g.realms.is_empty() && g.user_map.is_empty() {
            self.bad(
                key,
                None,
                "maps no principal to a user: realms and user_map are both empty".into(),
                "write realms = [\"EXAMPLE.ORG\"], or user_map entries",
            );
        }
        if !mechanisms.iter().any(|m| m == "GSSAPI") {
            self.bad(
                key,
                None,
                "is set, and GSSAPI is not in [auth] mechanisms".into(),
                "add \"GSSAPI\" to [auth] mechanisms, or remove the table",
            );
        }
        Some(GssapiConfig {
            keytab,
            realms,
            user_map,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, Problem};

    const BASE: &str = "hostname = \"mx.example.org\"\n[listeners]\nsmtp = [\"127.0.0.1:2525\"]\n";

    fn load(tail: &str) -> Result<Config, Vec<Problem>> {
        Config::from_toml(
            &format!("{BASE}{tail}"),
            Path::new("/etc/mailgate/mailgate.toml"),
        )
        .map_err(|e| e.problems)
    }

    /// A build without the feature names the table and the mechanism, with their lines and
    /// how to get a build that has them.
    #[cfg(not(feature = "gssapi"))]
    #[test]
    fn a_build_without_gssapi_says_how_to_get_it() {
        let p =
            load("[auth]\nmechanisms = [\"PLAIN\", \"GSSAPI\"]\n[auth.gssapi]\nkeytab = \"k\"\n")
                .expect_err("refused");
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!((p[0].key.as_str(), p[0].line), ("auth.mechanisms", Some(5)));
        assert_eq!((p[1].key.as_str(), p[1].line), ("auth.gssapi", Some(6)));
        for problem in &p {
            assert!(problem.hint.contains("--features gssapi"), "{problem:?}");
            assert!(problem.hint.contains("Debian package"), "{problem:?}");
        }
    }

    #[cfg(feature = "gssapi")]
    #[test]
    fn the_table_is_checked() {
        let c = load(
            "[auth]\nmechanisms = [\"GSSAPI\"]\n[auth.gssapi]\nkeytab = \"mailgate.keytab\"\n\
             realms = [\"EXAMPLE.ORG\", \"EXAMPLE.ORG\"]\n\
             user_map = { \"jdoe@PARTNER.NET\" = \"John\" }\n",
        )
        .expect("valid");
        let g = c.auth.gssapi.expect("table");
        assert_eq!(g.keytab, Path::new("/etc/mailgate/mailgate.keytab"));
        assert_eq!(g.realms, ["EXAMPLE.ORG"]);
        assert_eq!(g.user_map["jdoe@PARTNER.NET"], "john");
        let cases: &[(&str, &str, &str)] = &[
            (
                "[auth]\nmechanisms = [\"GSSAPI\"]\n",
                "auth.mechanisms",
                "[auth.gssapi]",
            ),
            (
                "[auth]\nmechanisms = [\"GSSAPI\"]\n[auth.gssapi]\nrealms = [\"A\"]\n",
                "auth.gssapi",
                "keytab =",
            ),
            (
                "[auth]\nmechanisms = [\"GSSAPI\"]\n[auth.gssapi]\nkeytab = \"k\"\n",
                "auth.gssapi",
                "realms",
            ),
            (
                "[auth]\nmechanisms = [\"GSSAPI\"]\n[auth.gssapi]\nkeytab = \"k\"\n\
                 realms = [\"alice@A\"]\n",
                "auth.gssapi.realms",
                "EXAMPLE.ORG",
            ),
            (
                "[auth]\nmechanisms = [\"GSSAPI\"]\n[auth.gssapi]\nkeytab = \"k\"\n\
                 user_map = { \"jdoe\" = \"john\" }\n",
                "auth.gssapi.user_map",
                "whole principal",
            ),
            (
                "[auth]\nmechanisms = [\"GSSAPI\"]\n[auth.gssapi]\nkeytab = \"k\"\n\
                 user_map = { \"a@B\" = \"../x\" }\n",
                "auth.gssapi.user_map",
                "users-file name",
            ),
            (
                "[auth.gssapi]\nkeytab = \"k\"\nrealms = [\"A\"]\n",
                "auth.gssapi",
                "add \"GSSAPI\"",
            ),
        ];
        for (tail, key, hint) in cases {
            let p = load(tail).expect_err(tail);
            assert_eq!(p.len(), 1, "{tail}\n{p:?}");
            assert_eq!(p[0].key, *key, "{tail}");
            assert!(p[0].hint.contains(hint), "{tail}\nhint: {}", p[0].hint);
            assert!(p[0].line.is_some(), "{tail}");
        }
    }
}
