//! Restarts in the simulated world: a halt, a crash, a graceful restart and a power loss.

use std::fmt::Write as _;

use super::{Sim, World};
use crate::machine::{Event, RunRecord};

impl Sim {
    pub(super) fn halt(&mut self) {
        if !self.w.halted {
            self.w.halted = true;
            self.deliver(Event::Halt);
        }
    }

    /// The engine dies and a new one starts: starts, checks and timers are forgotten; each
    /// process dies or (bit set in `keep`) goes on as a stale one.
    pub(super) fn crash(&mut self, keep: u16) {
        let procs = std::mem::take(&mut self.w.procs);
        let mut kept = Vec::new();
        for (k, mut p) in procs.into_iter().enumerate() {
            p.stop = None;
            if keep >> (k % 16) & 1 == 1 {
                kept.push(p.runner.clone());
                self.w.stale.push(p);
            } else {
                self.w.ghosts.push(p);
            }
        }
        // The dead engine's runner took its pending and withdrawn starts with it.
        self.w.starts.clear();
        self.w.withdrawn.clear();
        self.w.checks.clear();
        self.w.timers.clear();
        self.w.halted = false;
        // The new engine reads the run from its journal.
        self.run = match RunRecord::from_json(&self.run.to_json()) {
            Ok(r) => r,
            Err(e) => self.fail(&format!("cannot reload the record: {e}")),
        };
        let _ = writeln!(self.log, "-- crash; still running stale: {kept:?}");
        self.deliver(Event::Restarted);
    }

    /// The machine's power fails: every process dies, nothing in memory survives (nothing of
    /// it is delivered again), and the journal keeps its synced record and the first `keep`
    /// of the records committed since. Outputs are in the store, which syncs them before it
    /// answers.
    pub(super) fn power_loss(&mut self, keep: u16) {
        let kept = usize::from(keep) % (self.unsynced.len() + 1);
        let record = match kept {
            0 => self.synced.clone(),
            n => self.unsynced[n - 1].clone(),
        };
        self.unsynced.truncate(kept);
        self.w = World {
            outputs: std::mem::take(&mut self.w.outputs),
            next_runner: self.w.next_runner,
            ..World::default()
        };
        self.run = match RunRecord::from_json(&record.to_json()) {
            Ok(r) => r,
            Err(e) => self.fail(&format!("cannot reload the record: {e}")),
        };
        self.finished = usize::from(self.run.status.is_finished());
        let run = &self.run;
        let tasks = &self.tasks;
        // A `no_output` task's proof is its start, which only the record knows: one whose
        // success was lost runs again (at least once).
        self.succeeded.retain(|t| {
            !tasks[t].no_output
                || run
                    .task(t)
                    .is_some_and(|r| r.status == linedee::status::TaskState::Succeeded)
        });
        for t in &self.succeeded {
            if run
                .task(t)
                .is_some_and(|r| r.status != linedee::status::TaskState::Succeeded)
            {
                self.behind.insert(t.clone());
            }
        }
        let _ = writeln!(
            self.log,
            "-- power loss; the journal keeps {kept} commit(s) after its last sync"
        );
        self.deliver(Event::Restarted);
    }

    /// Graceful restart: halt, the grace period, interrupt, the stopped processes exit (or
    /// some linger, by the bits), restart.
    pub(super) fn graceful(&mut self, bits: u16) {
        self.halt();
        for i in (0..self.w.procs.len()).rev() {
            if bits >> (i % 8) & 1 == 1 && !self.w.procs[i].wrote {
                self.write(i, false);
            }
        }
        self.deliver(Event::Interrupt);
        let stopped: Vec<String> = self
            .w
            .procs
            .iter()
            .filter(|p| p.stop.is_some())
            .map(|p| p.runner.clone())
            .collect();
        for (k, r) in stopped.iter().enumerate() {
            if bits >> (8 + k % 8) & 1 == 0
                && let Some(i) = self.w.procs.iter().position(|p| p.runner == *r)
            {
                self.exit(i, 1);
            }
        }
        self.crash(bits.rotate_left(4));
    }
}
