//! The failure line a task prints: `{"error_type":…,"error_message":…}` (protocol §6).

use std::path::Path;

use std::io::{Read as _, Seek as _};

/// How much of the end of a log is searched for the diagnostic line.
const TAIL: u64 = 64 * 1024;

/// The last diagnostic line of a log, as `error_type: error_message`, or else its last line.
/// Blocking (one small read of the log's end).
pub(crate) fn from_log(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(std::io::SeekFrom::Start(len.saturating_sub(TAIL)))
        .ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    parse(&text)
}

/// [`from_log`] for a log held in memory.
pub(crate) fn from_bytes(log: &[u8]) -> Option<String> {
    let tail = usize::try_from(TAIL).map_or(0, |tail| log.len().saturating_sub(tail));
    parse(&String::from_utf8_lossy(&log[tail..]))
}

pub(crate) fn parse(text: &str) -> Option<String> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    for line in lines.iter().rev() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
            && let (Some(t), Some(m)) = (v["error_type"].as_str(), v["error_message"].as_str())
        {
            return Some(format!("{t}: {m}"));
        }
    }
    lines.last().map(|l| {
        let mut s: String = l.chars().take(300).collect();
        if l.chars().count() > 300 {
            s.push('…');
        }
        format!("last output: {s}")
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_diagnostic_line_or_the_last_line() {
        let log = "starting\n{\"error_type\":\"NotFound\",\"error_message\":\"no input\"}\nbye\n";
        assert_eq!(super::parse(log).as_deref(), Some("NotFound: no input"));
        assert_eq!(super::parse("a\nb\n").as_deref(), Some("last output: b"));
        assert_eq!(super::parse(""), None);
        assert_eq!(
            super::from_bytes(log.as_bytes()).as_deref(),
            Some("NotFound: no input")
        );
    }
}
