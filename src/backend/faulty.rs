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
}

impl Rule {
    /// A rule that applies to every matching call; see [`Rule::times`].
    pub fn new(op: Op, key_contains: impl Into<String>, fault: Fault) -> Rule {
        Rule {
            op,
            key_contains: key_contains.into(),
            fault,
            times: None,
        }
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
    /// `notfound`, `short=N`, `bitflip=N`, `partial=N`.
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

    /// Lets every call stalled right now go on to the inner store.
    pub fn release(&self) {
        self.lock().releases += 1;
        self.released.notify_all();
    }

    /// Counts the call and takes the faults of the rules that fire on it, with the release
    /// generation at that moment (a stall waits for a later one).
    fn fire(&self, op: Op, key: &str) -> (Vec<Fault>, u64) {
        let mut s = self.lock();
        if let Some(i) = CALL_OPS.iter().position(|o| *o == op) {
            s.calls[i] += 1;
        }
        let mut faults = Vec::new();
        for e in s.rules.iter_mut() {
            if !e.rule.op.matches(op) || !key.contains(e.rule.key_contains.as_str()) {
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
        (faults, s.releases)
    }

    fn injected(op: Op, key: &str, what: &str, transient: bool) -> BackendError {
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
                Fault::Delay(d) => std::thread::sleep(*d),
                Fault::Stall { timeout } => self.stall(op, key, *generation, *timeout)?,
                Fault::Error { transient } => {
                    return Err(Self::injected(op, key, "error", *transient));
                }
                Fault::NotFound => {
                    return Err(BackendError::NotFound {
                        key: key.to_string(),
                    });
                }
                Fault::ShortRead { .. } | Fault::BitFlip { .. } | Fault::PartialListing { .. } => {}
            }
        }
        Ok(())
    }

    fn stall(&self, op: Op, key: &str, generation: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        while s.releases == generation {
            let now = Instant::now();
            if now >= deadline {
                return Err(Self::injected(
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
        let mut data = call()?;
        for f in &faults.0 {
            match f {
                Fault::ShortRead { missing } => {
                    let keep = data.len().saturating_sub((*missing).max(1));
                    data.truncate(keep);
                }
                Fault::BitFlip { bit } if !data.is_empty() => {
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
        call()
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
        let listed = self.inner.list(prefix)?;
        for f in &faults.0 {
            if let Fault::PartialListing { after } = f {
                let got = listed.len().min(*after);
                return Err(Self::injected(
                    Op::List,
                    prefix,
                    &format!("the listing broke off after {got} keys"),
                    true,
                ));
            }
        }
        Ok(listed)
    }

    fn head(&self, key: &str) -> Result<Option<u64>> {
        self.plain(Op::Head, key, || self.inner.head(key))
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
}
