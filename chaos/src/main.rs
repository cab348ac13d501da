//! `raftgate-chaos`: named, seed-driven chaos scenarios against a real raftgate cluster, with a
//! client-side history and named invariants.
//!
//! # Layout
//! - `local`: the local environment (processes on loopback, signals) — `relay`: the
//!   fault-injecting TCP relay in front of each cluster port;
//! - `upstream`: the upstream behind the routes (can go down or slow);
//! - `workload`: the clients and the observer, recording the `history`;
//! - `nemesis`: the scenarios and what they break; `scenario`: one run end to end;
//! - `checkers`: the invariants, pure functions over the history and the final states;
//! - `report`: the table and the JSON report; `api`: admin and proxy calls.
#![forbid(unsafe_code)]

mod api;
mod checkers;
mod cluster;
mod docker;
mod history;
mod local;
mod nemesis;
mod relay;
mod report;
mod scenario;
mod upstream;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "raftgate-chaos",
    about = "Chaos scenarios against a raftgate cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Env {
    Local,
    Docker,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs SCENARIO, a comma-separated list, or `all`.
    Run {
        scenario: String,
        #[arg(long, value_enum, default_value = "local")]
        env: Env,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Seconds each scenario keeps injecting faults (at least one round runs).
        #[arg(long, default_value_t = 20)]
        duration: u64,
        /// Where to write the JSON report.
        #[arg(long, default_value = "target/chaos/report.json")]
        json: PathBuf,
        /// Put the whole history (every operation) in the JSON report.
        #[arg(long)]
        full_history: bool,
        #[arg(long, default_value_t = 100)]
        heartbeat_ms: u64,
        /// raftgate's own default (`[cluster] election_timeout_ms`).
        #[arg(long, default_value_t = 250)]
        election_timeout_ms: u64,
        /// `[cluster] snapshot_every` of the nodes: low, so that restarts install snapshots.
        #[arg(long, default_value_t = 200)]
        snapshot_every: u64,
        /// `[cluster] logs_to_keep` of the nodes: low, so that a node down for a few hundred
        /// writes must install a snapshot (raftgate's default keeps 1000).
        #[arg(long, default_value_t = 20)]
        logs_to_keep: u64,
    },
    /// Lists the scenarios and their pass criteria.
    List,
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("raftgate-chaos: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn real_main() -> anyhow::Result<bool> {
    let cli = Cli::parse();
    let Cmd::Run {
        scenario,
        env,
        seed,
        duration,
        json,
        full_history,
        heartbeat_ms,
        election_timeout_ms,
        snapshot_every,
        logs_to_keep,
    } = cli.command
    else {
        for s in nemesis::SCENARIOS {
            println!("{:>2} {:<20} {}", s.number, s.name, s.about);
        }
        return Ok(true);
    };
    let scenarios: Vec<&nemesis::Scenario> = if scenario == "all" {
        nemesis::SCENARIOS.iter().collect()
    } else {
        scenario
            .split(',')
            .map(|n| {
                nemesis::find(n).ok_or_else(|| {
                    anyhow::anyhow!("unknown scenario {n:?} (`raftgate-chaos list` names them)")
                })
            })
            .collect::<Result<_, _>>()?
    };
    let spec = match env {
        Env::Local => cluster::EnvSpec::Local(local::binary()?),
        Env::Docker => docker_env(&scenarios)?,
    };
    let opts = local::NodeOptions {
        heartbeat_ms,
        election_timeout_ms,
        snapshot_every,
        logs_to_keep,
    };
    // Relays and the upstream run on their own threads, so the workload never slows them.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if env == Env::Docker {
        rt.spawn(clean_up_on_ctrl_c());
    }
    let mut reports = Vec::new();
    for s in scenarios {
        println!(
            "== {} (#{}, {} nodes, seed {seed}, {duration} s, --env {})",
            s.name,
            s.number,
            s.nodes,
            spec.name()
        );
        let report = actix_rt::System::new().block_on(scenario::run(
            s,
            seed,
            Duration::from_secs(duration),
            &spec,
            rt.handle(),
            &opts,
        ))?;
        reports.push(report);
    }
    print!("{}", report::table(&reports));
    if let Some(dir) = json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        &json,
        serde_json::to_vec_pretty(&report::json(&reports, full_history))?,
    )?;
    println!("JSON report: {}", json.display());
    Ok(reports.iter().all(|r| r.ok))
}

/// The docker environment, after checking that every scenario asked for can run there.
fn docker_env(scenarios: &[&nemesis::Scenario]) -> anyhow::Result<cluster::EnvSpec> {
    let refused: Vec<String> = scenarios
        .iter()
        .filter_map(|s| docker::local_only(s.name).map(|why| format!("{}: {why}", s.name)))
        .collect();
    if !refused.is_empty() {
        anyhow::bail!(
            "cannot run with --env docker, run with --env local instead: {}",
            refused.join("; ")
        );
    }
    if cfg!(feature = "broken-quota") {
        anyhow::bail!(
            "the broken-quota build runs with --env local only (the image is the normal build)"
        );
    }
    Ok(cluster::EnvSpec::Docker(docker::DockerEnv::new()?))
}

/// On Ctrl-C, removes this process's containers, networks, volumes and iptables rules before
/// exiting (130), so that an interrupted docker run leaves nothing behind.
async fn clean_up_on_ctrl_c() {
    if tokio::signal::ctrl_c().await.is_ok() {
        eprintln!("raftgate-chaos: interrupted, removing this run's containers and rules");
        let me = std::process::id();
        docker::sweep(|pid| pid == me);
        std::process::exit(130);
    }
}
