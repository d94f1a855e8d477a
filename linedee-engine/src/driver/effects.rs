//! Carrying out the machine's effects: output checks, starts, stops, timers, logs and status
//! documents, each after the records they follow from were committed.

use super::*;

impl Driver {
    /// Carries out effects (after the records they follow from were committed).
    pub(super) fn carry_out(&self, st: &mut State, effects: Vec<(String, Vec<Effect>)>) {
        for (run_id, effects) in effects {
            for effect in effects {
                self.effect(st, &run_id, effect);
            }
        }
    }

    fn effect(&self, st: &mut State, run_id: &str, effect: Effect) {
        let Some(run) = st.runs.get(run_id) else {
            return;
        };
        let bucket = run.trigger.bucket.clone();
        match effect {
            Effect::CheckOutput { task_id } => self.check_output(run_id, &bucket, &task_id),
            // Queued; `hand_out` starts it at the end of the turn, or once it comes first.
            Effect::StartAttempt { task_id, attempt } => st.queue.push(&task_id, attempt),
            Effect::StopAttempt {
                task_id,
                attempt,
                runner,
                ..
            } => match runner {
                None => {
                    st.queue.withdraw(&task_id, attempt);
                    if let Some(token) = st.starting.remove(&(task_id, attempt)) {
                        token.cancel();
                    }
                }
                Some(runner) => {
                    let r = Arc::clone(&self.parts.runner);
                    tokio::spawn(async move { r.stop(&runner).await });
                }
            },
            Effect::StopStale {
                task_id, runner, ..
            } => {
                let r = Arc::clone(&self.parts.runner);
                tokio::spawn(async move { r.stop_stale(&runner, &task_id).await });
            }
            Effect::ArmTimer { at, timer } => {
                st.timer_seq += 1;
                st.timers
                    .insert((at, st.timer_seq), (run_id.to_owned(), timer));
            }
            Effect::StoreLog { task_id, attempt } => {
                let (r, b) = (
                    Arc::clone(&self.parts.runner),
                    Arc::clone(&self.parts.bucket),
                );
                tokio::spawn(async move {
                    let key = linedee::status::log_key(&task_id, attempt);
                    if let Some(log) = r.log(&task_id, attempt).await
                        && let Err(e) = b.put_log(&bucket, &key, log).await
                    {
                        tracing::warn!(task_id, attempt, error = %e, "cannot store a task log");
                    }
                });
            }
            Effect::Publish => {
                st.snapshot_seq += 1;
                let snapshot = self.snapshot(st.snapshot_seq, run);
                self.publisher.offer(snapshot);
            }
            Effect::Finished(status) => tracing::info!(run_id, %status, "run finished"),
        }
    }

    /// Asks whether a task's output landed; answers with `OutputLanded` or `OutputMissing`.
    pub(super) fn check_output(&self, run_id: &str, bucket: &str, task_id: &str) {
        let (b, tx) = (Arc::clone(&self.parts.bucket), self.tx.clone());
        let (run_id, bucket, task_id) = (run_id.to_owned(), bucket.to_owned(), task_id.to_owned());
        tokio::spawn(async move {
            let event = match b.output(&bucket, &task_id).await {
                Ok(Some(state)) => Event::OutputLanded { task_id, state },
                Ok(None) => Event::OutputMissing { task_id },
                Err(e) => {
                    tracing::warn!(task_id, error = %e, "cannot check an output; the task runs again");
                    Event::OutputMissing { task_id }
                }
            };
            let _ = tx.send(Input::Event { run_id, event });
        });
    }

    /// Starts an attempt: waits for a slot, starts the process, and reports its start and,
    /// later, its exit (after checking whether its output landed).
    pub(super) fn start(
        &self,
        run_id: &str,
        bucket: &str,
        spec: AttemptSpec,
        no_output: bool,
        cancel: CancellationToken,
    ) {
        let (runner, b, tx) = (
            Arc::clone(&self.parts.runner),
            Arc::clone(&self.parts.bucket),
            self.tx.clone(),
        );
        let (run_id, bucket) = (run_id.to_owned(), bucket.to_owned());
        tokio::spawn(async move {
            let (task_id, attempt) = (spec.task_id.clone(), spec.attempt);
            // A process can exit before `start` returns: its exit is sent only after the
            // start's own event, so the machine never sees an attempt end before it began.
            let (told_start, start_told) = tokio::sync::oneshot::channel::<()>();
            let on_exit = {
                let (tx, run_id, task_id) = (tx.clone(), run_id.clone(), task_id.clone());
                Box::new(move |exit: Exit| {
                    tokio::spawn(async move {
                        // Err: the start's event was sent and the sender dropped, or never
                        // will be (a cancelled start); either way the exit may go now.
                        let _ = start_told.await;
                        let mut landed = false;
                        if !no_output && let Ok(Some(state)) = b.output(&bucket, &task_id).await {
                            landed = true;
                            let event = Event::OutputLanded {
                                task_id: task_id.clone(),
                                state,
                            };
                            let _ = tx.send(Input::Event {
                                run_id: run_id.clone(),
                                event,
                            });
                        }
                        let code = exit.code;
                        // An attempt whose output landed needs no explaining.
                        let detail = if landed { None } else { exit.explained().await };
                        let exited = Event::Exited {
                            task_id,
                            attempt,
                            code,
                            detail,
                        };
                        let _ = tx.send(Input::Event {
                            run_id,
                            event: exited,
                        });
                    });
                })
            };
            let started = runner.start(spec, cancel, on_exit).await;
            let _ = tx.send(Input::StartWithdrawn {
                task_id: task_id.clone(),
                attempt,
            });
            let Some(event) = start_event(task_id, attempt, started) else {
                return;
            };
            let _ = tx.send(Input::Event { run_id, event });
            let _ = told_start.send(());
        });
    }
}

/// What the runner needs for an attempt, from the run's record (protocol §6 for `line_D`).
pub(crate) fn spec(run: &RunRecord, task_id: &str, attempt: u32) -> Option<AttemptSpec> {
    let t = run.task(task_id)?;
    let def = run.def(t.step, t.idx)?;
    let mut line_d = linedee::LineD::new(task_id.to_owned());
    line_d.run_id = Some(run.run_id.clone());
    line_d.attempt = Some(attempt);
    line_d.workflow_title = run.workflow.as_ref().and_then(|w| w.title.clone());
    line_d.task_name = def.name.clone();
    line_d.cmd = Some(def.cmd.clone());
    line_d.machine = Some(def.machine.as_str().to_owned());
    line_d.timeout = Some(def.timeout);
    line_d.options = def
        .option_pairs()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    line_d.bucket = Some(run.trigger.bucket.clone());
    line_d.trigger_key = Some(run.trigger.key.clone());
    line_d.trigger_etag = run.trigger.etag.clone();
    line_d.output_key = Some(linedee::line_d::output_key(task_id));
    Some(AttemptSpec {
        task_id: task_id.to_owned(),
        attempt,
        cmd: def.cmd.clone(),
        name: def.name.clone(),
        machine: def.machine.as_str().to_owned(),
        timeout: def.timeout,
        options: def
            .option_pairs()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        bucket: run.trigger.bucket.clone(),
        line_d: line_d.to_json(),
    })
}
