//! `https://` targets: verified against the service's CA (`ca_pem` or `ca_file`), else the
//! public web roots, which a private CA's certificate fails (502).

use std::sync::atomic::Ordering;

use serde_json::json;

use crate::support::tls::{tls_upstream, TestCa};
use crate::support::{eventually, Cluster};

#[actix_rt::test]
async fn https_targets_are_verified_with_the_service_ca() {
    let c = Cluster::bootstrap(1).await;
    let ca = TestCa::new("upstream CA");
    let up = tls_upstream(&ca.leaf(&["127.0.0.1", "localhost"])).await;
    let url = format!("https://{}", up.addr);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();

    let services = [
        (
            "inline",
            // Checked actively too: the probes verify the target with the same CA.
            json!({"targets": [{"url": url}], "ca_pem": ca.pem(),
                   "health_check": {"path": "/health", "interval_ms": 100, "timeout_ms": 90,
                                    "healthy_threshold": 1, "unhealthy_threshold": 3}}),
        ),
        (
            "file",
            json!({"targets": [{"url": url}], "ca_file": ca_file}),
        ),
        ("public", json!({"targets": [{"url": url}]})),
    ];
    for (name, service) in services {
        let s = c
            .admin(0, "PUT", &format!("/services/{name}"), Some(service))
            .await;
        assert_eq!(s.status, 201, "{name}: {}", s.text);
        let r = c
            .admin(
                0,
                "PUT",
                &format!("/routes/{name}"),
                Some(json!({"service": name, "paths": [format!("/{name}")]})),
            )
            .await;
        assert_eq!(r.status, 201, "{name}: {}", r.text);
    }

    // Probes reach the upstream's HTTP layer only through a verified TLS handshake.
    eventually("TLS health probes", || async {
        (up.health_hits.load(Ordering::SeqCst) >= 3).then_some(())
    })
    .await;
    for name in ["inline", "file"] {
        let r = c.get(0, &format!("/{name}/x?q=1")).await;
        assert_eq!(r.status, 200, "{name}: {}", r.text);
        assert_eq!(r.body["upstream"], "tls");
        assert_eq!(r.body["path"], format!("/{name}/x?q=1"));
        assert_eq!(r.body["proto"], "http");
    }
    // The upstream's certificate is not signed by any public root.
    let r = c.get(0, "/public/x").await;
    assert_eq!(r.status, 502, "{}", r.text);
    assert_eq!(r.error_code(), "bad_gateway");

    // A CA is checked where it is written: a missing file or junk PEM is refused (422).
    let missing = c
        .admin(
            0,
            "PUT",
            "/services/broken",
            Some(json!({"targets": [{"url": url}], "ca_file": "/nonexistent/ca.pem"})),
        )
        .await;
    assert_eq!(missing.status, 422, "{}", missing.text);
    assert_eq!(missing.body["error"]["field"], "ca_file");
    let junk = c
        .admin(
            0,
            "PUT",
            "/services/broken",
            Some(json!({"targets": [{"url": url}], "ca_pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"})),
        )
        .await;
    assert_eq!(junk.status, 422, "{}", junk.text);
    assert_eq!(junk.body["error"]["field"], "ca_pem");

    c.shutdown().await;
}
