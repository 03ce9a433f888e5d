//! Results: a printed summary, and a Markdown section appended to a file
//! (the machine, the exact command line, the figures, the targets).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::procfs::Machine;

/// A goal from the benchmark's targets and how the run compares.
#[derive(Debug, Clone)]
pub struct Goal {
    /// What is measured.
    pub what: String,
    /// The goal, e.g. `≤ 16 KiB`.
    pub goal: String,
    /// The figure measured.
    pub measured: String,
    /// Met, not met, or not measured.
    pub met: Option<bool>,
}

impl Goal {
    /// The exactness goal of a scenario whose runs report their own
    /// figures above: met when `exact` (every run 0 lost, duplicated,
    /// reordered).
    pub fn exact(what: &str, exact: bool) -> Self {
        let measured = if exact { "yes" } else { "NO (see above)" };
        Self::new(
            what,
            "0 lost, 0 duplicated, 0 reordered",
            measured.into(),
            Some(exact),
        )
    }

    /// A goal row.
    pub fn new(what: &str, goal: &str, measured: String, met: Option<bool>) -> Self {
        Self {
            what: what.into(),
            goal: goal.into(),
            measured,
            met,
        }
    }

    fn verdict(&self) -> &'static str {
        match self.met {
            Some(true) => "met",
            Some(false) => "not met",
            None => "not measured",
        }
    }
}

/// The results of one benchmark run.
#[derive(Debug, Clone)]
pub struct Report {
    title: String,
    command: String,
    machine: Machine,
    figures: Vec<(String, String)>,
    goals: Vec<Goal>,
}

impl Report {
    /// An empty report titled `title`.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            command: String::new(),
            machine: Machine::describe(),
            figures: Vec::new(),
            goals: Vec::new(),
        }
    }

    /// Sets the command line that produced it.
    pub fn with_command(mut self, command: String) -> Self {
        self.command = command;
        self
    }

    /// Adds a figure.
    pub fn figure(&mut self, label: &str, value: impl Into<String>) {
        self.figures.push((label.into(), value.into()));
    }

    /// Adds a goal row.
    pub fn goal(&mut self, goal: Goal) {
        self.goals.push(goal);
    }

    /// The printed summary.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "\n== {} ==", self.title);
        let _ = writeln!(s, "machine : {}", self.machine.summary());
        let _ = writeln!(s, "command : {}", self.command);
        let width = self
            .figures
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0);
        for (label, value) in &self.figures {
            let _ = writeln!(s, "  {label:<width$}  {value}");
        }
        if !self.goals.is_empty() {
            let _ = writeln!(s, "targets:");
            for g in &self.goals {
                let _ = writeln!(
                    s,
                    "  [{:^12}] {}: {} (goal {})",
                    g.verdict(),
                    g.what,
                    g.measured,
                    g.goal
                );
            }
        }
        s
    }

    /// The Markdown section.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "\n### {} ({})\n", self.title, utc_now());
        let _ = writeln!(s, "- Machine: {}", self.machine.summary());
        let _ = writeln!(s, "- Command: `{}`\n", self.command);
        let _ = writeln!(s, "| Figure | Value |\n|---|---|");
        for (label, value) in &self.figures {
            let _ = writeln!(s, "| {} | {} |", escape(label), escape(value));
        }
        if !self.goals.is_empty() {
            let _ = writeln!(
                s,
                "\n| Target | Goal | Measured | Result |\n|---|---|---|---|"
            );
            for g in &self.goals {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} |",
                    escape(&g.what),
                    escape(&g.goal),
                    escape(&g.measured),
                    g.verdict()
                );
            }
        }
        s
    }

    /// Appends the Markdown section to `path`, creating the file if needed.
    pub fn append_markdown(&self, path: &Path) -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        f.write_all(self.markdown().as_bytes())
    }
}

fn escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// This process's command line, shell-quoted where needed.
pub fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `YYYY-MM-DD HH:MM UTC`, now.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// `12.3` with one decimal, or `n/a`.
pub fn opt1(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_and_markdown() {
        let mut r = Report::new("t").with_command("herald-loadgen longpoll".into());
        r.figure("p99", "3.0 ms");
        r.goal(Goal::new(
            "p99 wake latency",
            "< 20 ms",
            "3.0 ms".into(),
            Some(true),
        ));
        assert!(r.text().contains("[    met     ] p99 wake latency"));
        let md = r.markdown();
        assert!(
            md.contains("| p99 | 3.0 ms |")
                && md.contains("| p99 wake latency | < 20 ms | 3.0 ms | met |")
        );
        assert!(utc_now().ends_with("UTC") && utc_now().starts_with("20"));
    }
}
