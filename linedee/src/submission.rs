//! Starting and following runs: [`Client::submit`], [`Client::upload`], [`Submission`],
//! [`Client::run`] and [`Client::task_output`].

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::body::Body;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::metadata::{self, LD_CODE, LD_RUN, LD_RUN_ID, LD_STATE, LD_TASK_ID};
use crate::object::Object;
use crate::put::Put;
use crate::status::{RunStatus, status_key};
use crate::workflow::Workflow;

const LD_CODE_TOO_LARGE: &str = "the workflow does not fit in `ld_code` metadata; send it in the body with `Client::submit` (ld_run) instead";

/// A run that was started: its id, and the trigger object that started it.
#[derive(Debug, Clone)]
pub struct Submission {
    client: Client,
    run_id: String,
    key: String,
    etag: Option<String>,
}

/// An upload of any file with a workflow attached as `ld_code`; see [`Client::upload`].
#[derive(Debug)]
#[must_use = "an Upload does nothing until `.send().await`"]
pub struct Upload {
    put: Put,
    workflow: Option<Workflow>,
    run_id: Option<String>,
}

impl Client {
    /// Starts `workflow` by writing it to `key` with `ld_run: true` (the workflow is the body).
    /// The workflow is validated first; an invalid one is refused with every problem listed.
    ///
    /// ```no_run
    /// # async fn demo(client: linedee::Client, wf: linedee::Workflow) -> linedee::Result<()> {
    /// let submission = client.submit("in/example", &wf).await?;
    /// println!("started run {}", submission.run_id());
    /// # Ok(()) }
    /// ```
    pub async fn submit(&self, key: impl Into<String>, workflow: &Workflow) -> Result<Submission> {
        self.submit_with_run_id(key, workflow, metadata::new_run_id())
            .await
    }

    /// Like [`submit`](Self::submit) with a run id of your own (`[0-9A-Za-z_-]{1,64}`). A
    /// second submission with the same id starts nothing.
    pub async fn submit_with_run_id(
        &self,
        key: impl Into<String>,
        workflow: &Workflow,
        run_id: impl Into<String>,
    ) -> Result<Submission> {
        let run_id = checked_run_id(run_id.into())?;
        workflow.validate()?;
        let out = self
            .put(key, Bytes::from(workflow.to_json()))
            .content_type("application/json")
            .metadata(LD_RUN, "true")
            .metadata(LD_RUN_ID, run_id.clone())
            .send()
            .await?;
        Ok(Submission {
            client: self.clone(),
            run_id,
            key: out.key,
            etag: out.etag,
        })
    }

    /// Starts an upload of any file (an image, a log …) with a workflow attached as `ld_code`;
    /// the file is the workflow's input. Set the workflow with [`Upload::workflow`].
    ///
    /// ```no_run
    /// # async fn demo(client: linedee::Client) -> linedee::Result<()> {
    /// use linedee::{Body, Task, Workflow};
    /// let wf = Workflow::new()
    ///     .title("Process media files")
    ///     .step(Task::new("process_image").timeout(std::time::Duration::from_secs(30)));
    /// let submission = client
    ///     .upload("in/img/example_img.jpg", Body::from_path("example_img.jpg"))
    ///     .workflow(&wf)
    ///     .content_type("image/jpeg")
    ///     .send()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn upload(&self, key: impl Into<String>, body: impl Into<Body>) -> Upload {
        Upload {
            put: self.put(key, body),
            workflow: None,
            run_id: None,
        }
    }

    /// Reads a run's status document, `ld/runs/{run_id}.json`.
    pub async fn run(&self, run_id: &str) -> Result<RunStatus> {
        let run_id = checked_run_id(run_id.to_owned())?;
        let key = status_key(&run_id);
        let body = match self.get(&key).await {
            Ok(obj) => obj.bytes().await?,
            Err(Error::NotFound { .. }) => return Err(Error::RunNotFound { run_id }),
            Err(e) => return Err(e),
        };
        serde_json::from_slice(&body).map_err(|source| Error::Malformed {
            key,
            what: "run status document",
            source,
        })
    }

    /// Reads a task's output, `out/{task_id}`: its `ld_state` and its body.
    pub async fn task_output(&self, task_id: &str) -> Result<TaskOutput> {
        let key = crate::line_d::output_key(task_id);
        let object = self.get(&key).await?;
        let found = object.metadata().get(LD_TASK_ID).cloned();
        if found.as_deref() != Some(task_id) {
            return Err(Error::OutputMismatch {
                key,
                task_id: task_id.to_owned(),
                found,
            });
        }
        let state = object.metadata().get(LD_STATE).map(|raw| {
            serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.clone()))
        });
        Ok(TaskOutput {
            task_id: task_id.to_owned(),
            state,
            object,
        })
    }
}

fn checked_run_id(run_id: String) -> Result<String> {
    if metadata::is_valid_run_id(&run_id) {
        Ok(run_id)
    } else {
        Err(Error::InvalidRunId(run_id))
    }
}

impl Upload {
    /// Called with the bytes written so far; see [`Put::on_progress`](crate::Put::on_progress).
    pub fn on_progress(mut self, f: impl Fn(u64) + Send + Sync + 'static) -> Self {
        self.put = self.put.on_progress(f);
        self
    }

    /// The workflow to attach (required).
    pub fn workflow(mut self, workflow: &Workflow) -> Self {
        self.workflow = Some(workflow.clone());
        self
    }

    /// Uses this run id instead of a fresh ULID.
    pub fn run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }

    /// Sets `Content-Type`.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.put = self.put.content_type(content_type);
        self
    }

    /// Adds user metadata of your own.
    pub fn metadata(mut self, key: impl AsRef<str>, value: impl Into<String>) -> Self {
        self.put = self.put.metadata(key, value);
        self
    }

    /// Validates the workflow, checks that the metadata fits in 2 KB (else says to use
    /// [`Client::submit`]), and uploads.
    pub async fn send(self) -> Result<Submission> {
        let workflow = self.workflow.ok_or_else(|| {
            Error::Config("an upload needs a workflow: call `.workflow(&wf)`, or use `Client::put` for a plain object".into())
        })?;
        workflow.validate()?;
        let client = self.put.client_ref().clone();
        let run_id = checked_run_id(self.run_id.unwrap_or_else(metadata::new_run_id))?;
        let put = self
            .put
            .metadata(LD_CODE, workflow.to_metadata_json())
            .metadata(LD_RUN_ID, run_id.clone());
        let out = put.send_checked(LD_CODE_TOO_LARGE).await?;
        Ok(Submission {
            client,
            run_id,
            key: out.key,
            etag: out.etag,
        })
    }
}

impl Submission {
    /// The run id (the trigger's `ld_run_id`).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The key of the trigger object.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The trigger object's ETag.
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    /// The run's current status, or `None` before the engine has picked it up.
    pub async fn status(&self) -> Result<Option<RunStatus>> {
        match self.client.run(&self.run_id).await {
            Ok(s) => Ok(Some(s)),
            Err(Error::RunNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Polls the status document until the run is finished (succeeded, failed or cancelled)
    /// and returns it, or fails with [`Error::WaitTimeout`] after `timeout`.
    pub async fn wait(&self, timeout: Duration) -> Result<RunStatus> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(50);
        let mut last = None;
        loop {
            if let Some(status) = self.status().await? {
                if status.status.is_finished() {
                    return Ok(status);
                }
                last = Some(status.status);
            }
            let elapsed = start.elapsed();
            if elapsed >= timeout {
                return Err(Error::WaitTimeout {
                    run_id: self.run_id.clone(),
                    waited: elapsed,
                    last_status: last.map_or("unknown".to_owned(), |s| s.to_string()),
                });
            }
            tokio::time::sleep(delay.min(timeout - elapsed)).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }
}

/// A task's output object: its state and its body.
#[derive(Debug)]
#[non_exhaustive]
pub struct TaskOutput {
    /// The task id.
    pub task_id: String,
    /// The `ld_state` JSON (a string value if it was not JSON).
    pub state: Option<serde_json::Value>,
    /// The output object, with a streaming body.
    pub object: Object,
}

impl TaskOutput {
    /// The whole body in memory.
    pub async fn bytes(self) -> Result<Bytes> {
        self.object.bytes().await
    }
}
