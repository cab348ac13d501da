//! `GET /`: the dashboard, one static HTML page (inline CSS and JS, no build step) compiled into
//! the binary. The page itself is public — it holds no data; it asks for the admin token and
//! sends it on the API calls it makes, which [`super::require_token`] checks as usual.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

const PAGE: &str = include_str!("dashboard.html");

/// The page only talks to this origin and loads nothing from elsewhere.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(page));
}

async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(PAGE)
}
