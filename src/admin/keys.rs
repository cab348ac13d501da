//! A consumer's credentials: API keys (create, shown once; list, ids only; revoke) and JWT
//! credentials (put, get and list without their HMAC secrets, delete).

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use raftgate_cluster::identity::JwtCredential;
use raftgate_cluster::identity::{
    format_key_id, generate_key, generate_key_id, hash_key, parse_key_id, validate_supplied_key,
    ApiKey,
};
use raftgate_cluster::spec::Invalid;
use raftgate_cluster::state::{Applied, Kind};
use raftgate_cluster::{ClusterState, Command};
use serde::Deserialize;

use super::error::json_error;
use super::resources::{commit, read_state, with_revision};
use super::{AdminError, AdminState};
use crate::auth::jwt::Verifier;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/consumers/{name}/keys")
            .route(web::post().to(create))
            .route(web::get().to(list)),
    )
    .route("/consumers/{name}/keys/{id}", web::delete().to(revoke))
    .route("/consumers/{name}/jwt", web::get().to(list_jwt))
    .service(
        web::resource("/consumers/{name}/jwt/{key_id}")
            .route(web::put().to(put_jwt))
            .route(web::get().to(get_jwt))
            .route(web::delete().to(delete_jwt)),
    );
}

async fn put_jwt(
    state: web::Data<AdminState>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    let (consumer, key_id) = path.into_inner();
    let mut credential: JwtCredential = serde_json::from_slice(&body).map_err(json_error)?;
    for (field, given, from_path) in [
        ("consumer", &credential.consumer, &consumer),
        ("key_id", &credential.key_id, &key_id),
    ] {
        if !given.is_empty() && given != from_path {
            return Err(AdminError::Invalid(Invalid {
                field: field.into(),
                message: format!("the body names {given:?} but the URL names {from_path:?}"),
            }));
        }
    }
    credential.consumer = consumer;
    credential.key_id = key_id.clone();
    credential.validate()?;
    // The key material must parse here, before anything is proposed.
    Verifier::new(&credential)?;
    let ok = commit(&state, Command::PutJwt { credential }).await?;
    let st = state.node.state();
    let status = if ok.applied == Applied::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_revision(HttpResponse::build(status), ok.revision)
        .json(st.jwts.get(&key_id).map(|c| c.redacted())))
}

async fn get_jwt(
    state: web::Data<AdminState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AdminError> {
    let (consumer, key_id) = path.into_inner();
    let st = read_state(&state, &req).await?;
    let found = st
        .jwts
        .get(&key_id)
        .filter(|c| c.consumer == consumer)
        .ok_or_else(|| AdminError::NotFound(format!("{} {key_id:?} does not exist", Kind::Jwt)))?;
    Ok(with_revision(HttpResponse::Ok(), st.revision).json(found.redacted()))
}

async fn list_jwt(
    state: web::Data<AdminState>,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let st = read_state(&state, &req).await?;
    consumer_must_exist(&st, &name)?;
    let data: Vec<JwtCredential> = st
        .jwts
        .values()
        .filter(|c| c.consumer == *name)
        .map(|c| c.redacted())
        .collect();
    Ok(with_revision(HttpResponse::Ok(), st.revision).json(serde_json::json!({ "data": data })))
}

async fn delete_jwt(
    state: web::Data<AdminState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AdminError> {
    let (consumer, key_id) = path.into_inner();
    let ok = commit(&state, Command::DeleteJwt { consumer, key_id }).await?;
    Ok(with_revision(HttpResponse::NoContent(), ok.revision).finish())
}

fn consumer_must_exist(st: &ClusterState, name: &str) -> Result<(), AdminError> {
    if st.consumers.contains_key(name) {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!(
            "{} {name:?} does not exist",
            Kind::Consumer
        )))
    }
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
            id,
            consumer: name.into_inner(),
            hash: hash_key(&key),
        },
    };
    let ok = commit(&state, cmd).await?;
    // The key itself is in this answer only; the cluster keeps its hash.
    Ok(with_revision(HttpResponse::Created(), ok.revision)
        .json(serde_json::json!({"id": format_key_id(id), "key": key})))
}

async fn list(
    state: web::Data<AdminState>,
    req: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let st = read_state(&state, &req).await?;
    consumer_must_exist(&st, &name)?;
    let keys: Vec<_> = st
        .key_ids_of(&name)
        .into_iter()
        .filter_map(|id| st.key_ids.get(&(Arc::from(name.as_str()), id)))
        .filter_map(|hash| st.api_keys.get(hash))
        .map(|k| serde_json::json!({"id": format_key_id(k.id), "version": k.version}))
        .collect();
    Ok(with_revision(HttpResponse::Ok(), st.revision).json(serde_json::json!({ "data": keys })))
}

async fn revoke(
    state: web::Data<AdminState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AdminError> {
    let (consumer, id) = path.into_inner();
    let Some(id) = parse_key_id(&id) else {
        return Err(AdminError::NotFound(format!(
            "{} {id:?} does not exist (key ids are 16 hex digits)",
            Kind::ApiKey
        )));
    };
    let ok = commit(&state, Command::RevokeApiKey { consumer, id }).await?;
    Ok(with_revision(HttpResponse::NoContent(), ok.revision).finish())
}
