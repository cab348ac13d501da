//! Phase `route`: normalise the path, then pick the route from the published table.

use actix_web::HttpRequest;

use super::ctx::RequestCtx;
use super::error::ProxyError;
use crate::routing::{normalize_path, PathError, RouteTable};

pub fn route(
    ctx: &mut RequestCtx,
    req: &HttpRequest,
    table: &RouteTable,
) -> Result<(), ProxyError> {
    let path = normalize_path(req.uri().path()).map_err(|e| match e {
        PathError::EscapesRoot => ProxyError::BadRequest("the path escapes the root".into()),
        other => ProxyError::BadRequest(format!("invalid path: {other}")),
    })?;
    let host = host_of(req);
    let found = table
        .find(&host, req.method().as_str(), &path, |name| {
            req.headers().get(name).and_then(|v| v.to_str().ok())
        })
        .ok_or_else(|| ProxyError::NoRoute {
            method: req.method().to_string(),
            host: host.to_string(),
            path: path.to_string(),
        })?;
    ctx.forward_path = found.forward_path(&path).into_owned();
    ctx.route = Some(found.route().clone());
    Ok(())
}

/// The request's host, lower case, without a port: from the URI (absolute form) or `Host`.
fn host_of(req: &HttpRequest) -> std::borrow::Cow<'_, str> {
    let raw = req
        .uri()
        .host()
        .or_else(|| req.headers().get("host").and_then(|h| h.to_str().ok()))
        .unwrap_or("");
    let bare = match raw.rfind(':') {
        Some(i) if !raw[i..].contains(']') => &raw[..i],
        _ => raw,
    };
    if bare.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(bare.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(bare)
    }
}
