//! The SQS queue `serve` consumes: S3's event notifications and the engine's own ticks.

use aws_sdk_sqs::error::{DisplayErrorContext, SdkError};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};

use super::s3::brief;
use crate::error::{CloudError, Error, Result};

/// Longest wait of one receive (SQS's maximum long poll).
pub(crate) const LONG_POLL_S: i32 = 20;
/// Longest delay SQS puts on one message.
pub(crate) const MAX_DELAY_S: i64 = 900;

/// A received message.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    /// Stable across redeliveries: an idempotency token.
    pub(crate) id: String,
    /// This delivery's handle (for delete and visibility).
    pub(crate) receipt: String,
    pub(crate) body: String,
    /// How many times it was delivered (`ApproximateReceiveCount`).
    pub(crate) receives: u32,
}

/// What `check` found out about the queue.
#[derive(Debug, Clone)]
pub(crate) struct QueueInfo {
    pub(crate) arn: String,
    pub(crate) visibility_s: u64,
    /// The dead-letter queue's ARN and the receive count that sends a message there.
    pub(crate) dead_letter: Option<(String, u32)>,
}

/// The queue, by URL.
#[derive(Debug, Clone)]
pub(crate) struct Queue {
    client: aws_sdk_sqs::Client,
    url: String,
}

fn failed<E: std::error::Error + Send + Sync + 'static>(op: &str, e: &SdkError<E>) -> Error {
    CloudError::Request {
        op: format!("SQS {op}"),
        message: DisplayErrorContext(e).to_string(),
    }
    .into()
}

impl Queue {
    pub(crate) fn new(client: aws_sdk_sqs::Client, url: String) -> Self {
        Queue { client, url }
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The queue of an ARN (`arn:aws:sqs:{region}:{account}:{name}`), in the same region.
    pub(crate) async fn of_arn(&self, arn: &str) -> Result<Queue> {
        let parts: Vec<&str> = arn.split(':').collect();
        let [_, _, "sqs", _, account, name] = parts.as_slice() else {
            return Err(CloudError::Config(format!(
                "the queue's redrive policy names {arn:?}, not an SQS queue ARN"
            ))
            .into());
        };
        let out = self
            .client
            .get_queue_url()
            .queue_name(*name)
            .queue_owner_aws_account_id(*account)
            .send()
            .await
            .map_err(|e| {
                CloudError::Config(format!(
                    "the dead-letter queue {arn} cannot be found ({}): the engine's credentials need sqs:GetQueueUrl on it",
                    brief(&e)
                ))
            })?;
        Ok(Queue {
            client: self.client.clone(),
            url: out.queue_url.unwrap_or_default(),
        })
    }

    /// Reads the queue's attributes: fails with the fix when the queue is not there.
    pub(crate) async fn check(&self) -> Result<QueueInfo> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::QueueArn)
            .attribute_names(QueueAttributeName::VisibilityTimeout)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(|e| {
                CloudError::Config(format!(
                    "the queue {} cannot be read ({}): check LD_SQS_QUEUE_URL and that the engine's AWS credentials may sqs:GetQueueAttributes on it",
                    self.url,
                    brief(&e)
                ))
            })?;
        let attrs = out.attributes().cloned().unwrap_or_default();
        let arn = attrs
            .get(&QueueAttributeName::QueueArn)
            .cloned()
            .unwrap_or_default();
        let visibility_s = attrs
            .get(&QueueAttributeName::VisibilityTimeout)
            .and_then(|v| v.parse().ok())
            .unwrap_or(30);
        let dead_letter = attrs
            .get(&QueueAttributeName::RedrivePolicy)
            .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
            .and_then(|p| {
                let arn = p.get("deadLetterTargetArn")?.as_str()?.to_owned();
                let max = p.get("maxReceiveCount")?;
                let max = max
                    .as_u64()
                    .or_else(|| max.as_str().and_then(|s| s.parse().ok()))?;
                Some((arn, u32::try_from(max).unwrap_or(u32::MAX)))
            });
        Ok(QueueInfo {
            arn,
            visibility_s,
            dead_letter,
        })
    }

    /// Long-polls for up to `max` messages (1–10), waiting at most `wait_s` seconds.
    pub(crate) async fn receive(&self, max: i32, wait_s: i32) -> Result<Vec<Received>> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(wait_s.clamp(0, LONG_POLL_S))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| failed("ReceiveMessage", &e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let receives = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                Some(Received {
                    id: m.message_id?,
                    receipt: m.receipt_handle?,
                    body: m.body.unwrap_or_default(),
                    receives,
                })
            })
            .collect())
    }

    /// Deletes a delivered message (after its effects are committed).
    pub(crate) async fn delete(&self, receipt: &str) -> Result<()> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map(drop)
            .map_err(|e| failed("DeleteMessage", &e))
    }

    /// Sends a message, delivered after `delay_s` seconds (at most 900).
    pub(crate) async fn send(&self, body: String, delay_s: i64) -> Result<()> {
        let delay = i32::try_from(delay_s.clamp(0, MAX_DELAY_S)).unwrap_or(0);
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(delay)
            .send()
            .await
            .map(drop)
            .map_err(|e| failed("SendMessage", &e))
    }

    /// Keeps a message invisible for `secs` more seconds from now.
    pub(crate) async fn extend(&self, receipt: &str, secs: i32) -> Result<()> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs)
            .send()
            .await
            .map(drop)
            .map_err(|e| failed("ChangeMessageVisibility", &e))
    }
}
