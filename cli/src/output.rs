//! Text or JSON on stdout, and a progress bar on stderr for long operations (drawn only when
//! stderr is a terminal).

use std::io::Write;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

/// Where a command's results go.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) json: bool,
}

impl Output {
    pub(crate) fn new(json: bool) -> Self {
        Output { json }
    }

    /// One result: `text` for people, `json` for scripts (one line each).
    pub(crate) fn emit(&self, text: impl FnOnce() -> String, json: impl FnOnce() -> Value) {
        let mut stdout = std::io::stdout().lock();
        let line = if self.json {
            json().to_string()
        } else {
            text()
        };
        // A closed pipe (`| head`) ends the output, not the tool with a panic.
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }

    /// A progress bar of `total` steps (or a spinner when unknown), hidden unless stderr is a
    /// terminal.
    pub(crate) fn progress(&self, total: Option<u64>, what: &str) -> ProgressBar {
        let bar = match total {
            Some(total) => ProgressBar::new(total).with_style(
                ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} ({per_sec})")
                    .expect("a valid template"),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {msg} {pos} ({per_sec})")
                    .expect("a valid template"),
            ),
        };
        bar.set_message(what.to_owned());
        bar
    }
}

/// Data as text when it is UTF-8, else base64: (`"data"` or `"data_base64"`, value).
pub(crate) fn data_field(data: &[u8]) -> (&'static str, String) {
    match std::str::from_utf8(data) {
        Ok(text) => ("data", text.to_owned()),
        Err(_) => {
            use base64::Engine;
            (
                "data_base64",
                base64::engine::general_purpose::STANDARD.encode(data),
            )
        }
    }
}

/// A number with thousands separators, for people.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_data_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(data_field(b"hi"), ("data", "hi".to_owned()));
        assert_eq!(data_field(&[0xff, 0]), ("data_base64", "/wA=".to_owned()));
    }
}
