//! `linedee cloud check`: inspects a `serve` deployment with the operator's AWS credentials
//! and says, item by item, what holds and what to fix (the exact command or policy).
//!
//! The items: the bucket exists and is versioned; its notification sends object-created
//! events to the queue (and which prefixes it covers); the queue's policy lets the bucket
//! send; the queue has a dead-letter queue with a receive limit; the visibility timeout suits
//! the engine. Nothing is changed.

use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;

use super::s3::brief;

/// One checked item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckItem {
    /// What was checked ("bucket versioning").
    pub name: String,
    /// Whether it holds.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// The fix, when it does not hold: a command or a document to apply.
    pub fix: Option<String>,
}

impl CheckItem {
    pub(super) fn ok(name: &str, detail: impl Into<String>) -> Self {
        CheckItem {
            name: name.to_owned(),
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    pub(super) fn wrong(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        CheckItem {
            name: name.to_owned(),
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// The queue policy statement that lets `bucket` send to `queue_arn`.
pub fn queue_policy(queue_arn: &str, bucket: &str) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "linedee-s3-events",
            "Effect": "Allow",
            "Principal": {"Service": "s3.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": format!("arn:aws:s3:::{bucket}")}}
        }]
    }))
    .unwrap_or_default()
}

/// Checks the deployment of `bucket` and the queue at `queue_url`.
pub async fn check(
    s3: &aws_sdk_s3::Client,
    sqs: &aws_sdk_sqs::Client,
    bucket: &str,
    queue_url: &str,
) -> Vec<CheckItem> {
    let mut items = Vec::new();
    // The bucket.
    if let Err(e) = s3.head_bucket().bucket(bucket).send().await {
        items.push(CheckItem::wrong(
            "bucket",
            format!("`{bucket}` cannot be reached ({})", brief(&e)),
            format!("aws s3api create-bucket --bucket {bucket}   (or fix LD_S3_BUCKET, or the credentials' s3:ListBucket)"),
        ));
        return items;
    }
    items.push(CheckItem::ok("bucket", format!("`{bucket}` exists")));
    let versioned = super::s3::versioning_status(s3, bucket).await;
    items.push(if versioned.as_deref() == Some("Enabled") {
        CheckItem::ok("bucket versioning", "enabled: one event per write, read by version")
    } else {
        CheckItem::wrong(
            "bucket versioning",
            format!(
                "{}: two writes to one key at once may give one event, and an event's object may be overwritten before it is read",
                versioned.as_deref().unwrap_or("never enabled")
            ),
            format!(
                "aws s3api put-bucket-versioning --bucket {bucket} --versioning-configuration Status=Enabled"
            ),
        )
    });

    // The queue.
    let attrs = match sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
    {
        Ok(a) => a.attributes().cloned().unwrap_or_default(),
        Err(e) => {
            let (code, message) = {
                use aws_sdk_sqs::error::ProvideErrorMetadata;
                (e.code().map(str::to_owned), e.message().map(str::to_owned))
            };
            items.push(CheckItem::wrong(
                "queue",
                format!(
                    "{queue_url} cannot be read ({})",
                    message.or(code).unwrap_or_else(|| "no answer".to_owned())
                ),
                "aws sqs create-queue --queue-name ld-events   (or fix LD_SQS_QUEUE_URL)",
            ));
            return items;
        }
    };
    let arn = attrs
        .get(&QueueAttributeName::QueueArn)
        .cloned()
        .unwrap_or_default();
    items.push(CheckItem::ok("queue", arn.clone()));
    if attrs.contains_key(&QueueAttributeName::FifoQueue) {
        items.push(CheckItem::wrong(
            "queue type",
            "a FIFO queue: S3 cannot notify FIFO queues",
            "aws sqs create-queue --queue-name ld-events   (a standard queue)",
        ));
    }
    items.push(notification(s3, bucket, &arn).await);
    items.push(super::retention::report(s3, bucket).await);
    items.push(policy(&attrs, &arn, bucket, queue_url));
    items.push(dead_letter(&attrs, queue_url));
    items.push(visibility(&attrs, queue_url));
    items
}

/// Whether the bucket sends object-created events to the queue, for the prefixes the engine
/// needs (also `serve`'s start-up check).
pub(super) async fn notification(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    queue_arn: &str,
) -> CheckItem {
    const NAME: &str = "bucket notification";
    let fix = format!(
        "aws s3api put-bucket-notification-configuration --bucket {bucket} --notification-configuration \
         '{{\"QueueConfigurations\": [{{\"QueueArn\": \"{queue_arn}\", \"Events\": [\"s3:ObjectCreated:*\"]}}]}}'   \
         (this replaces the configuration: merge it with the rules the bucket already has)"
    );
    let queues = match super::s3::notification_config(s3, bucket).await {
        Ok(c) => c
            .map(|c| c.queue_configurations().to_vec())
            .unwrap_or_default(),
        Err(e) => {
            return CheckItem::wrong(
                NAME,
                format!("cannot be read ({e})"),
                "the credentials need s3:GetBucketNotification",
            );
        }
    };
    let ours: Vec<_> = queues
        .iter()
        .filter(|q| super::s3::notifies(q, queue_arn))
        .collect();
    if ours.is_empty() {
        return CheckItem::wrong(
            NAME,
            "no rule sends object-created events to the queue",
            fix,
        );
    }
    let mut prefixes = Vec::new();
    for q in &ours {
        let prefix = q
            .filter()
            .and_then(|f| f.key())
            .map(|k| k.filter_rules())
            .and_then(|rules| {
                rules
                    .iter()
                    .find(|r| {
                        r.name()
                            .is_some_and(|n| n.as_str().eq_ignore_ascii_case("prefix"))
                    })
                    .and_then(|r| r.value().map(str::to_owned))
            });
        match prefix {
            None => {
                return CheckItem::ok(NAME, "object-created events of every key go to the queue");
            }
            Some(p) => prefixes.push(p),
        }
    }
    let missing: Vec<&str> = ["out/", "ld/control/"]
        .into_iter()
        .filter(|need| !prefixes.iter().any(|p| need.starts_with(p.as_str())))
        .collect();
    if missing.is_empty() {
        CheckItem::ok(
            NAME,
            format!(
                "object-created events under {} go to the queue",
                prefixes.join(", ")
            ),
        )
    } else {
        CheckItem::wrong(
            NAME,
            format!(
                "the rules cover {} but not {}: outputs (`out/`) and control requests (`ld/control/`) must reach the queue",
                prefixes.join(", "),
                missing.join(", ")
            ),
            format!(
                "add a queue rule with the prefix {} to the bucket's notification (`aws s3api get-bucket-notification-configuration --bucket {bucket}`, add, put back)",
                missing.join(" and one with ")
            ),
        )
    }
}

/// Whether a policy statement allows S3 (from `bucket`) to send to the queue.
pub(super) fn allows(statement: &Value, queue_arn: &str, bucket: &str) -> bool {
    let one_or_many = |v: Option<&Value>, want: &dyn Fn(&str) -> bool| match v {
        Some(Value::String(s)) => want(s),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).any(want),
        _ => false,
    };
    let effect = statement.get("Effect").and_then(Value::as_str) == Some("Allow");
    let principal = match statement.get("Principal") {
        Some(Value::String(s)) => s == "*",
        Some(p) => {
            one_or_many(p.get("Service"), &|s| s == "s3.amazonaws.com")
                || one_or_many(p.get("AWS"), &|s| s == "*")
        }
        None => false,
    };
    let action = one_or_many(statement.get("Action"), &|a| {
        matches!(a, "sqs:SendMessage" | "sqs:*" | "*")
    });
    let resource = statement.get("Resource").is_none()
        || one_or_many(statement.get("Resource"), &|r| r == queue_arn || r == "*");
    let bucket_arn = format!("arn:aws:s3:::{bucket}");
    let source = match statement.get("Condition") {
        None => true,
        Some(c) => c
            .as_object()
            .into_iter()
            .flat_map(|ops| ops.values())
            .filter_map(|kv| kv.get("aws:SourceArn"))
            .all(|v| {
                one_or_many(Some(v), &|a| {
                    a == bucket_arn
                        || (a.ends_with('*') && bucket_arn.starts_with(&a[..a.len() - 1]))
                })
            }),
    };
    effect && principal && action && resource && source
}

fn policy(
    attrs: &std::collections::HashMap<QueueAttributeName, String>,
    arn: &str,
    bucket: &str,
    queue_url: &str,
) -> CheckItem {
    const NAME: &str = "queue policy";
    let fix = format!(
        "aws sqs set-queue-attributes --queue-url {queue_url} --attributes Policy='<this, merged with the statements the policy already has>'\n{}",
        queue_policy(arn, bucket)
    );
    let Some(text) = attrs.get(&QueueAttributeName::Policy) else {
        return CheckItem::wrong(NAME, "the queue has no policy: S3 cannot send to it", fix);
    };
    let Ok(doc) = serde_json::from_str::<Value>(text) else {
        return CheckItem::wrong(NAME, "the queue's policy is not JSON", fix);
    };
    let statements = match doc.get("Statement") {
        Some(Value::Array(a)) => a.clone(),
        Some(s) => vec![s.clone()],
        None => Vec::new(),
    };
    if statements.iter().any(|s| allows(s, arn, bucket)) {
        CheckItem::ok(NAME, format!("lets bucket `{bucket}` send"))
    } else {
        CheckItem::wrong(
            NAME,
            format!("no statement lets bucket `{bucket}` (arn:aws:s3:::{bucket}) send to {arn}"),
            fix,
        )
    }
}

fn dead_letter(
    attrs: &std::collections::HashMap<QueueAttributeName, String>,
    queue_url: &str,
) -> CheckItem {
    const NAME: &str = "dead-letter queue";
    let fix = format!(
        "aws sqs create-queue --queue-name ld-events-dlq, then: aws sqs set-queue-attributes --queue-url {queue_url} \
         --attributes '{{\"RedrivePolicy\": \"{{\\\"deadLetterTargetArn\\\":\\\"<the DLQ's ARN>\\\",\\\"maxReceiveCount\\\":\\\"5\\\"}}\"}}'"
    );
    let policy = attrs
        .get(&QueueAttributeName::RedrivePolicy)
        .and_then(|p| serde_json::from_str::<Value>(p).ok());
    let Some(policy) = policy else {
        return CheckItem::wrong(
            NAME,
            "none: a message that keeps failing comes back forever, and its run is never marked failed",
            fix,
        );
    };
    let target = policy
        .get("deadLetterTargetArn")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let max = policy.get("maxReceiveCount").and_then(|m| {
        m.as_u64()
            .or_else(|| m.as_str().and_then(|s| s.parse().ok()))
    });
    match max {
        Some(n @ 1..=100) => CheckItem::ok(NAME, format!("{target}, after {n} receives")),
        other => CheckItem::wrong(
            NAME,
            format!(
                "{target} with a receive limit of {other:?}: expected 1 to 100 (5 is a good value)"
            ),
            fix,
        ),
    }
}

fn visibility(
    attrs: &std::collections::HashMap<QueueAttributeName, String>,
    queue_url: &str,
) -> CheckItem {
    const NAME: &str = "visibility timeout";
    let secs: u64 = attrs
        .get(&QueueAttributeName::VisibilityTimeout)
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let fix = format!(
        "aws sqs set-queue-attributes --queue-url {queue_url} --attributes VisibilityTimeout=60"
    );
    match secs {
        10..=300 => CheckItem::ok(
            NAME,
            format!("{secs} s: a dead replica's messages come back after {secs} s"),
        ),
        0..=9 => CheckItem::wrong(
            NAME,
            format!(
                "{secs} s: shorter than a slow S3 round trip, so messages come back while they are handled"
            ),
            fix,
        ),
        _ => CheckItem::wrong(
            NAME,
            format!(
                "{secs} s: a dead replica's messages wait that long to be carried on (the engine extends what it works on itself)"
            ),
            fix,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: &str = "arn:aws:sqs:us-east-1:123456789012:ld-events";

    #[test]
    fn the_policy_it_proposes_is_one_it_accepts() {
        let doc: Value = serde_json::from_str(&queue_policy(Q, "b")).expect("json");
        assert!(allows(&doc["Statement"][0], Q, "b"));
        assert!(!allows(&doc["Statement"][0], Q, "other"), "another bucket");
    }

    #[test]
    fn statements_that_do_not_let_s3_send_are_refused() {
        let deny = serde_json::json!({"Effect": "Deny", "Principal": "*", "Action": "sqs:*"});
        assert!(!allows(&deny, Q, "b"));
        let receive = serde_json::json!({"Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"}, "Action": "sqs:ReceiveMessage", "Resource": Q});
        assert!(!allows(&receive, Q, "b"));
        let wildcard = serde_json::json!({"Effect": "Allow", "Principal": "*", "Action": ["sqs:SendMessage"], "Resource": "*",
            "Condition": {"ArnLike": {"aws:SourceArn": "arn:aws:s3:::b*"}}});
        assert!(allows(&wildcard, Q, "b"));
        let elsewhere = serde_json::json!({"Effect": "Allow", "Principal": {"Service": ["s3.amazonaws.com"]}, "Action": "sqs:SendMessage",
            "Resource": "arn:aws:sqs:us-east-1:123456789012:other"});
        assert!(!allows(&elsewhere, Q, "b"));
    }
}
