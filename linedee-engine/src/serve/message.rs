//! What arrives on the queue: S3 event notifications (protocol: the S3 event record, major
//! version 2), S3's test event, and the engine's own messages (a run's tick).

use serde::{Deserialize, Serialize};

/// One message body, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// `s3:TestEvent`, sent when the notification is configured: nothing to do.
    Test,
    /// Object events (usually one).
    Objects(Vec<ObjectEvent>),
    /// A run's tick: fire due timers, repair lost effects, chain the next tick.
    Tick(Tick),
}

/// An object event of an S3 record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectEvent {
    pub(crate) bucket: String,
    /// URL-decoded.
    pub(crate) key: String,
    /// `ObjectCreated:Put` and the like (without the `s3:` prefix).
    pub(crate) name: String,
    pub(crate) etag: Option<String>,
    pub(crate) version_id: Option<String>,
    pub(crate) sequencer: Option<String>,
}

impl ObjectEvent {
    /// An object was written (not removed, tagged or restored).
    pub(crate) fn created(&self) -> bool {
        self.name.starts_with("ObjectCreated:")
    }
}

/// The engine's tick message for a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Tick {
    pub(crate) run_id: String,
    /// Matches the run's state while it is the run's live tick; older ticks are dropped.
    pub(crate) tick: u64,
    /// When it is due (ms since the epoch); one that arrives early (the queue delays at most
    /// 900 s) is sent on again.
    pub(crate) due_ms: i64,
}

/// The body of the engine's own messages.
#[derive(Serialize, Deserialize)]
struct Own {
    ld_tick: Tick,
}

/// Serialises a tick.
pub(crate) fn tick_body(tick: &Tick) -> String {
    serde_json::to_string(&Own {
        ld_tick: tick.clone(),
    })
    .unwrap_or_default()
}

#[derive(Deserialize)]
struct Notification {
    #[serde(rename = "Records")]
    records: Option<Vec<Record>>,
    #[serde(rename = "Event")]
    event: Option<String>,
    ld_tick: Option<Tick>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    event_version: Option<String>,
    event_source: Option<String>,
    event_name: Option<String>,
    s3: Option<S3Entity>,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: Option<BucketEntity>,
    object: Option<ObjectEntity>,
}

#[derive(Deserialize)]
struct BucketEntity {
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectEntity {
    key: Option<String>,
    e_tag: Option<String>,
    version_id: Option<String>,
    sequencer: Option<String>,
}

/// Parses a message body; the error says what is wrong and where (a JSON path).
pub(crate) fn parse(body: &str) -> Result<Message, String> {
    let n: Notification = serde_json::from_str(body).map_err(|e| {
        format!("the message body is not an S3 event notification nor a linedee tick: {e}")
    })?;
    if let Some(tick) = n.ld_tick {
        return Ok(Message::Tick(tick));
    }
    if n.event.as_deref() == Some("s3:TestEvent") {
        return Ok(Message::Test);
    }
    let Some(records) = n.records else {
        return Err(
            "the message has no `Records` (expected an S3 event notification, an s3:TestEvent or a linedee tick)"
                .to_owned(),
        );
    };
    let mut events = Vec::with_capacity(records.len());
    for (i, r) in records.into_iter().enumerate() {
        let at = |field: &str| format!("$.Records[{i}].{field}");
        if let Some(v) = &r.event_version
            && !v.starts_with("2.")
        {
            return Err(format!(
                "{}: event version {v:?} is not supported (expected 2.x)",
                at("eventVersion")
            ));
        }
        if r.event_source.as_deref().is_some_and(|s| s != "aws:s3") {
            // Another service's record on the same queue: not ours.
            continue;
        }
        let name = r
            .event_name
            .ok_or_else(|| format!("{} is missing", at("eventName")))?;
        let s3 = r.s3.ok_or_else(|| format!("{} is missing", at("s3")))?;
        let bucket = s3
            .bucket
            .and_then(|b| b.name)
            .ok_or_else(|| format!("{} is missing", at("s3.bucket.name")))?;
        let object = s3
            .object
            .ok_or_else(|| format!("{} is missing", at("s3.object")))?;
        let raw = object
            .key
            .ok_or_else(|| format!("{} is missing", at("s3.object.key")))?;
        let key = url_decode(&raw).ok_or_else(|| {
            format!(
                "{}: {raw:?} is not a form-URL-encoded key",
                at("s3.object.key")
            )
        })?;
        events.push(ObjectEvent {
            bucket,
            key,
            name: name.trim_start_matches("s3:").to_owned(),
            etag: object.e_tag.filter(|e| !e.is_empty()),
            version_id: object.version_id.filter(|v| !v.is_empty() && v != "null"),
            sequencer: object.sequencer.filter(|s| !s.is_empty()),
        });
    }
    Ok(Message::Objects(events))
}

/// Decodes a form-URL-encoded key (`+` is a space, `%XX` a byte); `None` when it is not UTF-8
/// or an escape is malformed.
pub(crate) fn url_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Orders two sequencers of one key: the shorter is right-padded with zeros.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn sequencer_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let n = a.len().max(b.len());
    format!("{a:0<n$}").cmp(&format!("{b:0<n$}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUT: &str = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1",
        "eventTime":"2026-12-02T00:00:00.000Z","eventName":"ObjectCreated:Put",
        "userIdentity":{"principalId":"AWS:X"},"requestParameters":{"sourceIPAddress":"1.2.3.4"},
        "responseElements":{"x-amz-request-id":"R","x-amz-id-2":"I"},
        "s3":{"s3SchemaVersion":"1.0","configurationId":"ld","bucket":{"name":"b","ownerIdentity":{"principalId":"X"},"arn":"arn:aws:s3:::b"},
        "object":{"key":"in/red+flower%2B1.jpg","size":3,"eTag":"abc","versionId":"v1","sequencer":"0055AED6DCD90281E5"}}}]}"#;

    #[test]
    fn an_s3_record_parses_with_its_key_decoded() {
        let Ok(Message::Objects(events)) = parse(PUT) else {
            panic!("parses");
        };
        assert_eq!(
            events,
            vec![ObjectEvent {
                bucket: "b".into(),
                key: "in/red flower+1.jpg".into(),
                name: "ObjectCreated:Put".into(),
                etag: Some("abc".into()),
                version_id: Some("v1".into()),
                sequencer: Some("0055AED6DCD90281E5".into()),
            }]
        );
        assert!(events[0].created());
    }

    #[test]
    fn the_test_event_and_ticks_are_recognised() {
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-12-02T00:00:00Z","Bucket":"b","RequestId":"R","HostId":"H"}"#;
        assert_eq!(parse(test), Ok(Message::Test));
        let tick = Tick {
            run_id: "R1".into(),
            tick: 3,
            due_ms: 42,
        };
        assert_eq!(parse(&tick_body(&tick)), Ok(Message::Tick(tick)));
    }

    #[test]
    fn malformed_bodies_say_what_and_where() {
        let e = parse("not json").expect_err("not json");
        assert!(e.contains("not an S3 event notification"), "{e}");
        let e = parse(r#"{"Hello":1}"#).expect_err("no records");
        assert!(e.contains("`Records`"), "{e}");
        let e = parse(r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{}}}]}"#)
            .expect_err("no key");
        assert_eq!(e, "$.Records[0].s3.object.key is missing");
        let e = parse(r#"{"Records":[{"eventVersion":"3.0","eventSource":"aws:s3"}]}"#)
            .expect_err("version");
        assert!(e.starts_with("$.Records[0].eventVersion"), "{e}");
        let e = parse(r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"%zz"}}}]}"#)
            .expect_err("bad escape");
        assert!(e.contains("form-URL-encoded"), "{e}");
    }

    #[test]
    fn sequencers_compare_right_padded() {
        use std::cmp::Ordering::*;
        assert_eq!(
            sequencer_cmp("0055AED6DCD90281E5", "0055AED6DCD90281E6"),
            Less
        );
        assert_eq!(sequencer_cmp("0055AED6DCD9028", "0055AED6DCD90281E5"), Less);
        assert_eq!(sequencer_cmp("00A", "00A000"), Equal);
    }

    #[test]
    fn url_decoding() {
        assert_eq!(url_decode("a%2Fb+c").as_deref(), Some("a/b c"));
        assert_eq!(url_decode("%E2%9C%93").as_deref(), Some("✓"));
        assert_eq!(url_decode("%"), None);
        assert_eq!(url_decode("%FF"), None);
    }
}
