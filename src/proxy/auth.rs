//! Phases `authenticate` and `authorize`: who the client is, from the route's accepted
//! credentials, and whether the route admits them. A credential the gateway consumed is
//! stripped before forwarding (see `forward`); the upstream learns only `X-Consumer`.

use actix_web::http::header;
use actix_web::HttpRequest;
use percent_encoding::percent_decode_str;
use raftgate_cluster::spec::AuthMode;

use super::ctx::RequestCtx;
use super::error::ProxyError;
use crate::auth::{jwt, AuthIndex};

/// Sets `ctx.consumer` on a route that wants a credential, or answers 401 — with the same
/// body whatever was wrong (missing, unknown, revoked, expired, badly signed).
pub fn authenticate(
    ctx: &mut RequestCtx,
    req: &HttpRequest,
    index: &AuthIndex,
) -> Result<(), ProxyError> {
    let mode = ctx
        .route
        .as_ref()
        .map_or(AuthMode::None, |r| r.route().auth);
    if mode == AuthMode::None {
        return Ok(());
    }
    let keys = matches!(mode, AuthMode::ApiKey | AuthMode::Any);
    let unauthorized = ProxyError::Unauthorized {
        challenge: if mode == AuthMode::ApiKey {
            "Key realm=\"raftgate\""
        } else {
            "Bearer realm=\"raftgate\""
        },
    };
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    let query_key = if keys {
        req.uri().query().and_then(query_api_key)
    } else {
        None
    };
    if query_key.is_some() {
        ctx.forward_query = Some(without_api_key(req.uri().query().unwrap_or("")));
    }
    let consumer = if let Some(key) = headers.get("apikey").filter(|_| keys) {
        key.to_str().ok().and_then(|k| index.api_key(k))
    } else if let Some(token) = bearer {
        ctx.strip_authorization = true;
        match mode {
            AuthMode::Jwt => index.jwt(token),
            AuthMode::Any if jwt::looks_like_jwt(token) => index.jwt(token),
            _ => index.api_key(token),
        }
    } else if let Some(key) = &query_key {
        index.api_key(key)
    } else {
        None
    };
    match consumer {
        Some(c) => {
            ctx.consumer = Some(c.clone());
            Ok(())
        }
        None => Err(unauthorized),
    }
}

/// 403 when the route names groups and the consumer is in none of them.
pub fn authorize(ctx: &RequestCtx, index: &AuthIndex) -> Result<(), ProxyError> {
    let (Some(route), Some(consumer)) = (&ctx.route, &ctx.consumer) else {
        return Ok(());
    };
    let allowed = &route.route().allow_groups;
    if allowed.is_empty() || index.groups(consumer).iter().any(|g| allowed.contains(g)) {
        Ok(())
    } else {
        Err(ProxyError::Forbidden)
    }
}

fn is_api_key_param(name: &str) -> bool {
    name == "apikey" || (name.contains('%') && percent_decode_str(name).eq("apikey".bytes()))
}

/// The `apikey` query parameter, percent-decoded.
fn query_api_key(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        is_api_key_param(name).then(|| percent_decode_str(value).decode_utf8_lossy().into_owned())
    })
}

/// The query without its `apikey` parameters, the others in their order and encoding.
fn without_api_key(query: &str) -> String {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !is_api_key_param(pair.split_once('=').map_or(*pair, |(n, _)| n)))
        .collect();
    kept.join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_key_parameter_is_found_and_removed_whatever_its_encoding() {
        assert_eq!(
            query_api_key("a=1&apikey=k%2B1&b=2").as_deref(),
            Some("k+1")
        );
        assert_eq!(query_api_key("api%6Bey=x").as_deref(), Some("x"));
        assert_eq!(query_api_key("apikeys=x&b"), None);
        assert_eq!(
            without_api_key("a=1&apikey=k&b=%20&api%6bey=y"),
            "a=1&b=%20"
        );
        assert_eq!(without_api_key("apikey=k"), "");
    }
}
