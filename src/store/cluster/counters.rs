//! Failed-login counters in Redis: one hash per key (`c` failures, `l` last failure, `n` next
//! check slot, all in milliseconds), expiring `window` after the last failure (or at the
//! last queued slot, if later). Each change is one Lua script that mirrors the in-memory
//! counters' rules ([`crate::store::memory::MemoryCounters`]), so nodes count as one.
//! While Redis is down, this node counts in its own memory.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::Cluster;
use crate::clock::{millis, unix_ms};
use crate::store::memory::MemoryCounters;
use crate::store::{Backoff, CounterKey, FailureCounters, Pending, Reserve};

/// The throttle's delay in Lua: `free`, `base`, `maxd` from ARGV 3..5 (after now, window).
const DELAY: &str = r"
local free, base, maxd = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local function delay(c)
  if c < free then return 0 end
  local d = base * 2 ^ (c - free)
  if d > maxd then d = maxd end
  return d
end
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local h = redis.call('HMGET', KEYS[1], 'c', 'l', 'n')
local c, l, n = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
local function keep(last, slot)
  local till = last + window
  if slot > till then till = slot end
  if till > now then redis.call('PEXPIRE', KEYS[1], till - now) else redis.call('DEL', KEYS[1]) end
end
";

/// Counts a failure; answers the count.
const BUMP: &str = r"
if c and l + window > now then c = c + 1 else c = 1; n = now end
if not l or now > l then l = now end
local t = now + delay(c)
if t > n then n = t end
redis.call('HSET', KEYS[1], 'c', c, 'l', l, 'n', n)
keep(l, n)
return c
";

/// Takes a check slot (ARGV[6]: 1 only if free now); answers the wait in ms, or -1 when the
/// key has no live counter at all.
const RESERVE: &str = r"
if not c or l + window <= now then return -1 end
if c < free then return 0 end
local slot = n
if slot < now then slot = now end
local wait = slot - now
if ARGV[6] == '1' and wait > 0 then return wait end
n = slot + delay(c)
redis.call('HSET', KEYS[1], 'n', n)
keep(l, n)
return wait
";

/// Gives the last queued slot back.
const RELEASE: &str = r"
if not c then return 0 end
local back = n - delay(c)
if back < now then back = now end
redis.call('HSET', KEYS[1], 'n', back)
return 1
";

/// How long an answer "no counter" is trusted for a check slot (see [`RedisCounters`]).
const CLEAN_TRUST: Duration = Duration::from_secs(1);
/// How long an answer "no counter" spares the reset after a success.
const CLEAN_FOR: Duration = Duration::from_secs(5);
/// Keys remembered as clean at most; beyond it the memory starts afresh.
const MAX_CLEAN: usize = 10_000;

/// The throttle's counters shared through Redis, with this node's own as the fallback.
///
/// Most logins come from addresses and for users without failures, and each asks for a
/// check slot twice (address, user) and resets the address after its success. So a node
/// remembers, per key, when Redis last said the key has no counter at all ("clean"):
///
/// - a check slot within [`CLEAN_TRUST`] of that answer is granted without asking again:
///   failures counted on *another* node reach this node's checks at most 1 s late (this
///   node's own failures end the trust at once, and a key with any counter is never
///   trusted);
/// - a reset within [`CLEAN_FOR`] of it sends nothing: a failure another node counted in
///   between stays counted, which errs on the guarded side.
pub struct RedisCounters {
    cluster: Arc<Cluster>,
    local: MemoryCounters,
    /// Keys Redis last said have no counter, and when.
    clean: dashmap::DashMap<CounterKey, SystemTime>,
    bump: redis::Script,
    reserve: redis::Script,
    release: redis::Script,
}

impl std::fmt::Debug for RedisCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCounters")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl RedisCounters {
    /// Counters in `cluster`, falling back to `local` while Redis is down.
    pub fn new(cluster: Arc<Cluster>, local: MemoryCounters) -> Self {
        RedisCounters {
            cluster,
            local,
            clean: dashmap::DashMap::new(),
            bump: redis::Script::new(&format!("{DELAY}{BUMP}")),
            reserve: redis::Script::new(&format!("{DELAY}{RESERVE}")),
            release: redis::Script::new(&format!("{DELAY}{RELEASE}")),
        }
    }

    /// Whether Redis said `key` had no counter less than `within` before now.
    fn clean_within(&self, key: &CounterKey, within: Duration) -> bool {
        let now = self.cluster.clock.now();
        self.clean
            .get(key)
            .is_some_and(|at| now.duration_since(*at).is_ok_and(|d| d < within))
    }

    /// Remembers that Redis has no counter for `key` at `now`.
    fn mark_clean(&self, key: &CounterKey, now: SystemTime) {
        if self.clean.len() >= MAX_CLEAN && !self.clean.contains_key(key) {
            self.clean.clear();
        }
        self.clean.insert(key.clone(), now);
    }

    fn key(&self, key: &CounterKey) -> String {
        match key {
            CounterKey::Addr(net) => self.cluster.key(&format!("fail:a:{net}")),
            CounterKey::User(name) => self.cluster.key(&format!("fail:u:{name}")),
        }
    }

    /// Runs `script` on `key` with the schedule's arguments and `extra`.
    async fn script(
        &self,
        what: &str,
        script: &redis::Script,
        key: &CounterKey,
        now: SystemTime,
        b: Backoff,
        extra: u8,
    ) -> Result<i64, crate::store::Error> {
        let mut conn = self.cluster.conn();
        let mut call_inv = script.prepare_invoke();
        call_inv
            .key(self.key(key))
            .arg(unix_ms(now))
            .arg(millis(b.window))
            .arg(b.free_failures)
            .arg(millis(b.base_delay))
            .arg(millis(b.max_delay))
            .arg(extra);
        let call = call_inv.invoke_async::<i64>(&mut conn);
        self.cluster.run(what, call).await
    }
}

impl FailureCounters for RedisCounters {
    fn bump<'a>(
        &'a self,
        key: &'a CounterKey,
        now: SystemTime,
        backoff: Backoff,
    ) -> Pending<'a, u32> {
        // A failure ends the trust in an earlier "no counter" at once.
        self.clean.remove(key);
        if !self.cluster.is_up() {
            return self.local.bump(key, now, backoff);
        }
        Pending::boxed(async move {
            match self
                .script("throttle count", &self.bump, key, now, backoff, 0)
                .await
            {
                Ok(n) => Ok(u32::try_from(n).unwrap_or(u32::MAX)),
                Err(_) => self.local.bump(key, now, backoff).await,
            }
        })
    }

    fn get<'a>(
        &'a self,
        key: &'a CounterKey,
        now: SystemTime,
        window: Duration,
    ) -> Pending<'a, u32> {
        if !self.cluster.is_up() {
            return self.local.get(key, now, window);
        }
        Pending::boxed(async move {
            let mut conn = self.cluster.conn();
            let mut read_cmd = redis::cmd("HMGET");
            read_cmd.arg(self.key(key)).arg("c").arg("l");
            let read = read_cmd.query_async::<(Option<u32>, Option<u64>)>(&mut conn);
            match self.cluster.run("throttle read", read).await {
                Ok((Some(c), Some(l))) if l.saturating_add(millis(window)) > unix_ms(now) => Ok(c),
                Ok(_) => Ok(0),
                Err(_) => self.local.get(key, now, window).await,
            }
        })
    }

    fn reserve<'a>(
        &'a self,
        key: &'a CounterKey,
        now: SystemTime,
        backoff: Backoff,
        how: Reserve,
    ) -> Pending<'a, Duration> {
        if !self.cluster.is_up() {
            return self.local.reserve(key, now, backoff, how);
        }
        if self.clean_within(key, CLEAN_TRUST) {
            return Pending::ready(Ok(Duration::ZERO));
        }
        Pending::boxed(async move {
            let if_free = u8::from(how == Reserve::IfFree);
            match self
                .script("throttle slot", &self.reserve, key, now, backoff, if_free)
                .await
            {
                Ok(ms) if ms < 0 => {
                    self.mark_clean(key, now);
                    Ok(Duration::ZERO)
                }
                Ok(ms) => Ok(Duration::from_millis(ms.unsigned_abs())),
                Err(_) => self.local.reserve(key, now, backoff, how).await,
            }
        })
    }

    fn release<'a>(
        &'a self,
        key: &'a CounterKey,
        now: SystemTime,
        backoff: Backoff,
    ) -> Pending<'a, ()> {
        if !self.cluster.is_up() {
            return self.local.release(key, now, backoff);
        }
        if self.clean_within(key, CLEAN_FOR) {
            return Pending::ready(Ok(())); // no slot was queued in Redis
        }
        Pending::boxed(async move {
            match self
                .script("throttle release", &self.release, key, now, backoff, 0)
                .await
            {
                Ok(_) => Ok(()),
                Err(_) => self.local.release(key, now, backoff).await,
            }
        })
    }

    fn reset<'a>(&'a self, key: &'a CounterKey) -> Pending<'a, ()> {
        // This node's own count goes too: it may hold failures from an outage.
        // The memory backend does its work in the call; its answer is ready and empty.
        drop(self.local.reset(key));
        if !self.cluster.is_up() || self.clean_within(key, CLEAN_FOR) {
            return Pending::ready(Ok(()));
        }
        Pending::boxed(async move {
            let mut conn = self.cluster.conn();
            let mut del_cmd = redis::cmd("DEL");
            del_cmd.arg(self.key(key));
            let del = del_cmd.query_async::<u64>(&mut conn);
            self.cluster.run("throttle reset", del).await?;
            self.mark_clean(key, self.cluster.clock.now());
            Ok(())
        })
    }

    fn purge(&self, now: SystemTime, window: Duration) -> Pending<'_, usize> {
        // Redis expires the shared counters itself.
        self.local.purge(now, window)
    }

    fn len(&self) -> Pending<'_, usize> {
        // This node's own (outage) counters; the shared ones are not counted (that would
        // need a SCAN of every key).
        Pending::ready(Ok(self.local.len()))
    }
}
