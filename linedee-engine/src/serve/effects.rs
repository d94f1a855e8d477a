//! Carrying out the machine's effects under `serve`, after the state they follow from is
//! written: starts and stops through the runner, output checks and documents through S3.

use std::sync::Arc;

use linedee::RunStatus;
use tokio_util::sync::CancellationToken;

use super::worker::{Worker, lock};
use crate::bucket::Bucket;
use crate::machine::{Effect, Event, RunRecord};
use crate::runner::{Exit, start_event};

/// How long a status document waits for a newer one before it is written (a finished run's
/// document is written at once once its processes have exited).
const PUBLISH_SETTLE: std::time::Duration = std::time::Duration::from_millis(250);

impl Worker {
    /// Carries out a run's effects (each in a task of its own; their answers come back as
    /// events through [`Worker::apply`]).
    pub(crate) fn carry_out(self: &Arc<Self>, run: &RunRecord, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::CheckOutput { task_id } => self.check_output(run, task_id),
                Effect::StartAttempt { task_id, attempt } => self.start(run, task_id, attempt),
                Effect::StopAttempt {
                    task_id,
                    attempt,
                    runner,
                    ..
                } => match runner {
                    // A start this replica is making is withdrawn; another replica's start is
                    // refused when it reports (the machine stops an unwanted start).
                    None => {
                        if let Some(t) = lock(&self.starting).get(&(task_id, attempt)) {
                            t.cancel();
                        }
                    }
                    Some(r) => {
                        let me = Arc::clone(self);
                        self.tasks.spawn(async move { me.runner.stop(&r).await });
                    }
                },
                Effect::StopStale {
                    task_id, runner, ..
                } => {
                    let me = Arc::clone(self);
                    self.tasks
                        .spawn(async move { me.runner.stop_stale(&runner, &task_id).await });
                }
                // Kept in the state; the run's tick fires it.
                Effect::ArmTimer { .. } => {}
                Effect::StoreLog { task_id, attempt } => {
                    let me = Arc::clone(self);
                    let bucket = run.trigger.bucket.clone();
                    self.tasks.spawn(async move {
                        let key = linedee::status::log_key(&task_id, attempt);
                        if let Some(log) = me.runner.log(&task_id, attempt).await
                            && let Err(e) = me.s3.put_log(&bucket, &key, log).await
                        {
                            tracing::warn!(task_id, attempt, error = %e, "cannot store a task log");
                        }
                    });
                }
                Effect::Publish => self.publish(run),
                Effect::Finished(status) => {
                    tracing::info!(run_id = %run.run_id, %status, "run finished");
                }
            }
        }
    }

    /// Asks whether a task's output landed; answers with `OutputLanded` or `OutputMissing`.
    fn check_output(self: &Arc<Self>, run: &RunRecord, task_id: String) {
        let me = Arc::clone(self);
        let (run_id, bucket) = (run.run_id.clone(), run.trigger.bucket.clone());
        self.tasks.spawn(async move {
            let event = match me.s3.output(&bucket, &task_id).await {
                Ok(Some(state)) => Event::OutputLanded { task_id, state },
                Ok(None) => Event::OutputMissing { task_id },
                Err(e) => {
                    // The run's next tick asks again.
                    tracing::warn!(task_id, error = %e, "cannot check an output");
                    return;
                }
            };
            if let Err(e) = me.apply(&run_id, vec![event]).await {
                tracing::warn!(run_id, error = %e, "cannot record an output check");
            }
        });
    }

    /// Starts an attempt through the runner, unless this replica is already starting it.
    fn start(self: &Arc<Self>, run: &RunRecord, task_id: String, attempt: u32) {
        let Some(mut spec) = crate::driver::spec(run, &task_id, attempt) else {
            return;
        };
        let no_output = run
            .task(&task_id)
            .and_then(|t| run.def(t.step, t.idx))
            .is_some_and(|d| d.no_output);
        let key = (task_id.clone(), attempt);
        let cancel = {
            let mut starting = lock(&self.starting);
            if starting.contains_key(&key) {
                return;
            }
            let cancel = CancellationToken::new();
            starting.insert(key.clone(), cancel.clone());
            cancel
        };
        let me = Arc::clone(self);
        let (run_id, bucket) = (run.run_id.clone(), run.trigger.bucket.clone());
        self.tasks.spawn(async move {
            // The exit is applied only after the start is: a quick process must not exit
            // before it has started, as far as the state knows.
            let (recorded, mut wait_recorded) = tokio::sync::watch::channel(false);
            let on_exit = {
                let (me, run_id, task_id) = (Arc::clone(&me), run_id.clone(), task_id.clone());
                let tasks = me.tasks.clone();
                Box::new(move |exit: Exit| {
                    tasks.spawn(async move {
                        let _ = wait_recorded.wait_for(|done| *done).await;
                        me.exited(&run_id, &bucket, task_id, attempt, no_output, exit)
                            .await;
                    });
                })
            };
            if let Some(procfile) = &me.dyno_commands {
                spec.cmd = procfile.current().await.dyno_command(&spec.cmd);
            }
            let started = me.runner.start(spec, cancel, on_exit).await;
            lock(&me.starting).remove(&key);
            if started.is_ok() {
                me.starts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let Some(event) = start_event(task_id, attempt, started) else {
                return;
            };
            if let Err(e) = me.apply(&run_id, vec![event]).await {
                tracing::warn!(run_id, error = %e, "cannot record a start; the run's tick repairs it");
            }
            let _ = recorded.send(true);
        });
    }

    /// An attempt's process exited: its output (if it landed) and its exit, in one change.
    async fn exited(
        self: &Arc<Self>,
        run_id: &str,
        bucket: &str,
        task_id: String,
        attempt: u32,
        no_output: bool,
        exit: Exit,
    ) {
        let mut events = Vec::with_capacity(2);
        // An output already recorded (its `out/` event came first) needs no HEAD.
        let recorded = {
            let cell = self.cached(run_id);
            let cached = cell.lock().await;
            cached
                .as_ref()
                .and_then(|(doc, _)| doc.record.task(&task_id))
                .is_some_and(|t| t.status == linedee::TaskState::Succeeded)
        };
        if !no_output
            && !recorded
            && let Ok(Some(state)) = self.s3.output(bucket, &task_id).await
        {
            events.push(Event::OutputLanded {
                task_id: task_id.clone(),
                state,
            });
        }
        let code = exit.code;
        events.push(Event::Exited {
            task_id,
            attempt,
            code,
            detail: exit.explained().await,
        });
        if let Err(e) = self.apply(run_id, events).await {
            tracing::warn!(run_id, error = %e, "cannot record an exit; the run's tick repairs it");
        }
    }

    /// Writes the run's status document; documents of one run are written in order, and one
    /// that a newer one replaces before it is written is skipped.
    pub(crate) fn publish(self: &Arc<Self>, run: &RunRecord) {
        // A final status whose processes have exited is written at once. A status the run
        // moves through settles, and so does a final one whose exits are still to come (its
        // output decided it, and its process exits a moment later, adding its exit code): a
        // run gets one final document, not two (as in the local engine's publisher).
        let settled = run.status.is_finished() && !run.has_live_processes();
        let doc = ((run.trigger.bucket.clone(), run.status_document()), settled);
        {
            let mut publishing = lock(&self.publishing);
            if let Some(slot) = publishing.get_mut(&run.run_id) {
                *slot = Some(doc);
                return;
            }
            publishing.insert(run.run_id.clone(), Some(doc));
        }
        let me = Arc::clone(self);
        let run_id = run.run_id.clone();
        self.tasks.spawn(async move {
            loop {
                // A document that a newer one follows within moments (queued, then running)
                // is not written: a short wait lets the newer one take its place.
                let settled = lock(&me.publishing)
                    .get(&run_id)
                    .and_then(Option::as_ref)
                    .is_some_and(|(_, settled)| *settled);
                if !settled {
                    tokio::time::sleep(PUBLISH_SETTLE).await;
                }
                let next = {
                    let mut publishing = lock(&me.publishing);
                    match publishing.get_mut(&run_id).and_then(Option::take) {
                        Some((doc, _)) => doc,
                        None => {
                            publishing.remove(&run_id);
                            return;
                        }
                    }
                };
                me.write_status(&run_id, next).await;
            }
        });
    }

    pub(super) async fn write_status(&self, run_id: &str, (bucket, doc): (String, RunStatus)) {
        let finished = doc.status.is_finished();
        let body = match serde_json::to_vec(&doc) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(run_id, error = %e, "cannot encode a status document");
                return;
            }
        };
        // The same document as this replica last wrote (an exit that changed nothing the
        // document shows) is not written again.
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            body.hash(&mut h);
            h.finish()
        };
        if lock(&self.written).get(run_id) == Some(&hash) {
            if finished {
                lock(&self.published_final).insert(run_id.to_owned());
            }
            return;
        }
        let key = linedee::status::status_key(run_id);
        let put = self.s3.put_status(&bucket, &key, body, finished).await;
        if put.is_ok() {
            let mut written = lock(&self.written);
            if written.len() >= 4 * 4096 {
                written.clear();
            }
            written.insert(run_id.to_owned(), hash);
        }
        match put {
            Ok(()) if finished => {
                let mut published = lock(&self.published_final);
                if published.len() >= 4 * 4096 {
                    // Forgetting only costs the last tick one more write.
                    published.clear();
                }
                published.insert(run_id.to_owned());
            }
            Ok(()) => {}
            Err(e) => tracing::warn!(run_id, error = %e, "cannot write a status document"),
        }
    }
}
