//! When a policy's jobs are due: iCalendar recurrence rules (RFC 5545 `RRULE`) in a time
//! zone.
//!
//! A rule is a `;`-separated list of `PART=VALUE` with the parts Huawei's backup policies
//! use: `FREQ` (`WEEKLY`, `DAILY` or `HOURLY`, required), `INTERVAL` (1-1000), `BYDAY`
//! (`MO`..`SU`, comma-separated), `BYHOUR` (0-23) and `BYMINUTE` (0-59). Anything else is
//! refused with a message naming the part. A schedule has 1 to [`MAX_RULES`] rules; its
//! due times are the union of theirs, always at second 00 of a minute.
//!
//! The recurrence itself is computed by the `rrule` crate, in the schedule's zone: an
//! IANA name (`Europe/Paris`, through chrono-tz) or a fixed offset (`UTC`, `UTC+08:00`,
//! `UTC-05:30`), which is evaluated as UTC wall-clock time shifted by the offset.
//!
//! The rules are anchored (their `DTSTART`) at 00:00 local time of the Monday of the
//! week the policy was created. So a part left out takes the anchor's value: no
//! `BYMINUTE` means minute 0, no `BYHOUR` (daily, weekly) hour 0, no `BYDAY` (weekly)
//! Monday; and `INTERVAL` counts weeks, days or hours from that Monday.
//!
//! Daylight saving time follows RFC 5545 (section 3.3.5): a local time that falls in a
//! spring-forward gap is taken with the offset in force before the gap, so 02:30 on a
//! night when 02:00 jumps to 03:00 runs at 03:30 of the new offset (once, that day); a
//! local time that occurs twice in a fall-back overlap runs once, at its first
//! occurrence (the offset before the change). Hourly rules count wall-clock hours.

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDateTime, TimeZone, Utc};
use rrule::{Frequency, NWeekday, RRule, RRuleSet, Unvalidated, Weekday};

/// The most rules one schedule may have.
pub const MAX_RULES: usize = 24;

/// The time zone a schedule is evaluated in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Zone {
    /// An IANA zone, with its daylight saving rules.
    Named(chrono_tz::Tz),
    /// A fixed offset from UTC, east positive.
    Fixed(FixedOffset),
}

impl Zone {
    /// Parses `UTC`, `UTC+08:00`, `UTC-05:30`, `UTC+8`, or an IANA name.
    pub fn parse(s: &str) -> Result<Zone, String> {
        let bad = || {
            format!(
                "invalid time zone {s:?}: use an IANA name such as Europe/Paris, or an offset such as UTC+08:00"
            )
        };
        if let Some(rest) = s.strip_prefix("UTC").filter(|r| !r.is_empty()) {
            let (sign, rest) = match rest.as_bytes()[0] {
                b'+' => (1, &rest[1..]),
                b'-' => (-1, &rest[1..]),
                _ => return Err(bad()),
            };
            let (h, m) = match rest.split_once(':') {
                Some((h, m)) => (h, m),
                None => (rest, "0"),
            };
            let ok =
                |t: &str| !t.is_empty() && t.len() <= 2 && t.bytes().all(|b| b.is_ascii_digit());
            if !ok(h) || !ok(m) {
                return Err(bad());
            }
            let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if h > 14 || m > 59 {
                return Err(bad());
            }
            return FixedOffset::east_opt(sign * (h * 3600 + m * 60))
                .map(Zone::Fixed)
                .ok_or_else(bad);
        }
        s.parse::<chrono_tz::Tz>()
            .map(Zone::Named)
            .map_err(|_| bad())
    }

    /// The local wall-clock time of an instant.
    fn local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        match self {
            Zone::Named(tz) => t.with_timezone(tz).naive_local(),
            Zone::Fixed(off) => t.with_timezone(off).naive_local(),
        }
    }
}

/// One parsed rule's parts, before the `rrule` crate builds it.
fn parse_rule(text: &str) -> Result<RRule<Unvalidated>, String> {
    let body = text.strip_prefix("RRULE:").unwrap_or(text);
    let mut freq = None;
    let mut interval = None;
    let mut days = None;
    let mut hours = None;
    let mut minutes = None;
    for part in body.split(';') {
        let Some((key, value)) = part.split_once('=') else {
            return Err(format!("{part:?} is not PART=VALUE"));
        };
        let key_up = key.to_ascii_uppercase();
        if value.is_empty() {
            return Err(format!("{key_up} has no value"));
        }
        let dup = |set: bool| {
            if set {
                Err(format!("{key_up} is given twice"))
            } else {
                Ok(())
            }
        };
        let list = |max: u8| -> Result<Vec<u8>, String> {
            let mut out = Vec::new();
            for v in value.split(',') {
                match v.parse::<u8>() {
                    Ok(n) if n <= max => out.push(n),
                    _ => {
                        return Err(format!(
                            "{key_up}={value}: {v:?} is not a number from 0 to {max}"
                        ));
                    }
                }
            }
            out.sort_unstable();
            out.dedup();
            Ok(out)
        };
        match key_up.as_str() {
            "FREQ" => {
                dup(freq.is_some())?;
                freq = Some(match value.to_ascii_uppercase().as_str() {
                    "WEEKLY" => Frequency::Weekly,
                    "DAILY" => Frequency::Daily,
                    "HOURLY" => Frequency::Hourly,
                    _ => {
                        return Err(format!(
                            "FREQ={value} is not supported: use WEEKLY, DAILY or HOURLY"
                        ));
                    }
                });
            }
            "INTERVAL" => {
                dup(interval.is_some())?;
                interval = Some(match value.parse::<u16>() {
                    Ok(n) if (1..=1000).contains(&n) => n,
                    _ => return Err(format!("INTERVAL={value}: not a number from 1 to 1000")),
                });
            }
            "BYDAY" => {
                dup(days.is_some())?;
                let mut out = Vec::new();
                for d in value.split(',') {
                    let day = match d.to_ascii_uppercase().as_str() {
                        "MO" => Weekday::Mon,
                        "TU" => Weekday::Tue,
                        "WE" => Weekday::Wed,
                        "TH" => Weekday::Thu,
                        "FR" => Weekday::Fri,
                        "SA" => Weekday::Sat,
                        "SU" => Weekday::Sun,
                        _ => {
                            return Err(format!(
                                "BYDAY={value}: {d:?} is not a day (MO, TU, WE, TH, FR, SA, SU)"
                            ));
                        }
                    };
                    if !out.contains(&NWeekday::Every(day)) {
                        out.push(NWeekday::Every(day));
                    }
                }
                days = Some(out);
            }
            "BYHOUR" => {
                dup(hours.is_some())?;
                hours = Some(list(23)?);
            }
            "BYMINUTE" => {
                dup(minutes.is_some())?;
                minutes = Some(list(59)?);
            }
            _ => {
                return Err(format!(
                    "{key_up} is not supported (a rule may have FREQ, INTERVAL, BYDAY, BYHOUR and BYMINUTE)"
                ));
            }
        }
    }
    let Some(freq) = freq else {
        return Err("FREQ is missing (WEEKLY, DAILY or HOURLY)".to_string());
    };
    let mut rule = RRule::new(freq)
        .interval(interval.unwrap_or(1))
        .by_second(vec![0]);
    if let Some(d) = days {
        rule = rule.by_weekday(d);
    }
    if let Some(h) = hours {
        rule = rule.by_hour(h);
    }
    if let Some(m) = minutes {
        rule = rule.by_minute(m);
    }
    Ok(rule)
}

/// A parsed, valid schedule: the due times of its rules in its zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    zone: Zone,
    set: RRuleSet,
}

impl Schedule {
    /// Parses and checks `rules` in `zone`, anchored at the week of `anchor_ns` (see the
    /// module doc). The error names the rule and its wrong part.
    pub fn new(rules: &[String], zone: &str, anchor_ns: i64) -> Result<Schedule, String> {
        if rules.is_empty() {
            return Err("a schedule needs at least one rule".to_string());
        }
        if rules.len() > MAX_RULES {
            return Err(format!(
                "{} rules given: a schedule has at most {MAX_RULES}",
                rules.len()
            ));
        }
        let zone = Zone::parse(zone)?;
        let anchor = DateTime::from_timestamp_nanos(anchor_ns);
        let local = zone.local(anchor).date();
        let monday = local - Duration::days(local.weekday().num_days_from_monday() as i64);
        let midnight = monday.and_hms_opt(0, 0, 0).expect("midnight exists");
        let dtstart = rrule_time(zone, midnight);
        let mut set = RRuleSet::new(dtstart);
        for text in rules {
            let rule = parse_rule(text.trim())
                .and_then(|r| r.validate(dtstart).map_err(|e| e.to_string()))
                .map_err(|e| format!("invalid schedule rule {text:?}: {e}"))?;
            set = set.rrule(rule);
        }
        Ok(Schedule { zone, set })
    }

    /// The first due time strictly after `t_ns`.
    pub fn next_after(&self, t_ns: i64) -> Option<i64> {
        let after = self.to_rrule(t_ns);
        self.times().find(|&(_, dt)| dt > after).map(|(ns, _)| ns)
    }

    /// The next `n` due times strictly after `t_ns`.
    pub fn next_n(&self, t_ns: i64, n: usize) -> Vec<i64> {
        let after = self.to_rrule(t_ns);
        let mut out: Vec<i64> = Vec::with_capacity(n);
        for (ns, dt) in self.times() {
            if dt > after && out.last() != Some(&ns) {
                out.push(ns);
                if out.len() == n {
                    break;
                }
            }
        }
        out
    }

    /// The latest due time at or before `t_ns` (none before the anchor).
    pub fn latest_at_or_before(&self, t_ns: i64) -> Option<i64> {
        let at = self.to_rrule(t_ns);
        let mut last = None;
        for (ns, dt) in self.times() {
            if dt > at {
                break;
            }
            last = Some(ns);
        }
        last
    }

    /// Every due time from the anchor on, in order, as (ns since the epoch, the time as
    /// the `rrule` crate sees it).
    fn times(&self) -> impl Iterator<Item = (i64, DateTime<rrule::Tz>)> + '_ {
        let zone = self.zone;
        self.set.into_iter().map(move |dt| {
            let ns = match zone {
                Zone::Named(_) => dt.timestamp_nanos_opt().unwrap_or(i64::MAX),
                // Computed as UTC wall clock: subtract the offset.
                Zone::Fixed(off) => dt
                    .timestamp_nanos_opt()
                    .unwrap_or(i64::MAX)
                    .saturating_sub(off.local_minus_utc() as i64 * 1_000_000_000),
            };
            (ns, dt)
        })
    }

    /// An instant as the `rrule` crate's time in this schedule's frame.
    fn to_rrule(&self, t_ns: i64) -> DateTime<rrule::Tz> {
        let t = DateTime::from_timestamp_nanos(t_ns);
        match self.zone {
            Zone::Named(tz) => t.with_timezone(&rrule::Tz::Tz(tz)),
            Zone::Fixed(_) => rrule_time(self.zone, self.zone.local(t)),
        }
    }
}

/// A local wall-clock time in `zone` as an `rrule` time (fixed offsets as shifted UTC).
/// A local midnight that does not exist (a zone that changes at 00:00) is taken an hour
/// later.
fn rrule_time(zone: Zone, local: NaiveDateTime) -> DateTime<rrule::Tz> {
    match zone {
        Zone::Fixed(_) => rrule::Tz::UTC.from_utc_datetime(&local),
        Zone::Named(tz) => {
            let rtz = rrule::Tz::Tz(tz);
            rtz.from_local_datetime(&local)
                .earliest()
                .or_else(|| {
                    rtz.from_local_datetime(&(local + Duration::hours(1)))
                        .earliest()
                })
                .unwrap_or_else(|| rtz.from_utc_datetime(&local))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, Timelike, Weekday as CWeekday};

    fn ns(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    }

    fn utc(t: i64) -> String {
        DateTime::from_timestamp_nanos(t)
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    fn sched(rules: &[&str], zone: &str, anchor: &str) -> Schedule {
        let rules: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
        Schedule::new(&rules, zone, ns(anchor)).unwrap()
    }

    fn err(rules: &[&str], zone: &str) -> String {
        let rules: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
        Schedule::new(&rules, zone, ns("2026-01-07T12:00:00Z")).unwrap_err()
    }

    /// A rule as the model reads it.
    struct ModelRule {
        freq: Frequency,
        interval: i64,
        days: Option<Vec<CWeekday>>,
        hours: Option<Vec<u32>>,
        minutes: Option<Vec<u32>>,
    }

    impl ModelRule {
        /// Whether local wall-clock time `t` is a due time, with the anchor's Monday.
        fn matches(&self, t: NaiveDateTime, monday: NaiveDate) -> bool {
            let minute_ok = match &self.minutes {
                Some(m) => m.contains(&t.minute()),
                None => t.minute() == 0,
            };
            let hour_ok = match (&self.hours, self.freq) {
                (Some(h), _) => h.contains(&t.hour()),
                (None, Frequency::Hourly) => true,
                (None, _) => t.hour() == 0,
            };
            let day_ok = match (&self.days, self.freq) {
                (Some(d), _) => d.contains(&t.weekday()),
                (None, Frequency::Weekly) => t.weekday() == CWeekday::Mon,
                (None, _) => true,
            };
            let start = monday.and_hms_opt(0, 0, 0).unwrap();
            let since = t - start;
            let period_ok = match self.freq {
                Frequency::Weekly => since.num_days().div_euclid(7) % self.interval == 0,
                Frequency::Daily => since.num_days() % self.interval == 0,
                _ => since.num_hours() % self.interval == 0,
            };
            t.second() == 0 && minute_ok && hour_ok && day_ok && period_ok
        }
    }

    /// The model: every minute of a window, in a zone without a change of offset in it.
    fn model_times(rules: &[ModelRule], zone: Zone, anchor: i64, from: i64, n: usize) -> Vec<i64> {
        let a = zone.local(DateTime::from_timestamp_nanos(anchor)).date();
        let monday = a - Duration::days(a.weekday().num_days_from_monday() as i64);
        let mut out = Vec::new();
        let mut t = (from / 60_000_000_000 + 1) * 60_000_000_000;
        while out.len() < n {
            let local = zone.local(DateTime::from_timestamp_nanos(t));
            if rules.iter().any(|r| r.matches(local, monday)) {
                out.push(t);
            }
            t += 60_000_000_000;
        }
        out
    }

    #[test]
    fn due_times_match_the_model() {
        use CWeekday::*;
        let cases: Vec<(&str, ModelRule)> = vec![
            (
                "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;BYHOUR=2;BYMINUTE=30",
                ModelRule {
                    freq: Frequency::Weekly,
                    interval: 1,
                    days: Some(vec![Mon, Tue, Wed, Thu, Fri]),
                    hours: Some(vec![2]),
                    minutes: Some(vec![30]),
                },
            ),
            (
                "FREQ=WEEKLY;INTERVAL=2;BYDAY=SA;BYHOUR=23;BYMINUTE=59",
                ModelRule {
                    freq: Frequency::Weekly,
                    interval: 2,
                    days: Some(vec![Sat]),
                    hours: Some(vec![23]),
                    minutes: Some(vec![59]),
                },
            ),
            (
                "FREQ=WEEKLY",
                ModelRule {
                    freq: Frequency::Weekly,
                    interval: 1,
                    days: None,
                    hours: None,
                    minutes: None,
                },
            ),
            (
                "FREQ=DAILY;INTERVAL=3;BYHOUR=6,18;BYMINUTE=0,15",
                ModelRule {
                    freq: Frequency::Daily,
                    interval: 3,
                    days: None,
                    hours: Some(vec![6, 18]),
                    minutes: Some(vec![0, 15]),
                },
            ),
            (
                "FREQ=DAILY;BYDAY=SU;BYHOUR=12",
                ModelRule {
                    freq: Frequency::Daily,
                    interval: 1,
                    days: Some(vec![Sun]),
                    hours: Some(vec![12]),
                    minutes: None,
                },
            ),
            (
                "FREQ=HOURLY;INTERVAL=5;BYMINUTE=10",
                ModelRule {
                    freq: Frequency::Hourly,
                    interval: 5,
                    days: None,
                    hours: None,
                    minutes: Some(vec![10]),
                },
            ),
            (
                "FREQ=HOURLY;BYHOUR=9,10,11;BYDAY=TU",
                ModelRule {
                    freq: Frequency::Hourly,
                    interval: 1,
                    days: Some(vec![Tue]),
                    hours: Some(vec![9, 10, 11]),
                    minutes: None,
                },
            ),
        ];
        // Windows without a change of offset (the DST tests below cover those).
        for zone in [
            "UTC",
            "UTC+08:00",
            "UTC-05:30",
            "Asia/Tokyo",
            "Europe/Paris",
            "America/New_York",
        ] {
            for anchor in ["2026-05-06T10:00:00Z", "2026-06-01T00:30:00Z"] {
                for (text, model) in &cases {
                    let s = sched(&[text], zone, anchor);
                    let from = ns("2026-06-10T07:43:00Z");
                    let want = model_times(
                        std::slice::from_ref(model),
                        Zone::parse(zone).unwrap(),
                        ns(anchor),
                        from,
                        12,
                    );
                    let got = s.next_n(from, 12);
                    assert_eq!(
                        got.iter().map(|&t| utc(t)).collect::<Vec<_>>(),
                        want.iter().map(|&t| utc(t)).collect::<Vec<_>>(),
                        "{text} in {zone}, anchor {anchor}"
                    );
                    assert_eq!(s.next_after(from), Some(want[0]));
                    // The latest slot at or before a due time is that time; a second
                    // earlier, the one before.
                    assert_eq!(s.latest_at_or_before(want[3]), Some(want[3]));
                    assert_eq!(
                        s.latest_at_or_before(want[3] - 1_000_000_000),
                        Some(want[2])
                    );
                }
            }
        }
        // Several rules: the union, in order, each time once.
        let both = sched(
            &["FREQ=DAILY;BYHOUR=3", "FREQ=DAILY;BYHOUR=3,15"],
            "UTC",
            "2026-06-01T00:00:00Z",
        );
        let got: Vec<String> = both
            .next_n(ns("2026-06-10T00:00:00Z"), 3)
            .into_iter()
            .map(utc)
            .collect();
        assert_eq!(
            got,
            [
                "2026-06-10T03:00:00Z",
                "2026-06-10T15:00:00Z",
                "2026-06-11T03:00:00Z"
            ]
        );
    }

    #[test]
    fn offsets_shift_the_wall_clock() {
        let s = sched(
            &["FREQ=DAILY;BYHOUR=9;BYMINUTE=0"],
            "UTC+08:00",
            "2026-06-01T00:00:00Z",
        );
        assert_eq!(
            utc(s.next_after(ns("2026-06-10T00:00:00Z")).unwrap()),
            "2026-06-10T01:00:00Z"
        );
        let s = sched(
            &["FREQ=DAILY;BYHOUR=9;BYMINUTE=0"],
            "UTC-05:30",
            "2026-06-01T00:00:00Z",
        );
        assert_eq!(
            utc(s.next_after(ns("2026-06-10T00:00:00Z")).unwrap()),
            "2026-06-10T14:30:00Z"
        );
    }

    /// Europe/Paris, 2026-03-29: 02:00 CET jumps to 03:00 CEST. 02:30 does not exist that
    /// night: it runs at 03:30 CEST (02:30 with the offset before the gap, RFC 5545).
    #[test]
    fn spring_forward_gap_runs_after_the_gap() {
        let s = sched(
            &["FREQ=DAILY;BYHOUR=2;BYMINUTE=30"],
            "Europe/Paris",
            "2026-03-02T00:00:00Z",
        );
        let got: Vec<String> = s
            .next_n(ns("2026-03-27T12:00:00Z"), 4)
            .into_iter()
            .map(utc)
            .collect();
        assert_eq!(
            got,
            [
                "2026-03-28T01:30:00Z", // 02:30 CET
                "2026-03-29T01:30:00Z", // 03:30 CEST: the gap
                "2026-03-30T00:30:00Z", // 02:30 CEST
                "2026-03-31T00:30:00Z",
            ]
        );
        // An hourly rule runs once in the hour the clock skips, and every hour around it.
        let h = sched(&["FREQ=HOURLY"], "Europe/Paris", "2026-03-02T00:00:00Z");
        let got: Vec<String> = h
            .next_n(ns("2026-03-28T23:30:00Z"), 4)
            .into_iter()
            .map(utc)
            .collect();
        assert_eq!(
            got,
            [
                "2026-03-29T00:00:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-29T02:00:00Z",
                "2026-03-29T03:00:00Z"
            ]
        );
    }

    /// Europe/Paris, 2026-10-25: 03:00 CEST falls back to 02:00 CET. 02:30 happens twice
    /// that night: it runs once, at the first (CEST).
    #[test]
    fn fall_back_overlap_runs_once_at_the_first() {
        let s = sched(
            &["FREQ=DAILY;BYHOUR=2;BYMINUTE=30"],
            "Europe/Paris",
            "2026-10-05T00:00:00Z",
        );
        let got: Vec<String> = s
            .next_n(ns("2026-10-23T12:00:00Z"), 4)
            .into_iter()
            .map(utc)
            .collect();
        assert_eq!(
            got,
            [
                "2026-10-24T00:30:00Z", // 02:30 CEST
                "2026-10-25T00:30:00Z", // the first 02:30 (CEST); not 01:30Z again
                "2026-10-26T01:30:00Z", // 02:30 CET
                "2026-10-27T01:30:00Z",
            ]
        );
        let late = sched(
            &["FREQ=DAILY;BYHOUR=3;BYMINUTE=30"],
            "Europe/Paris",
            "2026-10-05T00:00:00Z",
        );
        assert_eq!(
            utc(late.next_after(ns("2026-10-24T12:00:00Z")).unwrap()),
            "2026-10-25T02:30:00Z"
        );
    }

    #[test]
    fn byday_and_interval() {
        // Mondays, Wednesdays, Fridays; every other week from the anchor's (2026-06-01 is
        // a Monday).
        let s = sched(
            &["FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE,FR;BYHOUR=9"],
            "UTC",
            "2026-06-03T10:00:00Z",
        );
        let got: Vec<String> = s
            .next_n(ns("2026-06-01T00:00:00Z"), 5)
            .into_iter()
            .map(utc)
            .collect();
        assert_eq!(
            got,
            [
                "2026-06-01T09:00:00Z",
                "2026-06-03T09:00:00Z",
                "2026-06-05T09:00:00Z",
                "2026-06-15T09:00:00Z",
                "2026-06-17T09:00:00Z",
            ]
        );
        let h = sched(
            &["FREQ=HOURLY;INTERVAL=6;BYMINUTE=5"],
            "UTC",
            "2026-06-03T10:00:00Z",
        );
        let got: Vec<String> = h
            .next_n(ns("2026-06-03T10:00:00Z"), 3)
            .into_iter()
            .map(utc)
            .collect();
        assert_eq!(
            got,
            [
                "2026-06-03T12:05:00Z",
                "2026-06-03T18:05:00Z",
                "2026-06-04T00:05:00Z"
            ]
        );
        // Nothing before the anchor's Monday.
        assert_eq!(h.latest_at_or_before(ns("2026-05-31T23:00:00Z")), None);
        assert_eq!(
            h.latest_at_or_before(ns("2026-06-03T11:00:00Z"))
                .map(utc)
                .as_deref(),
            Some("2026-06-03T06:05:00Z")
        );
    }

    #[test]
    fn at_most_24_rules() {
        let rules: Vec<String> = (0..24).map(|h| format!("FREQ=DAILY;BYHOUR={h}")).collect();
        let s = Schedule::new(&rules, "UTC", ns("2026-06-01T00:00:00Z")).unwrap();
        assert_eq!(s.next_n(ns("2026-06-02T00:30:00Z"), 24).len(), 24);
        let mut more = rules.clone();
        more.push("FREQ=DAILY".into());
        let e = Schedule::new(&more, "UTC", 0).unwrap_err();
        assert_eq!(e, "25 rules given: a schedule has at most 24");
        assert_eq!(
            Schedule::new(&[], "UTC", 0).unwrap_err(),
            "a schedule needs at least one rule"
        );
    }

    #[test]
    fn invalid_rules_name_their_wrong_part() {
        for (rule, want) in [
            (
                "FREQ=MONTHLY",
                "FREQ=MONTHLY is not supported: use WEEKLY, DAILY or HOURLY",
            ),
            (
                "FREQ=DAILY;COUNT=3",
                "COUNT is not supported (a rule may have FREQ, INTERVAL, BYDAY, BYHOUR and BYMINUTE)",
            ),
            (
                "FREQ=DAILY;BYHOUR=24",
                "BYHOUR=24: \"24\" is not a number from 0 to 23",
            ),
            (
                "FREQ=DAILY;BYMINUTE=5,60",
                "BYMINUTE=5,60: \"60\" is not a number from 0 to 59",
            ),
            (
                "FREQ=WEEKLY;BYDAY=MO,XX",
                "BYDAY=MO,XX: \"XX\" is not a day (MO, TU, WE, TH, FR, SA, SU)",
            ),
            (
                "FREQ=WEEKLY;BYDAY=1MO",
                "BYDAY=1MO: \"1MO\" is not a day (MO, TU, WE, TH, FR, SA, SU)",
            ),
            ("BYHOUR=2", "FREQ is missing (WEEKLY, DAILY or HOURLY)"),
            (
                "FREQ=DAILY;INTERVAL=0",
                "INTERVAL=0: not a number from 1 to 1000",
            ),
            ("FREQ=DAILY;FREQ=WEEKLY", "FREQ is given twice"),
            ("FREQ=DAILY;BYHOUR=", "BYHOUR has no value"),
            ("every day", "\"every day\" is not PART=VALUE"),
        ] {
            assert_eq!(
                err(&[rule], "UTC"),
                format!("invalid schedule rule {rule:?}: {want}")
            );
        }
        // Lower case and an RRULE: prefix are fine.
        sched(
            &["RRULE:freq=daily;byhour=2"],
            "UTC",
            "2026-06-01T00:00:00Z",
        );
        for zone in ["Mars/Base", "UTC+25:00", "UTC+8:75", "UTC8", "utc+1"] {
            assert!(
                err(&["FREQ=DAILY"], zone).starts_with(&format!("invalid time zone {zone:?}")),
                "{zone}"
            );
        }
        assert_eq!(
            Zone::parse("UTC+8").unwrap(),
            Zone::parse("UTC+08:00").unwrap()
        );
    }
}
