//! CRUD of services and routes, written once over the [`Resource`] trait.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use raftgate_cluster::identity::Consumer;
use raftgate_cluster::spec::{Route, Service};
use raftgate_cluster::state::{Applied, Kind, Versioned};
use raftgate_cluster::tls::Certificate;
use raftgate_cluster::{ClusterState, Command, OrdMap, Precondition, WriteOk};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde::Serialize;

use super::error::json_error;
use super::{AdminError, AdminState};

/// A replicated resource the admin API manages by name.
pub trait Resource: Versioned + Serialize + DeserializeOwned + Clone + 'static {
    const KIND: Kind;
    fn all(state: &ClusterState) -> &OrdMap<String, Arc<Self>>;
    fn set_name(&mut self, name: String);
    fn validate(&self) -> Result<(), raftgate_cluster::spec::Invalid>;
    fn put(self, precondition: Precondition) -> Command;
    fn delete(name: String, precondition: Precondition) -> Command;
    /// What GET shows: the resource itself, unless it holds a secret.
    type View<'a>: Serialize
    where
        Self: 'a;
    fn view(&self) -> Self::View<'_>;
}

/// The three resources differ only in where they live and which commands change them.
/// `then` names a check that needs more than the value (a file, the TLS library).
macro_rules! resource {
    ($t:ty, $kind:ident, $map:ident, $field:ident, $put:ident, $delete:ident $(, then $check:path)?) => {
        impl Resource for $t {
            const KIND: Kind = Kind::$kind;
            fn all(state: &ClusterState) -> &OrdMap<String, Arc<Self>> {
                &state.$map
            }
            fn set_name(&mut self, name: String) {
                self.name = name;
            }
            fn validate(&self) -> Result<(), raftgate_cluster::spec::Invalid> {
                <$t>::validate(self)?;
                $($check(self)?;)?
                Ok(())
            }
            fn put(self, precondition: Precondition) -> Command {
                Command::$put {
                    $field: self,
                    precondition,
                }
            }
            fn delete(name: String, precondition: Precondition) -> Command {
                Command::$delete { name, precondition }
            }
            type View<'a> = &'a $t;
            fn view(&self) -> &Self {
                self
            }
        }
    };
}

resource!(
    Service,
    Service,
    services,
    service,
    PutService,
    DeleteService,
    then crate::tls::upstream::check_service
);
resource!(Route, Route, routes, route, PutRoute, DeleteRoute);
resource!(
    Consumer,
    Consumer,
    consumers,
    consumer,
    PutConsumer,
    DeleteConsumer
);

pub fn configure(cfg: &mut web::ServiceConfig) {
    resource::<Service>(cfg, "services");
    resource::<Route>(cfg, "routes");
    resource::<Consumer>(cfg, "consumers");
    resource::<Certificate>(cfg, "certificates");
}

fn resource<R: Resource>(cfg: &mut web::ServiceConfig, plural: &str) {
    cfg.route(&format!("/{plural}"), web::get().to(list::<R>))
        .service(
            web::resource(format!("/{plural}/{{name}}"))
                .route(web::get().to(get::<R>))
                .route(web::put().to(put::<R>))
                .route(web::delete().to(delete::<R>))
                .default_service(web::to(method_not_allowed)),
        );
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    HttpResponse::MethodNotAllowed().json(serde_json::json!({"error": {
        "code": "method_not_allowed",
        "message": format!("{} is not allowed on {}", req.method(), req.path()),
    }}))
}

#[derive(Deserialize)]
struct ReadQuery {
    #[serde(default)]
    stale: bool,
}

/// The state to answer a read from: linearizable unless `?stale=true`.
pub async fn read_state(
    state: &AdminState,
    req: &HttpRequest,
) -> Result<Arc<ClusterState>, AdminError> {
    let q = web::Query::<ReadQuery>::from_query(req.query_string())
        .map_err(|e| AdminError::bad_request(format!("bad query string: {e}")))?;
    if !q.stale {
        state.node.read_barrier().await?;
    }
    Ok(state.node.state())
}

pub fn with_revision(
    mut resp: actix_web::HttpResponseBuilder,
    revision: u64,
) -> actix_web::HttpResponseBuilder {
    resp.insert_header(("X-Raftgate-Revision", revision.to_string()));
    resp
}

async fn list<R: Resource>(
    state: web::Data<AdminState>,
    req: HttpRequest,
) -> Result<HttpResponse, AdminError> {
    let st = read_state(&state, &req).await?;
    let data: Vec<R::View<'_>> = R::all(&st).values().map(|r| r.view()).collect();
    Ok(with_revision(HttpResponse::Ok(), st.revision).json(serde_json::json!({ "data": data })))
}

async fn get<R: Resource>(
    state: web::Data<AdminState>,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let st = read_state(&state, &req).await?;
    let found = R::all(&st).get(name.as_str()).ok_or_else(|| {
        AdminError::NotFound(format!("{} {:?} does not exist", R::KIND, name.as_str()))
    })?;
    Ok(with_revision(HttpResponse::Ok(), st.revision).json(found.view()))
}

async fn put<R: Resource>(
    state: web::Data<AdminState>,
    req: HttpRequest,
    name: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    let name = name.into_inner();
    raftgate_cluster::spec::validate_name(&name)?;
    let mut value: R = serde_json::from_slice(&body).map_err(json_error)?;
    if !value.name().is_empty() && value.name() != name {
        return Err(AdminError::Invalid(raftgate_cluster::spec::Invalid {
            field: "name".into(),
            message: format!(
                "the body names {:?} but the URL names {name:?}",
                value.name()
            ),
        }));
    }
    value.set_name(name.clone());
    value.validate()?;
    let ok = commit(&state, value.put(precondition(&req)?)).await?;
    let st = state.node.state();
    let stored = R::all(&st).get(&name);
    let status = if ok.applied == Applied::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_revision(HttpResponse::build(status), ok.revision).json(stored.map(|r| r.view())))
}

async fn delete<R: Resource>(
    state: web::Data<AdminState>,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let ok = commit(&state, R::delete(name.into_inner(), precondition(&req)?)).await?;
    Ok(with_revision(HttpResponse::NoContent(), ok.revision).finish())
}

/// `If-Match: N` (quotes and `W/` allowed) and `If-None-Match: *`.
pub(super) fn precondition(req: &HttpRequest) -> Result<Precondition, AdminError> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| v.to_str().unwrap_or("").trim().to_string())
    };
    if let Some(v) = header("if-match") {
        let bare = v.trim_start_matches("W/").trim_matches('"');
        let version = bare.parse::<u64>().map_err(|_| AdminError::BadRequest {
            code: "bad_request",
            message: format!("If-Match must be a resource version (a number), not {v:?}"),
            field: None,
        })?;
        return Ok(Precondition::IfMatch(version));
    }
    match header("if-none-match").as_deref() {
        Some("*") => Ok(Precondition::IfAbsent),
        Some(other) => Err(AdminError::bad_request(format!(
            "only `If-None-Match: *` is supported, not {other:?}"
        ))),
        None => Ok(Precondition::None),
    }
}

/// Commits through Raft, then waits until this node's router serves the result.
pub async fn commit(state: &AdminState, cmd: Command) -> Result<WriteOk, AdminError> {
    let certificate = matches!(
        cmd,
        Command::PutCertificate { .. } | Command::DeleteCertificate { .. }
    );
    let ok = state.node.write(cmd).await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    if !state.router.wait_published(ok.index, deadline).await {
        return Err(AdminError::Unavailable(
            "the write committed but this node's router has not published it yet".into(),
        ));
    }
    if certificate && !state.certificates.wait_published(ok.index, deadline).await {
        return Err(AdminError::Unavailable(
            "the write committed but this node's TLS listener does not serve it yet".into(),
        ));
    }
    Ok(ok)
}
