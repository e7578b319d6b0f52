//! A markdown [`Table`] and the helpers that format the numbers in its cells.

use crate::measure::{DiskUse, Summary};

/// Disk use as "12.3 MB" (allocated blocks), with the apparent size where it differs by
/// more than a percent.
pub(crate) fn megabytes(d: DiskUse) -> String {
    let allocated = format!("{:.1} MB", d.allocated as f64 / 1e6);
    if d.apparent.abs_diff(d.allocated) * 100 > d.allocated.max(1) {
        format!("{allocated} ({:.1} MB apparent)", d.apparent as f64 / 1e6)
    } else {
        allocated
    }
}

/// A markdown table with a bold title line.
pub(crate) struct Table {
    title: String,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(title: &str, headers: &[&str]) -> Table {
        Table { title: title.into(), headers: headers.iter().map(|h| (*h).into()).collect(), rows: Vec::new() }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        assert_eq!(cells.len(), self.headers.len(), "a row has one cell per column");
        self.rows.push(cells);
    }

    /// Prints the table with padded columns: the first left-aligned, the rest right-aligned.
    pub(crate) fn print(&self) {
        let width = |i: usize| {
            let cells = self.rows.iter().map(|r| r[i].chars().count());
            cells.chain([self.headers[i].chars().count(), 3]).max().unwrap_or(3)
        };
        let widths: Vec<usize> = (0..self.headers.len()).map(width).collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (cell, &w))| if i == 0 { format!("{cell:<w$}") } else { format!("{cell:>w$}") })
                .collect();
            format!("| {} |", padded.join(" | "))
        };
        let rule: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(i, &w)| if i == 0 { "-".repeat(w + 2) } else { format!("{}:", "-".repeat(w + 1)) })
            .collect();
        println!("**{}**", self.title);
        println!();
        println!("{}", line(&self.headers));
        println!("|{}|", rule.join("|"));
        for row in &self.rows {
            println!("{}", line(row));
        }
        println!();
    }
}

/// `min–max`, each formatted by `format`.
pub(crate) fn range(s: Summary, format: impl Fn(f64) -> String) -> String {
    format!("{}–{}", format(s.min), format(s.max))
}

/// A count or rate: whole with thousands separators from 100 up, one decimal below.
pub(crate) fn number(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    if value.abs() < 100.0 {
        return format!("{value:.1}");
    }
    let digits = format!("{:.0}", value.abs());
    let mut grouped = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if value < 0.0 { format!("-{grouped}") } else { grouped }
}

/// A time in seconds, in the unit that suits it.
pub(crate) fn seconds(secs: f64) -> String {
    if secs >= 1.0 {
        format!("{secs:.2} s")
    } else if secs >= 1e-3 {
        format!("{:.2} ms", secs * 1e3)
    } else {
        format!("{:.1} µs", secs * 1e6)
    }
}

pub(crate) fn ratio(value: f64) -> String {
    format!("{value:.2}×")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(number(1_234_567.4), "1,234,567");
        assert_eq!(number(999.6), "1,000");
        assert_eq!(number(100.0), "100");
        assert_eq!(number(42.24), "42.2");
    }

    #[test]
    fn seconds_pick_a_unit() {
        assert_eq!(seconds(2.5), "2.50 s");
        assert_eq!(seconds(0.00192), "1.92 ms");
        assert_eq!(seconds(0.0000301), "30.1 µs");
    }
}
