//! Foreman-style console output: each task line prefixed with its name, in colour on a TTY.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

/// Where task output is echoed.
#[derive(Debug, Clone)]
pub struct Console {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    colour: bool,
    lock: std::sync::Mutex<()>,
}

const COLOURS: &[&str] = &["36", "33", "32", "35", "34", "96", "93", "92", "95", "94"];

impl Console {
    /// Echo to stdout, in colour when stdout is a terminal.
    pub fn stdout() -> Self {
        Console {
            inner: Some(Arc::new(Inner {
                colour: std::io::stdout().is_terminal(),
                lock: std::sync::Mutex::new(()),
            })),
        }
    }

    /// No echo (logs are still kept).
    pub fn quiet() -> Self {
        Console { inner: None }
    }

    pub(crate) fn stream(&self, label: &str, stderr: bool) -> Stream {
        let hash = label
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        Stream {
            console: self.inner.clone(),
            prefix: format!("{label}{}", if stderr { "!" } else { "" }),
            colour: COLOURS[hash % COLOURS.len()],
        }
    }
}

/// One task stream's writer.
pub(crate) struct Stream {
    console: Option<Arc<Inner>>,
    prefix: String,
    colour: &'static str,
}

impl Stream {
    pub(crate) fn line(&mut self, line: &[u8]) {
        let Some(inner) = &self.console else { return };
        let text = String::from_utf8_lossy(line);
        let time = time::OffsetDateTime::now_utc();
        let (h, m, s) = time.to_hms();
        let _guard = inner.lock.lock();
        let mut out = std::io::stdout().lock();
        let _ = if inner.colour {
            writeln!(
                out,
                "\x1b[{}m{h:02}:{m:02}:{s:02} {:<24} |\x1b[0m {text}",
                self.colour, self.prefix
            )
        } else {
            writeln!(out, "{h:02}:{m:02}:{s:02} {:<24} | {text}", self.prefix)
        };
    }
}
