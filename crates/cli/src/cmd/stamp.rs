//! The timestamp printed before each line by `runlog logs` and `runlog tail`
//! (`--timestamps`, `--time FORM`), from the `time` every line carries.

use chrono::{DateTime, FixedOffset, Local, SecondsFormat, TimeDelta, Utc};

/// How `--time` shows a line's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TimeForm {
    /// Absolute, in UTC: `2026-11-20T10:00:01.250Z`.
    Utc,
    /// Absolute, in the local time zone (`TZ`): `2026-11-20T15:30:01.250+05:30`.
    Local,
    /// Since the first line printed (the stream's start unless `--since-line` or
    /// `--section` starts later): `+0:00:01.250`.
    SinceStart,
    /// Since the line printed before: `+0:00:00.012`.
    Delta,
}

/// The stamps of one run: what `--timestamps`/`--time` asked for, and the lines
/// the relative forms measure from.
#[derive(Debug, Clone)]
pub struct Stamper {
    form: Option<Form>,
    first: Option<DateTime<FixedOffset>>,
    previous: Option<DateTime<FixedOffset>>,
}

#[derive(Debug, Clone, Copy)]
enum Form {
    /// `--timestamps`: the line's `time` as its writer sent it.
    AsSent,
    Chosen(TimeForm),
}

/// What a line whose `time` is missing or unreadable gets in a computed form: it
/// keeps the columns aligned and says there was nothing to show.
const UNKNOWN: &str = "-";

impl Stamper {
    /// Stamps for `--timestamps` (the time as sent) or `--time FORM`; none when
    /// neither was given.
    pub fn new(as_sent: bool, form: Option<TimeForm>) -> Self {
        let form = match (form, as_sent) {
            (Some(f), _) => Some(Form::Chosen(f)),
            (None, true) => Some(Form::AsSent),
            (None, false) => None,
        };
        Stamper {
            form,
            first: None,
            previous: None,
        }
    }

    /// The stamp of the next line printed (written at `time`), or `None` when no
    /// stamp was asked for. Free text from the writer, like the line itself: no
    /// control character of it is returned.
    pub fn stamp(&mut self, time: &str) -> Option<String> {
        let form = match self.form? {
            Form::AsSent => return Some(time.chars().filter(|c| !c.is_control()).collect()),
            Form::Chosen(f) => f,
        };
        let Ok(at) = DateTime::parse_from_rfc3339(time) else {
            return Some(UNKNOWN.to_owned());
        };
        let first = *self.first.get_or_insert(at);
        let previous = self.previous.replace(at).unwrap_or(at);
        Some(match form {
            TimeForm::Utc => at
                .with_timezone(&Utc)
                .to_rfc3339_opts(SecondsFormat::Millis, true),
            TimeForm::Local => at
                .with_timezone(&Local)
                .to_rfc3339_opts(SecondsFormat::Millis, false),
            TimeForm::SinceStart => elapsed(at - first),
            TimeForm::Delta => elapsed(at - previous),
        })
    }
}

/// `+H:MM:SS.mmm` (`-` before a time earlier than the one it is measured from:
/// writers' clocks are theirs).
fn elapsed(d: TimeDelta) -> String {
    let sign = if d < TimeDelta::zero() { '-' } else { '+' };
    let ms = d.num_milliseconds().unsigned_abs();
    let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{sign}{h}:{m:02}:{s:02}.{ms:03}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamps(form: TimeForm, times: &[&str]) -> Vec<String> {
        let mut s = Stamper::new(false, Some(form));
        times.iter().filter_map(|t| s.stamp(t)).collect()
    }

    const TIMES: [&str; 4] = [
        "2026-11-20T10:00:00.000Z",
        "2026-11-20T10:00:01.250Z",
        "2026-11-20T11:02:03.004+01:00",
        "2026-11-20T12:00:00.000Z",
    ];

    #[test]
    fn utc_normalises_every_offset() {
        assert_eq!(
            stamps(TimeForm::Utc, &TIMES),
            [
                "2026-11-20T10:00:00.000Z",
                "2026-11-20T10:00:01.250Z",
                "2026-11-20T10:02:03.004Z",
                "2026-11-20T12:00:00.000Z"
            ]
        );
    }

    #[test]
    fn since_start_and_delta_measure_from_the_first_and_the_previous_line() {
        assert_eq!(
            stamps(TimeForm::SinceStart, &TIMES),
            [
                "+0:00:00.000",
                "+0:00:01.250",
                "+0:02:03.004",
                "+2:00:00.000"
            ]
        );
        assert_eq!(
            stamps(TimeForm::Delta, &TIMES),
            [
                "+0:00:00.000",
                "+0:00:01.250",
                "+0:02:01.754",
                "+1:57:56.996"
            ]
        );
    }

    #[test]
    fn a_clock_that_went_back_is_shown_negative() {
        let back = ["2026-11-20T10:00:05.000Z", "2026-11-20T10:00:04.500Z"];
        assert_eq!(stamps(TimeForm::Delta, &back)[1], "-0:00:00.500");
    }

    #[test]
    fn an_unreadable_time_is_a_dash_and_does_not_move_the_reference() {
        let times = [
            "2026-11-20T10:00:00.000Z",
            "yesterday\x1b[2J",
            "2026-11-20T10:00:02.000Z",
        ];
        assert_eq!(
            stamps(TimeForm::Delta, &times),
            ["+0:00:00.000", "-", "+0:00:02.000"]
        );
    }

    #[test]
    fn as_sent_carries_no_control_character_and_none_is_no_stamp() {
        let mut s = Stamper::new(true, None);
        assert_eq!(s.stamp("\x1b]52;c;x\x07T1").as_deref(), Some("]52;c;xT1"));
        assert_eq!(Stamper::new(false, None).stamp("T1"), None);
    }
}
