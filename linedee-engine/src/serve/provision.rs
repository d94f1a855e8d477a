//! `linedee cloud setup`: creates what a `serve` deployment lacks — bucket versioning, the
//! queue and its dead-letter queue, the queue policy that lets the bucket send, the bucket's
//! notification to the queue — and leaves what is there. A second run changes nothing.
//! Retention (`retention.rs`) is set beside the bucket's own lifecycle rules.
//! `dry_run` only says what it would do. An existing notification configuration is added to,
//! never replaced; the bucket itself is not created.

use aws_sdk_s3::types::{
    BucketVersioningStatus, Event, NotificationConfiguration, QueueConfiguration,
    VersioningConfiguration,
};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;

use super::check::{allows, queue_policy};
use super::retention::Retention;
use super::s3::brief;
use crate::error::{CloudError, Result};

/// What `setup` did (or, in a dry run, would do) about one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupStep {
    /// The item ("queue policy").
    pub name: String,
    /// Whether it was changed (or would be, in a dry run).
    pub changed: bool,
    /// What was found or done: in a dry run, the call and its document.
    pub detail: String,
}

pub(super) fn step(name: &str, changed: bool, detail: impl Into<String>) -> SetupStep {
    SetupStep {
        name: name.to_owned(),
        changed,
        detail: detail.into(),
    }
}

pub(super) fn failed(op: &str, message: String) -> crate::Error {
    CloudError::Request {
        op: op.to_owned(),
        message,
    }
    .into()
}

/// Sets up `bucket` to notify the queue `queue_name` (created with `{queue_name}-dlq`); with
/// `retention`, stored logs (`ld/logs/`), and finished runs if asked, expire after its days.
pub async fn setup(
    s3: &aws_sdk_s3::Client,
    sqs: &aws_sdk_sqs::Client,
    bucket: &str,
    queue_name: &str,
    retention: Option<Retention>,
    dry_run: bool,
) -> Result<Vec<SetupStep>> {
    let mut steps = Vec::new();
    s3.head_bucket().bucket(bucket).send().await.map_err(|e| {
        CloudError::Config(format!(
            "the bucket `{bucket}` cannot be reached ({}): setup does not create buckets; create it (aws s3api create-bucket --bucket {bucket}) or fix the name",
            brief(&e)
        ))
    })?;
    steps.push(versioning(s3, bucket, dry_run).await?);
    if let Some(r) = retention {
        steps.push(super::retention::apply(s3, bucket, r, dry_run).await?);
    }
    let dlq_name = format!("{queue_name}-dlq");
    let (dlq_url, dlq_step) = queue(sqs, &dlq_name, &[], dry_run).await?;
    steps.push(dlq_step);
    let dlq_arn = match &dlq_url {
        Some(url) => arn_of(sqs, url).await?,
        None => format!("arn:aws:sqs:…:…:{dlq_name}"),
    };
    let redrive = format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"5"}}"#);
    let (url, queue_step) = queue(
        sqs,
        queue_name,
        &[(QueueAttributeName::RedrivePolicy, redrive.clone())],
        dry_run,
    )
    .await?;
    steps.push(queue_step);
    let Some(url) = url else {
        // A dry run with no queue yet: the rest would be made for the new queue.
        steps.push(step(
            "queue policy",
            true,
            format!(
                "would set, for the new queue:\n{}",
                queue_policy(&format!("arn:aws:sqs:…:…:{queue_name}"), bucket)
            ),
        ));
        steps.push(step(
            "bucket notification",
            true,
            format!("would add a rule: s3:ObjectCreated:* of `{bucket}` to {queue_name}"),
        ));
        return Ok(steps);
    };
    let arn = arn_of(sqs, &url).await?;
    steps.push(redrive_policy(sqs, &url, &redrive, dry_run).await?);
    steps.push(policy(sqs, &url, &arn, bucket, dry_run).await?);
    steps.push(notification(s3, bucket, &arn, dry_run).await?);
    Ok(steps)
}

async fn versioning(s3: &aws_sdk_s3::Client, bucket: &str, dry_run: bool) -> Result<SetupStep> {
    const NAME: &str = "bucket versioning";
    let status = super::s3::versioning_status(s3, bucket).await;
    if status.as_deref() == Some("Enabled") {
        return Ok(step(NAME, false, "already enabled"));
    }
    if dry_run {
        return Ok(step(
            NAME,
            true,
            format!(
                "would call: aws s3api put-bucket-versioning --bucket {bucket} --versioning-configuration Status=Enabled"
            ),
        ));
    }
    s3.put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .map_err(|e| failed("PutBucketVersioning", brief(&e)))?;
    Ok(step(NAME, true, "enabled"))
}

/// The queue's URL (`None` in a dry run where it does not exist yet), creating it.
async fn queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: &[(QueueAttributeName, String)],
    dry_run: bool,
) -> Result<(Option<String>, SetupStep)> {
    let label = if name.ends_with("-dlq") {
        "dead-letter queue"
    } else {
        "queue"
    };
    if let Ok(found) = sqs.get_queue_url().queue_name(name).send().await
        && let Some(url) = found.queue_url
    {
        return Ok((
            Some(url.clone()),
            step(label, false, format!("{url} exists")),
        ));
    }
    if dry_run {
        return Ok((
            None,
            step(
                label,
                true,
                format!("would call: aws sqs create-queue --queue-name {name}"),
            ),
        ));
    }
    let mut create = sqs.create_queue().queue_name(name);
    for (k, v) in attributes {
        create = create.attributes(k.clone(), v.clone());
    }
    let url = create
        .send()
        .await
        .map_err(|e| {
            failed(
                "CreateQueue",
                aws_sdk_sqs::error::DisplayErrorContext(&e).to_string(),
            )
        })?
        .queue_url
        .unwrap_or_default();
    Ok((
        Some(url.clone()),
        step(label, true, format!("created {url}")),
    ))
}

async fn attributes(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
) -> Result<std::collections::HashMap<QueueAttributeName, String>> {
    Ok(sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map_err(|e| {
            failed(
                "GetQueueAttributes",
                aws_sdk_sqs::error::DisplayErrorContext(&e).to_string(),
            )
        })?
        .attributes()
        .cloned()
        .unwrap_or_default())
}

async fn arn_of(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String> {
    Ok(attributes(sqs, url)
        .await?
        .get(&QueueAttributeName::QueueArn)
        .cloned()
        .unwrap_or_default())
}

async fn set(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    name: QueueAttributeName,
    value: String,
) -> Result<()> {
    sqs.set_queue_attributes()
        .queue_url(url)
        .attributes(name, value)
        .send()
        .await
        .map(drop)
        .map_err(|e| {
            failed(
                "SetQueueAttributes",
                aws_sdk_sqs::error::DisplayErrorContext(&e).to_string(),
            )
        })
}

async fn redrive_policy(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    redrive: &str,
    dry_run: bool,
) -> Result<SetupStep> {
    const NAME: &str = "redrive policy";
    if let Some(p) = attributes(sqs, url)
        .await?
        .get(&QueueAttributeName::RedrivePolicy)
    {
        return Ok(step(NAME, false, format!("already set: {p}")));
    }
    if dry_run {
        return Ok(step(
            NAME,
            true,
            format!("would set RedrivePolicy = {redrive}"),
        ));
    }
    set(
        sqs,
        url,
        QueueAttributeName::RedrivePolicy,
        redrive.to_owned(),
    )
    .await?;
    Ok(step(NAME, true, format!("set: {redrive}")))
}

async fn policy(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    arn: &str,
    bucket: &str,
    dry_run: bool,
) -> Result<SetupStep> {
    const NAME: &str = "queue policy";
    let current = attributes(sqs, url)
        .await?
        .get(&QueueAttributeName::Policy)
        .cloned();
    let mut doc: Value = current
        .as_deref()
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or_else(|| serde_json::json!({"Version": "2012-10-17", "Statement": []}));
    let statements = match doc.get("Statement") {
        Some(Value::Array(a)) => a.clone(),
        Some(s) => vec![s.clone()],
        None => Vec::new(),
    };
    if statements.iter().any(|s| allows(s, arn, bucket)) {
        return Ok(step(
            NAME,
            false,
            format!("already lets bucket `{bucket}` send"),
        ));
    }
    let ours: Value = serde_json::from_str(&queue_policy(arn, bucket)).unwrap_or_default();
    let mut merged = statements;
    merged.extend(ours["Statement"].as_array().cloned().unwrap_or_default());
    doc["Statement"] = Value::Array(merged);
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    if dry_run {
        return Ok(step(
            NAME,
            true,
            format!("would set (the existing statements kept):\n{text}"),
        ));
    }
    set(sqs, url, QueueAttributeName::Policy, text).await?;
    Ok(step(
        NAME,
        true,
        format!("added a statement letting bucket `{bucket}` send"),
    ))
}

async fn notification(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    arn: &str,
    dry_run: bool,
) -> Result<SetupStep> {
    const NAME: &str = "bucket notification";
    let current = super::s3::notification_config(s3, bucket)
        .await
        .map_err(|e| failed("GetBucketNotificationConfiguration", e))?;
    let queues = current
        .as_ref()
        .map(|c| c.queue_configurations().to_vec())
        .unwrap_or_default();
    if queues.iter().any(|q| super::s3::notifies(q, arn)) {
        return Ok(step(
            NAME,
            false,
            "already sends object-created events to the queue",
        ));
    }
    // Every existing rule is kept; ours is added.
    let ours = QueueConfiguration::builder()
        .id("linedee")
        .queue_arn(arn)
        .events(Event::from("s3:ObjectCreated:*"))
        .build()
        .map_err(|e| failed("building the notification rule", e.to_string()))?;
    let mut config = NotificationConfiguration::builder()
        .set_queue_configurations(Some(queues))
        .queue_configurations(ours);
    if let Some(c) = &current {
        config = config
            .set_topic_configurations(Some(c.topic_configurations().to_vec()))
            .set_lambda_function_configurations(Some(c.lambda_function_configurations().to_vec()))
            .set_event_bridge_configuration(c.event_bridge_configuration().cloned());
    }
    if dry_run {
        return Ok(step(
            NAME,
            true,
            format!(
                "would add a rule (the existing rules kept): s3:ObjectCreated:* of `{bucket}` to {arn}"
            ),
        ));
    }
    s3.put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(config.build())
        .send()
        .await
        .map_err(|e| {
            CloudError::Config(format!(
                "the bucket's notification cannot take a rule for the queue ({}): S3 refuses rules that overlap an existing one for the same events and prefixes; change or narrow the existing rule, then run setup again",
                brief(&e)
            ))
        })?;
    Ok(step(
        NAME,
        true,
        "added a rule: s3:ObjectCreated:* to the queue (the existing rules kept)",
    ))
}
