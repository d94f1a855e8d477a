//! A run's tick: fires the timers that are due, notices processes that are gone, asks again
//! for what a lost replica never did (a start, an output check, a stop), and chains the next
//! tick. The last tick of a finished run rewrites its final document if that write was lost.

use std::sync::Arc;

use super::message::Tick;
use super::state::StateDoc;
use super::worker::{Worker, lock};
use crate::bucket::Bucket;
use crate::error::Result;
use crate::machine::{Effect, Event, StopReason, Wait, now_ms};

/// A live attempt whose process the runner no longer has, and its output if it landed.
struct Gone {
    task_id: String,
    attempt: u32,
    output: Option<Option<String>>,
}

impl Worker {
    /// The run's state, from this replica's cache or (`fresh`) from S3.
    async fn peek(&self, run_id: &str, fresh: bool) -> Result<Option<StateDoc>> {
        let cell = self.cached(run_id);
        let mut cached = cell.lock().await;
        if !fresh && let Some((doc, _)) = &*cached {
            return Ok(Some(doc.clone()));
        }
        let loaded = self.states.load(run_id).await?;
        *cached = loaded.clone();
        Ok(loaded.map(|(doc, _)| doc))
    }

    /// Handles a tick message.
    pub(crate) async fn tick(self: &Arc<Self>, tick: &Tick) -> Result<()> {
        let run_id = tick.run_id.as_str();
        let mut doc = self.peek(run_id, false).await?;
        if doc.as_ref().and_then(|d| d.tick).map(|t| t.id) != Some(tick.tick) {
            // The cache may be behind another replica's change.
            doc = self.peek(run_id, true).await?;
        }
        let Some(doc) = doc else {
            tracing::debug!(run_id, "a tick for a run that does not exist");
            return Ok(());
        };
        let Some(live) = doc.tick.filter(|t| t.id == tick.tick) else {
            tracing::debug!(run_id, tick = tick.tick, "a superseded tick");
            return Ok(());
        };
        let now = now_ms();
        tracing::debug!(
            run_id,
            tick = tick.tick,
            late_ms = now - live.due_ms,
            last = live.last,
            "tick"
        );
        if live.due_ms > now + 1000 {
            // Due past the queue's longest delay: sent on, same tick.
            return self.send_tick(tick).await;
        }
        if live.last {
            if !lock(&self.published_final).contains(run_id) {
                self.write_status(
                    run_id,
                    (
                        doc.record.trigger.bucket.clone(),
                        doc.record.status_document(),
                    ),
                )
                .await;
            }
            self.forget(run_id);
            return Ok(());
        }
        let gone = self.gone(&doc).await;
        let grace = i64::try_from(self.pace.start_grace.as_millis()).unwrap_or(i64::MAX / 4);
        let this = tick.tick;
        let me = Arc::clone(self);
        self.transition(run_id, move |machine, doc, now| {
            if doc.tick.map(|t| t.id) != Some(this) {
                return Vec::new();
            }
            let mut effects = Vec::new();
            let mut handle = |doc: &mut StateDoc, event: Event| {
                if let Ok(e) = machine.handle(&mut doc.record, now, event) {
                    effects.extend(e);
                }
            };
            let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut doc.timers)
                .into_iter()
                .partition(|a| a.at <= now);
            doc.timers = rest;
            for armed in due {
                handle(doc, Event::TimerFired(armed.timer));
            }
            for g in &gone {
                if let Some(state) = &g.output {
                    handle(
                        doc,
                        Event::OutputLanded {
                            task_id: g.task_id.clone(),
                            state: state.clone(),
                        },
                    );
                }
                handle(
                    doc,
                    Event::Exited {
                        task_id: g.task_id.clone(),
                        attempt: g.attempt,
                        code: None,
                        detail: Some(
                            "its process is gone (the runner no longer has it)".to_owned(),
                        ),
                    },
                );
            }
            effects.extend(me.repairs(doc, now, grace));
            // This tick is used up: the change chains the next one.
            doc.tick = None;
            effects
        })
        .await
        .map(drop)
    }

    /// Live attempts whose process is gone, by the runner's account.
    async fn gone(&self, doc: &StateDoc) -> Vec<Gone> {
        let mut gone = Vec::new();
        let bucket = &doc.record.trigger.bucket;
        for t in &doc.record.tasks {
            for a in t.attempts.iter().filter(|a| a.live()) {
                let Some(runner) = &a.runner else { continue };
                if self.runner.alive(runner).await != Some(false) {
                    continue;
                }
                let output = if a.outcome.is_none() {
                    self.s3.output(bucket, &t.task_id).await.ok().flatten()
                } else {
                    None
                };
                gone.push(Gone {
                    task_id: t.task_id.clone(),
                    attempt: a.n,
                    output,
                });
            }
        }
        gone
    }

    /// Effects that may have been lost with a replica, asked for again (each is safe twice).
    fn repairs(&self, doc: &mut StateDoc, now: i64, grace: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        let starting = lock(&self.starting);
        for intent in &mut doc.starts {
            let mine = starting.contains_key(&(intent.task_id.clone(), intent.attempt));
            if intent.at + grace <= now && !mine {
                tracing::info!(
                    run_id = %doc.record.run_id,
                    task_id = %intent.task_id,
                    attempt = intent.attempt,
                    "a start asked for long ago was never granted; asking again"
                );
                intent.at = now;
                effects.push(Effect::StartAttempt {
                    task_id: intent.task_id.clone(),
                    attempt: intent.attempt,
                });
            }
        }
        for t in &doc.record.tasks {
            if matches!(t.wait, Some(Wait::Check { .. })) {
                effects.push(Effect::CheckOutput {
                    task_id: t.task_id.clone(),
                });
            }
            for a in t.attempts.iter().filter(|a| a.stopping && a.live()) {
                effects.push(Effect::StopAttempt {
                    task_id: t.task_id.clone(),
                    attempt: a.n,
                    runner: a.runner.clone(),
                    reason: StopReason::Cancelled,
                });
            }
        }
        effects
    }
}
