//! `linedee cloud check`'s live items: the permissions the engine needs, probed without
//! changing anything, and an event's round trip through a running replica.
//!
//! - S3: `ListObjectsV2` of the state prefix; `GetObject` of a key that does not exist (404
//!   is allowed, 403 is not); `PutObject` with `If-Match` on a key that does not exist, which
//!   S3 refuses with 404 before writing anything.
//! - SQS: `SendMessage` of an `s3:TestEvent` (the engine drops it); `ChangeMessageVisibility`
//!   and `DeleteMessage` with a receipt handle that names no message. `ReceiveMessage` is not
//!   probed: a receive counts towards a message's dead-letter limit.
//! - STS, when credentials are rotated: `AssumeRole` of the role for the lifetime asked (the
//!   minted set is dropped).
//! - The round trip: a probe object under [`PROBE_PREFIX`] makes an event; a replica answers
//!   it beside it (`….answer.json`), as it answers control requests. Both are deleted after.

use std::time::{Duration, Instant};

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;

use super::check::CheckItem;
use super::rotate::Rotation;

/// Where `cloud check` writes its probe (under the control prefix, so the notification rule
/// for control requests covers it; `.check` is no run id).
pub(crate) const PROBE_PREFIX: &str = "ld/control/.check/";

/// The answer's key for a probe's key.
pub(crate) fn probe_answer_key(probe_key: &str) -> Option<String> {
    let nonce = probe_key
        .strip_prefix(PROBE_PREFIX)?
        .strip_suffix(".json")?;
    (!nonce.is_empty() && !nonce.contains('/') && !nonce.ends_with(".answer"))
        .then(|| format!("{PROBE_PREFIX}{nonce}.answer.json"))
}

/// Whether an error says the credentials may not.
fn denied<E: ProvideErrorMetadata>(e: &aws_sdk_s3::error::SdkError<E>) -> bool {
    e.raw_response().is_some_and(|r| r.status().as_u16() == 403)
        || matches!(e.code(), Some("AccessDenied" | "AccessDeniedException"))
}

fn nonce() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Probes the engine's permissions with these clients' credentials (run it with the
/// engine's, as `linedee serve` gets them). `rotation` adds the STS probe.
pub async fn probe_permissions(
    s3: &aws_sdk_s3::Client,
    sqs: &aws_sdk_sqs::Client,
    sts: Option<(&aws_sdk_sts::Client, &Rotation)>,
    bucket: &str,
    queue_url: &str,
    state_prefix: &str,
) -> Vec<CheckItem> {
    let absent = format!("{state_prefix}check/absent-{}", nonce());
    let mut refused = Vec::new();
    let mut other = Vec::new();
    let mut note = |op: &str, e: Option<(bool, String)>| match e {
        Some((true, _)) => refused.push(op.to_owned()),
        Some((false, why)) => other.push(format!("{op}: {why}")),
        None => {}
    };
    let list = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(state_prefix)
        .max_keys(1)
        .send()
        .await;
    note(
        "s3:ListBucket",
        list.err().map(|e| (denied(&e), super::s3::brief(&e))),
    );
    let get = s3.get_object().bucket(bucket).key(&absent).send().await;
    note(
        "s3:GetObject",
        get.err()
            .filter(|e| e.raw_response().is_none_or(|r| r.status().as_u16() != 404))
            .map(|e| (denied(&e), super::s3::brief(&e))),
    );
    let put = s3
        .put_object()
        .bucket(bucket)
        .key(&absent)
        .if_match("\"linedee-check\"")
        .body(ByteStream::from_static(b"{}"))
        .send()
        .await;
    match put {
        // Written after all (a store that ignores If-Match): take it back.
        Ok(_) => {
            let _ = s3.delete_object().bucket(bucket).key(&absent).send().await;
        }
        Err(e) => note(
            "s3:PutObject",
            Some(&e)
                .filter(|e| {
                    e.raw_response()
                        .is_none_or(|r| !matches!(r.status().as_u16(), 404 | 412))
                })
                .map(|e| (denied(e), super::s3::brief(e))),
        ),
    }
    let mut items = vec![verdict(
        "engine permissions (S3)",
        &refused,
        &other,
        "ListBucket, GetObject and PutObject (conditional) allowed",
        &format!(
            "allow the engine {} on arn:aws:s3:::{bucket} and arn:aws:s3:::{bucket}/*",
            refused.join(", ")
        ),
    )];

    let (mut refused, mut other) = (Vec::new(), Vec::new());
    let mut note = |op: &str, denied: bool, why: String| {
        if denied {
            refused.push(op.to_owned());
        } else {
            other.push(format!("{op}: {why}"));
        }
    };
    let test_event = serde_json::json!({
        "Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": bucket,
        "RequestId": "linedee-cloud-check", "HostId": "linedee-cloud-check",
    });
    if let Err(e) = sqs
        .send_message()
        .queue_url(queue_url)
        .message_body(test_event.to_string())
        .send()
        .await
    {
        note("sqs:SendMessage", denied(&e), super::s3::brief(&e));
    }
    let bogus = "linedee-cloud-check-no-such-receipt";
    if let Err(e) = sqs
        .change_message_visibility()
        .queue_url(queue_url)
        .receipt_handle(bogus)
        .visibility_timeout(0)
        .send()
        .await
        && denied(&e)
    {
        note("sqs:ChangeMessageVisibility", true, String::new());
    }
    if let Err(e) = sqs
        .delete_message()
        .queue_url(queue_url)
        .receipt_handle(bogus)
        .send()
        .await
        && denied(&e)
    {
        note("sqs:DeleteMessage", true, String::new());
    }
    items.push(verdict(
        "engine permissions (SQS)",
        &refused,
        &other,
        "SendMessage, ChangeMessageVisibility and DeleteMessage allowed (ReceiveMessage is not probed: a receive counts towards the dead-letter limit)",
        &format!("allow the engine {} (and sqs:ReceiveMessage, sqs:GetQueueAttributes) on the queue and its dead-letter queue", refused.join(", ")),
    ));

    if let Some((sts, rotation)) = sts {
        let lifetime = rotation.lifetime_of();
        let assumed = sts
            .assume_role()
            .role_arn(&rotation.role_arn)
            .role_session_name("linedee-cloud-check")
            .duration_seconds(i32::try_from(lifetime.as_secs()).unwrap_or(43_200))
            .send()
            .await;
        items.push(match assumed {
            Ok(_) => CheckItem::ok(
                "rotation role",
                format!("{} can be assumed for {} s", rotation.role_arn, lifetime.as_secs()),
            ),
            Err(e) => CheckItem::wrong(
                "rotation role",
                format!("{} cannot be assumed for {} s ({})", rotation.role_arn, lifetime.as_secs(), super::s3::brief(&e)),
                format!(
                    "let the engine's principal sts:AssumeRole it (in the role's trust policy and the principal's policy), and set the role's maximum session duration to at least {} s: aws iam update-role --role-name NAME --max-session-duration {}",
                    lifetime.as_secs(),
                    lifetime.as_secs().max(3600)
                ),
            ),
        });
    }
    items
}

fn verdict(name: &str, refused: &[String], other: &[String], fine: &str, fix: &str) -> CheckItem {
    if !refused.is_empty() {
        CheckItem::wrong(name, format!("denied: {}", refused.join(", ")), fix)
    } else if !other.is_empty() {
        CheckItem::wrong(
            name,
            format!("could not be probed: {}", other.join("; ")),
            "check the endpoint and the network, then run the check again",
        )
    } else {
        CheckItem::ok(name, fine)
    }
}

/// Writes a probe object and waits up to `wait` for a replica to answer its event.
pub async fn round_trip(s3: &aws_sdk_s3::Client, bucket: &str, wait: Duration) -> CheckItem {
    const NAME: &str = "event round trip";
    let key = format!("{PROBE_PREFIX}{}.json", nonce());
    let Some(answer) = probe_answer_key(&key) else {
        return CheckItem::wrong(NAME, "no probe key", "a bug: report it");
    };
    let started = Instant::now();
    if let Err(e) = s3
        .put_object()
        .bucket(bucket)
        .key(&key)
        .content_type("application/json")
        .body(ByteStream::from_static(b"{\"check\":true}"))
        .send()
        .await
    {
        return CheckItem::wrong(
            NAME,
            format!(
                "the probe s3://{bucket}/{key} cannot be written ({})",
                super::s3::brief(&e)
            ),
            "the checking credentials need s3:PutObject on the bucket",
        );
    }
    let mut answered = None;
    while started.elapsed() < wait {
        if let Ok(o) = s3.get_object().bucket(bucket).key(&answer).send().await {
            let body = o
                .body
                .collect()
                .await
                .map(|b| b.into_bytes())
                .unwrap_or_default();
            answered = Some(
                serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["replica"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "a replica".to_owned()),
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Both go, answered or not: a replica that gets the event later finds no probe and
    // writes nothing.
    for k in [&key, &answer] {
        let _ = s3.delete_object().bucket(bucket).key(k).send().await;
    }
    match answered {
        Some(replica) => CheckItem::ok(
            NAME,
            format!(
                "a probe's event reached {replica} and was answered in {} ms",
                started.elapsed().as_millis()
            ),
        ),
        None => CheckItem::wrong(
            NAME,
            format!("no replica answered the probe within {} s", wait.as_secs()),
            format!(
                "start `linedee serve` (a running replica answers), and make sure the bucket notifies the queue of writes under {PROBE_PREFIX} (the rule for ld/control/ covers it; see `bucket notification`)"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_probes_get_answers() {
        assert_eq!(
            probe_answer_key("ld/control/.check/ab12.json").as_deref(),
            Some("ld/control/.check/ab12.answer.json")
        );
        assert_eq!(probe_answer_key("ld/control/.check/ab12.answer.json"), None);
        assert_eq!(probe_answer_key("ld/control/.check/.json"), None);
        assert_eq!(probe_answer_key("ld/control/.check/a/b.json"), None);
        assert_eq!(probe_answer_key("ld/control/R1/x.json"), None);
    }
}
