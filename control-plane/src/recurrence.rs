//! When a schedule runs, pure: a `Repeat` (once, daily, weekly, cron) in a named
//! time zone, turned into the next run after a given instant. Daily and weekly
//! are written as cron expressions, so one evaluator (the `croner` crate, which
//! handles the daylight-saving gaps and folds) serves all three; the wall-clock
//! time is the zone's, so "daily at 02:30 in Europe/Berlin" stays 02:30 across a
//! change of offset.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use ferry_api::schedule::Repeat;

/// A schedule's timing, checked.
#[derive(Debug, Clone)]
pub struct Recurrence {
    cron: Option<Cron>,
    tz: Tz,
    not_before: Option<DateTime<Utc>>,
}

/// Why timing is refused (`invalid_schedule` or `invalid_time_zone`).
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub code: &'static str,
    pub detail: String,
}

fn invalid(detail: String) -> Invalid {
    Invalid {
        code: "invalid_schedule",
        detail,
    }
}

/// `HH:MM` → (hour, minute).
fn clock(at: &str) -> Result<(u32, u32), Invalid> {
    let bad = || invalid(format!("repeat.at must be HH:MM (24-hour), not {at:?}"));
    let (h, m) = at.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok((h, m))
}

impl Recurrence {
    pub fn new(
        repeat: &Repeat,
        time_zone: &str,
        not_before: Option<DateTime<Utc>>,
    ) -> Result<Self, Invalid> {
        let tz = Tz::from_str(time_zone).map_err(|_| Invalid {
            code: "invalid_time_zone",
            detail: format!(
                "time_zone must be an IANA zone name (Europe/Berlin, UTC), not {time_zone:?}"
            ),
        })?;
        let expression = match repeat {
            Repeat::Once => {
                if not_before.is_none() {
                    return Err(invalid(
                        "a one-off schedule needs not_before (when it runs)".into(),
                    ));
                }
                None
            }
            Repeat::Daily { at } => {
                let (h, m) = clock(at)?;
                Some(format!("{m} {h} * * *"))
            }
            Repeat::Weekly { days, at } => {
                let (h, m) = clock(at)?;
                if days.is_empty() {
                    return Err(invalid("repeat.days names at least one day".into()));
                }
                let days: Vec<&str> = days.iter().map(|d| d.as_str()).collect();
                Some(format!("{m} {h} * * {}", days.join(",").to_uppercase()))
            }
            Repeat::Cron { expression } => Some(expression.clone()),
        };
        let cron = match expression {
            Some(e) => Some(Cron::from_str(&e).map_err(|err| {
                invalid(format!("repeat: {e:?} is not a cron expression: {err}"))
            })?),
            None => None,
        };
        let r = Recurrence {
            cron,
            tz,
            not_before,
        };
        // A pattern that never matches (February 30th) is refused too.
        if r.cron.is_some() && r.next_after(Utc::now()).is_none() {
            return Err(invalid("repeat: the expression never comes due".into()));
        }
        Ok(r)
    }

    /// The first run at or after `now` (a one-off: at `not_before`, even if that
    /// is a moment past).
    pub fn first(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.cron {
            None => self.not_before,
            Some(_) => {
                let from = self.not_before.map_or(now, |nb| nb.max(now));
                self.next_from(from, true)
            }
        }
    }

    /// The run after one due at `due` (none for a one-off).
    pub fn next_after(&self, due: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let from = self.not_before.map_or(due, |nb| nb.max(due));
        self.next_from(from, from == self.not_before.unwrap_or(due) && from > due)
    }

    fn next_from(&self, from: DateTime<Utc>, inclusive: bool) -> Option<DateTime<Utc>> {
        let cron = self.cron.as_ref()?;
        cron.find_next_occurrence(&from.with_timezone(&self.tz), inclusive)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use ferry_api::schedule::Weekday;

    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn daily_keeps_the_wall_clock_time_across_a_change_of_offset() {
        let r = Recurrence::new(
            &Repeat::Daily { at: "02:30".into() },
            "America/New_York",
            None,
        )
        .unwrap();
        // 2026-11-01 is the end of daylight saving time in New York (UTC-4 → UTC-5).
        let a = r.next_after(utc("2026-10-30T12:00:00Z")).unwrap();
        assert_eq!(a, utc("2026-10-31T06:30:00Z")); // 02:30 EDT
        let b = r.next_after(a).unwrap();
        let c = r.next_after(b).unwrap();
        assert_eq!(c, utc("2026-11-02T07:30:00Z")); // 02:30 EST
    }

    #[test]
    fn weekly_and_cron_in_a_zone() {
        let r = Recurrence::new(
            &Repeat::Weekly {
                days: vec![Weekday::Mon, Weekday::Fri],
                at: "22:00".into(),
            },
            "Europe/Berlin",
            None,
        )
        .unwrap();
        // Monday 2026-11-30 (UTC+1): 22:00 Berlin is 21:00 UTC.
        assert_eq!(
            r.next_after(utc("2026-11-30T10:00:00Z")).unwrap(),
            utc("2026-11-30T21:00:00Z")
        );
        assert_eq!(
            r.next_after(utc("2026-11-30T21:00:00Z")).unwrap(),
            utc("2026-12-04T21:00:00Z")
        );
        let c = Recurrence::new(
            &Repeat::Cron {
                expression: "*/15 9-17 * * MON-FRI".into(),
            },
            "Asia/Tokyo",
            None,
        )
        .unwrap();
        // Saturday 2026-12-05 10:00 Tokyo → Monday 09:00 Tokyo (00:00 UTC).
        assert_eq!(
            c.next_after(
                chrono_tz::Asia::Tokyo
                    .with_ymd_and_hms(2026, 12, 5, 10, 0, 0)
                    .unwrap()
                    .with_timezone(&Utc)
            )
            .unwrap(),
            utc("2026-12-07T00:00:00Z")
        );
    }

    #[test]
    fn not_before_delays_the_first_run_and_a_one_off_runs_once() {
        let nb = utc("2027-01-10T00:00:00Z");
        let r = Recurrence::new(&Repeat::Daily { at: "00:00".into() }, "UTC", Some(nb)).unwrap();
        assert_eq!(r.first(utc("2026-12-01T00:00:00Z")), Some(nb));
        assert_eq!(r.next_after(nb), Some(utc("2027-01-11T00:00:00Z")));
        let once = Recurrence::new(&Repeat::Once, "UTC", Some(nb)).unwrap();
        assert_eq!(once.first(utc("2026-12-01T00:00:00Z")), Some(nb));
        assert_eq!(once.next_after(nb), None);
    }

    #[test]
    fn bad_timing_is_refused_with_the_reason() {
        let code =
            |repeat: Repeat, tz: &str, nb| Recurrence::new(&repeat, tz, nb).unwrap_err().code;
        assert_eq!(code(Repeat::Once, "UTC", None), "invalid_schedule");
        assert_eq!(
            code(Repeat::Daily { at: "25:00".into() }, "UTC", None),
            "invalid_schedule"
        );
        assert_eq!(
            code(Repeat::Daily { at: "2:30".into() }, "UTC", None),
            "invalid_schedule"
        );
        assert_eq!(
            code(
                Repeat::Weekly {
                    days: vec![],
                    at: "02:30".into()
                },
                "UTC",
                None
            ),
            "invalid_schedule"
        );
        assert_eq!(
            code(
                Repeat::Cron {
                    expression: "not cron".into()
                },
                "UTC",
                None
            ),
            "invalid_schedule"
        );
        assert_eq!(
            code(
                Repeat::Cron {
                    expression: "0 0 30 2 *".into()
                },
                "UTC",
                None
            ),
            "invalid_schedule"
        );
        assert_eq!(
            code(Repeat::Daily { at: "02:30".into() }, "Mars/Olympus", None),
            "invalid_time_zone"
        );
    }
}
