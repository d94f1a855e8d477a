//! Intake: turns a trigger source's notices into the driver's inputs. A trigger gets its run
//! id and its workflow (read from the body for `ld_run`) here, so the driver's loop never
//! waits on a read; an output notice becomes `OutputLanded` when it is the task's proof.

use std::sync::Arc;

use linedee::Workflow;
use linedee::metadata::LD_CODE;
use linedee::status::TriggerKind;
use tokio::sync::mpsc;

use crate::bucket::{self, Bucket};
use crate::driver::Input;
use crate::machine::Event;
use crate::triggers::{Delivery, Notice, TriggerSource};

/// Reads notices until the source closes or the driver stops.
pub(crate) async fn run(
    source: Arc<dyn TriggerSource>,
    bucket: Arc<dyn Bucket>,
    tx: mpsc::UnboundedSender<Input>,
) {
    while let Some(notice) = source.next().await {
        let input = match notice {
            Notice::Trigger(delivery) => {
                let (run_id, workflow) = resolve(bucket.as_ref(), &delivery).await;
                Some(Input::Trigger {
                    delivery,
                    run_id,
                    workflow,
                })
            }
            Notice::Output {
                bucket: b,
                task_id,
                metadata,
            } => {
                let state = match metadata {
                    Some(m) => bucket::proof(&task_id, &m),
                    None => bucket.output(&b, &task_id).await.ok().flatten(),
                };
                state.map(|state| Input::Event {
                    run_id: run_of(&task_id).to_owned(),
                    event: Event::OutputLanded { task_id, state },
                })
            }
            Notice::Resync => Some(Input::Resync),
        };
        if let Some(input) = input
            && tx.send(input).is_err()
        {
            return;
        }
    }
}

/// The run of a task id (`{run_id}.{step}.{task}`; run ids have no dot).
pub(crate) fn run_of(task_id: &str) -> &str {
    task_id.split('.').next().unwrap_or(task_id)
}

/// The run id (the submitter's `ld_run_id`, else the one derived from the trigger) and the
/// workflow, or every problem that makes the trigger invalid.
async fn resolve(bucket: &dyn Bucket, d: &Delivery) -> (String, Result<Workflow, String>) {
    let (run_id, id_problem) = match d.run_id.as_deref() {
        Some(id) if linedee::metadata::is_valid_run_id(id) => (id.to_owned(), None),
        Some(bad) => (
            d.derived_run_id.clone(),
            Some(format!(
                "metadata ld_run_id {bad:?} is invalid: expected 1 to 64 characters of [0-9A-Za-z_-]"
            )),
        ),
        None => (d.derived_run_id.clone(), None),
    };
    let workflow = match id_problem {
        Some(p) => Err(p),
        None => workflow_of(bucket, d).await,
    };
    (run_id, workflow)
}

/// The trigger's workflow (from `ld_code`, or the body for `ld_run`), or what is wrong with it.
pub(crate) async fn workflow_of(bucket: &dyn Bucket, d: &Delivery) -> Result<Workflow, String> {
    let text = match d.kind {
        TriggerKind::LdCode => match d.metadata.get(LD_CODE) {
            Some(v) => linedee::metadata::decode_rfc2047(v).into_owned(),
            None => return Err("the trigger has no `ld_code` metadata".to_owned()),
        },
        _ => match bucket.body(&d.bucket, &d.key).await {
            Ok(Some(body)) => match String::from_utf8(body.to_vec()) {
                Ok(s) => s,
                Err(_) => return Err(format!("the body of `{}` is not UTF-8 JSON text", d.key)),
            },
            Ok(None) => {
                return Err(format!(
                    "`{}` was deleted before its workflow could be read",
                    d.key
                ));
            }
            Err(e) => return Err(format!("cannot read `{}`: {e}", d.key)),
        },
    };
    Workflow::parse(&text).map_err(|e| e.to_string())
}
