//! The environment of a task process (protocol §2.5 and §6).

use std::sync::atomic::Ordering;

use linedee::{LineD, Task, Workflow};

use crate::executor::Executor;
use crate::journal::{RunRow, TaskRow};
use crate::process;

impl Executor {
    /// The process of an attempt: script, environment (protocol §2.5) and log.
    pub(crate) fn spec(
        &self,
        run: &RunRow,
        wf: &Workflow,
        row: &TaskRow,
        def: &Task,
        attempt: u32,
    ) -> process::Spec {
        let mut line_d = LineD::new(row.task_id.clone());
        line_d.run_id = Some(run.run_id.clone());
        line_d.attempt = Some(attempt);
        line_d.workflow_title = wf.title.clone();
        line_d.task_name = def.name.clone();
        line_d.cmd = Some(def.cmd.clone());
        line_d.machine = Some(def.machine.as_str().to_owned());
        line_d.timeout = Some(def.timeout);
        line_d.options = def
            .option_pairs()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        line_d.bucket = Some(run.bucket.clone());
        line_d.trigger_key = Some(run.trigger_key.clone());
        line_d.trigger_etag = run.trigger_etag.clone();
        line_d.output_key = Some(linedee::line_d::output_key(&row.task_id));

        // Later entries win: `.env`, then the options, then the reserved variables, so even
        // an option that slipped past validation cannot override `LD_*`, `DYNO` or `line_D`.
        let mut env = self.dotenv.clone();
        env.extend(
            def.option_pairs()
                .filter(|(k, _)| !linedee::validate::is_reserved_name(k))
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        env.extend(self.store_env(&run.bucket));
        // Foreman-style: the console shows `name.N` for the process with `DYNO=run.N`.
        let dyno = self.dynos.fetch_add(1, Ordering::Relaxed);
        env.push(("DYNO".into(), format!("run.{dyno}")));
        env.push((linedee::line_d::VAR.into(), line_d.to_json()));
        let label = def.name.clone().unwrap_or_else(|| {
            def.cmd
                .split_whitespace()
                .next()
                .unwrap_or("task")
                .to_owned()
        });
        process::Spec {
            script: self.procfile.current().resolve(&def.cmd),
            env,
            cwd: self.app_dir.clone(),
            log_path: process::log_path(&self.data_dir, &row.task_id, attempt),
            label: format!("{label}.{dyno}"),
        }
    }

    /// Sets the store's URL, known once its listener is bound.
    pub(crate) fn set_endpoint(&self, endpoint: &str) {
        *self
            .endpoint
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = endpoint.to_owned();
    }

    /// The `LD_*` variables that point a process at the embedded store.
    pub(crate) fn store_env(&self, bucket: &str) -> Vec<(String, String)> {
        let mut env = vec![
            ("LD_S3_BUCKET".to_owned(), bucket.to_owned()),
            (
                "LD_S3_ENDPOINT".to_owned(),
                self.endpoint
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone(),
            ),
            ("LD_REGION".to_owned(), self.region.clone()),
        ];
        if let Ok(c) = self.store.credentials() {
            env.push(("LD_AWS_ACCESS_KEY_ID".to_owned(), c.access_key_id));
            env.push(("LD_AWS_SECRET_ACCESS_KEY".to_owned(), c.secret_access_key));
            env.push(("LD_AWS_SESSION_TOKEN".to_owned(), c.session_token));
        }
        env
    }
}
