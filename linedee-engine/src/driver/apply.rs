//! Applying an input to the records held in memory: events go to the machine, new triggers
//! become runs, control requests are answered after the turn's commit.

use super::*;

impl Driver {
    /// Applies one input to the records held in memory (loading a run from the journal when
    /// it is not held).
    pub(super) async fn apply(&self, st: &mut State, turn: &mut Turn, now: Millis, input: Input) {
        match input {
            Input::Event { run_id, event } => {
                if let Some(effects) = self.event(st, now, &run_id, event).await
                    && let Ok(effects) = effects
                {
                    turn.dirty.push(run_id.clone());
                    turn.effects.push((run_id, effects));
                }
            }
            Input::Control {
                run_id,
                event,
                reply,
            } => match self.event(st, now, &run_id, event.clone()).await {
                // Submitted, not taken in yet (`linedee cancel` right after `submit`): the
                // request waits for the run's creation.
                None if linedee::metadata::is_valid_run_id(&run_id)
                    && self
                        .parts
                        .triggers
                        .pending_run(&run_id)
                        .await
                        .unwrap_or(false) =>
                {
                    st.deferred.entry(run_id).or_default().push((event, reply));
                }
                None => {
                    let _ = reply.send(Err(RunError::NotFound(run_id).into()));
                }
                Some(Err(refused)) => turn.replies.push((run_id, reply, Err(refused))),
                Some(Ok(effects)) => {
                    turn.dirty.push(run_id.clone());
                    turn.effects.push((run_id.clone(), effects));
                    turn.replies.push((run_id, reply, Ok(())));
                }
            },
            Input::Trigger {
                delivery,
                run_id,
                workflow,
            } => {
                let trigger = Trigger {
                    bucket: delivery.bucket.clone(),
                    key: delivery.key.clone(),
                    etag: delivery.etag.clone(),
                    kind: delivery.kind,
                };
                let (record, effects) = self.parts.machine.create(
                    &run_id,
                    trigger,
                    workflow,
                    delivery.redelivered,
                    now,
                );
                turn.batch.create.push(NewRun {
                    record,
                    dedup: delivery.dedup.clone(),
                });
                turn.created.push((delivery, effects));
            }
            Input::StartWithdrawn { task_id, attempt } => {
                st.starting.remove(&(task_id, attempt));
            }
            Input::Resync => {
                for r in st.runs.values() {
                    for t in &r.tasks {
                        if t.attempts.iter().any(|a| a.outcome.is_none() && a.live()) {
                            self.check_output(&r.run_id, &r.trigger.bucket, &t.task_id);
                        }
                    }
                }
            }
        }
    }

    /// Applies an event to a run; `None` when there is no such run.
    async fn event(
        &self,
        st: &mut State,
        now: Millis,
        run_id: &str,
        event: Event,
    ) -> Option<std::result::Result<Vec<Effect>, Refused>> {
        if !st.runs.contains_key(run_id) {
            match self.parts.journal.load(run_id).await {
                Ok(Some(r)) => {
                    st.runs.insert(run_id.to_owned(), r);
                }
                Ok(None) => return None,
                Err(e) => {
                    tracing::error!(run_id, error = %e, "cannot load a run; the event is dropped");
                    return None;
                }
            }
        }
        let run = st.runs.get_mut(run_id)?;
        run.halted |= st.halted;
        Some(self.parts.machine.handle(run, now, event))
    }
}
