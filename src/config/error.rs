//! `ConfigError`: every way a node config can be wrong, each naming the file, the key and
//! where the value came from.

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::*;

/// A file and, when known, a line: displays as `config FILE` or `config FILE:LINE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct At {
    pub file: PathBuf,
    pub line: Option<usize>,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config {}", self.file.display())?;
        match self.line {
            Some(line) => write!(f, ":{line}"),
            None => Ok(()),
        }
    }
}

/// A key and where its value came from: displays as
/// `config FILE[:LINE]: key "a.b"` or `config FILE: key "a.b" (from RAFTGATE_A_B)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub at: At,
    pub key: String,
    /// Set by the key's `RAFTGATE_*` env var rather than the file.
    pub from_env: bool,
}

impl Place {
    /// The env var that set the value, if one did.
    pub fn env_var(&self) -> Option<String> {
        self.from_env.then(|| file::env_var_for(&self.key))
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: key {:?}", self.at, self.key)?;
        match self.env_var() {
            Some(var) => write!(f, " (from {var})"),
            None => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {}: cannot read: {source}", file.display())]
    Read { file: PathBuf, source: io::Error },

    #[error("{at}: invalid TOML: {message}")]
    Syntax { at: At, message: String },

    #[error("{at}: unknown key {key:?}{}", expected_list(expected))]
    UnknownKey {
        at: At,
        key: String,
        expected: Vec<String>,
    },

    #[error("{place}: {message}")]
    WrongType { place: Place, message: String },

    #[error("{place}: required{when}")]
    Required { place: Place, when: &'static str },

    #[error("{place}: set either it or {other:?}, not both")]
    Conflict { place: Place, other: String },

    #[error("{place}: {value:?} is not a HOST:PORT address ({reason})")]
    BadAddress {
        place: Place,
        value: String,
        reason: &'static str,
    },

    #[error("{place}: cannot resolve {value:?}: {source}")]
    Unresolvable {
        place: Place,
        value: String,
        source: io::Error,
    },

    #[error("{place}: {source}")]
    BadMember {
        place: Place,
        source: ParseMemberError,
    },

    #[error("{place}: member id {id} is listed more than once")]
    DuplicateMember { place: Place, id: u64 },

    #[error("{place}: address {addr:?} is listed for more than one member")]
    DuplicateAddr { place: Place, addr: String },

    #[error(
        "{place}: this node (node_id = {node_id}) is not among the members {members:?}; \
         add it, or set cluster.join = true for a new node joining an existing cluster"
    )]
    NotAMember {
        place: Place,
        node_id: u64,
        members: Vec<u64>,
    },

    #[error("{place}: cannot read {}: {source}", path.display())]
    ReadSecret {
        place: Place,
        path: PathBuf,
        source: io::Error,
    },

    #[error("{place}: {problem}")]
    Invalid { place: Place, problem: String },
}

fn expected_list(expected: &[String]) -> String {
    if expected.is_empty() {
        return String::new();
    }
    format!(" (expected one of: {})", expected.join(", "))
}

impl ConfigError {
    /// The dotted key the error is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } | ConfigError::Syntax { .. } => None,
            ConfigError::UnknownKey { key, .. } => Some(key),
            ConfigError::WrongType { place, .. }
            | ConfigError::Required { place, .. }
            | ConfigError::Conflict { place, .. }
            | ConfigError::BadAddress { place, .. }
            | ConfigError::Unresolvable { place, .. }
            | ConfigError::BadMember { place, .. }
            | ConfigError::DuplicateMember { place, .. }
            | ConfigError::DuplicateAddr { place, .. }
            | ConfigError::NotAMember { place, .. }
            | ConfigError::ReadSecret { place, .. }
            | ConfigError::Invalid { place, .. } => Some(&place.key),
        }
    }
}
