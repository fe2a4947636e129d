//! `weir`: the telemetry agent's command line.

mod admin;
mod config;
mod run;
mod sources;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Weir: telemetry in, Parquet in your own bucket out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent with its embedded control plane (defaults: every source on its default
    /// port, buffer, index and lake under ./weir-data).
    Run {
        /// Configuration file (TOML, or YAML by extension); WEIR_* variables apply on top.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a configuration file and print what is wrong with it.
    Validate {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the version, the lake schema version and the transform ABI version.
    Version,
}

fn init_tracing(cfg: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!(
                "weir {} (lake schema {}, transform ABI {})",
                env!("CARGO_PKG_VERSION"),
                weir_schema::SCHEMA_VERSION,
                weir_schema::abi::ABI_VERSION
            );
            ExitCode::SUCCESS
        }
        Command::Validate { config } => {
            match Config::load(Some(&config)).and_then(Config::validate) {
                Ok(_) => {
                    println!("{}: valid", config.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    ExitCode::from(2)
                }
            }
        }
        Command::Run { config } => {
            let valid = match Config::load(config.as_deref()).and_then(Config::validate) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            init_tracing(&valid.config);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(run::run(valid)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "weir failed");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
