//! `status`, `members add/remove`, `purge`: the cluster and its cache.

use serde_json::{json, Value};

use super::client::{segment, Admin};
use super::{pretty, print, CtlError, MembersCmd};

pub async fn status(admin: &Admin, as_json: bool) -> Result<(), CtlError> {
    let answer = admin.get("/cluster").await?;
    if as_json {
        print(&pretty(&answer.body));
    } else {
        print(&readable_status(&answer.body));
    }
    Ok(())
}

/// ```text
/// node 2: leader 1, term 3, revision 12, applied 15
///   ID  ADDRESS          ROLE     REACHABLE
///   1   127.0.0.1:7081   voter    yes        leader
/// ```
fn readable_status(s: &Value) -> String {
    let num = |v: &Value| v.as_u64().map(|n| n.to_string());
    let leader = num(&s["leader_id"]).unwrap_or_else(|| "none (no quorum?)".into());
    let mut out = format!(
        "node {}: leader {leader}, term {}, revision {}",
        num(&s["node_id"]).unwrap_or_default(),
        num(&s["term"]).unwrap_or_default(),
        num(&s["revision"]).unwrap_or_default(),
    );
    if let Some(applied) = num(&s["applied_index"]) {
        out.push_str(&format!(", applied {applied}"));
    }
    let members = s["members"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!(
        "\n  {:<4}{:<24}{:<9}REACHABLE",
        "ID", "ADDRESS", "ROLE"
    ));
    for m in &members {
        let id = num(&m["id"]).unwrap_or_default();
        let role = if m["voter"] == Value::Bool(true) {
            "voter"
        } else {
            "learner"
        };
        let reachable = if m["reachable"] == Value::Bool(true) {
            "yes"
        } else {
            "no"
        };
        let mut notes = Vec::new();
        if m["id"] == s["leader_id"] {
            notes.push("leader");
        }
        if m["id"] == s["node_id"] {
            notes.push("this node");
        }
        out.push_str(
            format!(
                "\n  {id:<4}{:<24}{role:<9}{reachable:<11}{}",
                m["addr"].as_str().unwrap_or(""),
                notes.join(", ")
            )
            .trim_end(),
        );
    }
    out
}

pub async fn purge(
    admin: &Admin,
    route: Option<String>,
    prefix: Option<String>,
) -> Result<(), CtlError> {
    let mut body = json!({});
    if let Some(r) = &route {
        body["route"] = json!(r);
    }
    if let Some(p) = &prefix {
        body["prefix"] = json!(p);
    }
    let answer = admin.send("POST", "/cache/purge", Some(&body)).await?;
    let what = match (&route, &prefix) {
        (None, None) => "every cached response".to_string(),
        (Some(r), None) => format!("route {r}"),
        (None, Some(p)) => format!("paths under {p}"),
        (Some(r), Some(p)) => format!("route {r} under {p}"),
    };
    let index = answer.body["index"]
        .as_u64()
        .map(|i| format!(" (log index {i})"))
        .unwrap_or_default();
    print(&format!("purged {what} on every node{index}"));
    Ok(())
}

pub async fn members(admin: &Admin, cmd: MembersCmd) -> Result<(), CtlError> {
    match cmd {
        MembersCmd::Add { id, addr, learner } => {
            let body = json!({"id": id, "addr": addr, "voter": !learner});
            let answer = admin.send("POST", "/cluster/members", Some(&body)).await?;
            if answer.body.is_null() {
                print(&format!("added node {id} ({addr})"));
            } else {
                print(&pretty(&answer.body));
            }
        }
        MembersCmd::Remove { id } => {
            let path = format!("/cluster/members/{}", segment(&id.to_string()));
            let answer = admin.send("DELETE", &path, None).await?;
            if answer.body.is_null() {
                print(&format!("removed node {id}"));
            } else {
                print(&pretty(&answer.body));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reads_as_a_table() {
        let s = json!({"node_id": 2, "leader_id": 1, "term": 3, "revision": 12, "applied_index": 15,
            "members": [{"id": 1, "addr": "127.0.0.1:7081", "voter": true, "reachable": true},
                        {"id": 2, "addr": "127.0.0.1:7082", "voter": false, "reachable": false}]});
        let text = readable_status(&s);
        assert!(
            text.starts_with("node 2: leader 1, term 3, revision 12, applied 15"),
            "{text}"
        );
        assert!(
            text.contains("1   127.0.0.1:7081          voter    yes        leader"),
            "{text}"
        );
        assert!(text.contains("learner  no         this node"), "{text}");
    }
}
