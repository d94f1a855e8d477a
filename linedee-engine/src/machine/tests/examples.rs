//! Example runs driven by hand, one event at a time, and the regression tests of the bugs
//! the properties found.

use std::time::Duration;

use linedee::status::{RunState, TaskState};
use linedee::{Task, Workflow};

use super::{RUN_ID, T0, id, trigger};
use crate::machine::io::StopReason;
use crate::machine::record::Outcome;
use crate::machine::{Effect, Event, Machine, Millis, Refused, RunRecord, Timer};

/// A run driven by hand, one event at a time.
struct Ex {
    m: Machine,
    run: RunRecord,
    now: Millis,
}

impl Ex {
    fn new(wf: Workflow) -> (Ex, Vec<Effect>) {
        let m = Machine::default();
        let (run, fx) = m.create(RUN_ID, trigger(), Ok(wf), false, T0);
        (Ex { m, run, now: T0 }, fx)
    }

    /// `ev`, `dt` ms after the previous one; it must be accepted.
    fn on(&mut self, dt: Millis, ev: Event) -> Vec<Effect> {
        self.now += dt;
        self.m
            .handle(&mut self.run, self.now, ev)
            .expect("the event is accepted")
    }

    fn status(&self, task_id: &str) -> TaskState {
        self.run.task(task_id).expect("task").status
    }
}

fn started(task_id: &str, attempt: u32, runner: &str) -> Event {
    Event::AttemptStarted {
        task_id: task_id.to_owned(),
        attempt,
        runner: runner.to_owned(),
    }
}

fn exited(task_id: &str, attempt: u32, code: Option<i32>) -> Event {
    Event::Exited {
        task_id: task_id.to_owned(),
        attempt,
        code,
        detail: None,
    }
}

fn landed(task_id: &str) -> Event {
    Event::OutputLanded {
        task_id: task_id.to_owned(),
        state: Some("{\"bytes\":1024}".to_owned()),
    }
}

fn start(task_id: &str, attempt: u32) -> Effect {
    Effect::StartAttempt {
        task_id: task_id.to_owned(),
        attempt,
    }
}

fn timeout_timer(task_id: &str, attempt: u32) -> Timer {
    Timer::Timeout {
        task_id: task_id.to_owned(),
        attempt,
    }
}

fn arm_timeout(at: Millis, task_id: &str, attempt: u32) -> Effect {
    Effect::ArmTimer {
        at,
        timer: timeout_timer(task_id, attempt),
    }
}

fn store_log(task_id: &str, attempt: u32) -> Effect {
    Effect::StoreLog {
        task_id: task_id.to_owned(),
        attempt,
    }
}

fn stop(task_id: &str, attempt: u32, runner: Option<&str>, reason: StopReason) -> Effect {
    Effect::StopAttempt {
        task_id: task_id.to_owned(),
        attempt,
        runner: runner.map(str::to_owned),
        reason,
    }
}

#[test]
fn an_invalid_workflow_gives_a_failed_run_that_finishes_once() {
    let m = Machine::default();
    let problem = "run: expected a non-empty array".to_owned();
    let (mut run, fx) = m.create(RUN_ID, trigger(), Err(problem.clone()), false, T0);
    assert_eq!(fx, [Effect::Publish, Effect::Finished(RunState::Failed)]);
    assert_eq!(run.status, RunState::Failed);
    assert_eq!(run.error.as_deref(), Some(problem.as_str()));
    assert!(run.tasks.is_empty() && run.workflow.is_none());
    assert_eq!(run.finished_ms, Some(T0));
    assert_eq!(
        m.handle(&mut run, T0 + 1, Event::CancelRequested),
        Err(Refused::Finished(RunState::Failed))
    );
    assert_eq!(
        m.handle(&mut run, T0 + 2, Event::RedriveRequested),
        Err(Refused::InvalidWorkflow(problem))
    );
    assert_eq!(m.handle(&mut run, T0 + 3, landed(&id(0, 0))), Ok(vec![]));
    assert_eq!(RunRecord::from_json(&run.to_json()), Ok(run));
}

#[test]
fn a_two_step_run_succeeds() {
    let (a, b) = (id(0, 0), id(1, 0));
    let (mut ex, fx) = Ex::new(Workflow::new().step(Task::new("a")).step(Task::new("b")));
    assert_eq!(fx, [start(&a, 1), Effect::Publish]);
    assert_eq!(ex.run.status, RunState::Queued);

    let fx = ex.on(10, started(&a, 1, "pg1"));
    assert_eq!(fx, [arm_timeout(T0 + 10 + 60_000, &a, 1), Effect::Publish]);
    assert_eq!(ex.run.status, RunState::Running);
    assert_eq!(ex.status(&a), TaskState::Running);

    // The output decides; the next step does not wait for the process to exit.
    assert_eq!(ex.on(10, landed(&a)), [start(&b, 1), Effect::Publish]);
    assert_eq!(ex.status(&a), TaskState::Succeeded);
    assert_eq!(
        ex.on(10, exited(&a, 1, Some(0))),
        [store_log(&a, 1), Effect::Publish]
    );

    let fx = ex.on(10, started(&b, 1, "pg2"));
    assert_eq!(fx, [arm_timeout(T0 + 40 + 60_000, &b, 1), Effect::Publish]);
    assert_eq!(
        ex.on(10, landed(&b)),
        [Effect::Publish, Effect::Finished(RunState::Succeeded)]
    );
    assert_eq!(ex.run.status, RunState::Succeeded);
    assert_eq!(ex.run.finished_ms, Some(T0 + 50));

    // Late news changes nothing but the exit's record.
    assert_eq!(ex.on(60_000, Event::TimerFired(timeout_timer(&a, 1))), []);
    assert_eq!(
        ex.on(10, exited(&b, 1, Some(0))),
        [store_log(&b, 1), Effect::Publish]
    );
    let doc = ex.run.status_document();
    assert_eq!(doc.steps.len(), 2);
    assert_eq!(doc.steps[1].tasks[0].attempts, 1);
    assert_eq!(doc.steps[1].tasks[0].exit_code, Some(0));
    assert_eq!(
        doc.steps[0].tasks[0].state,
        Some(serde_json::json!({"bytes": 1024}))
    );
}

#[test]
fn a_timeout_stops_the_attempt_and_its_exit_backs_off_to_the_next() {
    let a = id(0, 0);
    let (mut ex, _) =
        Ex::new(Workflow::new().step(Task::new("a").timeout(Duration::from_secs(5)).retries(1)));
    assert_eq!(
        ex.on(1, started(&a, 1, "pg1")),
        [arm_timeout(T0 + 1 + 5_000, &a, 1), Effect::Publish]
    );
    ex.now = T0 + 5_001;
    assert_eq!(
        ex.on(0, Event::TimerFired(timeout_timer(&a, 1))),
        [
            stop(&a, 1, Some("pg1"), StopReason::TimedOut),
            Effect::Publish
        ]
    );
    assert_eq!(ex.status(&a), TaskState::Running);
    let attempt = &ex.run.task(&a).expect("a").attempts[0];
    assert_eq!(attempt.outcome, Some(Outcome::TimedOut));
    assert!(attempt.stopping && attempt.live());

    // The failure counts when the process is gone; then a backoff of 1 s ± 20%.
    let fx = ex.on(100, exited(&a, 1, None));
    let [log, Effect::ArmTimer { at, timer }, Effect::Publish] = fx.as_slice() else {
        panic!("expected StoreLog, ArmTimer, Publish: {fx:?}");
    };
    assert_eq!(*log, store_log(&a, 1));
    assert!(
        (800..=1_200).contains(&(at - ex.now)),
        "backoff {} ms",
        at - ex.now
    );
    assert_eq!(
        *timer,
        Timer::Backoff {
            task_id: a.clone(),
            after: 1
        }
    );
    ex.now = *at;
    assert_eq!(
        ex.on(0, Event::TimerFired(timer.clone())),
        [start(&a, 2), Effect::Publish]
    );
    // The retry is the last: its failure fails the run.
    ex.on(10, started(&a, 2, "pg2"));
    assert_eq!(
        ex.on(10, exited(&a, 2, Some(1))),
        [
            store_log(&a, 2),
            Effect::Publish,
            Effect::Finished(RunState::Failed)
        ]
    );
    assert_eq!(ex.status(&a), TaskState::Failed);
    assert!(ex.run.error.as_deref().is_some_and(|e| e.contains(&a)));
}

#[test]
fn a_restart_mid_attempt_stops_the_stale_process_and_checks_before_running_again() {
    let a = id(0, 0);
    let (mut ex, _) = Ex::new(Workflow::new().step(Task::new("a")));
    ex.on(10, started(&a, 1, "pg1"));
    // The engine dies; the next one reads the run from its journal.
    ex.run = RunRecord::from_json(&ex.run.to_json()).expect("reads back");
    assert_eq!(
        ex.on(1_000, Event::Restarted),
        [
            Effect::StopStale {
                task_id: a.clone(),
                attempt: 1,
                runner: "pg1".to_owned()
            },
            store_log(&a, 1),
            Effect::CheckOutput { task_id: a.clone() },
        ]
    );
    let t = ex.run.task(&a).expect("a");
    assert_eq!(t.attempts[0].outcome, Some(Outcome::Interrupted));
    assert_eq!(t.failures, 0);
    // The document is rewritten once an attempt runs again (the record may be behind it).
    assert_eq!(
        ex.on(10, Event::OutputMissing { task_id: a.clone() }),
        [start(&a, 2)]
    );
    assert_eq!(
        ex.on(10, started(&a, 2, "pg2")),
        [arm_timeout(T0 + 1_030 + 60_000, &a, 2), Effect::Publish]
    );
    assert!(!ex.run.recovered);
    // Had the output landed meanwhile, the task would have succeeded without running.
    let (mut ex, _) = Ex::new(Workflow::new().step(Task::new("a")));
    ex.on(10, started(&a, 1, "pg1"));
    ex.on(1_000, Event::Restarted);
    assert_eq!(
        ex.on(10, landed(&a)),
        [Effect::Publish, Effect::Finished(RunState::Succeeded)]
    );
}

#[test]
fn a_final_failure_in_a_group_stops_the_siblings_and_the_run_fails_when_they_are_gone() {
    let (a, b, c) = (id(0, 0), id(0, 1), id(0, 2));
    let (mut ex, fx) = Ex::new(Workflow::new().parallel([
        Task::new("a").retries(0),
        Task::new("b"),
        Task::new("c"),
    ]));
    assert_eq!(
        fx,
        [start(&a, 1), start(&b, 1), start(&c, 1), Effect::Publish]
    );
    ex.on(1, started(&a, 1, "pg1"));
    ex.on(1, started(&b, 1, "pg2"));
    // c is still waiting for a slot when a fails.
    let fx = ex.on(1, exited(&a, 1, Some(1)));
    assert_eq!(
        fx,
        [
            store_log(&a, 1),
            stop(&b, 1, Some("pg2"), StopReason::Cancelled),
            stop(&c, 1, None, StopReason::Cancelled),
            Effect::Publish
        ]
    );
    assert_eq!(ex.status(&a), TaskState::Failed);
    assert_eq!(ex.status(&b), TaskState::Cancelled);
    assert_eq!(ex.status(&c), TaskState::Cancelled);
    assert_eq!(ex.run.status, RunState::Running);
    // A slot granted too late is not wanted.
    assert_eq!(
        ex.on(1, started(&c, 1, "pg3")),
        [stop(&c, 1, Some("pg3"), StopReason::Unwanted)]
    );
    assert_eq!(
        ex.on(1, exited(&b, 1, None)),
        [
            store_log(&b, 1),
            Effect::Publish,
            Effect::Finished(RunState::Failed)
        ]
    );
}

#[test]
fn cancel_then_redrive_keeps_the_succeeded_step() {
    let (a, b) = (id(0, 0), id(1, 0));
    let (mut ex, _) = Ex::new(Workflow::new().step(Task::new("a")).step(Task::new("b")));
    ex.on(1, started(&a, 1, "pg1"));
    ex.on(1, landed(&a));
    assert_eq!(
        ex.on(1, Event::CancelRequested),
        [
            stop(&b, 1, None, StopReason::Cancelled),
            Effect::Publish,
            Effect::Finished(RunState::Cancelled)
        ]
    );
    assert_eq!(ex.status(&a), TaskState::Succeeded);
    assert_eq!(ex.status(&b), TaskState::Cancelled);
    assert_eq!(
        ex.m.handle(&mut ex.run, T0 + 10, Event::CancelRequested),
        Err(Refused::Finished(RunState::Cancelled))
    );
    // b never ran: no output to check; its withdrawn attempt 1 is not handed out again.
    assert_eq!(
        ex.on(10, Event::RedriveRequested),
        [start(&b, 2), Effect::Publish]
    );
    assert_eq!(ex.status(&a), TaskState::Succeeded);
    assert_eq!(ex.run.status, RunState::Queued);
    assert_eq!(
        ex.m.handle(&mut ex.run, T0 + 20, Event::RedriveRequested),
        Err(Refused::NotRetryable(RunState::Queued))
    );
}

// ---- the bugs the properties found (each commented where it is fixed in run.rs) ----

#[test]
fn a_duplicate_attempt_started_is_ignored() {
    let a = id(0, 0);
    let (mut ex, _) = Ex::new(Workflow::new().step(Task::new("a")));
    ex.on(1, started(&a, 1, "pg1"));
    // Was: StopAttempt { runner: Some("pg1"), reason: Unwanted }, killing the attempt.
    assert_eq!(ex.on(1, started(&a, 1, "pg1")), []);
    // Another process for the same attempt is still unwanted.
    assert_eq!(
        ex.on(1, started(&a, 1, "pg9")),
        [stop(&a, 1, Some("pg9"), StopReason::Unwanted)]
    );
}

#[test]
fn an_output_of_a_step_not_reached_decides_nothing() {
    let (a, b, c) = (id(0, 0), id(1, 0), id(2, 0));
    let (mut ex, _) = Ex::new(
        Workflow::new()
            .step(Task::new("a"))
            .step(Task::new("b"))
            .step(Task::new("c")),
    );
    // Was: c succeeded and the run ended `succeeded`, with a cancelled.
    assert_eq!(ex.on(1, landed(&c)), []);
    // Was: b succeeded and c started while a still waited for its slot.
    assert_eq!(ex.on(1, landed(&b)), []);
    assert_eq!(ex.status(&b), TaskState::Pending);
    ex.on(1, started(&a, 1, "pg1"));
    assert_eq!(ex.on(1, landed(&a)), [start(&b, 1), Effect::Publish]);
}

#[test]
fn a_start_that_raced_its_withdrawal_is_not_taken_for_the_redriven_attempt() {
    let a = id(0, 0);
    let (mut ex, _) = Ex::new(Workflow::new().step(Task::new("a")));
    ex.on(1, Event::CancelRequested);
    // Was: attempt 1 again, so the raced start below was taken for it, and the exit of
    // the unwanted process for the attempt's: the task failed while pg2 still ran.
    assert_eq!(
        ex.on(1, Event::RedriveRequested),
        [start(&a, 2), Effect::Publish]
    );
    assert_eq!(
        ex.on(1, started(&a, 1, "pg1")),
        [stop(&a, 1, Some("pg1"), StopReason::Unwanted)]
    );
    ex.on(1, started(&a, 2, "pg2"));
    assert_eq!(ex.on(1, exited(&a, 1, None)), []);
    let t = ex.run.task(&a).expect("a");
    assert!(
        t.attempts
            .iter()
            .any(|x| x.n == 2 && x.live() && x.outcome.is_none())
    );
}

#[test]
fn a_run_behind_its_outputs_after_a_power_loss_finds_them_again_and_runs_nothing() {
    let (a, b, c) = (id(0, 0), id(1, 0), id(2, 0));
    let wf = Workflow::new()
        .step(Task::new("a"))
        .step(Task::new("b"))
        .step(Task::new("c"));
    let (mut ex, _) = Ex::new(wf);
    ex.on(10, started(&a, 1, "pg1"));
    // The journal keeps this record; `a` and `b` then succeed, and `c` starts, before the
    // power fails.
    let kept = ex.run.to_json();
    ex.on(10, landed(&a));
    ex.on(10, started(&b, 1, "pg2"));
    ex.on(10, landed(&b));
    ex.on(10, started(&c, 1, "pg3"));
    ex.run = RunRecord::from_json(&kept).expect("reads back");
    let fx = ex.on(1_000, Event::Restarted);
    assert!(ex.run.recovered);
    assert_eq!(fx.last(), Some(&Effect::CheckOutput { task_id: a.clone() }));
    assert!(!fx.contains(&Effect::Publish), "{fx:?}");
    // `b` never started as far as the record knows: it is checked too, not run.
    assert_eq!(
        ex.on(10, landed(&a)),
        [Effect::CheckOutput { task_id: b.clone() }]
    );
    assert_eq!(
        ex.on(10, landed(&b)),
        [Effect::CheckOutput { task_id: c.clone() }]
    );
    // `c` had not written its output: it runs again, and only now is the document rewritten.
    assert_eq!(
        ex.on(10, Event::OutputMissing { task_id: c.clone() }),
        [start(&c, 1)]
    );
    let fx = ex.on(10, started(&c, 1, "pg4"));
    assert_eq!(fx.last(), Some(&Effect::Publish));
    assert_eq!(
        ex.on(10, landed(&c)),
        [Effect::Publish, Effect::Finished(RunState::Succeeded)]
    );
}

#[test]
fn a_run_created_again_from_a_trigger_delivered_again_checks_before_it_runs() {
    let a = id(0, 0);
    let m = Machine::default();
    let wf = Workflow::new().step(Task::new("a"));
    let (mut run, fx) = m.create(RUN_ID, trigger(), Ok(wf), true, T0);
    assert_eq!(fx, [Effect::CheckOutput { task_id: a.clone() }]);
    let fx = m.handle(&mut run, T0 + 1, landed(&a)).expect("accepted");
    assert_eq!(fx, [Effect::Publish, Effect::Finished(RunState::Succeeded)]);
    assert!(run.succeeded_by_outputs());
    assert!(
        !run.recovered,
        "a run that ended is no longer behind its document"
    );
    // A run that never ran anything starts as before; an invalid one fails as before.
    let (run, _) = m.create(RUN_ID, trigger(), Err("bad".to_owned()), true, T0);
    assert!(!run.recovered);
}

#[test]
fn only_a_run_whose_every_task_proves_itself_by_an_output_succeeded_by_outputs() {
    let a = id(0, 0);
    let m = Machine::default();
    let wf = Workflow::new()
        .step(Task::new("a"))
        .step(Task::new("b").no_output());
    let (mut run, _) = m.create(RUN_ID, trigger(), Ok(wf), false, T0);
    m.handle(&mut run, T0 + 1, started(&a, 1, "pg1"))
        .expect("accepted");
    m.handle(&mut run, T0 + 2, landed(&a)).expect("accepted");
    m.handle(&mut run, T0 + 3, started(&id(1, 0), 1, "pg2"))
        .expect("accepted");
    assert_eq!(run.status, RunState::Succeeded);
    assert!(!run.succeeded_by_outputs());
}

/// Found by the power-loss property: a last attempt timed out, its output landed before its
/// process stopped (the run succeeded), and the journal kept only the timeout. The restart
/// counted the timeout's failure and failed the run the document had shown succeeded.
#[test]
fn a_timeout_found_at_a_restart_counts_only_when_its_output_has_not_landed() {
    let a = id(0, 0);
    let wf = Workflow::new().step(Task::new("a").retries(0).timeout(Duration::from_secs(1)));
    let (mut ex, _) = Ex::new(wf);
    ex.on(10, started(&a, 1, "pg1"));
    ex.on(1_000, Event::TimerFired(timeout_timer(&a, 1)));
    let kept = ex.run.to_json();
    assert_eq!(
        ex.on(10, landed(&a)),
        [Effect::Publish],
        "taken while its process stops"
    );
    for (answer, status) in [
        (landed(&a), RunState::Succeeded),
        (
            Event::OutputMissing { task_id: a.clone() },
            RunState::Failed,
        ),
    ] {
        ex.run = RunRecord::from_json(&kept).expect("reads back");
        let fx = ex.on(1_000, Event::Restarted);
        assert_eq!(fx.last(), Some(&Effect::CheckOutput { task_id: a.clone() }));
        assert!(!ex.run.status.is_finished());
        assert_eq!(
            ex.on(10, answer),
            [Effect::Publish, Effect::Finished(status)]
        );
    }
}
