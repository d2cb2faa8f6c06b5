//! Which recovery points a retention policy keeps: the keep rules of `forget`.
//!
//! The rules are restic's, OR'ed: a point is kept when any rule keeps it.
//! - `last N`: the N newest points.
//! - `hourly|daily|weekly|monthly|yearly N`: the newest point of each of the last N hours
//!   (days, ISO weeks, months, years) that have a point, in the policy's time zone: a
//!   bucket without a point does not count. A count of [`ALL`] keeps every bucket.
//! - `within SPAN`: every point no older than SPAN before the newest point (calendar
//!   arithmetic: `1m` back from 31 March is 28 or 29 February).
//! - `tag T`: every point carrying the tag.
//!
//! Around them, the rules of the cloud services:
//! 1. a protected point is always kept;
//! 2. an expired point (its `expires` in the past) is removed whatever the rules;
//! 3. `max_age SPAN` removes points older than SPAN before now, whatever the rules;
//! 4. the newest point that is not expired is always kept, unless `allow_empty` (a rule's
//!    mistake never empties a vault, and `max_age` never removes its last point).
//!
//! With no keep rule at all, rules 1-4 alone decide: nothing is removed but expired and
//! too old points.

use chrono::{DateTime, Datelike, Months, TimeZone, Timelike};
use chrono_tz::Tz;

/// A count that keeps every bucket (`--keep-daily -1`).
pub const ALL: u32 = u32::MAX;

/// A calendar span: `2y5m7d3h` (years, months, days, hours; `w` for weeks too).
/// Persisted in vault retention settings as its three fields, in this order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Span {
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

impl Span {
    /// Parses `1y2m3w4d5h` (any subset, in any order; a bare number is days).
    pub fn parse(s: &str) -> Result<Span, String> {
        let bad = || format!("invalid duration {s:?}: use e.g. 7d, 2w, 6m, 1y2m3d or 12h");
        let s = s.trim();
        if s.is_empty() {
            return Err(bad());
        }
        if let Ok(days) = s.parse::<u32>() {
            return Ok(Span {
                days,
                ..Span::default()
            });
        }
        let mut span = Span::default();
        let mut digits = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let n: u32 = digits.parse().map_err(|_| bad())?;
            digits.clear();
            let add = |field: &mut u32, by: u32| -> Result<(), String> {
                *field = n
                    .checked_mul(by)
                    .and_then(|v| field.checked_add(v))
                    .ok_or_else(bad)?;
                Ok(())
            };
            match c {
                'y' => add(&mut span.months, 12)?,
                'm' => add(&mut span.months, 1)?,
                'w' => add(&mut span.days, 7)?,
                'd' => add(&mut span.days, 1)?,
                'h' => add(&mut span.hours, 1)?,
                _ => return Err(bad()),
            }
        }
        if !digits.is_empty() {
            return Err(bad());
        }
        Ok(span)
    }

    /// The instant `self` before `t`, in `tz`'s calendar (nanoseconds since the epoch).
    pub fn before(&self, t_ns: i64, tz: Tz) -> i64 {
        let t = tz.timestamp_nanos(t_ns);
        let back = t
            .checked_sub_months(Months::new(self.months))
            .unwrap_or(t)
            .checked_sub_days(chrono::Days::new(self.days as u64))
            .unwrap_or(t);
        let back = back - chrono::Duration::hours(self.hours as i64);
        back.timestamp_nanos_opt().unwrap_or(i64::MIN)
    }
}

impl std::fmt::Display for Span {
    /// The form [`Span::parse`] reads: `1y2m`, `10d5h`; `0d` for an empty span.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (y, m) = (self.months / 12, self.months % 12);
        let mut any = false;
        for (n, unit) in [(y, 'y'), (m, 'm'), (self.days, 'd'), (self.hours, 'h')] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
                any = true;
            }
        }
        if !any {
            f.write_str("0d")?;
        }
        Ok(())
    }
}

/// The keep rules of a `forget`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeepRules {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
    pub within: Option<Span>,
    pub tags: Vec<String>,
    pub max_age: Option<Span>,
    pub allow_empty: bool,
}

impl KeepRules {
    /// Whether any rule that keeps points is set (`max_age` only removes).
    /// The rules of a stored retention (a vault's or a policy's).
    pub fn of(r: &crate::repo::format::Retention, allow_empty: bool) -> KeepRules {
        KeepRules {
            last: r.last,
            hourly: r.hourly,
            daily: r.daily,
            weekly: r.weekly,
            monthly: r.monthly,
            yearly: r.yearly,
            within: r.within,
            tags: r.tags.clone(),
            max_age: r.max_age,
            allow_empty,
        }
    }

    pub fn keeps_something(&self) -> bool {
        self.last > 0
            || self.hourly > 0
            || self.daily > 0
            || self.weekly > 0
            || self.monthly > 0
            || self.yearly > 0
            || self.within.is_some()
            || !self.tags.is_empty()
    }
}

/// What the rules need to know of a point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointFacts {
    pub name: String,
    pub time_ns: i64,
    pub tags: Vec<String>,
    pub protected: bool,
    pub expires_ns: Option<i64>,
}

/// Why a point is kept or removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    Protected,
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
    Within,
    Tag(String),
    /// The newest point, kept so that the vault is not left empty.
    Newest,
    Expired,
    MaxAge,
    /// No rule keeps it.
    NoRule,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Protected => f.write_str("protected"),
            Reason::Last => f.write_str("last"),
            Reason::Hourly => f.write_str("hourly"),
            Reason::Daily => f.write_str("daily"),
            Reason::Weekly => f.write_str("weekly"),
            Reason::Monthly => f.write_str("monthly"),
            Reason::Yearly => f.write_str("yearly"),
            Reason::Within => f.write_str("within"),
            Reason::Tag(t) => write!(f, "tag {t}"),
            Reason::Newest => f.write_str("newest"),
            Reason::Expired => f.write_str("expired"),
            Reason::MaxAge => f.write_str("older than max-age"),
            Reason::NoRule => f.write_str("no rule keeps it"),
        }
    }
}

/// The decision for one point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub keep: bool,
    pub reasons: Vec<Reason>,
}

/// The calendar bucket of an instant for each periodic rule.
fn bucket<T: TimeZone>(t: &DateTime<T>, rule: &Reason) -> i64 {
    let (y, m, d, h) = (
        t.year() as i64,
        t.month() as i64,
        t.day() as i64,
        t.hour() as i64,
    );
    match rule {
        Reason::Hourly => ((y * 100 + m) * 100 + d) * 100 + h,
        Reason::Daily => (y * 100 + m) * 100 + d,
        Reason::Weekly => {
            let w = t.iso_week();
            w.year() as i64 * 100 + w.week() as i64
        }
        Reason::Monthly => y * 100 + m,
        _ => y,
    }
}

/// Decides, for each of `points` (any order), whether the rules keep it; `now_ns` is the
/// present, for expiry and `max_age`; buckets are taken in `tz`.
pub fn decide(points: &[PointFacts], rules: &KeepRules, tz: Tz, now_ns: i64) -> Vec<Decision> {
    let mut out: Vec<Decision> = points
        .iter()
        .map(|_| Decision {
            keep: false,
            reasons: Vec::new(),
        })
        .collect();
    // Newest first (ties by name, newest name first: `-N` suffixes come later).
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| {
        (points[b].time_ns, &points[b].name).cmp(&(points[a].time_ns, &points[a].name))
    });
    let keep = |out: &mut Vec<Decision>, i: usize, r: Reason| {
        out[i].keep = true;
        out[i].reasons.push(r);
    };
    for (k, &i) in order.iter().enumerate() {
        if (k as u64) < rules.last as u64 {
            keep(&mut out, i, Reason::Last);
        }
    }
    for (rule, n) in [
        (Reason::Hourly, rules.hourly),
        (Reason::Daily, rules.daily),
        (Reason::Weekly, rules.weekly),
        (Reason::Monthly, rules.monthly),
        (Reason::Yearly, rules.yearly),
    ] {
        let mut used = 0u32;
        let mut last_bucket = None;
        for &i in &order {
            if used >= n {
                break;
            }
            let b = bucket(&tz.timestamp_nanos(points[i].time_ns), &rule);
            if last_bucket != Some(b) {
                last_bucket = Some(b);
                used += 1;
                keep(&mut out, i, rule.clone());
            }
        }
    }
    if let (Some(span), Some(&newest)) = (rules.within, order.first()) {
        let since = span.before(points[newest].time_ns, tz);
        for &i in &order {
            if points[i].time_ns >= since {
                keep(&mut out, i, Reason::Within);
            }
        }
    }
    for t in &rules.tags {
        for (i, p) in points.iter().enumerate() {
            if p.tags.iter().any(|x| x == t) {
                keep(&mut out, i, Reason::Tag(t.clone()));
            }
        }
    }
    if !rules.keeps_something() {
        for d in out.iter_mut() {
            d.keep = true;
        }
    }
    let too_old = rules.max_age.map(|s| s.before(now_ns, tz));
    for (i, p) in points.iter().enumerate() {
        let d = &mut out[i];
        if p.expires_ns.is_some_and(|e| e <= now_ns) {
            d.keep = false;
            d.reasons = vec![Reason::Expired];
        } else if too_old.is_some_and(|t| p.time_ns < t) {
            d.keep = false;
            d.reasons = vec![Reason::MaxAge];
        } else if !d.keep {
            d.reasons = vec![Reason::NoRule];
        } else if !rules.keeps_something() {
            d.reasons.clear();
        }
    }
    if !rules.allow_empty {
        let newest = order
            .iter()
            .copied()
            .find(|&i| points[i].expires_ns.is_none_or(|e| e > now_ns));
        if let Some(i) = newest
            && !out[i].keep
        {
            out[i] = Decision {
                keep: true,
                reasons: vec![Reason::Newest],
            };
        }
    }
    for (i, p) in points.iter().enumerate() {
        if p.protected {
            let d = &mut out[i];
            if !d.keep {
                d.reasons.clear();
            }
            d.keep = true;
            d.reasons.insert(0, Reason::Protected);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOUR: i64 = 3_600_000_000_000;

    fn at(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    }

    fn point(name: &str, time_ns: i64) -> PointFacts {
        PointFacts {
            name: name.into(),
            time_ns,
            tags: Vec::new(),
            protected: false,
            expires_ns: None,
        }
    }

    fn kept(points: &[PointFacts], rules: &KeepRules, tz: Tz, now: i64) -> Vec<String> {
        let d = decide(points, rules, tz, now);
        points
            .iter()
            .zip(&d)
            .filter(|(_, d)| d.keep)
            .map(|(p, _)| p.name.clone())
            .collect()
    }

    #[test]
    fn spans_parse_like_restic() {
        assert_eq!(
            Span::parse("1y2m3d4h").unwrap(),
            Span {
                months: 14,
                days: 3,
                hours: 4
            }
        );
        assert_eq!(Span::parse("2w").unwrap().days, 14);
        assert_eq!(Span::parse("30").unwrap().days, 30);
        for bad in ["", "d", "5x", "3d4", "-1d", "99999999999y"] {
            assert!(Span::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn daily_keeps_the_newest_point_of_each_day_that_has_one() {
        let pts = vec![
            point("a", at("2026-11-01T08:00:00Z")),
            point("b", at("2026-11-01T20:00:00Z")),
            // no point on 11-02
            point("c", at("2026-11-03T09:00:00Z")),
            point("d", at("2026-11-04T09:00:00Z")),
            point("e", at("2026-11-04T10:00:00Z")),
        ];
        let rules = KeepRules {
            daily: 3,
            ..Default::default()
        };
        let now = at("2026-12-01T00:00:00Z");
        assert_eq!(kept(&pts, &rules, Tz::UTC, now), ["b", "c", "e"]);
        // Two points an hour apart across midnight UTC: two days in UTC, one evening in
        // New York.
        let pts = vec![
            point("p1", at("2026-11-01T23:30:00Z")),
            point("p2", at("2026-11-02T00:30:00Z")),
        ];
        let rules = KeepRules {
            daily: 5,
            ..Default::default()
        };
        assert_eq!(kept(&pts, &rules, Tz::UTC, now), ["p1", "p2"]);
        assert_eq!(
            kept(&pts, &rules, chrono_tz::America::New_York, now),
            ["p2"]
        );
    }

    #[test]
    fn protection_expiry_max_age_and_the_newest_point() {
        let now = at("2026-12-01T00:00:00Z");
        let mut pts: Vec<PointFacts> = (0..6)
            .map(|i| point(&format!("p{i}"), now - (6 - i) * 24 * HOUR))
            .collect();
        pts[0].protected = true;
        pts[1].tags = vec!["golden".into()];
        pts[5].expires_ns = Some(now - HOUR);
        let rules = KeepRules {
            last: 1,
            tags: vec!["golden".into()],
            ..Default::default()
        };
        let d = decide(&pts, &rules, Tz::UTC, now);
        // p5 is the newest but expired: last-1 kept it, expiry removes it.
        assert_eq!(d[5].reasons, [Reason::Expired]);
        assert!(!d[5].keep);
        assert_eq!(d[0].reasons, [Reason::Protected]);
        assert_eq!(d[1].reasons, [Reason::Tag("golden".into())]);
        // The newest point that is not expired stays.
        assert_eq!(d[4].reasons, [Reason::Newest]);
        assert_eq!(kept(&pts, &rules, Tz::UTC, now), ["p0", "p1", "p4"]);
        // max-age removes what is older, tags or not; protection still wins.
        let rules = KeepRules {
            tags: vec!["golden".into()],
            max_age: Some(Span::parse("3d").unwrap()),
            ..Default::default()
        };
        let d = decide(&pts, &rules, Tz::UTC, now);
        assert_eq!(d[1].reasons, [Reason::MaxAge]);
        assert!(!d[5].keep);
        assert_eq!(d[4].reasons, [Reason::Newest]);
        assert_eq!(kept(&pts, &rules, Tz::UTC, now), ["p0", "p4"]);
        pts[0].protected = false;
        assert_eq!(kept(&pts, &rules, Tz::UTC, now), ["p4"]);
        let empty = KeepRules {
            allow_empty: true,
            ..rules.clone()
        };
        assert!(kept(&pts, &empty, Tz::UTC, now).is_empty());
        // No keep rule: only expiry and age remove.
        let none = KeepRules::default();
        assert_eq!(
            kept(&pts, &none, Tz::UTC, now),
            ["p0", "p1", "p2", "p3", "p4"]
        );
    }

    #[test]
    fn within_counts_back_from_the_newest_point_in_calendar_months() {
        let pts = vec![
            point("feb27", at("2026-02-27T12:00:00Z")),
            point("feb28", at("2026-02-28T12:00:00Z")),
            point("mar31", at("2026-03-31T12:00:00Z")),
        ];
        let rules = KeepRules {
            within: Some(Span::parse("1m").unwrap()),
            allow_empty: true,
            ..Default::default()
        };
        // One month before 31 March is 28 February (no 31 February).
        assert_eq!(
            kept(&pts, &rules, Tz::UTC, at("2030-01-01T00:00:00Z")),
            ["feb28", "mar31"]
        );
    }

    /// The rules as sets: for a periodic rule, the N largest bucket values among the
    /// points, and the newest point of each.
    fn model(points: &[PointFacts], r: &KeepRules, tz: Tz, now: i64) -> Vec<bool> {
        let newest_first = |a: &usize, b: &usize| {
            (points[*b].time_ns, &points[*b].name).cmp(&(points[*a].time_ns, &points[*a].name))
        };
        let mut keep = vec![false; points.len()];
        let mut idx: Vec<usize> = (0..points.len()).collect();
        idx.sort_by(newest_first);
        for &i in idx.iter().take(r.last.min(points.len() as u32) as usize) {
            keep[i] = true;
        }
        for (rule, n) in [
            (Reason::Hourly, r.hourly),
            (Reason::Daily, r.daily),
            (Reason::Weekly, r.weekly),
            (Reason::Monthly, r.monthly),
            (Reason::Yearly, r.yearly),
        ] {
            let key = |i: usize| bucket(&tz.timestamp_nanos(points[i].time_ns), &rule);
            let mut buckets: Vec<i64> = (0..points.len()).map(key).collect();
            buckets.sort_unstable_by(|a, b| b.cmp(a));
            buckets.dedup();
            for b in buckets
                .into_iter()
                .take(n.min(points.len() as u32) as usize)
            {
                let mut members: Vec<usize> = (0..points.len()).filter(|&i| key(i) == b).collect();
                members.sort_by(newest_first);
                keep[members[0]] = true;
            }
        }
        if let (Some(span), Some(&first)) = (r.within, idx.first()) {
            let since = span.before(points[first].time_ns, tz);
            for i in 0..points.len() {
                keep[i] |= points[i].time_ns >= since;
            }
        }
        for i in 0..points.len() {
            keep[i] |= points[i].tags.iter().any(|t| r.tags.contains(t));
        }
        if !r.keeps_something() {
            keep = vec![true; points.len()];
        }
        let expired = |i: usize| points[i].expires_ns.is_some_and(|e| e <= now);
        let limit = r.max_age.map(|s| s.before(now, tz));
        for i in 0..points.len() {
            if expired(i) || limit.is_some_and(|l| points[i].time_ns < l) {
                keep[i] = false;
            }
        }
        if !r.allow_empty
            && let Some(&i) = idx.iter().find(|&&i| !expired(i))
        {
            keep[i] = true;
        }
        for i in 0..points.len() {
            keep[i] |= points[i].protected;
        }
        keep
    }

    fn zones() -> impl Strategy<Value = Tz> {
        prop::sample::select(vec![
            Tz::UTC,
            chrono_tz::America::New_York,
            chrono_tz::Europe::Berlin,
            chrono_tz::Australia::Sydney,
            chrono_tz::Asia::Kolkata,
        ])
    }

    fn count() -> impl Strategy<Value = u32> {
        prop_oneof![4 => 0u32..6, 1 => Just(ALL)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn keep_rules_match_the_model(
            times in prop::collection::vec(0i64..3 * 365 * 24 * 3600, 0..40),
            tags in prop::collection::vec(prop::sample::select(vec!["", "a", "b"]), 40),
            flags in prop::collection::vec((0u8..10, 0u8..10, -400i64..400), 40),
            (last, hourly, daily, weekly) in (count(), count(), count(), count()),
            (monthly, yearly) in (count(), count()),
            within in prop::option::of((0u32..3, 0u32..40, 0u32..48)),
            max_age in prop::option::of((0u32..3, 0u32..40)),
            keep_tag in prop::option::of(prop::sample::select(vec!["a", "b"])),
            allow_empty: bool,
            tz in zones(),
        ) {
            // Points over three years around DST changes, some at the same second.
            let base = at("2024-01-01T00:00:00Z");
            let now = base + 3 * 365 * 24 * HOUR;
            let points: Vec<PointFacts> = times
                .iter()
                .enumerate()
                .map(|(i, t)| PointFacts {
                    name: format!("p{i:02}"),
                    time_ns: base + (t - t % 7) * 1_000_000_000,
                    tags: if tags[i].is_empty() { vec![] } else { vec![tags[i].to_string()] },
                    protected: flags[i].0 == 0,
                    expires_ns: (flags[i].1 == 0).then_some(now + flags[i].2 * 24 * HOUR),
                })
                .collect();
            let rules = KeepRules {
                last,
                hourly,
                daily,
                weekly,
                monthly,
                yearly,
                within: within.map(|(y, d, h)| Span { months: 12 * y, days: d, hours: h }),
                tags: keep_tag.map(|t| vec![t.to_string()]).unwrap_or_default(),
                max_age: max_age.map(|(y, d)| Span { months: 12 * y, days: d, hours: 0 }),
                allow_empty,
            };
            let got: Vec<bool> = decide(&points, &rules, tz, now).iter().map(|d| d.keep).collect();
            prop_assert_eq!(got, model(&points, &rules, tz, now));
        }
    }
}
