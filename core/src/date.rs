//! Calendar dates (`YYYY-MM-DD`) as day numbers, without a date library.
//!
//! The contract names real calendar days only, so parsing checks month lengths
//! and leap years. Dates are stored as days since 1970-01-01 so that ranges and
//! "today + 366 days" are integer arithmetic.
//!
//! Not chrono, time or jiff: core stays pure and small, and whole days with
//! no time of day or zone fit in one short module. (The server formats times
//! people read with jiff.)

use std::fmt;

/// A calendar day, counted from 1970-01-01 (day 0). Negative before 1970.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(pub i32);

/// Milliseconds in one day.
pub const DAY_MS: u64 = 86_400_000;

impl Date {
    /// Parses `YYYY-MM-DD` naming a real day (years 0000..9999).
    ///
    /// # Errors
    /// `None` when the text is not exactly that shape or names no real day.
    pub fn parse(text: &str) -> Option<Date> {
        let b = text.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let num = |s: &[u8]| -> Option<u32> {
            s.iter().try_fold(0u32, |acc, &c| {
                c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
            })
        };
        let y = num(&b[0..4])?;
        let m = num(&b[5..7])?;
        let d = num(&b[8..10])?;
        if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y as i32, m) {
            return None;
        }
        Some(Date(days_from_civil(y as i32, m, d)))
    }

    /// The UTC day containing `ms` milliseconds since the Unix epoch.
    pub fn from_unix_ms(ms: u64) -> Date {
        Date(i32::try_from(ms / DAY_MS).unwrap_or(i32::MAX))
    }

    /// Builds a date from parts; `None` if they name no real day.
    pub fn from_ymd(y: i32, m: u32, d: u32) -> Option<Date> {
        ((0..=9999).contains(&y) && (1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m))
            .then(|| Date(days_from_civil(y, m, d)))
    }

    /// `(year, month, day)`.
    pub fn ymd(self) -> (i32, u32, u32) {
        civil_from_days(self.0)
    }

    pub fn year(self) -> i32 {
        self.ymd().0
    }

    /// Months since year 0, for month buckets: `year * 12 + (month - 1)`.
    pub fn month_index(self) -> i32 {
        let (y, m, _) = self.ymd();
        y * 12 + m as i32 - 1
    }

    pub fn add_days(self, days: i32) -> Date {
        Date(self.0.saturating_add(days))
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days: exact for the proleptic
// Gregorian calendar, branch-light, no tables.
fn days_from_civil(y: i32, m: u32, d: u32) -> i32 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = (y - era * 400) as u32;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe as i32 - 719_468
}

fn civil_from_days(z: i32) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = (z - era * 146_097) as u32;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe as i32 + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_days_only() {
        assert_eq!(Date::parse("1970-01-01"), Some(Date(0)));
        assert_eq!(
            Date::parse("2020-02-29").map(|d| d.to_string()).as_deref(),
            Some("2020-02-29")
        );
        for bad in [
            "2019-02-29",
            "2020-13-01",
            "2020-00-10",
            "2020-04-31",
            "2020-4-01",
            "20200401",
            "2020-04-01 ",
            "２020-01-01",
            "+020-01-01",
        ] {
            assert_eq!(Date::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn round_trips_every_day_of_four_centuries() {
        for day in -200_000..200_000 {
            let (y, m, d) = Date(day).ymd();
            assert_eq!(days_from_civil(y, m, d), day);
        }
        assert_eq!(
            Date::from_unix_ms(1_593_561_600_000).to_string(),
            "2020-07-01"
        );
        assert_eq!(
            Date::parse("2020-07-01").unwrap().month_index(),
            2020 * 12 + 6
        );
    }
}
