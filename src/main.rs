//! The `gaitkeeper` command line: parse, load, call into the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use gaitkeeper::config::Config;

// The proxy allocates and frees many small buffers per request; mimalloc does that markedly
// cheaper than the system allocator (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "gaitkeeper",
    version,
    about = "Behavioural-biometrics login proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy with a config file.
    Run {
        /// The YAML config file.
        #[arg(short, long, default_value = "config/gaitkeeper.yaml")]
        config: PathBuf,
    },
    /// Validate a config file; exits non-zero and explains every problem found.
    CheckConfig {
        /// The YAML config file.
        file: PathBuf,
    },
    /// Print the JSON Schema of the config file (for editors).
    ConfigSchema,
    /// Print the nginx `location` blocks that send each app's login pages, login submits and
    /// gaitkeeper's own paths to gaitkeeper (the "login routes only" topology,
    /// docs/deployment.md).
    EdgeLocations {
        /// The YAML config file.
        #[arg(short, long, default_value = "config/gaitkeeper.yaml")]
        config: PathBuf,
        /// The name of the nginx `upstream` block that reaches gaitkeeper.
        #[arg(long, default_value = "gaitkeeper")]
        upstream: String,
    },
    /// Inspect and manage user profiles in the store (works while the proxy runs).
    Users {
        /// The YAML config file (for `store:`, `server.data_dir` and `secrets.key`).
        #[arg(short, long, default_value = "config/gaitkeeper.yaml", global = true)]
        config: PathBuf,
        /// Which app's users (`apps[].name`); needed when the config lists several apps.
        #[arg(long, global = true)]
        app: Option<String>,
        #[command(subcommand)]
        command: gaitkeeper::admin::users::UsersCommand,
    },
    /// Read the audit trail: the newest events, or every event of one incident (works while
    /// the proxy runs).
    Audit {
        /// The YAML config file (for `store:`, `server.data_dir` and `secrets.key`).
        #[arg(short, long, default_value = "config/gaitkeeper.yaml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: gaitkeeper::audit::cli::AuditCommand,
    },
    /// The policy: try other settings on the audit trail's logins before changing them.
    Policy {
        /// The YAML config file (for `store:`, `server.data_dir`, `secrets.key` and the
        /// running policy).
        #[arg(short, long, default_value = "config/gaitkeeper.yaml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: gaitkeeper::whatif::cli::PolicyCommand,
    },
    /// Train the global model now from the store's verified logins (instances pick it up at
    /// their next `learning.global_retrain` tick); says why when the population is too small.
    Train {
        /// The YAML config file (for `store:`, `learning:`, `server.data_dir`, `secrets.key`).
        #[arg(short, long, default_value = "config/gaitkeeper.yaml")]
        config: PathBuf,
    },
    /// Run the demo: the bundled legacy app with gaitkeeper in front of it.
    Demo {
        /// Directory for the demo's data (config, secret, store).
        #[arg(long, default_value = "gaitkeeper-demo")]
        data_dir: PathBuf,
        /// Port of the proxy (what you open in the browser).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Port of the legacy app.
        #[arg(long, default_value_t = 3000)]
        app_port: u16,
        /// Port of the admin listener (metrics, health).
        #[arg(long, default_value_t = 9090)]
        admin_port: u16,
    },
    /// Run the login-time scoring code on public datasets and report error rates.
    #[command(subcommand)]
    Eval(EvalCommand),
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Fixed-text keystroke data (Keystroke100 or CMU), per-user EER.
    Keystrokes {
        /// Dataset layout.
        #[arg(long, value_enum, default_value = "keystroke100")]
        format: KeystrokeFormatArg,
        /// Dataset directory (for cmu: the CSV file or its folder).
        #[arg(long, default_value = "../shared/data/keystroke100")]
        data: PathBuf,
        /// Output directory for per-detector score files and the ROC plot.
        #[arg(long, default_value = "eval-out")]
        out: PathBuf,
        /// Also write the fused scores to this CSV file.
        #[arg(long)]
        scores: Option<PathBuf>,
        /// Seed of the forest and the impostor sampling.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Balabit mouse dynamics, pooled AUC/EER at K = 5 and 20 actions.
    Mouse {
        /// Dataset layout.
        #[arg(long, value_enum, default_value = "balabit")]
        format: MouseFormatArg,
        /// Directory holding balabit-mouse-dynamics.tar.gz (read in place) or balabit/.
        #[arg(long, default_value = "../shared/data/balabit-mouse")]
        data: PathBuf,
        /// Output directory for per-detector score files and the ROC plot.
        #[arg(long, default_value = "eval-out")]
        out: PathBuf,
        /// Seed of the forest and the impostor sampling.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Attacks generated against the public data sets' profiles (replays, population-sampled
    /// and constant-rate timings, sparse payloads, generated mouse paths), judged by the
    /// login path's own code; reports the share caught and what the rules cost genuine users.
    Attacks {
        /// Keystroke100 directory (skipped when absent).
        #[arg(long, default_value = "../shared/data/keystroke100")]
        keystrokes: PathBuf,
        /// Balabit directory (skipped when absent).
        #[arg(long, default_value = "../shared/data/balabit-mouse")]
        mouse: PathBuf,
        /// Seed of the generated attacks and the forest.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum KeystrokeFormatArg {
    Keystroke100,
    Cmu,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum MouseFormatArg {
    Balabit,
}

fn main() -> ExitCode {
    // Stores, spools and audit streams are created private to this user (0600 / 0700).
    gaitkeeper::files::private_by_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => match Config::load(&config) {
            Ok(loaded) => {
                gaitkeeper::logging::init(&loaded.logging);
                gaitkeeper::server::run(&config).map_err(anyhow::Error::from)
            }
            Err(e) => Err(e.into()),
        },
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(_) => {
                println!("{}: OK", file.display());
                Ok(())
            }
            Err(e) => Err(e.into()),
        },
        Command::Users {
            config,
            app,
            command,
        } => Config::load(&config)
            .map_err(anyhow::Error::from)
            .and_then(|loaded| {
                gaitkeeper::admin::users::run(
                    &loaded,
                    app.as_deref(),
                    command,
                    &mut std::io::stdout().lock(),
                )
            }),
        Command::Audit { config, command } => Config::load(&config)
            .map_err(anyhow::Error::from)
            .and_then(|loaded| {
                gaitkeeper::audit::cli::run(&loaded, command, &mut std::io::stdout().lock())
            }),
        Command::Policy { config, command } => Config::load(&config)
            .map_err(anyhow::Error::from)
            .and_then(|loaded| {
                gaitkeeper::whatif::cli::run(&loaded, command, &mut std::io::stdout().lock())
                    .map_err(anyhow::Error::from)
            }),
        Command::Train { config } => {
            Config::load(&config)
                .map_err(anyhow::Error::from)
                .and_then(|loaded| {
                    gaitkeeper::learn::run_train(&loaded, &mut std::io::stdout().lock())
                })
        }
        Command::ConfigSchema => {
            println!("{}", Config::json_schema());
            Ok(())
        }
        Command::EdgeLocations { config, upstream } => Config::load(&config)
            .map(|loaded| {
                print!(
                    "{}",
                    gaitkeeper::admin::edge_locations::nginx_locations(&loaded, &upstream)
                )
            })
            .map_err(anyhow::Error::from),
        Command::Demo {
            data_dir,
            port,
            app_port,
            admin_port,
        } => gaitkeeper::demo::run(&gaitkeeper::demo::DemoOptions {
            data_dir,
            port,
            app_port,
            admin_port,
        }),
        Command::Eval(EvalCommand::Keystrokes {
            format,
            data,
            out,
            scores,
            seed,
        }) => {
            let format = match format {
                KeystrokeFormatArg::Keystroke100 => gaitkeeper::eval::KeystrokeFormat::Keystroke100,
                KeystrokeFormatArg::Cmu => gaitkeeper::eval::KeystrokeFormat::Cmu,
            };
            gaitkeeper::eval::run_keystrokes(format, &data, &out, scores.as_deref(), seed)
                .map(|table| print!("{table}"))
        }
        Command::Eval(EvalCommand::Mouse {
            format: MouseFormatArg::Balabit,
            data,
            out,
            seed,
        }) => gaitkeeper::eval::run_mouse(&data, &out, seed).map(|table| print!("{table}")),
        Command::Eval(EvalCommand::Attacks {
            keystrokes,
            mouse,
            seed,
        }) => {
            fn present(p: &Path) -> Option<&Path> {
                p.exists().then_some(p)
            }
            if present(&keystrokes).is_none() && present(&mouse).is_none() {
                Err(anyhow::anyhow!(
                    "neither {} nor {} exists: pass --keystrokes DIR and/or --mouse DIR",
                    keystrokes.display(),
                    mouse.display()
                ))
            } else {
                gaitkeeper::eval::attacks::run(present(&keystrokes), present(&mouse), seed)
                    .map(|report| print!("{report}"))
            }
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
