//! `POST /cluster/members` and `DELETE /cluster/members/{id}`: the body is checked here, the
//! membership on the leader (followers forward, like writes).
//!
//! An add answers once the node is a learner and, with `"voter": true`, once it is a voter:
//! 200. A voter that has not caught up within the call's wait (8 s) answers 202 with
//! `"promotion_pending": true`: it is a learner and the leader promotes it in the background
//! once it has caught up; repeating the same POST retries the promotion.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use raftgate_cluster::membership::MemberChange;
use raftgate_cluster::spec::Invalid;
use serde::Deserialize;
use serde_json::json;

use super::error::json_error;
use super::resources::with_revision;
use super::{AdminError, AdminState};
use crate::config::Member;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/cluster/members", web::post().to(add))
        .route("/cluster/members/{id}", web::delete().to(remove));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMember {
    id: u64,
    /// The node's cluster address, `HOST:PORT`.
    addr: String,
    #[serde(default = "voter_by_default")]
    voter: bool,
}

fn voter_by_default() -> bool {
    true
}

async fn add(state: web::Data<AdminState>, body: web::Bytes) -> Result<HttpResponse, AdminError> {
    let req: AddMember = serde_json::from_slice(&body).map_err(json_error)?;
    let addr = req.addr.trim();
    // The same rules as `[cluster] members` in the node config.
    format!("{}@{addr}", req.id)
        .parse::<Member>()
        .map_err(|e| {
            AdminError::Invalid(Invalid {
                field: "addr".into(),
                message: format!(
                    "{addr:?} is not HOST:PORT, a node's cluster address ({})",
                    e.reason
                ),
            })
        })?;
    let change = state
        .node
        .add_member(req.id, addr.to_string(), req.voter)
        .await?;
    let status = if change.promotion_pending {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok(answer(&state, status, &change))
}

async fn remove(
    state: web::Data<AdminState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    let id: u64 = id.parse().map_err(|_| AdminError::BadRequest {
        code: "bad_request",
        message: format!("a node id is an unsigned integer, not {:?}", id.as_str()),
        field: Some("id".into()),
    })?;
    let change = state.node.remove_member(id).await?;
    Ok(answer(&state, StatusCode::OK, &change))
}

/// Membership entries do not move the configuration revision: the header carries the current
/// one, the body the log index of the change.
fn answer(state: &AdminState, status: StatusCode, change: &MemberChange) -> HttpResponse {
    with_revision(HttpResponse::build(status), state.node.state().revision).json(json!({
        "id": change.id,
        "addr": change.addr,
        "voter": change.voter,
        "promotion_pending": change.promotion_pending,
        "index": change.index,
    }))
}
