//! `linedee`: the command line of linedee.
//!
//! `linedee local` runs the embedded store, the engine and the dashboard in one process; the
//! other commands talk to any line^d bucket through the SDK and the `LD_*` variables, reading
//! `<dir>/env` (written by `linedee local`) when it is present.
//!
//! Layout: [`cli`] (arguments), [`env`](mod@env) (configuration), [`exit`] (exit codes and error
//! classes), then one module per command group: [`local`], [`submit`], [`runs`], [`logs`],
//! [`control`], [`dashboard`], [`serve`], [`cloud`], [`stats`], [`validate`], [`export`].

mod cli;
mod cloud;
mod control;
mod dashboard;
mod env;
mod exit;
mod export;
mod local;
mod logs;
mod runs;
mod serve;
mod stats;
mod submit;
mod validate;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command};
use crate::env::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let result = runtime.block_on(dispatch(cli));
    // Do not wait for blocking tasks that are stuck on a read (the terminal, a pipe).
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            exit::report(&e);
            ExitCode::from(exit::code_of(&e))
        }
    }
}

/// Runs one command; `Ok` carries the exit code of a command that completed (for example 1
/// for a run that failed under `--wait`).
async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let config = || Config::load(&cli.dir);
    match cli.command {
        Command::Local(args) => local::run(&cli.dir, args).await,
        Command::Serve(args) => serve::run(args).await,
        Command::Cloud(cmd) => cloud::run(cmd).await,
        Command::Dashboard(args) => dashboard::run(&config()?, args).await,
        Command::Submit(args) => submit::submit(&config()?, args).await,
        Command::Upload(args) => submit::upload(&config()?, args).await,
        Command::Runs(args) => runs::list(&config()?, args).await,
        Command::Run(args) => runs::show(&config()?, args).await,
        Command::Stats(args) => stats::run(&config()?, &cli.dir, args).await,
        Command::Logs(args) => logs::run(&config()?, &cli.dir, args).await,
        Command::Cancel(args) => control::cancel(&config()?, &cli.dir, &args.run_id).await,
        Command::Retry(args) => control::retry(&config()?, &cli.dir, &args.run_id).await,
        Command::Validate(args) => validate::run(args),
        Command::Schema => {
            println!("{}", linedee::schema_json());
            Ok(exit::OK)
        }
        Command::Export(args) => export::run(&config()?, args).await,
        Command::Completions(args) => {
            let mut cmd = Cli::command();
            clap_complete::generate(args.shell, &mut cmd, "linedee", &mut std::io::stdout());
            Ok(exit::OK)
        }
    }
}
