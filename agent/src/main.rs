//! `weir`: the telemetry agent's command line.

mod admin;
mod config;
mod roles;
mod transform_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat, ValidConfig};
use crate::roles::preflight::Role;

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
        /// Configuration file (.toml, .yaml or .yml); WEIR_* variables apply on top.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run the agent against a remote control plane (`control_plane.url`): the DaemonSet role.
    Agent {
        /// Configuration file (.toml, .yaml or .yml); WEIR_* variables apply on top.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Serve the control plane: segment index (sled or PostgreSQL), compaction leases, fleet
    /// view and retention, over an authenticated HTTP API.
    ControlPlane {
        /// Configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run compaction only, against a remote control plane.
    Compactor {
        /// Configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Apply retention once to the configured index and lake and print what expired.
    Retention {
        /// Configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print what would be deleted and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The lake's Iceberg tables (docs/iceberg.md).
    Iceberg {
        #[command(subcommand)]
        command: IcebergCommand,
    },
    /// Check a configuration file and print everything wrong with it (exit status 2).
    Validate {
        /// Configuration file (.toml, .yaml or .yml); WEIR_* variables apply on top.
        #[arg(long, short)]
        config: PathBuf,
        /// Also run the start-up checks of this role (what it needs set, the files it reads),
        /// without binding ports or opening stores.
        #[arg(long, value_enum)]
        role: Option<Role>,
        /// Print the effective configuration (defaults, file and environment merged) as TOML
        /// on stdout, secrets masked; the verdict goes to stderr.
        #[arg(long)]
        print: bool,
    },
    /// Print the version, the lake schema version and the transform ABI version.
    Version,
    /// Work on WebAssembly transforms.
    Transform {
        #[command(subcommand)]
        command: TransformCommand,
    },
}

#[derive(Subcommand)]
enum IcebergCommand {
    /// Write every table's Iceberg metadata afresh from the segment index (one snapshot of
    /// the active segments per table) and delete the older metadata files: for metadata lost
    /// or damaged in the lake.
    Rebuild {
        /// Configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TransformCommand {
    /// Run a module on an OTLP JSON file; print the output (OTLP JSON for logs, rows as JSON
    /// for metrics and traces) and the records in/out and time.
    Test {
        /// The module (.wasm, or .wat text).
        #[arg(long)]
        module: PathBuf,
        /// An OTLP JSON export request (logs, metrics or traces).
        #[arg(long)]
        input: PathBuf,
        /// The transform's JSON config.
        #[arg(long)]
        config: Option<String>,
    },
    /// Create a transform crate from a template.
    New {
        /// Crate name.
        name: String,
        /// Directory to create (default: the name).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Path to Weir's sdk/, which the crate depends on by path (default: the sdk/ of the
        /// checkout this binary was built from; weir-sdk is not on crates.io).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
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

/// glibc's malloc gives threads that contend for it arenas of their own (up to 8 per core), and
/// each arena keeps what was freed in it: under load the agent's peak RSS was 1.9-3.2× what it
/// is with two arenas, at the same rate (docs/performance.md, "Memory: malloc arenas"). So the
/// agent caps them at two before any thread starts, unless `MALLOC_ARENA_MAX` or glibc's
/// `arena_max` tunable is set (glibc reads those itself).
fn cap_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const MALLOC_ARENAS: i32 = 2;
        let tunable = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max"));
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() && !tunable {
            // SAFETY: mallopt only sets a parameter of malloc, here before any other thread
            // runs.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
            }
        }
    }
}

fn main() -> ExitCode {
    cap_malloc_arenas();
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
        Command::Transform { command } => {
            let result = match command {
                TransformCommand::Test {
                    module,
                    input,
                    config,
                } => transform_cmd::test(&module, &input, config.as_deref()),
                TransformCommand::New { name, dir, sdk } => {
                    transform_cmd::new(&name, dir.as_deref(), sdk.as_deref())
                }
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Validate {
            config,
            role,
            print,
        } => validate(&config, role, print),
        Command::Run { config } => serve(Role::Run, config, |v, from| {
            Box::pin(roles::run::serve(v, from))
        }),
        Command::Agent { config } => serve(Role::Agent, config, |v, from| {
            Box::pin(roles::agent::serve(v, from))
        }),
        Command::ControlPlane { config } => serve(Role::ControlPlane, config, |v, from| {
            Box::pin(roles::control_plane::serve(v, from))
        }),
        Command::Compactor { config } => serve(Role::Compactor, config, |v, from| {
            Box::pin(roles::compactor::serve(v, from))
        }),
        Command::Retention { config, dry_run } => serve(Role::Retention, config, move |v, _| {
            Box::pin(roles::retention::once(v, dry_run))
        }),
        Command::Iceberg {
            command: IcebergCommand::Rebuild { config },
        } => serve(Role::IcebergRebuild, config, |v, _| {
            Box::pin(roles::iceberg::rebuild(v))
        }),
    }
}

/// `weir validate`: load, validate, and with `role` that role's start-up checks; with
/// `print` the effective configuration on stdout.
fn validate(config: &std::path::Path, role: Option<Role>, print: bool) -> ExitCode {
    let ignored = config::env::ignored();
    if !ignored.is_empty() {
        eprintln!(
            "note: ignored Kubernetes service variables (not configuration keys): {}",
            ignored.join(", ")
        );
    }
    let loaded = match Config::load(Some(config)) {
        Ok(c) => c,
        Err(e) => {
            // Each problem names its file or variable.
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if print {
        match config::print::masked_toml(&loaded) {
            Ok(text) => print!("{text}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let problems = match loaded.validate() {
        Ok(valid) => role
            .map(|r| roles::preflight::check(r, &valid.config))
            .unwrap_or_default(),
        Err(e) => {
            eprintln!("{}: {e}", config.display());
            return ExitCode::from(2);
        }
    };
    if !problems.is_empty() {
        let role = role.map(|r| r.to_string()).unwrap_or_default();
        eprintln!(
            "{}: cannot start weir {role}:\n{}",
            config.display(),
            problems
                .iter()
                .map(|p| format!("  - {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        return ExitCode::from(2);
    }
    let verdict = match role {
        Some(r) => format!("{}: valid for weir {r}", config.display()),
        None => format!("{}: valid", config.display()),
    };
    if print {
        eprintln!("{verdict}");
    } else {
        println!("{verdict}");
    }
    ExitCode::SUCCESS
}

type RoleFuture = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>>>>;

/// Loads and validates the config, runs the role's start-up checks (those of `weir validate
/// --role`), then runs the role on a multi-threaded runtime. The role gets where its
/// configuration came from, to reload it on SIGHUP.
fn serve(
    which: Role,
    config: Option<PathBuf>,
    role: impl FnOnce(ValidConfig, roles::reload::ConfigSource) -> RoleFuture,
) -> ExitCode {
    let valid = match Config::load(config.as_deref()).and_then(Config::validate) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let problems = roles::preflight::check(which, &valid.config);
    if !problems.is_empty() {
        eprintln!("error: cannot start weir {which}:");
        for p in problems {
            eprintln!("  - {p}");
        }
        return ExitCode::from(2);
    }
    init_tracing(&valid.config);
    for variable in config::env::ignored() {
        tracing::debug!(%variable, "ignored a Kubernetes service variable");
    }
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
    let from = roles::reload::ConfigSource {
        path: config,
        role: which,
    };
    match rt.block_on(role(valid, from)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "weir failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
