//! The `raftgate` binary: the CLI and tracing set-up; everything else is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod ctl;

#[derive(Parser)]
#[command(
    name = "raftgate",
    version,
    about = "A clustered HTTP API gateway with no external datastore"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node.
    Serve {
        /// The node config file (TOML); RAFTGATE_* variables override it.
        #[arg(long, env = "RAFTGATE_CONFIG")]
        config: PathBuf,
    },
    /// A local N-node cluster with a demo upstream and demo routes.
    Dev {
        #[arg(long, default_value_t = 3)]
        nodes: u8,
        /// Keep the nodes' data here (default: a temporary directory removed on exit).
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// The admin client: status, resources, keys, declarative apply/export, purge, members.
    Ctl(ctl::CtlArgs),
    /// Only the demo upstream of `raftgate dev` (an echo server), e.g. for docker-compose.yml.
    #[command(hide = true)]
    DemoUpstream {
        #[arg(long, default_value = "0.0.0.0:9900")]
        listen: String,
        /// Answered as "name" in every response, to tell several demo upstreams apart.
        #[arg(long)]
        name: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Ctl(args) = cli.command {
        // A client: its output is its answer, with no node's logging around it.
        return ctl::run(args);
    }
    // RUST_LOG picks what is logged, the access log included (`raftgate::access=off` mutes
    // it). The node's own log is text on stderr; the access log is one JSON object per line
    // on stdout, for a log shipper.
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let text = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
            !raftgate::telemetry::is_access(m)
        }));
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(raftgate::telemetry::access_log_layer(std::io::stdout))
        .init();
    match cli.command {
        Cmd::Serve { config } => serve(config),
        Cmd::Dev { nodes, data } => {
            let system = actix_rt::System::new();
            match system.block_on(raftgate::dev::run(raftgate::dev::DevOptions {
                nodes,
                data,
            })) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("raftgate dev: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Ctl(_) => unreachable!("handled before tracing is set up"),
        Cmd::DemoUpstream { listen, name } => {
            let system = actix_rt::System::new();
            match system.block_on(raftgate::dev::run_demo_upstream(&listen, name)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("raftgate demo-upstream: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn serve(path: PathBuf) -> ExitCode {
    let config = match raftgate::config::load(&path, &raftgate::config::SystemEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("raftgate: {e}");
            return ExitCode::from(2);
        }
    };
    let listeners = match raftgate::Listeners::bind(&config) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("raftgate: {e}");
            return ExitCode::from(1);
        }
    };
    let system = actix_rt::System::new();
    match system.block_on(raftgate::run(
        config,
        listeners,
        raftgate::shutdown_signal(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raftgate: {e}");
            ExitCode::FAILURE
        }
    }
}
