//! `GET /config` and `PUT /config`: services, routes and consumers as one declarative document,
//! replaced atomically in one Raft entry ([`raftgate_cluster::Command::ReplaceConfig`]). Credentials and
//! certificates are not part of it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use raftgate_cluster::declarative::{ConfigDiff, Document};
use raftgate_cluster::spec::Invalid;
use raftgate_cluster::state::StateError;
use raftgate_cluster::{Precondition, WriteError};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::json_error;
use super::resources::{precondition, read_state, with_revision, Resource};
use super::{AdminError, AdminState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/config")
            .route(web::get().to(export))
            .route(web::put().to(replace)),
    );
}

/// How often a `PUT /config` without `If-Match` recomputes its diff when another configuration
/// change lands between its read and its write.
const ATTEMPTS: usize = 5;

async fn export(
    state: web::Data<AdminState>,
    req: HttpRequest,
) -> Result<HttpResponse, AdminError> {
    let st = read_state(&state, &req).await?;
    Ok(with_revision(HttpResponse::Ok(), st.revision).json(Document::from_state(&st).to_json()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplaceQuery {
    #[serde(default)]
    dry_run: bool,
}

/// Validates the whole document here, then diffs it against a linearizable read and commits
/// it with `If-Match` on that read's revision: the diff answered is exactly what the entry
/// did. Without a client `If-Match`, a concurrent change makes it read and diff again.
async fn replace(
    state: web::Data<AdminState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    let q = web::Query::<ReplaceQuery>::from_query(req.query_string())
        .map_err(|e| AdminError::bad_request(format!("bad query string: {e}")))?;
    let wanted = match precondition(&req)? {
        Precondition::IfAbsent => {
            return Err(AdminError::bad_request(
                "PUT /config takes `If-Match: <revision>`, not `If-None-Match`",
            ))
        }
        other => other,
    };
    let doc = parse(&body)?;
    validate(&doc)?;
    for attempt in 1..=ATTEMPTS {
        state.node.read_barrier().await?;
        let st = state.node.state();
        if let Precondition::IfMatch(expected) = wanted {
            if expected != st.revision {
                return Err(StateError::RevisionMismatch {
                    expected,
                    actual: st.revision,
                }
                .into());
            }
        }
        let diff = st.diff_document(&doc);
        if q.dry_run || diff.is_empty() {
            return Ok(answer(st.revision, q.dry_run, &diff));
        }
        let cmd = doc.clone().replace(Precondition::IfMatch(st.revision));
        let ok = match state.node.write(cmd).await {
            Err(WriteError::State(StateError::RevisionMismatch { .. }))
                if wanted == Precondition::None && attempt < ATTEMPTS =>
            {
                continue
            }
            other => other?,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        if !state.router.wait_published(ok.index, deadline).await {
            return Err(AdminError::Unavailable(
                "the write committed but this node's router has not published it yet".into(),
            ));
        }
        return Ok(answer(ok.revision, false, &diff));
    }
    unreachable!("the last attempt returns")
}

fn answer(revision: u64, dry_run: bool, diff: &ConfigDiff) -> HttpResponse {
    with_revision(HttpResponse::Ok(), revision).json(json!({
        "revision": revision,
        "dry_run": dry_run,
        "changed": !diff.is_empty(),
        "diff": diff,
    }))
}

/// The sections as raw JSON first, so that an error names its resource: `routes.users.paths`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    #[serde(default)]
    services: BTreeMap<String, Value>,
    #[serde(default)]
    routes: BTreeMap<String, Value>,
    #[serde(default)]
    consumers: BTreeMap<String, Value>,
}

fn parse(body: &[u8]) -> Result<Document, AdminError> {
    let raw: RawDocument = serde_json::from_slice(body).map_err(json_error)?;
    let doc = Document {
        services: section("services", raw.services)?,
        routes: section("routes", raw.routes)?,
        consumers: section("consumers", raw.consumers)?,
    };
    Ok(doc.named()?)
}

fn section<T: DeserializeOwned>(
    kind: &str,
    raw: BTreeMap<String, Value>,
) -> Result<BTreeMap<String, T>, AdminError> {
    raw.into_iter()
        .map(|(name, v)| match serde_json::from_value(v) {
            Ok(r) => Ok((name, r)),
            Err(e) => Err(match json_error(e) {
                AdminError::BadRequest {
                    code,
                    message,
                    field,
                } => AdminError::BadRequest {
                    code,
                    message: format!("{kind}.{name}: {message}"),
                    field: Some(within(kind, &name, field.as_deref())),
                },
                other => other,
            }),
        })
        .collect()
}

fn within(kind: &str, name: &str, field: Option<&str>) -> String {
    match field {
        Some(f) => format!("{kind}.{name}.{f}"),
        None => format!("{kind}.{name}"),
    }
}

/// Every resource as its own `PUT` would check it, then the references between them: the first
/// failure, in name order, services first.
fn validate(doc: &Document) -> Result<(), AdminError> {
    fn each<R: Resource>(kind: &str, map: &BTreeMap<String, R>) -> Result<(), Invalid> {
        for (name, r) in map {
            r.validate().map_err(|e| Invalid {
                field: within(kind, name, Some(&e.field)),
                message: e.message,
            })?;
        }
        Ok(())
    }
    each("services", &doc.services)?;
    each("routes", &doc.routes)?;
    each("consumers", &doc.consumers)?;
    doc.validate_references()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_resource_and_its_field() {
        let err = |body: Value| match parse(body.to_string().as_bytes()).and_then(|d| {
            validate(&d)?;
            Ok(d)
        }) {
            Err(AdminError::BadRequest { field, .. }) => field.unwrap_or_default(),
            Err(AdminError::Invalid(i)) => i.field,
            other => panic!("not an error: {other:?}"),
        };
        let svc = json!({"targets": [{"url": "http://127.0.0.1:1"}]});
        assert_eq!(
            err(
                json!({"services": {"s": svc}, "routes": {"users": {"service": "s", "paths": ["nope"]}}})
            ),
            "routes.users.paths.0"
        );
        assert_eq!(
            err(json!({"routes": {"users": {"service": "s", "pathz": []}}})),
            "routes.users.pathz"
        );
        assert_eq!(
            err(json!({"services": {"s": svc}, "routes": {"r": {"service": "t"}}})),
            "routes.r.service"
        );
        assert_eq!(
            err(json!({"services": {"s": {"targets": []}}})),
            "services.s.targets"
        );
        assert_eq!(err(json!({"certificates": {}})), "certificates");
    }
}
