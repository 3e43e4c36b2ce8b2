//! `meshaudit-collector export status | replay --exporter NAME --from SEQ |
//! pause --exporter NAME | resume --exporter NAME`. They act on the store's
//! `export_state`; a running `serve` picks the change up within a poll.
//! Exit 0 done, 1 no such exporter (or a bad `--from`), 2 could not do it.

use super::state::{ExportDb, ExportState};
use crate::config::DbArgs;
use crate::server::open_store;
use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(subcommand)]
    pub action: ExportAction,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ExportAction {
    /// Every exporter: status, cursor, lag, pending batch, and why it stopped.
    Status {
        /// One JSON object per exporter, in an array.
        #[arg(long)]
        json: bool,
    },
    /// Send again from SEQ: the cursor goes back to SEQ - 1 (a stop is cleared).
    Replay {
        #[arg(long)]
        exporter: String,
        #[arg(long)]
        from: i64,
    },
    /// Stop sending until `resume` (the cursor stays).
    Pause {
        #[arg(long)]
        exporter: String,
    },
    /// Send again after a pause, or after a refusal (the refused batch is retried).
    Resume {
        #[arg(long)]
        exporter: String,
    },
}

/// One exporter as `status` shows it (no secret is ever in the state).
#[derive(Debug, serde::Serialize)]
pub struct StatusLine {
    pub exporter: String,
    pub sink: String,
    pub status: &'static str,
    pub cursor: i64,
    pub head: i64,
    pub lag: i64,
    pub pending: Option<(i64, i64)>,
    pub delivered: i64,
    pub stopped_seq: Option<i64>,
    pub stopped_reason: Option<String>,
    pub updated_at: String,
    /// The replica running it (`host/listen address`).
    pub owner: Option<String>,
}

pub fn status_line(s: ExportState, head: i64) -> StatusLine {
    StatusLine {
        status: s.status(),
        lag: (head - s.cursor).max(0),
        exporter: s.exporter,
        sink: s.sink,
        cursor: s.cursor,
        head,
        pending: s.pending,
        delivered: s.delivered,
        stopped_seq: s.stopped_seq,
        stopped_reason: s.stopped_reason,
        updated_at: s.updated_at,
        owner: s.owner,
    }
}

fn fail(what: &str, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("meshaudit-collector: export {what}: {e}");
    ExitCode::from(2)
}

pub async fn run(args: &ExportArgs) -> ExitCode {
    // Opening the store applies the migrations, so the table exists.
    let store = match open_store(&args.db.database_url).await {
        Ok(s) => s,
        Err(e) => return fail("", format!("{e:#}")),
    };
    let db = match ExportDb::connect(&args.db.database_url).await {
        Ok(db) => db,
        Err(e) => return fail("", e),
    };
    let (verb, name, done) = match &args.action {
        ExportAction::Status { json } => {
            let head = match store.head().await {
                Ok(h) => h.seq,
                Err(e) => return fail("status", e),
            };
            return match db.all().await {
                Ok(states) => print_status(
                    states.into_iter().map(|s| status_line(s, head)).collect(),
                    *json,
                ),
                Err(e) => fail("status", e),
            };
        }
        ExportAction::Replay { exporter, from } => {
            if *from < 1 {
                eprintln!("meshaudit-collector: export replay: --from must be ≥ 1");
                return ExitCode::from(1);
            }
            ("replay", exporter, db.replay(exporter, *from).await)
        }
        ExportAction::Pause { exporter } => ("pause", exporter, db.pause(exporter).await),
        ExportAction::Resume { exporter } => ("resume", exporter, db.resume(exporter).await),
    };
    match done {
        Ok(true) => {
            println!("{verb}: exporter {name}: done");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!("meshaudit-collector: export {verb}: no exporter named {name:?}");
            ExitCode::from(1)
        }
        Err(e) => fail(verb, e),
    }
}

fn print_status(lines: Vec<StatusLine>, json: bool) -> ExitCode {
    if json {
        return match serde_json::to_string_pretty(&lines) {
            Ok(s) => {
                println!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => fail("status", e),
        };
    }
    println!(
        "{:<20} {:<10} {:<8} {:>10} {:>10} {:>8} {:<17} detail",
        "exporter", "sink", "status", "cursor", "head", "lag", "pending"
    );
    for l in lines {
        let pending = l
            .pending
            .map(|(a, b)| format!("{a}-{b}"))
            .unwrap_or_else(|| "-".to_owned());
        let detail = match (l.stopped_seq, &l.stopped_reason) {
            (Some(seq), Some(why)) => format!("stopped at seq {seq}: {why}"),
            (Some(seq), None) => format!("stopped at seq {seq}"),
            _ => String::new(),
        };
        println!(
            "{:<20} {:<10} {:<8} {:>10} {:>10} {:>8} {:<17} {detail}",
            l.exporter, l.sink, l.status, l.cursor, l.head, l.lag, pending
        );
    }
    ExitCode::SUCCESS
}
