//! A fault-injecting wrapper around any store, for deterministic tests of retries, EIO
//! paths and deadlines.
//!
//! ```
//! use std::sync::Arc;
//! use vaultfs::backend::faulty::{Fault, FaultyStore, Op, Rule};
//! use vaultfs::backend::memory::MemoryStore;
//! use vaultfs::backend::ObjectStore;
//!
//! let store = FaultyStore::new(Arc::new(MemoryStore::new()));
//! store.put("packs/a", b"data").unwrap();
//! // The next two reads of any pack fail with a transient error, then reads work again.
//! store.add_rule(Rule::new(Op::Get, "packs/", Fault::Error { transient: true }).times(2));
//! assert!(store.get("packs/a").unwrap_err().is_transient());
//! assert!(store.get("packs/a").is_err());
//! assert_eq!(store.get("packs/a").unwrap(), b"data");
//! ```
//!
//! Rules are checked in the order they were added; every rule that matches a call (its
//! operation, and its `key_contains` found in the key or listed prefix) and has uses left
//! fires, and uses one. Faults that act before the call (delays, stalls, errors) run in
//! rule order, and the first error ends the call without reaching the inner store; faults
//! that act on the result (short reads, bit flips, partial listings) apply after it. No
//! randomness: the same rules and calls give the same results.
//!
//! Besides rules, a store can draw faults at random from a seed ([`FaultyStore::set_random`],
//! for fault matrices): each call draws from a hash of the seed, the operation, the key and
//! how many calls of that operation on that key came before, so the draws do not depend on
//! how threads interleave. Every fault that acted is counted ([`FaultyStore::injected`]).

use std::fmt;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{BackendError, ObjectInfo, ObjectStore, Result, Store};

/// The operations a rule can match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Get,
    GetRange,
    Put,
    PutNew,
    Delete,
    List,
    Head,
    /// `Get` or `GetRange`.
    Read,
    /// `Put` or `PutNew`.
    Write,
    /// Every operation.
    Any,
}

impl Op {
    fn matches(self, call: Op) -> bool {
        self == call
            || self == Op::Any
            || (self == Op::Read && matches!(call, Op::Get | Op::GetRange))
            || (self == Op::Write && matches!(call, Op::Put | Op::PutNew))
    }

    fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::GetRange => "get range",
            Op::Put => "put",
            Op::PutNew => "put new",
            Op::Delete => "delete",
            Op::List => "list",
            Op::Head => "head",
            Op::Read => "read",
            Op::Write => "write",
            Op::Any => "any",
        }
    }
}

/// What happens to a matching call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Sleep, then proceed.
    Delay(Duration),
    /// Block until [`FaultyStore::release`] is called (then proceed), or until `timeout`
    /// passes (then fail with a transient error, as a client deadline would).
    Stall { timeout: Duration },
    /// Fail without reaching the inner store.
    Error { transient: bool },
    /// Fail with `NotFound`, as if the object had vanished.
    NotFound,
    /// Reads return their data less its last `missing` bytes (at least one byte short):
    /// a store that breaks the "never a short read" rule, for defence-in-depth tests.
    ShortRead { missing: usize },
    /// Reads return their data with one bit flipped: bit `bit % (8 * len)`, counted from
    /// the first byte's least significant bit. Empty data is left alone.
    BitFlip { bit: u64 },
    /// A listing fails with a transient error after the inner store's first `after`
    /// keys, as a real store does when it times out in the middle of the pages.
    PartialListing { after: usize },
    /// A listing leaves out the `newest` keys written last through this store under the
    /// listed prefix, as an eventually consistent store does: a store that breaks the
    /// "every key or an error" rule. No effect when none of them is under the prefix.
    StaleListing { newest: usize },
    /// A read (or head) of a key among the last `within` keys written through this store
    /// says it does not exist, as a store without read-after-write consistency does.
    /// No effect on other keys.
    NotYetVisible { within: usize },
    /// The call reaches the inner store, then fails with a transient error, as when the
    /// answer is lost on the way back: a write or delete may have happened.
    LostReply,
}

impl Fault {
    /// A short name of the kind, for counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Delay(_) => "delay",
            Fault::Stall { .. } => "stall",
            Fault::Error { transient: true } => "transient error",
            Fault::Error { transient: false } => "permanent error",
            Fault::NotFound => "not found",
            Fault::ShortRead { .. } => "short read",
            Fault::BitFlip { .. } => "bit flip",
            Fault::PartialListing { .. } => "partial listing",
            Fault::StaleListing { .. } => "stale listing",
            Fault::NotYetVisible { .. } => "not yet visible",
            Fault::LostReply => "lost reply",
        }
    }

    /// The same kind with its number drawn from `h` (a bit, a count), for random faults.
    fn varied(&self, h: u64) -> Fault {
        match self {
            Fault::ShortRead { missing } => Fault::ShortRead {
                missing: 1 + (h as usize) % (*missing).max(1),
            },
            Fault::BitFlip { .. } => Fault::BitFlip { bit: h },
            Fault::PartialListing { after } => Fault::PartialListing {
                after: (h as usize) % (after + 1),
            },
            Fault::StaleListing { newest } => Fault::StaleListing {
                newest: 1 + (h as usize) % (*newest).max(1),
            },
            f => f.clone(),
        }
    }
}

/// Faults drawn at random for every call (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RandomFaults {
    pub seed: u64,
    /// The chance of a fault on a call, in thousandths.
    pub per_mille: u32,
    /// The faults to draw from, as rules (their `times` is not used): a call draws among
    /// those that match it (their numbers are drawn too, up to the one given).
    pub menu: Vec<Rule>,
}

/// One fault-injection rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub op: Op,
    /// Matches keys (or listed prefixes) that contain this; empty matches every key.
    pub key_contains: String,
    pub fault: Fault,
    /// How many calls it applies to; `None`: every call.
    pub times: Option<u32>,
    /// How many matching calls it lets pass before it applies.
    pub skip: u32,
}

impl Rule {
    /// A rule that applies to every matching call; see [`Rule::times`].
    pub fn new(op: Op, key_contains: impl Into<String>, fault: Fault) -> Rule {
        Rule {
            op,
            key_contains: key_contains.into(),
            fault,
            times: None,
            skip: 0,
        }
    }

    /// Lets the next `n` matching calls pass before it applies.
    pub fn after(mut self, n: u32) -> Rule {
        self.skip = n;
        self
    }

    /// Applies only to the next `n` matching calls.
    pub fn times(mut self, n: u32) -> Rule {
        self.times = Some(n);
        self
    }
}

impl std::str::FromStr for Rule {
    type Err = String;

    /// Parses `OP:KEY_CONTAINS:FAULT[:TIMES]`, the form `VAULTFS_FAULTS` takes (rules
    /// separated by `;`). OP: get, get_range, put, put_new, delete, list, head, read,
    /// write, any. FAULT: `delay=MS`, `stall=MS` (fails after MS), `error`, `transient`,
    /// `notfound`, `short=N`, `bitflip=N`, `partial=N`, `stale=N`, `unseen=N`, `lost`.
    fn from_str(spec: &str) -> std::result::Result<Rule, String> {
        let bad = |why: &str| format!("fault rule {spec:?}: {why}");
        let mut parts = spec.trim().splitn(4, ':');
        let (op, key, fault) = match (parts.next(), parts.next(), parts.next()) {
            (Some(o), Some(k), Some(f)) => (o, k, f),
            _ => return Err(bad("expected OP:KEY_CONTAINS:FAULT[:TIMES]")),
        };
        let op = match op {
            "get" => Op::Get,
            "get_range" => Op::GetRange,
            "put" => Op::Put,
            "put_new" => Op::PutNew,
            "delete" => Op::Delete,
            "list" => Op::List,
            "head" => Op::Head,
            "read" => Op::Read,
            "write" => Op::Write,
            "any" => Op::Any,
            _ => return Err(bad("unknown operation")),
        };
        let (name, arg) = fault.split_once('=').unwrap_or((fault, ""));
        let num = || {
            arg.parse::<u64>()
                .map_err(|_| bad("expected a number after ="))
        };
        let fault = match name {
            "delay" => Fault::Delay(Duration::from_millis(num()?)),
            "stall" => Fault::Stall {
                timeout: Duration::from_millis(num()?),
            },
            "error" => Fault::Error { transient: false },
            "transient" => Fault::Error { transient: true },
            "notfound" => Fault::NotFound,
            "short" => Fault::ShortRead {
                missing: num()? as usize,
            },
            "bitflip" => Fault::BitFlip { bit: num()? },
            "partial" => Fault::PartialListing {
                after: num()? as usize,
            },
            "stale" => Fault::StaleListing {
                newest: num()? as usize,
            },
            "unseen" => Fault::NotYetVisible {
                within: num()? as usize,
            },
            "lost" => Fault::LostReply,
            _ => return Err(bad("unknown fault")),
        };
        let rule = Rule::new(op, key, fault);
        match parts.next() {
            None => Ok(rule),
            Some(n) => Ok(rule.times(n.parse().map_err(|_| bad("TIMES is not a number"))?)),
        }
    }
}

/// Names a rule added to a store, to remove it or count its hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleId(u64);

struct Entry {
    id: RuleId,
    rule: Rule,
    hits: u64,
}

#[derive(Default)]
struct State {
    rules: Vec<Entry>,
    next_id: u64,
    /// Bumped by `release`; a stalled call waits for it to change.
    releases: u64,
    /// Calls seen, per operation (indexes of `CALL_OPS`).
    calls: [u64; 7],
    /// Keys written through the store, the newest last (at most `WRITTEN_KEPT`).
    written: std::collections::VecDeque<String>,
    random: Option<RandomFaults>,
    /// Calls so far per operation and key, while random faults are drawn.
    seen: std::collections::HashMap<(usize, String), u64>,
    /// Faults that acted, by kind.
    injected: std::collections::BTreeMap<&'static str, u64>,
}

/// How many of the newest written keys the store remembers (for stale listings and reads
/// of keys not yet visible).
const WRITTEN_KEPT: usize = 4096;

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A hash of a call: its seed, operation, key and rank among the calls of that operation
/// on that key (FNV-1a over the key, then mixed).
fn call_hash(seed: u64, op: usize, key: &str, n: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(seed ^ mix(h ^ mix(op as u64 ^ mix(n.wrapping_add(0x9E37_79B9_7F4A_7C15)))))
}

const CALL_OPS: [Op; 7] = [
    Op::Get,
    Op::GetRange,
    Op::Put,
    Op::PutNew,
    Op::Delete,
    Op::List,
    Op::Head,
];

/// A store that passes calls to an inner store, except where a rule says otherwise.
pub struct FaultyStore {
    inner: Store,
    state: Mutex<State>,
    released: Condvar,
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rules: Vec<Rule> = self.lock().rules.iter().map(|e| e.rule.clone()).collect();
        f.debug_struct("FaultyStore")
            .field("inner", &self.inner)
            .field("rules", &rules)
            .finish()
    }
}

impl FaultyStore {
    pub fn new(inner: Store) -> FaultyStore {
        FaultyStore {
            inner,
            state: Mutex::new(State::default()),
            released: Condvar::new(),
        }
    }

    /// The wrapped store, to set up or inspect objects without faults.
    pub fn inner(&self) -> &Store {
        &self.inner
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add_rule(&self, rule: Rule) -> RuleId {
        let mut s = self.lock();
        let id = RuleId(s.next_id);
        s.next_id += 1;
        s.rules.push(Entry { id, rule, hits: 0 });
        id
    }

    pub fn remove_rule(&self, id: RuleId) {
        self.lock().rules.retain(|e| e.id != id);
    }

    /// Removes every rule (stalled calls stay stalled until released or timed out).
    pub fn clear_rules(&self) {
        self.lock().rules.clear();
    }

    /// How many calls the rule has fired on (0 once removed).
    pub fn hits(&self, id: RuleId) -> u64 {
        self.lock()
            .rules
            .iter()
            .find(|e| e.id == id)
            .map_or(0, |e| e.hits)
    }

    /// How many calls of `op` the store has seen, faulty or not (`Read`, `Write` and `Any`
    /// add up their operations).
    pub fn calls(&self, op: Op) -> u64 {
        let s = self.lock();
        CALL_OPS
            .iter()
            .zip(s.calls.iter())
            .filter(|(o, _)| op.matches(**o))
            .map(|(_, n)| n)
            .sum()
    }

    /// Draws faults at random for every call from now on (`None`: no more random
    /// faults). Rules still apply, before the drawn fault.
    pub fn set_random(&self, random: Option<RandomFaults>) {
        let mut s = self.lock();
        s.random = random;
        s.seen.clear();
    }

    /// How many faults acted so far, by kind ([`Fault::kind`]); a fault that fired but
    /// changed nothing (a stale listing of a prefix nothing was written under) is not
    /// counted.
    pub fn injected(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.lock().injected.clone()
    }

    /// The sum of [`FaultyStore::injected`].
    pub fn injected_total(&self) -> u64 {
        self.lock().injected.values().sum()
    }

    fn count(&self, f: &Fault) {
        *self.lock().injected.entry(f.kind()).or_default() += 1;
    }

    fn wrote(&self, key: &str) {
        let mut s = self.lock();
        s.written.retain(|k| k != key);
        if s.written.len() >= WRITTEN_KEPT {
            s.written.pop_front();
        }
        s.written.push_back(key.to_string());
    }

    /// Whether `key` is among the last `within` keys written.
    fn fresh(&self, key: &str, within: usize) -> bool {
        let s = self.lock();
        s.written.iter().rev().take(within).any(|k| k == key)
    }

    /// Lets every call stalled right now go on to the inner store.
    pub fn release(&self) {
        self.lock().releases += 1;
        self.released.notify_all();
    }

    /// Counts the call and takes the faults of the rules that fire on it, with the release
    /// generation at that moment (a stall waits for a later one).
    fn fire(&self, op: Op, key: &str) -> (Vec<Fault>, u64) {
        let mut s = self.lock();
        let i = CALL_OPS.iter().position(|o| *o == op).unwrap_or(0);
        s.calls[i] += 1;
        let mut faults = Vec::new();
        for e in s.rules.iter_mut() {
            if !e.rule.op.matches(op) || !key.contains(e.rule.key_contains.as_str()) {
                continue;
            }
            if e.rule.skip > 0 {
                e.rule.skip -= 1;
                continue;
            }
            if let Some(left) = &mut e.rule.times {
                if *left == 0 {
                    continue;
                }
                *left -= 1;
            }
            e.hits += 1;
            faults.push(e.rule.fault.clone());
        }
        s.rules.retain(|e| e.rule.times != Some(0));
        if let Some(r) = &s.random {
            let (seed, per_mille) = (r.seed, r.per_mille);
            let menu: Vec<Fault> = r
                .menu
                .iter()
                .filter(|r| r.op.matches(op) && key.contains(r.key_contains.as_str()))
                .map(|r| r.fault.clone())
                .collect();
            let n = s.seen.entry((i, key.to_string())).or_insert(0);
            let h = call_hash(seed, i, key, *n);
            *n += 1;
            if !menu.is_empty() && h % 1000 < u64::from(per_mille) {
                let pick = &menu[((h >> 10) % menu.len() as u64) as usize];
                faults.push(pick.varied(mix(h)));
            }
        }
        (faults, s.releases)
    }

    fn fault_error(op: Op, key: &str, what: &str, transient: bool) -> BackendError {
        BackendError::Remote {
            op: op.name(),
            key: key.to_string(),
            message: format!("injected fault: {what}"),
            transient,
        }
    }

    /// Runs the faults that act before the call.
    fn before(&self, op: Op, key: &str, (faults, generation): &(Vec<Fault>, u64)) -> Result<()> {
        for f in faults {
            match f {
                Fault::Delay(d) => {
                    self.count(f);
                    std::thread::sleep(*d)
                }
                Fault::Stall { timeout } => {
                    self.count(f);
                    self.stall(op, key, *generation, *timeout)?
                }
                Fault::Error { transient } => {
                    self.count(f);
                    return Err(Self::fault_error(op, key, "error", *transient));
                }
                Fault::NotFound => {
                    self.count(f);
                    return Err(BackendError::NotFound {
                        key: key.to_string(),
                    });
                }
                Fault::NotYetVisible { within }
                    if matches!(op, Op::Get | Op::GetRange) && self.fresh(key, *within) =>
                {
                    self.count(f);
                    return Err(BackendError::NotFound {
                        key: key.to_string(),
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Runs the faults that act once the inner store answered a call that returns no
    /// data: a lost reply turns its answer into a transient error.
    fn after<T>(&self, op: Op, key: &str, faults: &[Fault], result: Result<T>) -> Result<T> {
        match faults.iter().find(|f| **f == Fault::LostReply) {
            Some(f) => {
                self.count(f);
                Err(Self::fault_error(op, key, "the answer was lost", true))
            }
            None => result,
        }
    }

    fn stall(&self, op: Op, key: &str, generation: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        while s.releases == generation {
            let now = Instant::now();
            if now >= deadline {
                return Err(Self::fault_error(
                    op,
                    key,
                    &format!("stalled, no answer within {timeout:?}"),
                    true,
                ));
            }
            s = self
                .released
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(())
    }

    /// Runs a read with its faults.
    fn read(&self, op: Op, key: &str, call: impl FnOnce() -> Result<Vec<u8>>) -> Result<Vec<u8>> {
        let faults = self.fire(op, key);
        self.before(op, key, &faults)?;
        let mut data = self.after(op, key, &faults.0, call())?;
        for f in &faults.0 {
            match f {
                Fault::ShortRead { missing } if !data.is_empty() => {
                    self.count(f);
                    let keep = data.len().saturating_sub((*missing).max(1));
                    data.truncate(keep);
                }
                Fault::BitFlip { bit } if !data.is_empty() => {
                    self.count(f);
                    let bit = bit % (8 * data.len() as u64);
                    data[(bit / 8) as usize] ^= 1 << (bit % 8);
                }
                _ => {}
            }
        }
        Ok(data)
    }

    /// Runs a call that returns no data with its faults.
    fn plain<T>(&self, op: Op, key: &str, call: impl FnOnce() -> Result<T>) -> Result<T> {
        let faults = self.fire(op, key);
        self.before(op, key, &faults)?;
        let result = call();
        if result.is_ok() && matches!(op, Op::Put | Op::PutNew) {
            self.wrote(key);
        }
        self.after(op, key, &faults.0, result)
    }
}

impl ObjectStore for FaultyStore {
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.read(Op::Get, key, || self.inner.get(key))
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.read(Op::GetRange, key, || self.inner.get_range(key, offset, len))
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.plain(Op::Put, key, || self.inner.put(key, data))
    }

    fn put_new(&self, key: &str, data: &[u8]) -> Result<()> {
        self.plain(Op::PutNew, key, || self.inner.put_new(key, data))
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.plain(Op::Delete, key, || self.inner.delete(key))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let faults = self.fire(Op::List, prefix);
        self.before(Op::List, prefix, &faults)?;
        let mut listed = self.after(Op::List, prefix, &faults.0, self.inner.list(prefix))?;
        for f in &faults.0 {
            match f {
                Fault::PartialListing { after } => {
                    self.count(f);
                    let got = listed.len().min(*after);
                    return Err(Self::fault_error(
                        Op::List,
                        prefix,
                        &format!("the listing broke off after {got} keys"),
                        true,
                    ));
                }
                Fault::StaleListing { newest } => {
                    let hidden: Vec<String> = {
                        let s = self.lock();
                        s.written
                            .iter()
                            .rev()
                            .filter(|k| k.starts_with(prefix))
                            .take(*newest)
                            .cloned()
                            .collect()
                    };
                    let before = listed.len();
                    listed.retain(|o| !hidden.contains(&o.key));
                    if listed.len() < before {
                        self.count(f);
                    }
                }
                _ => {}
            }
        }
        Ok(listed)
    }

    fn head(&self, key: &str) -> Result<Option<u64>> {
        let faults = self.fire(Op::Head, key);
        self.before(Op::Head, key, &faults)?;
        let found = self.after(Op::Head, key, &faults.0, self.inner.head(key))?;
        for f in &faults.0 {
            if let Fault::NotYetVisible { within } = f
                && found.is_some()
                && self.fresh(key, *within)
            {
                self.count(f);
                return Ok(None);
            }
        }
        Ok(found)
    }

    fn location(&self) -> String {
        format!("{} (with injected faults)", self.inner.location())
    }

    fn clean_stale_uploads(&self, older_than: std::time::Duration) -> Result<usize> {
        self.inner.clean_stale_uploads(older_than)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::thread;

    use super::*;
    use crate::backend::memory::MemoryStore;

    fn store() -> FaultyStore {
        let s = FaultyStore::new(Arc::new(MemoryStore::new()));
        s.inner().put("packs/ab/1", b"0123456789").unwrap();
        s.inner().put("index/1", b"idx").unwrap();
        s
    }

    #[test]
    fn rules_parse_from_their_text_form() {
        let r: Rule = "get_range:packs/ab:delay=1500".parse().unwrap();
        assert_eq!(
            r,
            Rule::new(
                Op::GetRange,
                "packs/ab",
                Fault::Delay(Duration::from_millis(1500))
            )
        );
        let r: Rule = "read::transient:2".parse().unwrap();
        assert_eq!(
            r,
            Rule::new(Op::Read, "", Fault::Error { transient: true }).times(2)
        );
        let r: Rule = "list:points/:partial=3".parse().unwrap();
        assert_eq!(r.fault, Fault::PartialListing { after: 3 });
        for bad in [
            "get",
            "nope:x:error",
            "get:x:delay=soon",
            "get:x:melt",
            "get:x:error:z",
        ] {
            let e = bad.parse::<Rule>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        // The text form drives a store like the typed form does.
        let s = store();
        s.add_rule("get:packs/:notfound:1".parse().unwrap());
        assert!(s.get("packs/ab/1").unwrap_err().is_not_found());
        assert_eq!(s.get("packs/ab/1").unwrap(), b"0123456789");
    }

    #[test]
    fn passes_through_without_rules() {
        let s = store();
        assert_eq!(s.get("packs/ab/1").unwrap(), b"0123456789");
        assert_eq!(s.get_range("packs/ab/1", 2, 3).unwrap(), b"234");
        s.put("a", b"x").unwrap();
        assert!(matches!(
            s.put_new("a", b"y"),
            Err(BackendError::AlreadyExists { .. })
        ));
        assert_eq!(s.head("a").unwrap(), Some(1));
        s.delete("a").unwrap();
        assert_eq!(s.list("").unwrap().len(), 2);
        assert_eq!(s.calls(Op::Any), 7);
        assert_eq!(s.calls(Op::Read), 2);
        assert_eq!(s.calls(Op::Write), 2);
        assert!(s.location().contains("memory"));
    }

    #[test]
    fn errors_for_the_next_n_calls_then_normal() {
        let s = store();
        let id =
            s.add_rule(Rule::new(Op::Read, "packs/", Fault::Error { transient: true }).times(2));
        let e = s.get_range("packs/ab/1", 0, 1).unwrap_err();
        assert!(e.is_transient());
        assert!(e.to_string().contains("packs/ab/1"), "{e}");
        assert_eq!(s.hits(id), 1);
        // Another key does not match and does not use the rule up.
        assert_eq!(s.get("index/1").unwrap(), b"idx");
        assert!(s.get("packs/ab/1").is_err());
        assert_eq!(s.get("packs/ab/1").unwrap(), b"0123456789");
        assert_eq!(s.hits(id), 0, "a used-up rule is gone");
    }

    #[test]
    fn permanent_errors_and_not_found_on_every_call() {
        let s = store();
        let id = s.add_rule(Rule::new(Op::Put, "", Fault::Error { transient: false }));
        for _ in 0..3 {
            assert!(!s.put("k", b"v").unwrap_err().is_transient());
        }
        assert_eq!(s.hits(id), 3);
        assert_eq!(
            s.inner().head("k").unwrap(),
            None,
            "the inner store was not reached"
        );
        s.remove_rule(id);
        s.put("k", b"v").unwrap();
        s.add_rule(Rule::new(Op::Head, "k", Fault::NotFound));
        assert!(s.head("k").unwrap_err().is_not_found());
        s.clear_rules();
        assert_eq!(s.head("k").unwrap(), Some(1));
    }

    #[test]
    fn short_reads_and_bit_flips() {
        let s = store();
        s.add_rule(Rule::new(Op::GetRange, "", Fault::ShortRead { missing: 2 }).times(1));
        assert_eq!(s.get_range("packs/ab/1", 0, 5).unwrap(), b"012");
        s.add_rule(Rule::new(Op::Get, "", Fault::ShortRead { missing: 0 }).times(1));
        assert_eq!(
            s.get("packs/ab/1").unwrap(),
            b"012345678",
            "always at least one short"
        );
        // Bit 9 is the second byte's bit 1: '1' (0x31) becomes '3' (0x33).
        s.add_rule(Rule::new(Op::Read, "", Fault::BitFlip { bit: 9 }).times(1));
        assert_eq!(s.get("packs/ab/1").unwrap(), b"0323456789");
        // The bit wraps around the data's length.
        s.add_rule(Rule::new(Op::Read, "", Fault::BitFlip { bit: 8 * 3 }).times(1));
        assert_eq!(s.get("index/1").unwrap(), b"hdx");
        assert_eq!(s.get("packs/ab/1").unwrap(), b"0123456789");
    }

    #[test]
    fn partial_listing_is_an_error() {
        let s = store();
        s.add_rule(Rule::new(Op::List, "packs/", Fault::PartialListing { after: 0 }).times(1));
        let e = s.list("packs/").unwrap_err();
        assert!(e.is_transient());
        assert!(e.to_string().contains("broke off"), "{e}");
        assert_eq!(s.list("index/").unwrap().len(), 1, "other prefixes list");
        assert_eq!(s.list("packs/").unwrap().len(), 1, "used up");
    }

    #[test]
    fn delays_and_several_rules_in_order() {
        let s = store();
        s.add_rule(Rule::new(Op::Head, "", Fault::Delay(Duration::from_millis(30))).times(1));
        s.add_rule(Rule::new(Op::Head, "", Fault::Error { transient: true }).times(1));
        let t = Instant::now();
        assert!(s.head("index/1").is_err());
        assert!(t.elapsed() >= Duration::from_millis(30));
        let t = Instant::now();
        assert_eq!(s.head("index/1").unwrap(), Some(3));
        assert!(t.elapsed() < Duration::from_millis(30));
    }

    #[test]
    fn stalls_until_released_or_timed_out() {
        let s = Arc::new(store());
        s.add_rule(Rule::new(
            Op::Get,
            "index/",
            Fault::Stall {
                timeout: Duration::from_secs(30),
            },
        ));
        let reader = {
            let s = s.clone();
            thread::spawn(move || s.get("index/1"))
        };
        // Other keys are not held up by the stall.
        assert_eq!(s.get("packs/ab/1").unwrap(), b"0123456789");
        while s.calls(Op::Get) < 2 {
            thread::sleep(Duration::from_millis(1));
        }
        thread::sleep(Duration::from_millis(20));
        assert!(!reader.is_finished());
        s.release();
        assert_eq!(reader.join().unwrap().unwrap(), b"idx");

        s.clear_rules();
        s.add_rule(Rule::new(
            Op::Get,
            "",
            Fault::Stall {
                timeout: Duration::from_millis(20),
            },
        ));
        let t = Instant::now();
        let e = s.get("index/1").unwrap_err();
        assert!(e.is_transient());
        assert!(t.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn stale_listings_unseen_keys_and_lost_replies() {
        let s = store();
        s.put("points/v/1", b"a").unwrap();
        s.put("points/v/2", b"b").unwrap();
        s.put("index/2", b"i").unwrap();
        s.add_rule(Rule::new(Op::List, "points/", Fault::StaleListing { newest: 1 }).times(1));
        let keys: Vec<String> = s
            .list("points/")
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(
            keys,
            ["points/v/1"],
            "the newest key under the prefix is left out"
        );
        assert_eq!(s.list("points/").unwrap().len(), 2);
        s.add_rule(Rule::new(Op::Any, "", Fault::NotYetVisible { within: 1 }));
        assert!(s.get("index/2").unwrap_err().is_not_found());
        assert_eq!(s.head("index/2").unwrap(), None);
        assert_eq!(
            s.get("points/v/2").unwrap(),
            b"b",
            "only the newest write is unseen"
        );
        s.clear_rules();
        s.add_rule(Rule::new(Op::Delete, "", Fault::LostReply).times(1));
        assert!(s.delete("points/v/1").unwrap_err().is_transient());
        assert_eq!(
            s.inner().head("points/v/1").unwrap(),
            None,
            "the delete happened"
        );
        let kinds = s.injected();
        assert_eq!(kinds["stale listing"], 1);
        assert_eq!(kinds["not yet visible"], 2);
        assert_eq!(kinds["lost reply"], 1);
        assert_eq!(s.injected_total(), 4);
        let r: Rule = "list::stale=2".parse().unwrap();
        assert_eq!(r.fault, Fault::StaleListing { newest: 2 });
        let r: Rule = "put::lost".parse().unwrap();
        assert_eq!(r.fault, Fault::LostReply);
    }

    #[test]
    fn random_faults_replay_from_their_seed() {
        let run = |seed| {
            let s = store();
            s.set_random(Some(RandomFaults {
                seed,
                per_mille: 300,
                menu: vec![
                    Rule::new(Op::Read, "", Fault::Error { transient: true }),
                    Rule::new(Op::Read, "packs/", Fault::BitFlip { bit: 0 }),
                    Rule::new(Op::Head, "", Fault::NotFound),
                ],
            }));
            let mut out = Vec::new();
            for _ in 0..200 {
                out.push(format!("{:?}", s.get("packs/ab/1")));
                out.push(format!("{:?}", s.head("index/1")));
            }
            (out, s.injected_total())
        };
        let (a, n) = run(7);
        assert_eq!(
            run(7),
            (a.clone(), n),
            "the same seed draws the same faults"
        );
        assert_ne!(run(8).0, a);
        assert!((60..=180).contains(&n), "about 30% of 400 calls: {n}");
        assert!(a.iter().any(|r| r.starts_with("Ok")));
    }
}
