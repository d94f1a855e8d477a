//! The dashboard for any bucket (`linedee dashboard`): runs read from their status documents
//! (`ld/runs/`), logs from `ld/logs/`, cancel and retry as control requests answered by the
//! engine that serves the bucket (`linedee serve`, protocol §10). There is no journal, so
//! there is no overview and no per-attempt detail beyond the status document.

use std::time::Duration;

use linedee::RunStatus;
use linedee::control::{Action, Answer, Request, answer_key, request_key};

use super::logs::Slice;
use crate::error::{CloudError, Error, Result, RunError};
use crate::{RunFilter, RunSummary};

/// How long cancel and retry wait for the serving engine's answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);
/// Status documents read at once while listing.
const FETCH: usize = 16;

/// A bucket, read through the SDK's client.
#[derive(Debug, Clone)]
pub(crate) struct BucketSource {
    pub(crate) client: linedee::Client,
}

fn failed(op: &str, e: impl std::fmt::Display) -> Error {
    CloudError::Request {
        op: op.to_owned(),
        message: e.to_string(),
    }
    .into()
}

fn ms(t: time::OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// The runs list's row of a status document.
fn summary(doc: &RunStatus) -> RunSummary {
    RunSummary {
        run_id: doc.run_id.clone(),
        title: doc.title.clone(),
        status: doc.status,
        trigger_key: doc.trigger.key.clone(),
        created_ms: ms(doc.created_at),
        started_ms: doc.started_at.map(ms),
        finished_ms: doc.finished_at.map(ms),
    }
}

fn matches(f: &RunFilter, doc: &RunStatus) -> bool {
    if f.status.is_some_and(|s| s != doc.status) {
        return false;
    }
    if let Some(since) = f.since_ms
        && doc.finished_at.is_some_and(|t| ms(t) < since)
    {
        return false;
    }
    if let Some(p) = &f.prefix
        && !doc.trigger.key.starts_with(p.as_str())
        && !doc
            .title
            .as_deref()
            .is_some_and(|t| t.starts_with(p.as_str()))
    {
        return false;
    }
    if let Some(cmd) = &f.cmd
        && !doc.tasks().any(|t| &t.cmd == cmd)
    {
        return false;
    }
    true
}

impl BucketSource {
    /// Status documents, most recently updated first, with their update time (ms).
    async fn documents(&self) -> Result<Vec<(i64, String)>> {
        let s3 = self.client.s3();
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = s3
                .list_objects_v2()
                .bucket(self.client.bucket())
                .prefix("ld/runs/")
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| {
                    failed(
                        "listing ld/runs/",
                        aws_sdk_s3::error::DisplayErrorContext(&e),
                    )
                })?;
            for o in page.contents() {
                let Some(run_id) = o
                    .key()
                    .and_then(|k| k.strip_prefix("ld/runs/"))
                    .and_then(|k| k.strip_suffix(".json"))
                else {
                    continue;
                };
                let modified = o
                    .last_modified()
                    .and_then(|t| t.to_millis().ok())
                    .unwrap_or(0);
                out.push((modified, run_id.to_owned()));
            }
            match page.next_continuation_token() {
                Some(t) => token = Some(t.to_owned()),
                None => break,
            }
        }
        out.sort_by(|a, b| b.cmp(a));
        Ok(out)
    }

    /// A page of runs: most recently updated first, `before` the previous page's cursor (an
    /// update time); the cursor of the next page, if there is one.
    pub(crate) async fn runs(
        &self,
        filter: &RunFilter,
        before: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<RunSummary>, Option<i64>)> {
        let docs = self.documents().await?;
        let docs: Vec<_> = docs
            .into_iter()
            .filter(|(m, _)| before.is_none_or(|b| *m < b))
            .collect();
        let mut out = Vec::new();
        for chunk in docs.chunks(FETCH) {
            let fetched =
                futures_util::future::join_all(chunk.iter().map(|(_, id)| self.client.run(id)))
                    .await;
            for ((modified, _), doc) in chunk.iter().zip(fetched) {
                // A document being rewritten, or one another writer left invalid, is skipped.
                let Ok(doc) = doc else { continue };
                if matches(filter, &doc) {
                    out.push(summary(&doc));
                    if out.len() == limit {
                        return Ok((out, Some(*modified)));
                    }
                }
            }
        }
        Ok((out, None))
    }

    /// A run's status document.
    pub(crate) async fn status(&self, run_id: &str) -> Result<RunStatus> {
        match self.client.run(run_id).await {
            Ok(doc) => Ok(doc),
            Err(linedee::Error::RunNotFound { .. }) => {
                Err(RunError::NotFound(run_id.to_owned()).into())
            }
            Err(e) => Err(Error::Bucket(e)),
        }
    }

    /// Up to 64 KiB of an attempt's stored log from `offset`.
    pub(crate) async fn log(
        &self,
        task_id: &str,
        attempt: u32,
        offset: u64,
    ) -> Result<Option<Slice>> {
        let key = linedee::status::log_key(task_id, attempt);
        let object = match self.client.get(&key).await {
            Ok(o) => o,
            Err(linedee::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(Error::Bucket(e)),
        };
        let bytes = object.bytes().await.map_err(Error::Bucket)?;
        Ok(Some(super::logs::slice(&bytes, offset)))
    }

    /// Cancel or retry: a control request, and the serving engine's answer.
    pub(crate) async fn control(&self, run_id: &str, action: Action) -> Result<()> {
        self.status(run_id).await?;
        let request_id = linedee::metadata::new_run_id();
        let body = serde_json::to_vec(&Request { action }).unwrap_or_default();
        self.client
            .put(request_key(run_id, &request_id), body)
            .content_type("application/json")
            .send()
            .await
            .map_err(Error::Bucket)?;
        let key = answer_key(run_id, &request_id);
        let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
        loop {
            match self.client.get(&key).await {
                Ok(o) => {
                    let body = o.bytes().await.map_err(Error::Bucket)?;
                    let answer: Answer = serde_json::from_slice(&body)
                        .map_err(|e| failed(&format!("reading {key}"), e))?;
                    return match answer.error {
                        None if answer.ok => Ok(()),
                        reason => Err(Error::Internal(
                            reason.unwrap_or_else(|| "refused".to_owned()),
                        )),
                    };
                }
                Err(linedee::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::Bucket(e)),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(failed(
                    "waiting for the serving engine's answer",
                    format!(
                        "none within {}s: is `linedee serve` running for this bucket, with ld/control/ in its notification?",
                        ANSWER_WITHIN.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
