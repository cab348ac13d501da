//! API keys of a consumer: create (shown once), list (ids only), revoke.

use actix_web::{web, HttpRequest, HttpResponse};
use raftgate_cluster::identity::{
    generate_key, generate_key_id, hash_key, validate_supplied_key, ApiKey,
};
use raftgate_cluster::state::Kind;
use raftgate_cluster::Command;
use serde::Deserialize;

use super::error::json_error;
use super::resources::{commit, read_state, with_revision};
use super::{AdminError, AdminState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/consumers/{name}/keys")
            .route(web::post().to(create))
            .route(web::get().to(list)),
    )
    .route("/consumers/{name}/keys/{id}", web::delete().to(revoke));
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    /// An admin-supplied key; generated when absent.
    #[serde(default)]
    key: Option<String>,
}

async fn create(
    state: web::Data<AdminState>,
    name: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    let body: CreateKey = if body.iter().all(u8::is_ascii_whitespace) {
        CreateKey::default()
    } else {
        serde_json::from_slice(&body).map_err(json_error)?
    };
    let (key, id) = match body.key {
        Some(k) => {
            validate_supplied_key(&k)?;
            (k, generate_key_id())
        }
        None => generate_key(),
    };
    let cmd = Command::CreateApiKey {
        key: ApiKey {
            id: id.clone(),
            consumer: name.into_inner(),
            hash: hash_key(&key),
            version: 0,
        },
    };
    let ok = commit(&state, cmd).await?;
    // The key itself is in this answer only; the cluster keeps its hash.
    Ok(with_revision(HttpResponse::Created(), ok.revision)
        .json(serde_json::json!({"id": id, "key": key})))
}

async fn list(
    state: web::Data<AdminState>,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let st = read_state(&state, &req).await?;
    if !st.consumers.contains_key(name.as_str()) {
        return Err(AdminError::NotFound(format!(
            "{} {:?} does not exist",
            Kind::Consumer,
            name.as_str()
        )));
    }
    let keys: Vec<_> = st
        .api_keys
        .values()
        .filter(|k| k.consumer == *name)
        .map(|k| serde_json::json!({"id": k.id, "version": k.version}))
        .collect();
    Ok(with_revision(HttpResponse::Ok(), st.revision).json(serde_json::json!({ "data": keys })))
}

async fn revoke(
    state: web::Data<AdminState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AdminError> {
    let (consumer, id) = path.into_inner();
    let ok = commit(&state, Command::RevokeApiKey { consumer, id }).await?;
    Ok(with_revision(HttpResponse::NoContent(), ok.revision).finish())
}
