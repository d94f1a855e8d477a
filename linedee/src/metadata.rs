//! S3 user-metadata rules shared by every writer and reader (protocol §2.2).
//!
//! - Keys are lowercase and keep their underscore (`x-amz-meta-ld_run`).
//! - All user metadata of one object (UTF-8 bytes of every key plus value) fits in [`LIMIT`].
//! - JSON in metadata is compact and ASCII-only ([`ascii_json`]).
//! - Readers decode RFC 2047 encoded words ([`decode_rfc2047`]), which S3 returns for non-ASCII.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Serialize;

use crate::error::{Error, Result};

/// S3's budget for user metadata: 2 KB of keys plus values.
pub const LIMIT: usize = 2048;

/// Trigger: the body is the workflow (`ld_run: true`).
pub const LD_RUN: &str = "ld_run";
/// Trigger: the workflow is this metadata value; the object is its input.
pub const LD_CODE: &str = "ld_code";
/// The submitter's run id on a trigger object.
pub const LD_RUN_ID: &str = "ld_run_id";
/// On an output object: the task it proves.
pub const LD_TASK_ID: &str = "ld_task_id";
/// On an output object: the task's small JSON state record.
pub const LD_STATE: &str = "ld_state";

/// Bytes of user metadata as S3 counts them: every key plus every value, UTF-8.
pub fn size<'a>(metadata: impl IntoIterator<Item = (&'a String, &'a String)>) -> usize {
    metadata.into_iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// Fails when `metadata` is over [`LIMIT`], naming the size and the limit.
pub fn check_size(metadata: &BTreeMap<String, String>) -> Result<()> {
    check_size_with_hint(
        metadata,
        "keep user metadata small; put large data in the object body",
    )
}

pub(crate) fn check_size_with_hint(
    metadata: &BTreeMap<String, String>,
    hint: &'static str,
) -> Result<()> {
    let size = size(metadata);
    if size > LIMIT {
        return Err(Error::MetadataTooLarge {
            size,
            limit: LIMIT,
            hint,
        });
    }
    Ok(())
}

/// Serialises `value` as compact, ASCII-only JSON (non-ASCII escaped as `\uXXXX`).
///
/// ```
/// let s = linedee::metadata::ascii_json(&serde_json::json!({"city": "Zürich 🚀"})).unwrap();
/// assert_eq!(s, r#"{"city":"Z\u00fcrich \ud83d\ude80"}"#);
/// ```
pub fn ascii_json<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    let json = serde_json::to_string(value).map_err(|source| Error::Serialize {
        what: "metadata value",
        source,
    })?;
    Ok(escape_non_ascii(&json))
}

/// Escapes every non-ASCII character of a JSON text as `\uXXXX` (surrogate pairs above U+FFFF).
/// In valid JSON such characters only occur inside strings, so the result means the same.
pub(crate) fn escape_non_ascii(json: &str) -> String {
    if json.is_ascii() {
        return json.to_owned();
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// Decodes RFC 2047 encoded words (`=?UTF-8?B?...?=`, `=?UTF-8?Q?...?=`), as S3 returns
/// non-ASCII metadata values. Text that is not encoded, or not validly, is returned unchanged.
///
/// ```
/// use linedee::metadata::decode_rfc2047;
/// assert_eq!(decode_rfc2047("=?UTF-8?B?WsO8cmljaA==?="), "Zürich");
/// assert_eq!(decode_rfc2047("=?utf-8?Q?Z=C3=BCrich_ok?="), "Zürich ok");
/// assert_eq!(decode_rfc2047("plain"), "plain");
/// ```
pub fn decode_rfc2047(value: &str) -> Cow<'_, str> {
    if !value.contains("=?") {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    let mut last_was_word = false;
    while let Some(start) = rest.find("=?") {
        let (before, candidate) = rest.split_at(start);
        match decode_word(candidate) {
            Some((decoded, used)) => {
                // Whitespace between two adjacent encoded words is not part of the text.
                if !(last_was_word && before.chars().all(char::is_whitespace)) {
                    out.push_str(before);
                }
                out.push_str(&decoded);
                rest = &candidate[used..];
                last_was_word = true;
            }
            None => {
                out.push_str(before);
                out.push_str("=?");
                rest = &candidate[2..];
                last_was_word = false;
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Decodes one encoded word at the start of `s`; returns the text and the bytes consumed.
fn decode_word(s: &str) -> Option<(String, usize)> {
    let inner = s.strip_prefix("=?")?;
    let (charset, inner) = inner.split_once('?')?;
    let (encoding, inner) = inner.split_once('?')?;
    let end = inner.find("?=")?;
    let text = &inner[..end];
    if text.contains(char::is_whitespace) {
        return None;
    }
    // An RFC 2231 language suffix (`UTF-8*en`) is allowed.
    let charset = charset.split('*').next()?.to_ascii_lowercase();
    let bytes = match encoding {
        "B" | "b" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?,
        "Q" | "q" => decode_q(text)?,
        _ => return None,
    };
    let decoded = match charset.as_str() {
        "utf-8" | "utf8" | "us-ascii" => String::from_utf8(bytes).ok()?,
        "iso-8859-1" | "latin1" => bytes.iter().map(|&b| char::from(b)).collect(),
        _ => return None,
    };
    let used = 2 + charset_len(s) + 1 + encoding.len() + 1 + end + 2;
    Some((decoded, used))
}

fn charset_len(s: &str) -> usize {
    s[2..].find('?').unwrap_or(0)
}

fn decode_q(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'_' => out.push(b' '),
            b'=' => {
                let hi = (bytes.next()? as char).to_digit(16)?;
                let lo = (bytes.next()? as char).to_digit(16)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
            }
            b => out.push(b),
        }
    }
    Some(out)
}

/// Decodes every value of a metadata map and lowercases the keys.
pub fn decode_map<'a>(
    metadata: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> BTreeMap<String, String> {
    metadata
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), decode_rfc2047(v).into_owned()))
        .collect()
}

/// A fresh run id: a ULID, 26 characters of Crockford base32.
pub fn new_run_id() -> String {
    ulid::Ulid::new().to_string()
}

/// Is `id` a valid run id, `[0-9A-Za-z_-]{1,64}`?
pub fn is_valid_run_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_counts_keys_and_values_in_utf8_bytes() {
        let m: BTreeMap<String, String> = [("ld_code".to_owned(), "é".repeat(10))].into();
        assert_eq!(size(&m), 7 + 20);
        check_size(&m).unwrap();
        let big: BTreeMap<String, String> = [("k".to_owned(), "x".repeat(LIMIT))].into();
        let err = check_size(&big).unwrap_err().to_string();
        assert!(
            err.contains("2049 bytes, over the 2048-byte limit"),
            "{err}"
        );
    }

    #[test]
    fn ascii_json_is_compact_and_ascii() {
        let s = ascii_json(&serde_json::json!({"a": [1, 2], "b": "ü\u{1F680}\"x\""})).unwrap();
        assert!(s.is_ascii());
        assert_eq!(s, r#"{"a":[1,2],"b":"\u00fc\ud83d\ude80\"x\""}"#);
        let back: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back["b"], "ü\u{1F680}\"x\"");
    }

    #[test]
    fn rfc2047_words_and_edge_cases() {
        assert_eq!(
            decode_rfc2047("=?UTF-8?B?WsO8cmljaA==?= =?UTF-8?B?WsO8cmljaA==?="),
            "ZürichZürich"
        );
        assert_eq!(decode_rfc2047("a =?UTF-8?Q?=C3=BC?= b"), "a ü b");
        assert_eq!(decode_rfc2047("=?ISO-8859-1?Q?caf=E9?="), "café");
        // Not encoded words: left alone.
        assert_eq!(decode_rfc2047("x=?y"), "x=?y");
        assert_eq!(decode_rfc2047("=?UTF-8?X?abc?="), "=?UTF-8?X?abc?=");
        assert_eq!(decode_rfc2047("=?UTF-8?B?!!!?="), "=?UTF-8?B?!!!?=");
        assert_eq!(decode_rfc2047("=?UTF-8?Q?=ZZ?="), "=?UTF-8?Q?=ZZ?=");
        assert_eq!(decode_rfc2047("=?UTF-8?B?/w==?="), "=?UTF-8?B?/w==?=");
        assert_eq!(decode_rfc2047("=?"), "=?");
        assert_eq!(decode_rfc2047("=?é?B?é?="), "=?é?B?é?=");
    }

    #[test]
    fn run_ids() {
        let id = new_run_id();
        assert_eq!(id.len(), 26);
        assert!(is_valid_run_id(&id));
        assert!(is_valid_run_id("my-run_1"));
        assert!(!is_valid_run_id(""));
        assert!(!is_valid_run_id("a.b"));
        assert!(!is_valid_run_id(&"a".repeat(65)));
    }
}
