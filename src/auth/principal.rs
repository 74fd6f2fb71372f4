//! Which user a Kerberos principal logs in as (GSSAPI, `[auth.gssapi]`): an explicit
//! `user_map` entry first, else a principal of one of the configured `realms` whose name has
//! a single component maps to that component, normalized as a users-file name (lower case).
//!
//! A principal with more than one component (`alice/admin@REALM`, `host/mx@REALM`) maps
//! only through `user_map`: such names are other identities (an administrator instance, a
//! machine), and letting `host/anything` log in as a user called `host` would hand a
//! mailbox to whoever holds a machine key.

use std::collections::BTreeMap;

/// Why a principal maps to no user (the log reason of the refusal).
pub const UNMAPPED_REALM: &str = "the principal's realm is not in [auth.gssapi] realms";
/// A principal of a mapped realm with more than one component and no `user_map` entry.
pub const MULTI_COMPONENT: &str = "a principal with several components needs a user_map entry";
/// A principal whose name is no valid user name.
pub const BAD_NAME: &str = "the principal's name is not a valid user name";

/// Splits `principal` (`name@REALM`, RFC 1964 display form) at its realm separator: the last
/// `@` not escaped by a backslash.
pub fn split(principal: &str) -> Option<(&str, &str)> {
    let bytes = principal.as_bytes();
    let mut at = None;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'@' => at = Some(i),
            _ => {}
        }
        i += 1;
    }
    let at = at?;
    let (name, realm) = (&principal[..at], &principal[at + 1..]);
    (!name.is_empty() && !realm.is_empty()).then_some((name, realm))
}

/// The user `principal` logs in as, or why it maps to none. `realms` are compared exactly
/// (Kerberos realms are case-sensitive); `user_map` keys are whole principals.
pub fn map(
    principal: &str,
    realms: &[String],
    user_map: &BTreeMap<String, String>,
) -> Result<String, &'static str> {
    if let Some(user) = user_map.get(principal) {
        return super::file::normalize_user(user).map_err(|_| BAD_NAME);
    }
    let Some((name, realm)) = split(principal) else {
        return Err(UNMAPPED_REALM);
    };
    if !realms.iter().any(|r| r == realm) {
        return Err(UNMAPPED_REALM);
    }
    if name.contains(['/', '\\']) {
        return Err(MULTI_COMPONENT);
    }
    super::file::normalize_user(name).map_err(|_| BAD_NAME)
}

/// The canonical form of a user name as `user_map` names it, if it is a valid users-file name.
pub fn user_name(user: &str) -> Option<String> {
    super::file::normalize_user(user).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn realms() -> Vec<String> {
        vec!["EXAMPLE.ORG".into(), "LEGACY.EXAMPLE.ORG".into()]
    }

    #[test]
    fn realm_principals_map_to_their_lower_cased_name() {
        let none = BTreeMap::new();
        assert_eq!(
            map("Alice@EXAMPLE.ORG", &realms(), &none),
            Ok("alice".into())
        );
        assert_eq!(
            map("bob@LEGACY.EXAMPLE.ORG", &realms(), &none),
            Ok("bob".into())
        );
        // Realms are case-sensitive, and only the configured ones map.
        assert_eq!(
            map("alice@example.org", &realms(), &none),
            Err(UNMAPPED_REALM)
        );
        assert_eq!(map("alice@EVIL.ORG", &realms(), &none), Err(UNMAPPED_REALM));
        assert_eq!(map("alice", &realms(), &none), Err(UNMAPPED_REALM));
        assert_eq!(map("@EXAMPLE.ORG", &realms(), &none), Err(UNMAPPED_REALM));
        assert_eq!(map("alice@", &realms(), &none), Err(UNMAPPED_REALM));
    }

    #[test]
    fn several_components_or_bad_names_need_the_map() {
        let none = BTreeMap::new();
        assert_eq!(
            map("alice/admin@EXAMPLE.ORG", &realms(), &none),
            Err(MULTI_COMPONENT)
        );
        assert_eq!(
            map("host/mx.example.org@EXAMPLE.ORG", &realms(), &none),
            Err(MULTI_COMPONENT)
        );
        assert_eq!(map(".hidden@EXAMPLE.ORG", &realms(), &none), Err(BAD_NAME));
        // An escaped `@` belongs to the name, not the realm separator.
        assert_eq!(
            map("a\\@b@EXAMPLE.ORG", &realms(), &none),
            Err(MULTI_COMPONENT)
        );
    }

    #[test]
    fn the_map_wins_and_reaches_other_realms() {
        let mut m = BTreeMap::new();
        m.insert("alice/admin@EXAMPLE.ORG".to_string(), "Alice".to_string());
        m.insert("jdoe@PARTNER.NET".to_string(), "john".to_string());
        m.insert("carol@EXAMPLE.ORG".to_string(), "c.smith".to_string());
        assert_eq!(
            map("alice/admin@EXAMPLE.ORG", &realms(), &m),
            Ok("alice".into())
        );
        assert_eq!(map("jdoe@PARTNER.NET", &realms(), &m), Ok("john".into()));
        assert_eq!(
            map("carol@EXAMPLE.ORG", &realms(), &m),
            Ok("c.smith".into())
        );
        assert_eq!(map("other@PARTNER.NET", &realms(), &m), Err(UNMAPPED_REALM));
    }

    #[test]
    fn split_finds_the_last_unescaped_at() {
        assert_eq!(split("a@B"), Some(("a", "B")));
        assert_eq!(split("a\\@x@B"), Some(("a\\@x", "B")));
        assert_eq!(split("a\\@B"), None);
    }
}
