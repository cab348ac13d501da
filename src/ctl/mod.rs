//! `raftgate ctl`: the admin API from the command line. Results go to stdout; an admin error is
//! one line on stderr (`error: 409 service_in_use: …`) and exit code 1; usage errors (clap's)
//! and input files that cannot be read or parsed exit 2.
//!
//! - [`client`]: the HTTP calls and the one-line errors.
//! - [`resources`]: `get`, `put`, `delete`, `keys`, `jwt`.
//! - [`apply`]: `apply` and `export`, the declarative document (`/config`).
//! - [`cluster`]: `status`, `members`, `purge`.

mod apply;
mod client;
mod cluster;
mod resources;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};

pub use client::Admin;

#[derive(clap::Args)]
pub struct CtlArgs {
    /// The admin API of any node: writes sent to a follower are forwarded to the leader.
    #[arg(long, env = "RAFTGATE_ADMIN", default_value = "http://127.0.0.1:8001")]
    admin: String,
    /// The admin bearer token (the node's `[admin] token`).
    #[arg(long, env = "RAFTGATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A PEM file of CA certificates to verify an `https://` admin URL with.
    #[arg(long, env = "RAFTGATE_CACERT")]
    cacert: Option<String>,
    #[command(subcommand)]
    command: CtlCmd,
}

#[derive(Subcommand)]
enum CtlCmd {
    /// The cluster: node, leader, term, revision and members (GET /cluster).
    Status {
        /// The answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Shows one resource, or every resource of a kind.
    Get { kind: Kind, name: Option<String> },
    /// Creates or replaces a resource (an idempotent upsert).
    Put {
        kind: Kind,
        name: String,
        #[command(flatten)]
        input: Input,
        /// Only if the resource is at this version.
        #[arg(long)]
        if_match: Option<u64>,
    },
    /// Deletes a resource.
    Delete {
        kind: Kind,
        name: String,
        /// Only if the resource is at this version.
        #[arg(long)]
        if_match: Option<u64>,
    },
    /// A consumer's API keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// A consumer's JWT credentials.
    #[command(subcommand)]
    Jwt(JwtCmd),
    /// Makes services, routes and consumers exactly what FILE says, in one atomic write; shows
    /// the diff first. An unchanged document sends nothing.
    Apply {
        /// The document, TOML or JSON (by extension, else by content); `-` reads stdin.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Show the diff, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Prints services, routes and consumers as one document `apply -f` takes back.
    Export {
        #[arg(long, value_enum, default_value_t = Format::Toml)]
        format: Format,
    },
    /// Drops cached responses on every node: those of a route, under a path prefix, or all.
    Purge {
        #[arg(long)]
        route: Option<String>,
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Adds or removes cluster members.
    #[command(subcommand)]
    Members(MembersCmd),
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Creates a key; it is shown this once (the cluster keeps only its hash).
    Create {
        consumer: String,
        /// Register this key instead of generating one.
        #[arg(long)]
        key: Option<String>,
    },
    /// Lists a consumer's key ids (never the keys).
    List { consumer: String },
    /// Revokes a key by id.
    Revoke { consumer: String, id: String },
}

#[derive(Subcommand)]
enum JwtCmd {
    /// Adds or replaces a JWT credential.
    Put {
        consumer: String,
        key_id: String,
        #[command(flatten)]
        input: Input,
    },
    Get {
        consumer: String,
        key_id: String,
    },
    List {
        consumer: String,
    },
    Delete {
        consumer: String,
        key_id: String,
    },
}

#[derive(Subcommand)]
enum MembersCmd {
    /// Adds a node by id and cluster address; it becomes a voter once caught up.
    Add {
        id: u64,
        addr: String,
        /// Keep it a learner for good: it follows the log and serves, but never votes.
        #[arg(long)]
        learner: bool,
    },
    /// Removes a node.
    Remove { id: u64 },
}

/// A resource body: from a file or inline.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct Input {
    /// A TOML or JSON file holding the resource; `-` reads stdin.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// The resource as JSON.
    #[arg(long)]
    data: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Kind {
    #[value(alias = "service")]
    Services,
    #[value(alias = "route")]
    Routes,
    #[value(alias = "consumer")]
    Consumers,
    #[value(alias = "certificate", alias = "certs")]
    Certificates,
}

impl Kind {
    fn plural(self) -> &'static str {
        match self {
            Kind::Services => "services",
            Kind::Routes => "routes",
            Kind::Consumers => "consumers",
            Kind::Certificates => "certificates",
        }
    }

    fn singular(self) -> &'static str {
        self.plural().trim_end_matches('s')
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Toml,
    Json,
}

/// Why a ctl command failed; prints as one line.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The admin API answered with an error.
    #[error("{status} {code}: {message}{}", field_note(.field, .message))]
    Api {
        status: u16,
        code: String,
        message: String,
        field: Option<String>,
    },
    /// No answer: the node is down, the address is wrong, the connection broke.
    #[error("cannot reach the admin API: {0}")]
    Transport(String),
    /// A file or argument that cannot be used (exit 2).
    #[error("{0}")]
    Usage(String),
}

fn field_note(field: &Option<String>, message: &str) -> String {
    match field {
        Some(f) if !message.contains(f.as_str()) => format!(" (field {f})"),
        _ => String::new(),
    }
}

impl CtlError {
    fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Runs one ctl command to completion.
pub fn run(args: CtlArgs) -> ExitCode {
    let system = actix_rt::System::new();
    match system.block_on(dispatch(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn dispatch(args: CtlArgs) -> Result<(), CtlError> {
    let admin = Admin::new(&args.admin, args.token, args.cacert.as_deref())?;
    match args.command {
        CtlCmd::Status { json } => cluster::status(&admin, json).await,
        CtlCmd::Get { kind, name } => resources::get(&admin, kind, name.as_deref()).await,
        CtlCmd::Put {
            kind,
            name,
            input,
            if_match,
        } => resources::put(&admin, kind, &name, &input, if_match).await,
        CtlCmd::Delete {
            kind,
            name,
            if_match,
        } => resources::delete(&admin, kind, &name, if_match).await,
        CtlCmd::Keys(cmd) => resources::keys(&admin, cmd).await,
        CtlCmd::Jwt(cmd) => resources::jwt(&admin, cmd).await,
        CtlCmd::Apply { file, dry_run } => apply::apply(&admin, &file, dry_run).await,
        CtlCmd::Export { format } => apply::export(&admin, format).await,
        CtlCmd::Purge { route, prefix } => cluster::purge(&admin, route, prefix).await,
        CtlCmd::Members(cmd) => cluster::members(&admin, cmd).await,
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).expect("JSON values serialise")
}

impl Input {
    /// The body: `--data` as JSON, or the file as TOML or JSON.
    fn value(&self) -> Result<serde_json::Value, CtlError> {
        match (&self.data, &self.file) {
            (Some(data), _) => serde_json::from_str(data)
                .map_err(|e| CtlError::Usage(format!("--data is not valid JSON: {e}"))),
            (None, Some(path)) => load(path),
            (None, None) => Err(CtlError::Usage("give -f FILE or --data JSON".into())),
        }
    }
}

/// A TOML or JSON file (`-`: stdin) as JSON: by its extension, else JSON when it starts with
/// `{`, else TOML.
fn load(path: &std::path::Path) -> Result<serde_json::Value, CtlError> {
    let shown = path.display();
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|e| CtlError::Usage(format!("cannot read {shown}: {e}")))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let json = match ext {
        "json" => true,
        "toml" => false,
        _ => text.trim_start().starts_with('{'),
    };
    if json {
        serde_json::from_str(&text).map_err(|e| CtlError::Usage(format!("{shown}: {e}")))
    } else {
        let value: toml::Value = toml::from_str(&text)
            .map_err(|e| CtlError::Usage(format!("{shown}: {}", e.to_string().trim_end())))?;
        serde_json::to_value(value).map_err(|e| CtlError::Usage(format!("{shown}: {e}")))
    }
}
