//! `linedee stats [--window 1h|24h|7d] [--json]`: the dashboard's overview in the terminal,
//! read from the local engine's dashboard API (`GET {LD_DASHBOARD_URL}/api/overview`, which
//! needs no token: it is read-only). A figure the source cannot compute is printed as "not
//! available", with the reason it gives, never as a number.

use std::path::Path;

use serde_json::Value;

use crate::cli::StatsArgs;
use crate::control::{dashboard_client, dashboard_get};
use crate::env::{Config, DASHBOARD_URL_VAR};
use crate::exit;

/// `linedee stats`.
pub(crate) async fn run(config: &Config, dir: &Path, args: StatsArgs) -> anyhow::Result<u8> {
    let Some(base) = config.get(DASHBOARD_URL_VAR) else {
        return Err(exit::bad_input(format!(
            "`stats` works only against a local engine: {DASHBOARD_URL_VAR} is not set and \
             {}/env does not exist; start `linedee local`, or pass --dir to its directory",
            dir.display()
        )));
    };
    let body = dashboard_get(
        &dashboard_client()?,
        base,
        &format!("/api/overview?window={}", args.window),
    )
    .await?;
    let overview: Value = serde_json::from_str(&body).map_err(|e| {
        anyhow::anyhow!("the dashboard at {base} sent an overview that is not JSON: {e}")
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&overview)?);
    } else {
        print!("{}", render(&overview));
    }
    Ok(exit::OK)
}

/// `12 ms`, `3.4 s`, `2m05s`; `-` when there is no value.
fn ms(v: &Value) -> String {
    let Some(ms) = v.as_i64() else {
        return "-".to_owned();
    };
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

fn not_available(o: &Value, figure: &str) -> String {
    let why = o["unavailable"][figure]
        .as_str()
        .unwrap_or("this source does not compute it");
    format!("not available ({why})")
}

/// One line per figure, a sparkline of runs finished per interval, and the per-cmd table.
fn render(o: &Value) -> String {
    let mut out = String::new();
    let window = o["window"].as_str().unwrap_or("?");
    out.push_str(&format!("activity over the last {window}\n"));
    let c = &o["counts"];
    if c.is_object() {
        out.push_str(&format!(
            "  runs      queued {}  running {}  succeeded {}  failed {}  cancelled {}\n",
            c["queued"], c["running"], c["succeeded"], c["failed"], c["cancelled"]
        ));
    } else {
        out.push_str(&format!("  runs      {}\n", not_available(o, "counts")));
    }
    match o["queued_now"].as_u64() {
        Some(n) => out.push_str(&format!("  queue     {n} waiting\n")),
        None => out.push_str(&format!("  queue     {}\n", not_available(o, "queued_now"))),
    }
    let d = &o["duration"];
    if d.is_object() {
        out.push_str(&format!(
            "  duration  p50 {}  p95 {}\n",
            ms(&d["p50_ms"]),
            ms(&d["p95_ms"])
        ));
    } else {
        out.push_str(&format!("  duration  {}\n", not_available(o, "duration")));
    }
    match o["series"]["buckets"].as_array() {
        Some(buckets) => {
            let finished: Vec<u64> = buckets
                .iter()
                .map(|b| {
                    ["succeeded", "failed", "cancelled"]
                        .iter()
                        .filter_map(|k| b[k].as_u64())
                        .sum()
                })
                .collect();
            let started: u64 = buckets.iter().filter_map(|b| b["started"].as_u64()).sum();
            out.push_str(&format!(
                "  finished  {}  ({started} started in the window)\n",
                sparkline(&finished)
            ));
        }
        None => out.push_str(&format!("  finished  {}\n", not_available(o, "series"))),
    }
    match o["cmds"].as_array() {
        Some(cmds) if cmds.is_empty() => out.push_str("no attempts in the window\n"),
        Some(cmds) => {
            let width = cmds
                .iter()
                .filter_map(|c| c["cmd"].as_str())
                .map(str::len)
                .max()
                .unwrap_or(3)
                .clamp(3, 40);
            out.push_str(&format!(
                "\n{:<width$}  {:>6} {:>8} {:>8} {:>7} {:>8} {:>9} {:>9}\n",
                "CMD", "RUNS", "ATTEMPTS", "FAILURES", "RETRIES", "TIMEOUTS", "P50", "P95"
            ));
            for c in cmds {
                out.push_str(&format!(
                    "{:<width$}  {:>6} {:>8} {:>8} {:>7} {:>8} {:>9} {:>9}\n",
                    c["cmd"].as_str().unwrap_or(""),
                    c["runs"],
                    c["attempts"],
                    c["failures"],
                    c["retries"],
                    c["timeouts"],
                    ms(&c["p50_ms"]),
                    ms(&c["p95_ms"])
                ));
            }
        }
        None => out.push_str(&format!("per cmd: {}\n", not_available(o, "cmds"))),
    }
    out
}

/// `▁▂▅█` scaled to the largest value; a space for zero.
fn sparkline(values: &[u64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    values
        .iter()
        .map(|&v| {
            if v == 0 {
                ' '
            } else {
                BARS[((v * 7) / max) as usize]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_a_source_cannot_compute_is_said_so() {
        let o = serde_json::json!({
            "window": "1h", "counts": null, "queued_now": 2, "duration": null, "series": null,
            "cmds": [], "unavailable": {"counts": "no index", "duration": "no index"}
        });
        let text = render(&o);
        assert!(
            text.contains("runs      not available (no index)"),
            "{text}"
        );
        assert!(text.contains("queue     2 waiting"), "{text}");
        assert!(
            text.contains("finished  not available (this source does not compute it)"),
            "{text}"
        );
    }

    #[test]
    fn sparklines_scale_to_the_largest() {
        assert_eq!(sparkline(&[0, 1, 7]), " ▂█");
    }
}
