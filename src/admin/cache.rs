//! `POST /cache/purge`: a purge is a Raft log entry, so every node drops the same cached
//! answers, in order with every config change, a node that was down included. The call answers
//! once the purge is committed and has taken effect in this node's cache.

use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use raftgate_cluster::purge::Purge;
use raftgate_cluster::Command;
use serde_json::json;

use super::error::json_error;
use super::resources::{commit, with_revision};
use super::{AdminError, AdminState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/cache/purge", web::post().to(purge));
}

/// `{"route": "x"}`, `{"prefix": "/users"}`, both, or `{}` (everything). 200 with the log
/// index of the purge; `X-Raftgate-Revision` stays the configuration revision (purges are
/// internal entries and do not move it).
async fn purge(state: web::Data<AdminState>, body: web::Bytes) -> Result<HttpResponse, AdminError> {
    let purge: Purge = serde_json::from_slice(&body).map_err(json_error)?;
    purge.validate()?;
    let ok = commit(
        &state,
        Command::Purge {
            purge: purge.clone(),
        },
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    if !state.cache.wait_published(ok.index, deadline).await {
        return Err(AdminError::Unavailable(
            "the purge committed but this node's cache has not applied it yet".into(),
        ));
    }
    Ok(with_revision(HttpResponse::Ok(), ok.revision).json(json!({
        "purged": {"route": purge.route, "prefix": purge.prefix},
        "index": ok.index,
    })))
}
