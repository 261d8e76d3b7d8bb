//! Schedule expressions: `@every <duration>`, cron with or without seconds, and the
//! `@hourly`…`@yearly` nicknames; plus the duration syntax used by every duration flag.
//!
//! Cron expressions are parsed by `croner`, the parser tokio-cron-scheduler uses, with seconds
//! optional, so both `0 30 * * * *` and `*/6 * * * *` work and mean what cron users expect.
//! Only `@every` and durations are ours to parse. Cron fields are read in the local time zone
//! (`TZ`, UTC in the container image).

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Local, Timelike};
use croner::Cron;
use croner::parser::{CronParser, Seconds};

use crate::duration::{format_duration, parse_duration};

/// Printed with every invalid expression so the user sees what is accepted.
pub const ACCEPTED_FORMS: &str = "accepted forms: '@every <duration>' (e.g. @every 30s, @every 1h30m), \
cron with seconds ('0 30 * * * *'), standard cron ('*/6 * * * *'), \
@hourly, @daily, @weekly, @monthly, @yearly";

/// The longest `@every` interval (and the upper bound of the other long duration flags): a
/// year and a day. Longer ones are typos, and unbounded ones overflowed the time arithmetic.
pub const MAX_EVERY: Duration = Duration::from_secs(366 * 86_400);

/// When the scheduled sync fires.
#[derive(Clone)]
pub enum Schedule {
    /// A fixed interval, counted from the previous planned fire time.
    Every(Duration),
    /// A cron expression.
    Cron(Box<Cron>, String),
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Every(d) => write!(f, "@every {}", format_duration(*d)),
            Schedule::Cron(_, expr) => f.write_str(expr),
        }
    }
}

impl Schedule {
    /// Parses a schedule expression; the error message lists the accepted forms.
    pub fn parse(expr: &str) -> Result<Self, String> {
        let expr = expr.trim();
        let invalid = |why: String| format!("invalid schedule '{expr}': {why}; {ACCEPTED_FORMS}");
        if let Some(rest) = expr.strip_prefix("@every") {
            let d = parse_duration(rest.trim()).map_err(invalid)?;
            if d < Duration::from_secs(1) || d > MAX_EVERY {
                return Err(invalid(format!(
                    "the interval must be between 1s and {}",
                    format_duration(MAX_EVERY)
                )));
            }
            return Ok(Schedule::Every(d));
        }
        if expr.starts_with('@')
            && ![
                "@hourly",
                "@daily",
                "@weekly",
                "@monthly",
                "@yearly",
                "@annually",
            ]
            .iter()
            .any(|n| n.eq_ignore_ascii_case(expr))
        {
            return Err(invalid("unknown nickname".into()));
        }
        let fields = expr.split_whitespace().count();
        if !expr.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(invalid(format!("expected 5 or 6 fields, found {fields}")));
        }
        if !expr.starts_with('@') {
            check_field_bounds(expr).map_err(invalid)?;
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expr)
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Schedule::Cron(Box::new(cron), expr.to_string()))
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Local>) -> Option<DateTime<Local>> {
        match self {
            Schedule::Every(d) => after.checked_add_signed(chrono::Duration::from_std(*d).ok()?),
            // Cron fires on whole seconds; croner would keep the sub-second part of `after`.
            Schedule::Cron(cron, _) => {
                let whole = after.with_nanosecond(0).unwrap_or(after);
                cron.find_next_occurrence(&whole, false).ok()
            }
        }
    }
}

/// Refuses numbers and steps outside a cron field's bounds, which croner lets through
/// (`*/61 * * * *` would otherwise be accepted and mean something else than written). Names
/// (`MON`, `JAN`) and specials (`L`, `W`, `#`, `?`) are left to croner.
fn check_field_bounds(expr: &str) -> Result<(), String> {
    const SECOND: (&str, u32, u32) = ("second", 0, 59);
    const REST: [(&str, u32, u32); 5] = [
        ("minute", 0, 59),
        ("hour", 0, 23),
        ("day of month", 1, 31),
        ("month", 1, 12),
        ("day of week", 0, 7),
    ];
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let bounds: Vec<_> = if fields.len() == 6 {
        std::iter::once(SECOND).chain(REST).collect()
    } else {
        REST.to_vec()
    };
    for (field, (name, min, max)) in fields.iter().zip(bounds) {
        for part in field.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((range, step)) => (range, Some(step)),
                None => (part, None),
            };
            if let Some(step) = step.and_then(|s| s.parse::<u32>().ok())
                && !(1..=max).contains(&step)
            {
                return Err(format!(
                    "step /{step} in the {name} field is outside 1-{max}"
                ));
            }
            for number in range.split('-').filter_map(|n| n.parse::<u32>().ok()) {
                if !(min..=max).contains(&number) {
                    return Err(format!(
                        "{number} in the {name} field is outside {min}-{max}"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The default `--max-sync-age`: twice the longest gap between two planned syncs, plus 10
/// minutes for the sync itself. The gap is the schedule's (the longest of its next 50 gaps, so
/// a weekdays-only cron allows for the weekend) or, with --watch, `--full-sync-every`, whichever
/// plans syncs more often.
pub fn default_max_sync_age(
    schedule: Option<&Schedule>,
    full_sync_every: Option<Duration>,
) -> Duration {
    let scheduled = schedule.and_then(|s| {
        let mut at = s.next_after(Local::now())?;
        let mut longest = Duration::ZERO;
        for _ in 0..50 {
            let Some(next) = s.next_after(at) else { break };
            longest = longest.max((next - at).to_std().unwrap_or(Duration::ZERO));
            at = next;
        }
        (!longest.is_zero()).then_some(longest)
    });
    let gap = match (scheduled, full_sync_every) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(Duration::from_secs(3600)),
    };
    gap.saturating_mul(2)
        .saturating_add(Duration::from_secs(600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "1", "s", "1x", "0s", "-1s", "1.5s", "1 m"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(86_400 + 60)), "1d1m");
        assert_eq!(format_duration(MAX_EVERY), "366d");
        for huge in ["100000000d", "5000000d", "18446744073709551615s"] {
            // Parsed without panicking (an error or a value the flags then bound).
            let _ = parse_duration(huge);
        }
        assert!(Schedule::parse("@every 367d").is_err());
        assert!(Schedule::parse("@every 500ms").is_err());
        assert!(Schedule::parse("@every 366d").is_ok());
    }

    #[test]
    fn every_accepted_form_parses() {
        for expr in [
            "@every 30s",
            "@every 1m",
            "@every 1h30m",
            "0 30 * * * *",
            "*/6 * * * *",
            "*/59 * * * *",
            "0-59/15 0-23 1-31 1-12 0-7",
            "0 9 * * MON-FRI",
            "@hourly",
            "@daily",
            "@weekly",
            "@monthly",
            "@yearly",
        ] {
            assert!(Schedule::parse(expr).is_ok(), "{expr} should parse");
        }
    }

    #[test]
    fn invalid_forms_are_rejected_with_the_accepted_forms() {
        for expr in [
            "",
            "@every",
            "@every soon",
            "@sometimes",
            "* * * *",
            "* * * * * * * *",
            "61 * * * *",
            "every 1m",
            "*/61 * * * *",
            "0-60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 8",
            "*/0 * * * *",
            "*/60 * * * * *",
            "5/99 * * * *",
        ] {
            let err = Schedule::parse(expr).expect_err(expr);
            assert!(err.contains("accepted forms"), "{err}");
        }
    }

    #[test]
    fn next_fire_times() {
        let t = Local.with_ymd_and_hms(2026, 1, 1, 10, 7, 13).unwrap();
        let every = Schedule::parse("@every 1h30m").unwrap();
        assert_eq!(
            every.next_after(t).unwrap(),
            t + chrono::Duration::minutes(90)
        );
        let with_seconds = Schedule::parse("0 30 * * * *")
            .unwrap()
            .next_after(t)
            .unwrap();
        assert_eq!(
            (
                with_seconds.hour(),
                with_seconds.minute(),
                with_seconds.second()
            ),
            (10, 30, 0)
        );
        let five = Schedule::parse("*/6 * * * *")
            .unwrap()
            .next_after(t)
            .unwrap();
        assert_eq!((five.hour(), five.minute(), five.second()), (10, 12, 0));
        let fraction = t + chrono::Duration::milliseconds(250);
        assert_eq!(
            Schedule::parse("0 30 * * * *")
                .unwrap()
                .next_after(fraction)
                .unwrap()
                .nanosecond(),
            0
        );
        let hourly = Schedule::parse("@hourly").unwrap().next_after(t).unwrap();
        assert_eq!((hourly.hour(), hourly.minute()), (11, 0));
        let daily = Schedule::parse("@daily").unwrap().next_after(t).unwrap();
        assert_eq!((daily.hour(), daily.minute()), (0, 0));
    }

    #[test]
    fn the_default_max_sync_age_follows_the_longest_gap() {
        let every = Schedule::parse("@every 1m").unwrap();
        assert_eq!(
            default_max_sync_age(Some(&every), None),
            Duration::from_secs(2 * 60 + 600)
        );
        let weekdays = Schedule::parse("0 9 * * 1-5").unwrap();
        assert_eq!(
            default_max_sync_age(Some(&weekdays), None),
            Duration::from_secs(2 * 3 * 86400 + 600),
            "the weekend is the longest gap"
        );
        let hourly = Duration::from_secs(3600);
        assert_eq!(
            default_max_sync_age(Some(&Schedule::parse("@daily").unwrap()), Some(hourly)),
            Duration::from_secs(2 * 3600 + 600)
        );
        assert_eq!(
            default_max_sync_age(None, Some(hourly)),
            Duration::from_secs(7800)
        );
    }
}
