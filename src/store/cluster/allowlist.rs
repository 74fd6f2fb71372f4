//! The allowlist in Redis, with a full copy in each node's memory: lookups read the copy,
//! changes go to Redis and reach every node's copy through the change channel.
//!
//! Values are `"<inserted ms> <expires ms> <user>"`; messages are `"put <net> <value>"` and
//! `"del <net>"`. The users recently seen on a network (for the shared-address warning) are
//! counted in each node's copy: every put message names its user, so the copy sees the logins
//! of every node, and Redis keeps one key per entry.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use compact_str::CompactString;
use dashmap::DashMap;
use ipnet::IpNet;

use super::Cluster;
use crate::clock::{from_unix_ms, millis, unix_ms};
use crate::store::memory::MemoryAllowlist;
use crate::store::{AllowlistStore, Entry, Error, Expiry, InsertOutcome, Pending, Put, clean_user};

/// Creates or refreshes an entry and publishes the change.
/// KEYS: entry. ARGV: user, now, ttl, exact (0/1), channel, net.
const PUT: &str = r"
local now = tonumber(ARGV[2])
local exp = now + tonumber(ARGV[3])
local ins = now
local refreshed = 0
local v = redis.call('GET', KEYS[1])
if v then
  local i, e = string.match(v, '^(%d+) (%d+) ')
  if i and tonumber(e) > now then
    refreshed = 1
    ins = tonumber(i)
    if ARGV[4] == '0' and tonumber(e) > exp then exp = tonumber(e) end
  end
end
local val = string.format('%d %d %s', ins, exp, ARGV[1])
redis.call('SET', KEYS[1], val, 'PX', exp - now)
redis.call('PUBLISH', ARGV[5], 'put ' .. ARGV[6] .. ' ' .. val)
return {refreshed, ins, exp}
";

/// Writes back an entry made while Redis was down, unless Redis holds one that lives
/// longer. KEYS: entry. ARGV: now, inserted, expires, user, channel, net.
const MERGE: &str = r"
local now = tonumber(ARGV[1])
local ins = tonumber(ARGV[2])
local exp = tonumber(ARGV[3])
if exp <= now then return 0 end
local v = redis.call('GET', KEYS[1])
if v then
  local i, e = string.match(v, '^(%d+) (%d+) ')
  if i and tonumber(e) >= exp then return 0 end
  if i and tonumber(e) > now and tonumber(i) < ins then ins = tonumber(i) end
end
local val = string.format('%d %d %s', ins, exp, ARGV[4])
redis.call('SET', KEYS[1], val, 'PX', exp - now)
redis.call('PUBLISH', ARGV[5], 'put ' .. ARGV[6] .. ' ' .. val)
return 1
";

/// Removes an entry created at or before a time (any: a huge time) and publishes it.
/// KEYS: entry. ARGV: channel, net, cutoff.
const REMOVE: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return false end
local i = string.match(v, '^(%d+) ')
if i and tonumber(i) > tonumber(ARGV[3]) then return false end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], 'del ' .. ARGV[2])
return v
";

/// Keys read per `SCAN` round and per `MGET`.
const SCAN_BATCH: usize = 1000;

/// A change made while Redis was unusable, to write back when it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// The local entry is to be shared.
    Put,
    /// The entry was removed at this time (remove what was created before it).
    Removed(SystemTime),
}

/// The shared allowlist ([`AllowlistStore`]) of a cluster node.
pub struct RedisAllowlist {
    cluster: Arc<Cluster>,
    /// This node's copy of the list (and its view while Redis is down), with the same
    /// snapshot and journal a single node keeps.
    local: MemoryAllowlist,
    pending: DashMap<IpNet, Change>,
    put: redis::Script,
    merge: redis::Script,
    remove: redis::Script,
}

impl std::fmt::Debug for RedisAllowlist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAllowlist")
            .field("cluster", &self.cluster)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// What the put script answers.
type PutAnswer = (u8, u64, u64);

impl RedisAllowlist {
    /// The shared list over `local` (this node's copy, which also counts the users seen on
    /// each network for the shared-address warning).
    pub fn new(cluster: Arc<Cluster>, local: MemoryAllowlist) -> Self {
        RedisAllowlist {
            cluster,
            local,
            pending: DashMap::new(),
            put: redis::Script::new(PUT),
            merge: redis::Script::new(MERGE),
            remove: redis::Script::new(REMOVE),
        }
    }

    fn entry_key(&self, net: IpNet) -> String {
        self.cluster.key(&format!("allow:{net}"))
    }

    /// Whether changes wait to be written back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Marks every live entry of this node's copy for write-back (Redis lost its data);
    /// returns how many. Removals waiting to be written back stay as they are.
    pub fn share_all(&self) -> usize {
        let now = self.cluster.clock.now();
        let mut n = 0;
        for (net, _) in self.local.entries(now) {
            if let dashmap::mapref::entry::Entry::Vacant(v) = self.pending.entry(net) {
                v.insert(Change::Put);
                n += 1;
            }
        }
        n
    }

    /// Writes back the changes made while Redis was unusable; returns how many.
    pub async fn write_back(&self) -> Result<usize, Error> {
        let keys: Vec<(IpNet, Change)> = self
            .pending
            .iter()
            .map(|e| (*e.key(), *e.value()))
            .collect();
        let now = self.cluster.clock.now();
        let mut done = 0;
        for (net, change) in keys {
            let mut conn = self.cluster.conn();
            match change {
                Change::Put => {
                    if let Some(entry) = self.local.lookup(net, now) {
                        let mut call_inv = self.merge.prepare_invoke();
                        call_inv
                            .key(self.entry_key(net))
                            .arg(unix_ms(now))
                            .arg(unix_ms(entry.inserted_at))
                            .arg(unix_ms(entry.expires_at))
                            .arg(entry.user.as_str())
                            .arg(self.cluster.channel())
                            .arg(net.to_string());
                        let call = call_inv.invoke_async::<u8>(&mut conn);
                        self.cluster.run("allowlist write-back", call).await?;
                    }
                }
                Change::Removed(at) => {
                    let mut call_inv = self.remove.prepare_invoke();
                    call_inv
                        .key(self.entry_key(net))
                        .arg(self.cluster.channel())
                        .arg(net.to_string())
                        .arg(unix_ms(at));
                    let call = call_inv.invoke_async::<Option<String>>(&mut conn);
                    self.cluster.run("allowlist write-back", call).await?;
                }
            }
            // A change made again meanwhile stays for the next round.
            self.pending.remove_if(&net, |_, c| *c == change);
            done += 1;
        }
        Ok(done)
    }

    /// Reads the whole shared list into this node's copy (changes not written back yet are
    /// kept); returns the live entries read.
    pub async fn resync(&self) -> Result<usize, Error> {
        let now = self.cluster.clock.now();
        let entries = self.scan(now).await?;
        let n = entries.len();
        let dropped = self
            .local
            .replace_all(entries, |k| self.pending.contains_key(k));
        if dropped > 0 {
            tracing::debug!(
                dropped,
                "cluster: entries gone from the shared allowlist dropped"
            );
        }
        Ok(n)
    }

    /// The live shared entries at `now`, sorted by network (`SCAN` and `MGET`, never `KEYS`).
    async fn scan(&self, now: SystemTime) -> Result<Vec<(IpNet, Entry)>, Error> {
        let pattern = format!("{}allow:*", glob_escape(&self.cluster.prefix));
        let strip = self.cluster.key("allow:");
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let mut conn = self.cluster.conn();
            let mut round_cmd = redis::cmd("SCAN");
            round_cmd
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_BATCH);
            let round = round_cmd.query_async::<(u64, Vec<String>)>(&mut conn);
            let (next, keys) = self.cluster.run("allowlist SCAN", round).await?;
            if !keys.is_empty() {
                let mut values_cmd = redis::cmd("MGET");
                values_cmd.arg(&keys);
                let values = values_cmd.query_async::<Vec<Option<String>>>(&mut conn);
                let values = self.cluster.run("allowlist MGET", values).await?;
                for (key, value) in keys.iter().zip(values) {
                    let Some(net) = key.strip_prefix(&strip).and_then(|n| n.parse().ok()) else {
                        continue;
                    };
                    if let Some(entry) = value.as_deref().and_then(parse_value)
                        && entry.expires_at > now
                    {
                        out.push((net, entry));
                    }
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        out.sort_by_key(|(net, _)| *net);
        out.dedup_by_key(|(net, _)| *net);
        Ok(out)
    }

    /// Applies one change message to this node's copy; anything malformed is ignored.
    pub fn apply(&self, message: &[u8]) {
        let Ok(text) = std::str::from_utf8(message) else {
            return;
        };
        match parse_change_message(text) {
            Some(ChangeMessage::Put(net, entry)) => {
                if !self.pending.contains_key(&net) {
                    self.local.set_entry(net, entry, self.cluster.clock.now());
                }
            }
            Some(ChangeMessage::Del(net)) => {
                if !self.pending.contains_key(&net) {
                    self.local.take(net);
                }
            }
            None => tracing::debug!("cluster: malformed change message ignored"),
        }
    }

    /// The put of a live cluster: Redis decides the entry, this copy takes it. `local` is what
    /// the put did to this copy: its count of recent users covers every node's logins.
    async fn put_shared(&self, put: Put<'_>, local: InsertOutcome) -> Result<InsertOutcome, Error> {
        let mut conn = self.cluster.conn();
        let mut call_inv = self.put.prepare_invoke();
        call_inv
            .key(self.entry_key(put.key))
            .arg(put.user)
            .arg(unix_ms(put.now))
            .arg(millis(put.ttl).max(1))
            .arg(u8::from(put.expiry == Expiry::Exact))
            .arg(self.cluster.channel())
            .arg(put.key.to_string());
        let call = call_inv.invoke_async::<PutAnswer>(&mut conn);
        let (refreshed, inserted, expires) = self.cluster.run("allowlist put", call).await?;
        self.local.set_entry(
            put.key,
            Entry {
                user: CompactString::from(put.user),
                inserted_at: from_unix_ms(inserted),
                expires_at: from_unix_ms(expires),
            },
            put.now,
        );
        Ok(InsertOutcome {
            refreshed: refreshed == 1,
            ..local
        })
    }
}

impl AllowlistStore for RedisAllowlist {
    fn put<'a>(&'a self, put: Put<'a>) -> Pending<'a, InsertOutcome> {
        Pending::boxed(async move {
            // This node's copy first (journaled): it is what the relay check reads, and what
            // survives a restart while Redis is down.
            let local = self.local.put(put).await?;
            if !self.cluster.is_up() {
                self.pending.insert(put.key, Change::Put);
                return Ok(local);
            }
            match self.put_shared(put, local).await {
                Ok(outcome) => Ok(outcome),
                Err(_) => {
                    self.pending.insert(put.key, Change::Put);
                    Ok(local)
                }
            }
        })
    }

    fn get(&self, key: IpNet, now: SystemTime) -> Pending<'_, Option<Entry>> {
        Pending::ready(Ok(self.local.lookup(key, now)))
    }

    fn find(
        &self,
        ip: IpAddr,
        first: IpNet,
        now: SystemTime,
    ) -> Pending<'_, Option<(IpNet, Entry)>> {
        self.local.find(ip, first, now)
    }

    fn remove(&self, key: IpNet) -> Pending<'_, Option<Entry>> {
        Pending::boxed(async move {
            let now = self.cluster.clock.now();
            let local = self.local.remove(key).await?;
            if !self.cluster.is_up() {
                self.pending.insert(key, Change::Removed(now));
                return Ok(local);
            }
            let mut conn = self.cluster.conn();
            let mut call_inv = self.remove.prepare_invoke();
            call_inv
                .key(self.entry_key(key))
                .arg(self.cluster.channel())
                .arg(key.to_string())
                .arg(u64::MAX / 2);
            let call = call_inv.invoke_async::<Option<String>>(&mut conn);
            match self.cluster.run("allowlist remove", call).await {
                Ok(shared) => Ok(shared.as_deref().and_then(parse_value).or(local)),
                Err(_) => {
                    self.pending.insert(key, Change::Removed(now));
                    Ok(local)
                }
            }
        })
    }

    fn list(&self, now: SystemTime) -> Pending<'_, Vec<(IpNet, Entry)>> {
        if !self.cluster.is_up() {
            return Pending::ready(Ok(self.local.entries(now)));
        }
        Pending::boxed(async move {
            match self.scan(now).await {
                Ok(list) => Ok(list),
                Err(_) => Ok(self.local.entries(now)),
            }
        })
    }

    fn expire(&self, now: SystemTime) -> Pending<'_, Vec<(IpNet, Entry)>> {
        // Redis expires the shared keys itself; this sweeps this node's copy.
        Pending::ready(Ok(self.local.expire_now(now)))
    }

    fn len(&self) -> Pending<'_, usize> {
        Pending::ready(Ok(self.local.len()))
    }

    fn persist(&self, now: SystemTime) -> Pending<'_, usize> {
        self.local.persist(now)
    }

    fn wants_persist(&self) -> bool {
        self.local.wants_persist()
    }
}

/// A message on the change channel (written by the Lua scripts above).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeMessage {
    /// `put <net> <inserted ms> <expires ms> <user>`: the entry as Redis now holds it.
    Put(IpNet, Entry),
    /// `del <net>`: the entry is gone.
    Del(IpNet),
}

impl ChangeMessage {
    /// The message as the scripts write it.
    pub fn encode(&self) -> String {
        match self {
            ChangeMessage::Put(net, e) => format!(
                "put {net} {} {} {}",
                unix_ms(e.inserted_at),
                unix_ms(e.expires_at),
                e.user
            ),
            ChangeMessage::Del(net) => format!("del {net}"),
        }
    }
}

/// Parses `"put <net> <value>"` or `"del <net>"`; `None` for anything else. The user is made
/// safe as a login's (control characters dropped, bounded).
pub fn parse_change_message(text: &str) -> Option<ChangeMessage> {
    let (verb, rest) = text.split_once(' ')?;
    match verb {
        "put" => {
            let (net, value) = rest.split_once(' ')?;
            Some(ChangeMessage::Put(net.parse().ok()?, parse_value(value)?))
        }
        "del" => Some(ChangeMessage::Del(rest.parse().ok()?)),
        _ => None,
    }
}

/// Parses a value, `"<inserted ms> <expires ms> <user>"`; the user is made safe as a login's.
fn parse_value(value: &str) -> Option<Entry> {
    let mut parts = value.splitn(3, ' ');
    let inserted: u64 = parts.next()?.parse().ok()?;
    let expires: u64 = parts.next()?.parse().ok()?;
    let user = parts.next()?;
    Some(Entry {
        user: CompactString::from(clean_user(user)),
        inserted_at: from_unix_ms(inserted),
        expires_at: from_unix_ms(expires),
    })
}

/// `text` with the glob characters of `SCAN MATCH` escaped.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_and_bad_ones_are_refused() {
        let put = parse_change_message("put 192.0.2.7/32 1000 61000 alice smith").unwrap();
        let ChangeMessage::Put(net, entry) = put else {
            panic!("a put")
        };
        assert_eq!(net.to_string(), "192.0.2.7/32");
        assert_eq!(entry.user, "alice smith");
        assert_eq!(entry.inserted_at, from_unix_ms(1000));
        assert_eq!(entry.expires_at, from_unix_ms(61000));
        assert_eq!(
            parse_change_message("del 2001:db8::/48"),
            Some(ChangeMessage::Del("2001:db8::/48".parse().unwrap()))
        );
        for bad in [
            "",
            "put",
            "put 192.0.2.7/32",
            "put 192.0.2.7/32 1 2",
            "put nonsense 1 2 u",
            "put 192.0.2.7/32 x 2 u",
            "del",
            "del 999.1.1.1/32",
            "add 192.0.2.7/32 1 2 u",
        ] {
            assert_eq!(parse_change_message(bad), None, "{bad:?}");
        }
        let odd = parse_value("1 2 a\u{7}b").unwrap();
        assert_eq!(odd.user, "ab", "control characters dropped");
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("mailgate:"), "mailgate:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
