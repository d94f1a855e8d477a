//! Retention: S3 lifecycle rules, beside the bucket's own, that expire stored logs
//! (`ld/logs/`) and, if asked, finished runs' documents after N days.
//!
//! A finished run's documents (its state under the engine's prefix, its status document under
//! `ld/runs/`) are told apart by a tag, [`FINISHED_TAG`](super::s3::FINISHED_TAG), that a
//! replica writes with them when the bucket has the runs rule; a run redriven later is
//! rewritten untagged. The bucket is versioned, so each rule also removes the versions an
//! expiry leaves behind (a day after).
//!
//! Finished runs are kept at least [`MIN_RUN_DAYS`]: a duplicate of a trigger's event can
//! arrive as late as SQS keeps messages (14 days at most), and a run whose state had expired
//! would start again.

use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
    LifecycleRuleAndOperator, LifecycleRuleFilter, NoncurrentVersionExpiration, Tag,
};

use super::check::CheckItem;
use super::provision::{SetupStep, failed, step};
use super::s3::{FINISHED_TAG, brief};
use crate::error::{CloudError, Result};

/// The lifecycle rule expiring stored logs.
pub(crate) const LOGS_RULE: &str = "linedee-logs";
/// The lifecycle rule expiring finished runs' documents.
pub(crate) const RUNS_RULE: &str = "linedee-finished-runs";
/// The fewest days finished runs are kept (SQS keeps a message 14 days at most).
pub const MIN_RUN_DAYS: u32 = 15;

/// What `linedee cloud setup` expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// After how many days.
    pub days: u32,
    /// Finished runs' documents too, not only logs (needs `days` ≥ [`MIN_RUN_DAYS`]).
    pub finished_runs: bool,
}

/// What one of our rules says, to compare the wanted with the found.
#[derive(Debug, PartialEq, Eq)]
struct Shape {
    prefix: String,
    tag: Option<(String, String)>,
    days: Option<i32>,
    noncurrent_days: Option<i32>,
    enabled: bool,
}

fn shape(rule: &LifecycleRule) -> Shape {
    let filter = rule.filter();
    let and = filter.and_then(|f| f.and());
    Shape {
        prefix: filter
            .and_then(|f| f.prefix())
            .or_else(|| and.and_then(|a| a.prefix()))
            .unwrap_or_default()
            .to_owned(),
        tag: filter
            .and_then(|f| f.tag())
            .or_else(|| and.and_then(|a| a.tags().first()))
            .map(|t| (t.key().to_owned(), t.value().to_owned())),
        days: rule.expiration().and_then(|x| x.days()),
        noncurrent_days: rule
            .noncurrent_version_expiration()
            .and_then(|n| n.noncurrent_days()),
        enabled: rule.status() == &ExpirationStatus::Enabled,
    }
}

fn rule(id: &str, filter: LifecycleRuleFilter, days: i32) -> Result<LifecycleRule> {
    LifecycleRule::builder()
        .id(id)
        .filter(filter)
        .expiration(LifecycleExpiration::builder().days(days).build())
        .noncurrent_version_expiration(
            NoncurrentVersionExpiration::builder()
                .noncurrent_days(1)
                .build(),
        )
        .status(ExpirationStatus::Enabled)
        .build()
        .map_err(|e| failed("building a lifecycle rule", e.to_string()))
}

fn wanted(r: Retention) -> Result<Vec<LifecycleRule>> {
    let days = i32::try_from(r.days).unwrap_or(i32::MAX);
    let mut rules = vec![rule(
        LOGS_RULE,
        LifecycleRuleFilter::builder().prefix("ld/logs/").build(),
        days,
    )?];
    if r.finished_runs {
        let tag = Tag::builder()
            .key(FINISHED_TAG.0)
            .value(FINISHED_TAG.1)
            .build()
            .map_err(|e| failed("building a lifecycle rule", e.to_string()))?;
        let and = LifecycleRuleAndOperator::builder()
            .prefix("ld/")
            .tags(tag)
            .build();
        rules.push(rule(
            RUNS_RULE,
            LifecycleRuleFilter::builder().and(and).build(),
            days,
        )?);
    }
    Ok(rules)
}

/// The bucket's lifecycle rules (none when it has no configuration).
async fn rules(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<Vec<LifecycleRule>> {
    match s3
        .get_bucket_lifecycle_configuration()
        .bucket(bucket)
        .send()
        .await
    {
        Ok(c) => Ok(c.rules().to_vec()),
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(Vec::new()),
        Err(e) => Err(failed("GetBucketLifecycleConfiguration", brief(&e))),
    }
}

fn what(r: Retention) -> String {
    if r.finished_runs {
        format!(
            "ld/logs/ and finished runs' documents expire after {} days",
            r.days
        )
    } else {
        format!("ld/logs/ expires after {} days", r.days)
    }
}

/// Adds (or updates) our rules, keeping the bucket's others.
pub(super) async fn apply(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    r: Retention,
    dry_run: bool,
) -> Result<SetupStep> {
    const NAME: &str = "retention";
    if r.days == 0 {
        return Err(CloudError::Config("--retain-days must be at least 1".to_owned()).into());
    }
    if r.finished_runs && r.days < MIN_RUN_DAYS {
        return Err(CloudError::Config(format!(
            "finished runs are kept at least {MIN_RUN_DAYS} days (--retain-days {}): a duplicate of a trigger's event may come as late as SQS keeps messages (14 days at most), and would start a run whose state had expired again",
            r.days
        ))
        .into());
    }
    let found = rules(s3, bucket).await?;
    let want = wanted(r)?;
    let ours = |id: &str| found.iter().find(|f| f.id() == Some(id)).map(shape);
    if want
        .iter()
        .all(|w| ours(w.id().unwrap_or_default()) == Some(shape(w)))
    {
        return Ok(step(NAME, false, format!("{} already", what(r))));
    }
    let kept: Vec<LifecycleRule> = found
        .into_iter()
        .filter(|f| !want.iter().any(|w| w.id() == f.id()))
        .collect();
    if dry_run {
        return Ok(step(
            NAME,
            true,
            format!(
                "would set lifecycle rules {} (the bucket's {} others kept): {}",
                want.iter()
                    .filter_map(LifecycleRule::id)
                    .collect::<Vec<_>>()
                    .join(", "),
                kept.len(),
                what(r)
            ),
        ));
    }
    let config = BucketLifecycleConfiguration::builder()
        .set_rules(Some(kept.into_iter().chain(want).collect()))
        .build()
        .map_err(|e| failed("building the lifecycle configuration", e.to_string()))?;
    s3.put_bucket_lifecycle_configuration()
        .bucket(bucket)
        .lifecycle_configuration(config)
        .send()
        .await
        .map_err(|e| failed("PutBucketLifecycleConfiguration", brief(&e)))?;
    let mut detail = format!("{} (the bucket's other rules kept)", what(r));
    if r.finished_runs {
        detail.push_str(
            "; the engine tags finished runs' documents from its next start, and needs s3:PutObjectTagging",
        );
    }
    Ok(step(NAME, true, detail))
}

/// Whether the bucket expires finished runs (so their documents are to be tagged).
pub(crate) async fn expires_finished_runs(s3: &aws_sdk_s3::Client, bucket: &str) -> bool {
    rules(s3, bucket).await.is_ok_and(|rules| {
        rules
            .iter()
            .any(|r| r.id() == Some(RUNS_RULE) && shape(r).enabled)
    })
}

/// What retention is in force (reported, never a failure: history growing is a choice).
pub(super) async fn report(s3: &aws_sdk_s3::Client, bucket: &str) -> CheckItem {
    const NAME: &str = "retention";
    let found = match rules(s3, bucket).await {
        Ok(f) => f,
        Err(e) => return CheckItem::ok(NAME, format!("cannot be read ({e})")),
    };
    let days = |covers: &dyn Fn(&Shape) -> bool| {
        found
            .iter()
            .map(shape)
            .find(|s| s.enabled && covers(s))
            .and_then(|s| s.days)
    };
    let logs = days(&|s| s.tag.is_none() && "ld/logs/".starts_with(&s.prefix));
    let runs = days(&|s| {
        "ld/runs/".starts_with(&s.prefix)
            && s.tag
                .as_ref()
                .is_none_or(|t| (t.0.as_str(), t.1.as_str()) == FINISHED_TAG)
    });
    match (logs, runs) {
        (Some(l), Some(r)) => CheckItem::ok(
            NAME,
            format!("ld/logs/ expires after {l} days, finished runs after {r} days"),
        ),
        (Some(l), None) => CheckItem::ok(
            NAME,
            format!(
                "ld/logs/ expires after {l} days; finished runs are kept forever (`linedee cloud setup --retain-days N --retain-runs` expires them)"
            ),
        ),
        _ => CheckItem::ok(
            NAME,
            "none: run history and logs grow forever (`linedee cloud setup --retain-days N` expires logs, with --retain-runs finished runs too)",
        ),
    }
}
