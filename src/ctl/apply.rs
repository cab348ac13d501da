//! `apply -f FILE [--dry-run]` and `export`: the declarative document of `GET/PUT /config`.
//!
//! `apply` asks the cluster for the diff first (`PUT /config?dry_run=true`, which writes
//! nothing), prints it, and only when something changes sends the document for real, with
//! `If-Match` on the revision the diff was computed at: what was shown is what is applied, or
//! the apply fails with 412 and changes nothing.

use std::path::Path;

use serde_json::Value;

use super::client::Admin;
use super::{load, pretty, print, CtlError, Format};

pub async fn apply(admin: &Admin, file: &Path, dry_run: bool) -> Result<(), CtlError> {
    let document = load(file)?;
    let planned = admin
        .send("PUT", "/config?dry_run=true", Some(&document))
        .await?;
    let revision = revision_of(&planned.body, planned.revision);
    if planned.body["changed"] != Value::Bool(true) {
        print(&format!(
            "nothing to do: the cluster already matches {} (revision {revision})",
            file.display()
        ));
        return Ok(());
    }
    print(&diff_lines(&planned.body["diff"]));
    let summary = summary(&planned.body["diff"]);
    if dry_run {
        print(&format!(
            "dry run: {summary}; nothing applied (cluster at revision {revision})"
        ));
        return Ok(());
    }
    let done = admin
        .call(
            "PUT",
            "/config",
            Some(&document),
            &[("if-match", revision.to_string())],
        )
        .await
        .map_err(|e| match e {
            CtlError::Api {
                status: 412,
                code,
                message,
                field,
            } => CtlError::Api {
                status: 412,
                code,
                message: format!("{message}: the configuration changed since the diff above; nothing was applied, run apply again"),
                field,
            },
            other => other,
        })?;
    print(&format!(
        "applied: {summary} at revision {}",
        revision_of(&done.body, done.revision)
    ));
    Ok(())
}

pub async fn export(admin: &Admin, format: Format) -> Result<(), CtlError> {
    let answer = admin.get("/config").await?;
    match format {
        Format::Json => print(&pretty(&answer.body)),
        Format::Toml => {
            // Services first: a reader meets what routes name before the routes.
            #[derive(serde::Serialize)]
            struct Ordered<'a> {
                services: &'a Value,
                routes: &'a Value,
                consumers: &'a Value,
            }
            let b = &answer.body;
            let ordered = Ordered {
                services: &b["services"],
                routes: &b["routes"],
                consumers: &b["consumers"],
            };
            let text = toml::to_string_pretty(&ordered).map_err(|e| {
                CtlError::Transport(format!("the exported document is not TOML-shaped: {e}"))
            })?;
            let revision = revision_of(&answer.body, answer.revision);
            print(&format!(
                "# raftgate configuration, exported at revision {revision}.\n\
                 # `raftgate ctl apply -f FILE` makes the cluster match it.\n\n{}",
                text.trim_end()
            ));
        }
    }
    Ok(())
}

fn revision_of(body: &Value, header: Option<u64>) -> u64 {
    header.or_else(|| body["revision"].as_u64()).unwrap_or(0)
}

/// One line per change: `+ service users`, `~ route users`, `- consumer bob`.
fn diff_lines(diff: &Value) -> String {
    let mut lines = Vec::new();
    for (kind, section) in [
        ("service", "services"),
        ("route", "routes"),
        ("consumer", "consumers"),
    ] {
        for (sign, change) in [("+", "created"), ("~", "updated"), ("-", "deleted")] {
            for name in names(&diff[section][change]) {
                lines.push(format!("{sign} {kind} {name}"));
            }
        }
    }
    lines.join("\n")
}

/// `2 created, 1 updated, 0 deleted`.
fn summary(diff: &Value) -> String {
    let count = |change: &str| -> usize {
        ["services", "routes", "consumers"]
            .iter()
            .map(|s| names(&diff[*s][change]).len())
            .sum()
    };
    format!(
        "{} created, {} updated, {} deleted",
        count("created"),
        count("updated"),
        count("deleted")
    )
}

fn names(v: &Value) -> Vec<&str> {
    (v.as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_prints_one_line_per_change_and_a_summary() {
        let diff = serde_json::json!({
            "services": {"created": ["a"], "updated": [], "deleted": ["old"]},
            "routes": {"created": [], "updated": ["r"], "deleted": []},
            "consumers": {"created": [], "updated": [], "deleted": []},
        });
        assert_eq!(diff_lines(&diff), "+ service a\n- service old\n~ route r");
        assert_eq!(summary(&diff), "1 created, 1 updated, 1 deleted");
    }
}
