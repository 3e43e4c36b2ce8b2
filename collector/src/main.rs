//! `meshaudit-collector`: parses the command line, sets up logging and runs
//! one command; all behaviour lives in the library.

use clap::Parser;
use meshaudit_collector::config::{Cli, Command, LogFormat};
use meshaudit_collector::{cli, server};
use std::io::IsTerminal;
use std::process::ExitCode;

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshaudit-collector: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                init_tracing(args.db.log_format);
                let settings = match args.validate() {
                    Ok(s) => s,
                    Err(e) => {
                        for problem in &e.problems {
                            eprintln!("meshaudit-collector: config: {problem}");
                        }
                        return ExitCode::from(2);
                    }
                };
                let listener = match std::net::TcpListener::bind(settings.listen) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!(
                            "meshaudit-collector: cannot listen on {}: {e}",
                            settings.listen
                        );
                        return ExitCode::from(2);
                    }
                };
                match server::run(settings, listener, server::shutdown_signal()).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!("{e:#}");
                        eprintln!("meshaudit-collector: {e:#}");
                        ExitCode::FAILURE
                    }
                }
            }
            Command::Migrate(db) => {
                init_tracing(db.log_format);
                cli::migrate(&db).await
            }
            Command::Verify(args) => {
                init_tracing(args.db.log_format);
                cli::verify(&args).await
            }
            Command::LogKeygen(args) => meshaudit_collector::log::cli::keygen(&args),
            Command::VerifyOffline(args) => meshaudit_collector::log::cli::verify_offline(&args),
            Command::Query(args) => {
                init_tracing(args.db.log_format);
                cli::query(&args).await
            }
            Command::Retain(args) => {
                init_tracing(args.db.log_format);
                cli::retain(&args).await
            }
            Command::Export(args) => {
                init_tracing(args.db.log_format);
                meshaudit_collector::export::cli::run(&args).await
            }
        }
    })
}
