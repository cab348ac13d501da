//! `AdminError`: every admin failure and its one mapping to an HTTP status and JSON body.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use raftgate_cluster::membership::MembershipError;
use raftgate_cluster::spec::Invalid;
use raftgate_cluster::state::StateError;
use raftgate_cluster::WriteError;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        message: String,
        field: Option<String>,
    },
    #[error("missing or wrong admin token: send `Authorization: Bearer <[admin] token>`")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    Invalid(Invalid),
    #[error("{0}")]
    Unavailable(String),
}

impl AdminError {
    fn code(&self) -> &'static str {
        match self {
            AdminError::BadRequest { code, .. } => code,
            AdminError::Unauthorized => "unauthorized",
            AdminError::NotFound(_) => "not_found",
            AdminError::Conflict { code, .. } => code,
            AdminError::PreconditionFailed(_) => "version_mismatch",
            AdminError::Invalid(_) => "invalid_config",
            AdminError::Unavailable(_) => "unavailable",
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            AdminError::BadRequest { field, .. } => field.as_deref(),
            AdminError::Invalid(i) => Some(&i.field),
            _ => None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> AdminError {
        AdminError::BadRequest {
            code: "bad_request",
            message: message.into(),
            field: None,
        }
    }
}

impl From<Invalid> for AdminError {
    fn from(i: Invalid) -> Self {
        AdminError::Invalid(i)
    }
}

impl From<StateError> for AdminError {
    fn from(e: StateError) -> Self {
        let message = e.to_string();
        match e {
            StateError::NotFound { .. } => AdminError::NotFound(message),
            StateError::AlreadyExists { .. } => AdminError::Conflict {
                code: "already_exists",
                message,
            },
            StateError::VersionMismatch { .. } => AdminError::PreconditionFailed(message),
            StateError::ServiceInUse { .. } => AdminError::Conflict {
                code: "service_in_use",
                message,
            },
            StateError::DuplicateKey => AdminError::Conflict {
                code: "duplicate_key",
                message,
            },
            StateError::KeyIdTaken { .. } => AdminError::Conflict {
                code: "key_id_taken",
                message,
            },
            StateError::SniTaken { .. } => AdminError::Conflict {
                code: "sni_taken",
                message,
            },
            StateError::RevisionMismatch { .. } => AdminError::PreconditionFailed(message),
            StateError::UnknownService { .. } => AdminError::Invalid(Invalid {
                field: "service".into(),
                message,
            }),
        }
    }
}

impl From<WriteError> for AdminError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::State(s) => s.into(),
            WriteError::Membership(m) => m.into(),
            other => AdminError::Unavailable(other.to_string()),
        }
    }
}

impl From<MembershipError> for AdminError {
    fn from(e: MembershipError) -> Self {
        let message = e.to_string();
        let code = match e {
            MembershipError::NotMember { .. } => return AdminError::NotFound(message),
            MembershipError::Exists { .. } => "member_exists",
            MembershipError::AddrTaken { .. } => "addr_taken",
            MembershipError::LastVoter { .. } => "last_voter",
            MembershipError::InProgress => "membership_change_in_progress",
        };
        AdminError::Conflict { code, message }
    }
}

/// Maps a serde_json failure to 400 with the offending field when serde names one.
pub fn json_error(e: serde_json::Error) -> AdminError {
    let text = e.to_string();
    let code = if text.starts_with("unknown field") {
        "unknown_field"
    } else if e.is_syntax() || e.is_eof() {
        "invalid_json"
    } else {
        "bad_request"
    };
    let field = text
        .strip_prefix("unknown field `")
        .or_else(|| text.strip_prefix("missing field `"))
        .and_then(|rest| rest.split('`').next())
        .map(str::to_string);
    AdminError::BadRequest {
        code,
        message: text,
        field,
    }
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            AdminError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Conflict { .. } => StatusCode::CONFLICT,
            AdminError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            AdminError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AdminError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut error = json!({"code": self.code(), "message": self.to_string()});
        if let Some(f) = self.field() {
            error["field"] = json!(f);
        }
        let mut resp = HttpResponse::build(self.status_code());
        match self {
            AdminError::Unavailable(_) => {
                resp.insert_header(("Retry-After", "1"));
            }
            AdminError::Unauthorized => {
                resp.insert_header(("WWW-Authenticate", "Bearer realm=\"raftgate-admin\""));
            }
            _ => {}
        }
        resp.json(json!({ "error": error }))
    }
}
