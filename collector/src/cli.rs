//! The one-shot commands: `migrate`, `verify` (exit 0 intact, 1 broken,
//! 2 could not check; a progress bar only on a terminal), `query` (table or
//! NDJSON) and `retain`.

use crate::config::{DbArgs, OutputFormat, QueryArgs, RetainArgs, VerifyArgs};
use crate::prepare::parse_rfc3339_us;
use crate::retain::{
    check_cutoff, parse_age, parse_cutoff, parse_patience, retain_with_patience, RetainOutcome,
};
use crate::server::open_store;
use crate::store::{EventQuery, StoredEvent};
use crate::verify::{verify_store, AnchorStatus, VerifyOptions, VerifyReport};
use crate::view::EventItem;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

/// Exit code when the store could not be checked or the command failed.
const COULD_NOT: u8 = 2;

fn fail(what: &str, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("meshaudit-collector: {what}: {e}");
    ExitCode::from(COULD_NOT)
}

pub async fn migrate(db: &DbArgs) -> ExitCode {
    match open_store(&db.database_url).await {
        Ok(store) => {
            println!("migrations applied ({})", store.backend());
            ExitCode::SUCCESS
        }
        Err(e) => fail("migrate", format!("{e:#}")),
    }
}

pub async fn verify(args: &VerifyArgs) -> ExitCode {
    let store = match open_store(&args.db.database_url).await {
        Ok(s) => s,
        Err(e) => return fail("verify", format!("{e:#}")),
    };
    // SPEC §9: a checkpoint kept elsewhere must be contained in the store's tree.
    if let Some(code) = crate::log::cli::verify_checkpoint(&args.log, &store).await {
        return code;
    }
    let total = store.head().await.map(|h| h.seq.max(0) as u64).unwrap_or(0);
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} verifying {pos}/{len} events [{bar:40}] {eta}",
        ) {
            bar.set_style(style);
        }
        Some(bar)
    } else {
        None
    };
    let options = VerifyOptions {
        archive_dir: args.archive_dir.clone(),
        accept_unproven_anchor: args.accept_unproven_anchor,
        resume_from: None,
    };
    let result = verify_store(store.as_ref(), &options, |checked| {
        if let Some(bar) = &bar {
            bar.set_position(checked);
        }
    })
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => return fail("verify", e),
    };
    print_verify_report(&report, args.archive_dir.as_deref())
}

/// Prints the report; exit 0 only when it is `ok`.
fn print_verify_report(report: &VerifyReport, archive_dir: Option<&std::path::Path>) -> ExitCode {
    for a in &report.anchors {
        let what = match a.status {
            AnchorStatus::Proven => continue,
            AnchorStatus::Accepted => "WARNING: accepted unproven",
            AnchorStatus::Unproven => "UNPROVEN:",
            AnchorStatus::Broken => "BROKEN:",
        };
        println!(
            "{what} retention anchor first_kept_seq {} (archive {} sha256 {}): {}",
            a.first_kept_seq,
            terminal_safe(&a.archive_name),
            terminal_safe(&a.archive_sha256),
            terminal_safe(a.detail.as_deref().unwrap_or("-"))
        );
    }
    if !report.ok {
        if report.reason.as_deref() == Some("unproven_anchor") {
            println!(
                "UNPROVEN: checked {} events; the rows below a retention anchor are gone and nothing proves they were archived (first unproven seq {}): \
                 pass --archive-dir DIR where the archives are, or --accept-unproven-anchor",
                report.checked,
                report.first_bad_seq.unwrap_or_default(),
            );
        } else {
            println!(
                "BROKEN: checked {} events; first bad seq {} ({})",
                report.checked,
                report.first_bad_seq.unwrap_or_default(),
                report.reason.as_deref().unwrap_or("unknown")
            );
        }
        return ExitCode::from(1);
    }
    let proven = report
        .anchors
        .iter()
        .filter(|a| a.status == AnchorStatus::Proven)
        .count();
    if let Some(dir) = archive_dir {
        println!(
            "archives in {}: intact ({proven} retention anchor(s) proven)",
            dir.display()
        );
    }
    println!(
        "OK: checked {} events; head seq {} chain_hash {}",
        report.checked, report.head.seq, report.head.chain_hash
    );
    ExitCode::SUCCESS
}

fn event_query(args: &QueryArgs) -> Result<EventQuery, String> {
    let f = &args.filters;
    let time = |name: &str, v: &Option<String>| -> Result<Option<i64>, String> {
        v.as_deref()
            .map(|s| parse_rfc3339_us(s).ok_or(format!("--{name}: expected RFC 3339, got {s:?}")))
            .transpose()
    };
    Ok(EventQuery {
        tenant: f.tenant.clone(),
        namespace: f.namespace.clone(),
        pod: f.pod.clone(),
        user: f.user.clone(),
        method: f.method.clone(),
        path_prefix: f.path_prefix.clone(),
        status: f.status,
        since_us: time("since", &f.since)?,
        until_us: time("until", &f.until)?,
        after: f.after,
        limit: crate::verify::PAGE,
        text: None,
    })
}

/// A stored string made safe for a terminal: the events are written by
/// clients, so control characters (C0, DEL, C1 — an escape sequence can
/// rewrite the screen or the window title), bidirectional overrides and line
/// or paragraph separators are shown as `\u{..}` escapes, and `\` as `\\`,
/// so the output is unambiguous.
pub fn terminal_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control()
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
            {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// One table row: seq, received_at, verified, method, status, path, id.
fn table_row(e: &StoredEvent) -> String {
    let event = meshaudit_event::value::parse(e.canonical.as_bytes()).ok();
    let field = |path: &[&str]| -> String {
        event
            .as_ref()
            .and_then(|v| v.pointer(path))
            .map(|v| match v {
                meshaudit_event::value::Value::String(s) => terminal_safe(s),
                other => {
                    terminal_safe(&String::from_utf8_lossy(&meshaudit_event::canonical(other)))
                }
            })
            .unwrap_or_else(|| "-".to_owned())
    };
    let verified = match e.verified {
        Some(true) => "yes".to_owned(),
        Some(false) => format!(
            "NO:{}",
            terminal_safe(e.verify_reason.as_deref().unwrap_or("?"))
        ),
        None => "-".to_owned(),
    };
    format!(
        "{:>8}  {:<32}  {:<18}  {:<7}  {:>6}  {:<30}  {}",
        e.seq,
        e.received_at,
        verified,
        field(&["httpmethod"]),
        field(&["http", "statuscode"]),
        field(&["action", "name"]),
        terminal_safe(&e.id)
    )
}

pub async fn query(args: &QueryArgs) -> ExitCode {
    let mut q = match event_query(args) {
        Ok(q) => q,
        Err(e) => return fail("query", e),
    };
    let store = match open_store(&args.db.database_url).await {
        Ok(s) => s,
        Err(e) => return fail("query", format!("{e:#}")),
    };
    let mut remaining = args.filters.limit.unwrap_or(i64::MAX);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.format == OutputFormat::Table {
        let _ = writeln!(
            out,
            "{:>8}  {:<32}  {:<18}  {:<7}  {:>6}  {:<30}  id",
            "seq", "received_at", "verified", "method", "status", "path"
        );
    }
    while remaining > 0 {
        q.limit = remaining.min(crate::verify::PAGE);
        let page = match store.query(&q).await {
            Ok(p) => p,
            Err(e) => return fail("query", e),
        };
        let n = page.len() as i64;
        for e in page {
            q.after = Some(e.seq);
            let line = match args.format {
                OutputFormat::Table => table_row(&e),
                OutputFormat::Ndjson => {
                    match EventItem::try_from(e).and_then(|item| serde_json::to_string(&item)) {
                        Ok(s) => s,
                        Err(err) => return fail("query", err),
                    }
                }
            };
            if writeln!(out, "{line}").is_err() {
                return ExitCode::SUCCESS; // stdout closed (e.g. `| head`)
            }
        }
        remaining -= n;
        if n < q.limit {
            break;
        }
    }
    let _ = out.flush();
    ExitCode::SUCCESS
}

pub async fn retain(args: &RetainArgs) -> ExitCode {
    let cutoff = match parse_cutoff(&args.before) {
        Ok(c) => c,
        Err(e) => return fail("retain", e),
    };
    let now = chrono::Utc::now();
    let min_age = match parse_age(&args.min_age) {
        Ok(a) => a,
        Err(e) => return fail("retain", e),
    };
    let patience = match parse_patience(&args.patience) {
        Ok(p) => p,
        Err(e) => return fail("retain", e),
    };
    if let Err(e) = check_cutoff(cutoff, now, min_age) {
        if !args.force {
            return fail("retain", e);
        }
        eprintln!("meshaudit-collector: retain: --force: {e}");
    }
    let store = match open_store(&args.db.database_url).await {
        Ok(s) => s,
        Err(e) => return fail("retain", format!("{e:#}")),
    };
    // SPEC §11: what an enabled exporter has not delivered stays, unless --force.
    let guard =
        crate::export::guard::check_retain_before(store.as_ref(), &args.db.database_url, cutoff);
    if let Err(e) = guard.await {
        if !args.force {
            return fail("retain", e);
        }
        eprintln!("meshaudit-collector: retain: --force: {e}");
    }
    match retain_with_patience(store.as_ref(), cutoff, &args.archive, now, patience).await {
        Ok(RetainOutcome::Nothing) => {
            println!("nothing received before {} to remove", cutoff.to_rfc3339());
            ExitCode::SUCCESS
        }
        Ok(RetainOutcome::Removed { anchor, archive }) => {
            println!(
                "removed {} events (seq < {}); archive {} sha256 {}",
                anchor.removed,
                anchor.first_kept_seq,
                archive.display(),
                anchor.archive_sha256
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail("retain", e),
    }
}

#[cfg(test)]
mod tests {
    use super::terminal_safe;

    #[test]
    fn table_cells_cannot_drive_the_terminal() {
        assert_eq!(terminal_safe("/orders/1"), "/orders/1");
        assert_eq!(terminal_safe("caf\u{e9}"), "caf\u{e9}");
        assert_eq!(
            terminal_safe("\u{1b}]0;pwned\u{7}x\r\n\t\\"),
            "\\u{1b}]0;pwned\\u{7}x\\r\\n\\t\\\\"
        );
        assert_eq!(terminal_safe("\u{9b}2J\u{7f}"), "\\u{9b}2J\\u{7f}");
        assert_eq!(terminal_safe("a\u{202e}b\u{2028}"), "a\\u{202e}b\\u{2028}");
    }
}
