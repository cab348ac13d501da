//! The raw node config: serde types that mirror API.md §2 key for key, the parse that turns
//! toml/serde errors into [`ConfigError`]s naming the dotted key and line, and the
//! `RAFTGATE_*` env overlay. Nothing here judges values; `super::validate` does.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::{At, ConfigError, Place};

pub const DEFAULT_PROXY: &str = "0.0.0.0:8000";
pub const DEFAULT_ADMIN: &str = "127.0.0.1:8001";
pub const DEFAULT_CLUSTER: &str = "0.0.0.0:8002";
pub const DEFAULT_HEARTBEAT_MS: u64 = 100;
pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = 250;
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 5000;
pub const DEFAULT_LOGS_TO_KEEP: u64 = 1000;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 65536;
pub const DEFAULT_MAX_HEADERS: usize = 100;
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_DRAIN_GRACE_MS: u64 = 1_000;
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 64 * 1024 * 1024;
pub const DEFAULT_CACHE_MAX_ENTRY_BYTES: u64 = 1024 * 1024;

/// The whole file. `node_id` and `data_dir` are `Option` because an env var may supply them;
/// their absence is reported by validation, after the overlay.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub node_id: Option<u64>,
    pub data_dir: Option<PathBuf>,
    pub workers: usize,
    pub listen: FileListen,
    pub cluster: FileCluster,
    pub admin: FileAdmin,
    pub limits: FileLimits,
    pub cache: FileCache,
    pub telemetry: FileTelemetry,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub struct FileListen {
    pub proxy: String,
    pub admin: String,
    pub cluster: String,
    pub proxy_tls: Option<FileTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct FileTls {
    pub addr: String,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub struct FileCluster {
    pub members: Vec<String>,
    pub join: bool,
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    pub snapshot_every: u64,
    pub logs_to_keep: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub struct FileAdmin {
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub struct FileLimits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: u64,
    pub header_timeout_ms: u64,
    pub drain_timeout_ms: u64,
    pub drain_grace_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub struct FileCache {
    pub max_bytes: u64,
    pub max_entry_bytes: u64,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub struct FileTelemetry {
    pub metrics: bool,
}

impl Default for FileTelemetry {
    fn default() -> Self {
        FileTelemetry { metrics: true }
    }
}

impl Default for FileListen {
    fn default() -> Self {
        FileListen {
            proxy: DEFAULT_PROXY.into(),
            admin: DEFAULT_ADMIN.into(),
            cluster: DEFAULT_CLUSTER.into(),
            proxy_tls: None,
        }
    }
}

impl Default for FileCluster {
    fn default() -> Self {
        FileCluster {
            members: Vec::new(),
            join: false,
            secret: None,
            secret_file: None,
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            election_timeout_ms: DEFAULT_ELECTION_TIMEOUT_MS,
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
            logs_to_keep: DEFAULT_LOGS_TO_KEEP,
        }
    }
}

impl Default for FileLimits {
    fn default() -> Self {
        FileLimits {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            header_timeout_ms: DEFAULT_HEADER_TIMEOUT_MS,
            drain_timeout_ms: DEFAULT_DRAIN_TIMEOUT_MS,
            drain_grace_ms: DEFAULT_DRAIN_GRACE_MS,
        }
    }
}

impl Default for FileCache {
    fn default() -> Self {
        FileCache {
            max_bytes: DEFAULT_CACHE_MAX_BYTES,
            max_entry_bytes: DEFAULT_CACHE_MAX_ENTRY_BYTES,
        }
    }
}

/// Where each value came from, so that every error can name the file, the line and the key,
/// or the env var that overrode it.
#[derive(Debug)]
pub struct Origin {
    pub file: PathBuf,
    /// Every key of the file as (byte offset of the key, line, dotted path), sorted by offset.
    keys: Vec<(usize, usize, String)>,
    /// Dotted keys set by an env var.
    from_env: BTreeSet<&'static str>,
}

impl Origin {
    pub fn at(&self, line: Option<usize>) -> At {
        At {
            file: self.file.clone(),
            line,
        }
    }

    /// The place of `key` for an error message: its env var if one set it, else its line.
    pub fn place(&self, key: &str) -> Place {
        if self.from_env.contains(key) {
            return Place {
                at: self.at(None),
                key: key.to_owned(),
                from_env: true,
            };
        }
        let line = self.keys.iter().find(|k| k.2 == key).map(|k| k.1);
        Place {
            at: self.at(line),
            key: key.to_owned(),
            from_env: false,
        }
    }

    /// The last key starting at or before `offset`: the key itself for an error spanning a key,
    /// the key owning the value for an error spanning a value.
    fn key_before(&self, offset: usize) -> Option<&str> {
        let i = self.keys.partition_point(|k| k.0 <= offset);
        i.checked_sub(1).map(|i| self.keys[i].2.as_str())
    }
}

/// Parses `text`; relative paths in it are made relative to the file's directory.
pub fn parse(text: &str, file: &Path) -> Result<(FileConfig, Origin), ConfigError> {
    let mut origin = Origin {
        file: file.to_owned(),
        keys: Vec::new(),
        from_env: BTreeSet::new(),
    };
    // Parse once as a plain table so that bad TOML is reported as such, not as a schema error.
    toml::from_str::<toml::Table>(text).map_err(|e| {
        let line = e.span().map(|s| line_at(text, s.start));
        ConfigError::Syntax {
            at: origin.at(line),
            message: e.message().trim_end().to_owned(),
        }
    })?;
    origin.keys = index_keys(text);
    let mut raw: FileConfig = toml::from_str(text).map_err(|e| schema_error(&e, text, &origin))?;

    let base = file.parent().unwrap_or(Path::new(""));
    for path in [
        raw.data_dir.as_mut(),
        raw.cluster.secret_file.as_mut(),
        raw.admin.token_file.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        if path.is_relative() {
            *path = base.join(&*path);
        }
    }
    Ok((raw, origin))
}

fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Maps a serde error (unknown field, wrong type, missing field) to the dotted key it is about.
/// toml records the key path internally but does not expose it; its span does point at the
/// offending key or value, and `Origin` knows every key's offset.
fn schema_error(e: &toml::de::Error, text: &str, origin: &Origin) -> ConfigError {
    let offset = e.span().map(|s| s.start);
    let at = origin.at(offset.map(|o| line_at(text, o)));
    let key = offset.and_then(|o| origin.key_before(o));
    let message = e.message().trim_end();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or_default();
        // The key under the span ends with the unknown name; fall back to the bare name.
        let key = key
            .filter(|k| k.rsplit('.').next() == Some(name))
            .unwrap_or(name);
        let expected = rest
            .split_once(", expected ")
            .map(|(_, list)| list.split('`').skip(1).step_by(2).map(str::to_owned))
            .into_iter()
            .flatten()
            .collect();
        return ConfigError::UnknownKey {
            at,
            key: key.to_owned(),
            expected,
        };
    }
    match key {
        Some(key) => ConfigError::WrongType {
            place: Place {
                at,
                key: key.to_owned(),
                from_env: false,
            },
            message: message.to_owned(),
        },
        None => ConfigError::Syntax {
            at,
            message: message.to_owned(),
        },
    }
}

/// Every key of the document with its offset and line. Best effort: the index only improves
/// error messages, so a document it cannot walk just yields no entries.
fn index_keys(text: &str) -> Vec<(usize, usize, String)> {
    let mut found = Vec::new();
    let walk = KeyWalk {
        prefix: "",
        out: &mut found,
    };
    if walk.deserialize(toml::Deserializer::new(text)).is_err() {
        return Vec::new();
    }
    let mut keys: Vec<_> = found
        .into_iter()
        .map(|(offset, path)| (offset, line_at(text, offset), path))
        .collect();
    keys.sort();
    keys
}

/// Visits any TOML value, recording each table key's span and dotted path.
struct KeyWalk<'a> {
    prefix: &'a str,
    out: &'a mut Vec<(usize, String)>,
}

impl<'de> DeserializeSeed<'de> for KeyWalk<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyWalk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let out = self.out;
        while seq
            .next_element_seed(KeyWalk {
                prefix: self.prefix,
                out: &mut *out,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.out;
        while let Some(key) = map.next_key::<toml::Spanned<String>>()? {
            let path = match self.prefix {
                "" => key.get_ref().clone(),
                prefix => format!("{prefix}.{}", key.get_ref()),
            };
            out.push((key.span().start, path.clone()));
            map.next_value_seed(KeyWalk {
                prefix: &path,
                out: &mut *out,
            })?;
        }
        Ok(())
    }
}

/// Where the environment comes from; tests pass a [`MapEnv`] instead of touching the process.
pub trait Env {
    fn var(&self, key: &str) -> Option<String>;
}

/// The process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemEnv;

impl Env for SystemEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

/// A fixed environment, for tests and for building configs that must ignore the process env.
#[derive(Clone, Debug, Default)]
pub struct MapEnv(pub HashMap<String, String>);

impl Env for MapEnv {
    fn var(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for MapEnv {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        MapEnv(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// The env var that overrides dotted `key`: `cluster.secret` → `RAFTGATE_CLUSTER_SECRET`.
pub fn env_var_for(key: &str) -> String {
    format!("RAFTGATE_{}", key.to_ascii_uppercase().replace('.', "_"))
}

impl FileConfig {
    /// Overlays `RAFTGATE_*` env vars on the file, recording in `origin` which keys they set.
    /// An empty variable counts as unset. A secret (or token) from the env replaces both the
    /// file's inline value and its `_file` path, so an env var always wins over the file.
    pub fn apply_env(&mut self, env: &dyn Env, origin: &mut Origin) -> Result<(), ConfigError> {
        let mut ov = Overlay { env, origin };
        if let Some(v) = ov.parsed("node_id")? {
            self.node_id = Some(v);
        }
        if let Some(v) = ov.get("data_dir") {
            self.data_dir = Some(v.into());
        }
        ov.set("workers", &mut self.workers)?;

        let listen = &mut self.listen;
        ov.set("listen.proxy", &mut listen.proxy)?;
        ov.set("listen.admin", &mut listen.admin)?;
        ov.set("listen.cluster", &mut listen.cluster)?;
        if let Some(addr) = ov.get("listen.proxy_tls") {
            listen.proxy_tls = Some(FileTls { addr });
        }

        let cluster = &mut self.cluster;
        if let Some(v) = ov.get("cluster.members") {
            cluster.members = v
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect();
        }
        ov.set("cluster.join", &mut cluster.join)?;
        ov.set("cluster.heartbeat_ms", &mut cluster.heartbeat_ms)?;
        ov.set(
            "cluster.election_timeout_ms",
            &mut cluster.election_timeout_ms,
        )?;
        ov.set("cluster.snapshot_every", &mut cluster.snapshot_every)?;
        ov.set("cluster.logs_to_keep", &mut cluster.logs_to_keep)?;
        ov.secret(
            ("cluster.secret", &mut cluster.secret),
            ("cluster.secret_file", &mut cluster.secret_file),
        );

        let admin = &mut self.admin;
        ov.secret(
            ("admin.token", &mut admin.token),
            ("admin.token_file", &mut admin.token_file),
        );

        let limits = &mut self.limits;
        ov.set("limits.max_header_bytes", &mut limits.max_header_bytes)?;
        ov.set("limits.max_headers", &mut limits.max_headers)?;
        ov.set("limits.max_body_bytes", &mut limits.max_body_bytes)?;
        ov.set("limits.header_timeout_ms", &mut limits.header_timeout_ms)?;
        ov.set("limits.drain_timeout_ms", &mut limits.drain_timeout_ms)?;
        ov.set("limits.drain_grace_ms", &mut limits.drain_grace_ms)?;

        let cache = &mut self.cache;
        ov.set("cache.max_bytes", &mut cache.max_bytes)?;
        ov.set("cache.max_entry_bytes", &mut cache.max_entry_bytes)?;

        ov.set("telemetry.metrics", &mut self.telemetry.metrics)?;
        Ok(())
    }
}

struct Overlay<'a> {
    env: &'a dyn Env,
    origin: &'a mut Origin,
}

impl Overlay<'_> {
    fn get(&mut self, key: &'static str) -> Option<String> {
        let value = self.env.var(&env_var_for(key)).filter(|v| !v.is_empty())?;
        self.origin.from_env.insert(key);
        Some(value)
    }

    fn parsed<T: FromStr>(&mut self, key: &'static str) -> Result<Option<T>, ConfigError> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        match value.trim().parse() {
            Ok(v) => Ok(Some(v)),
            Err(_) => Err(ConfigError::Invalid {
                place: self.origin.place(key),
                problem: format!("{value:?} is not a valid {}", type_word::<T>()),
            }),
        }
    }

    fn set<T: FromStr>(&mut self, key: &'static str, slot: &mut T) -> Result<(), ConfigError> {
        if let Some(v) = self.parsed(key)? {
            *slot = v;
        }
        Ok(())
    }

    /// A secret and its `_file` path are one setting: either env var replaces both file values.
    fn secret(
        &mut self,
        (key, inline): (&'static str, &mut Option<String>),
        (key_file, file): (&'static str, &mut Option<PathBuf>),
    ) {
        let value = self.get(key);
        let path = self.get(key_file);
        if value.is_some() || path.is_some() {
            *inline = value;
            *file = path.map(PathBuf::from);
        }
    }
}

fn type_word<T>() -> &'static str {
    match std::any::type_name::<T>() {
        "bool" => "boolean (true or false)",
        _ => "unsigned integer",
    }
}
