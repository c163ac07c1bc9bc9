//! Dates in UTC without a calendar crate: what the report header and file names need.

use std::time::{SystemTime, UNIX_EPOCH};

/// A UTC calendar date and time of day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl Utc {
    /// Now.
    pub fn now() -> Utc {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        Utc::from_unix(secs)
    }

    /// From seconds since 1970-01-01 00:00:00 UTC (proleptic Gregorian calendar).
    pub fn from_unix(secs: i64) -> Utc {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Utc { year, month, day, hour: (rem / 3600) as u32, minute: (rem % 3600 / 60) as u32, second: (rem % 60) as u32 }
    }

    /// `YYYY-MM-DD`.
    pub fn date(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// `YYYY-MM-DD HH:MM UTC`.
    pub fn date_time(&self) -> String {
        format!("{} {:02}:{:02} UTC", self.date(), self.hour, self.minute)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(Utc::from_unix(0).date_time(), "1970-01-01 00:00 UTC");
        // 2000-02-29 12:34:56 (a leap day in a year divisible by 400)
        let t = Utc::from_unix(951_827_696);
        assert_eq!((t.date(), t.hour, t.minute, t.second), ("2000-02-29".to_string(), 12, 34, 56));
        assert_eq!(Utc::from_unix(1_700_000_000).date_time(), "2023-11-14 22:13 UTC");
        assert_eq!(Utc::from_unix(4_102_444_799).date(), "2099-12-31");
        assert_eq!(Utc::from_unix(-1).date_time(), "1969-12-31 23:59 UTC");
    }
}
