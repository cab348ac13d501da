use serde_json::json;

use crate::support::{Cluster, Reply};

fn expect(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.error_code(), code, "{}", r.text);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        r.text
    );
}

#[actix_rt::test]
async fn every_admin_error_status_answers_the_documented_json() {
    let c = Cluster::bootstrap(3).await;
    let svc = json!({"targets": [{"url": "http://127.0.0.1:9"}]});

    // 401: missing and wrong token; /healthz and /readyz stay open.
    expect(
        &c.admin_raw(1, "GET", "/services", "", None).await,
        401,
        "unauthorized",
    );
    expect(
        &c.admin_raw(1, "GET", "/services", "", Some("wrong")).await,
        401,
        "unauthorized",
    );
    assert_eq!(
        c.admin_raw(1, "GET", "/healthz", "", None).await.status,
        200
    );
    assert_eq!(c.admin_raw(1, "GET", "/readyz", "", None).await.status, 200);

    // 400: malformed JSON, unknown field, wrong type.
    expect(
        &c.admin_raw(
            1,
            "PUT",
            "/services/s",
            "{nope",
            Some(crate::support::TOKEN),
        )
        .await,
        400,
        "invalid_json",
    );
    let unknown = c
        .admin(
            1,
            "PUT",
            "/services/s",
            Some(json!({"targets": [], "colour": "red"})),
        )
        .await;
    expect(&unknown, 400, "unknown_field");
    assert_eq!(unknown.body["error"]["field"], "colour");
    expect(
        &c.admin(1, "PUT", "/services/s", Some(json!({"targets": "many"})))
            .await,
        400,
        "bad_request",
    );

    // 422: empty targets, bad URL, bad regex, unknown service.
    let r = c
        .admin(1, "PUT", "/services/s", Some(json!({"targets": []})))
        .await;
    expect(&r, 422, "invalid_config");
    assert_eq!(r.body["error"]["field"], "targets");
    let r = c
        .admin(
            1,
            "PUT",
            "/services/s",
            Some(json!({"targets": [{"url": "ftp://x"}]})),
        )
        .await;
    expect(&r, 422, "invalid_config");
    assert_eq!(r.body["error"]["field"], "targets.0.url");
    assert_eq!(
        c.admin(1, "PUT", "/services/s", Some(svc.clone()))
            .await
            .status,
        201
    );
    let r = c
        .admin(
            2,
            "PUT",
            "/routes/bad",
            Some(json!({"service": "s", "paths": ["~^/items/[0-9+$"]})),
        )
        .await;
    expect(&r, 422, "invalid_config");
    assert_eq!(r.body["error"]["field"], "paths.0");
    let r = c
        .admin(
            2,
            "PUT",
            "/routes/orphan",
            Some(json!({"service": "nope", "paths": ["/o"]})),
        )
        .await;
    expect(&r, 422, "invalid_config");
    assert_eq!(r.body["error"]["field"], "service");

    // 404: unknown resource, unknown endpoint.
    expect(
        &c.admin(0, "GET", "/routes/none", None).await,
        404,
        "not_found",
    );
    expect(
        &c.admin(0, "DELETE", "/routes/none", None).await,
        404,
        "not_found",
    );
    expect(&c.admin(0, "GET", "/nowhere", None).await, 404, "not_found");

    // 409: deleting a service in use; If-None-Match on an existing resource.
    let route = c
        .admin(
            0,
            "PUT",
            "/routes/r",
            Some(json!({"service": "s", "paths": ["/r"]})),
        )
        .await;
    assert_eq!(route.status, 201);
    expect(
        &c.admin(2, "DELETE", "/services/s", None).await,
        409,
        "service_in_use",
    );
    let r = c
        .admin_with(
            1,
            "PUT",
            "/services/s",
            Some(svc.clone()),
            &[("if-none-match", "*")],
        )
        .await;
    expect(&r, 409, "already_exists");

    // 412: If-Match with a stale version; the right version goes through.
    let version = route.body["version"].as_u64().unwrap();
    let changed = json!({"service": "s", "paths": ["/r2"]});
    let r = c
        .admin_with(
            1,
            "PUT",
            "/routes/r",
            Some(changed.clone()),
            &[("if-match", &(version + 100).to_string())],
        )
        .await;
    expect(&r, 412, "version_mismatch");
    let r = c
        .admin_with(
            1,
            "PUT",
            "/routes/r",
            Some(changed),
            &[("if-match", &format!("\"{version}\""))],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = c
        .admin_with(
            2,
            "DELETE",
            "/routes/r",
            None,
            &[("if-match", &version.to_string())],
        )
        .await;
    expect(&r, 412, "version_mismatch");

    // None of the invalid writes reached the log: only s and r exist, at their versions.
    let all = c.admin(0, "GET", "/services", None).await;
    assert_eq!(all.body["data"].as_array().unwrap().len(), 1);
    let all = c.admin(0, "GET", "/routes", None).await;
    assert_eq!(all.body["data"].as_array().unwrap().len(), 1);

    // 503 is covered with the quorum loss in failover.rs.
    c.shutdown().await;
}
