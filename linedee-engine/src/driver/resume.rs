//! Start-up: documents a crash left unwritten are rewritten, and every unfinished run is
//! resumed (or, when its stored record cannot be read, failed and said why).

use super::*;

impl Driver {
    /// At start: rewrites documents a crash left behind, and resumes every unfinished run.
    pub(super) async fn resume(&self, st: &mut State) -> Result<()> {
        let j = &self.parts.journal;
        for run_id in j.unpublished().await? {
            match j.load(&run_id).await {
                Ok(Some(r)) => self.offer(st, &r),
                Ok(None) => {}
                Err(e) => tracing::error!(run_id, error = %e, "cannot rewrite a status document"),
            }
        }
        let mut inputs = Vec::new();
        let now = now_ms();
        let mut turn = Turn::default();
        for r in j.resumable().await? {
            match r {
                Resumable::Record(r) => {
                    inputs.push(Input::Event {
                        run_id: r.run_id.clone(),
                        event: Event::Restarted,
                    });
                    st.runs.insert(r.run_id.clone(), r);
                }
                Resumable::Unreadable {
                    run_id,
                    trigger,
                    reason,
                } => {
                    // Never left queued forever: it fails, saying why, and is not run again.
                    tracing::error!(
                        run_id,
                        reason,
                        "a stored run cannot be read; it is marked failed"
                    );
                    let error = format!(
                        "the engine cannot read this run's stored record ({reason}); the run was marked failed and none of its tasks is started again"
                    );
                    let (record, effects) =
                        self.parts
                            .machine
                            .create(&run_id, trigger, Err(error), false, now);
                    turn.batch.save.push(record.clone());
                    turn.effects.push((run_id.clone(), effects));
                    st.runs.insert(run_id, record);
                }
            }
        }
        self.parts
            .journal
            .commit(std::mem::take(&mut turn.batch))
            .await?;
        self.carry_out(st, turn.effects);
        self.turn(st, inputs).await?;
        // With no inputs the turn did nothing: the starts the resumed runs queued are handed
        // to the runner here.
        self.hand_out(st).await;
        Ok(())
    }
}
