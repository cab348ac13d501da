//! `get`, `put`, `delete` of services, routes, consumers and certificates; a consumer's API keys
//! and JWT credentials.

use serde_json::{json, Value};

use super::client::{segment, Admin};
use super::{pretty, print, CtlError, Input, JwtCmd, KeysCmd, Kind};

pub async fn get(admin: &Admin, kind: Kind, name: Option<&str>) -> Result<(), CtlError> {
    let path = match name {
        Some(n) => format!("/{}/{}", kind.plural(), segment(n)),
        None => format!("/{}", kind.plural()),
    };
    let answer = admin.get(&path).await?;
    let shown = match name {
        None => data(&answer.body),
        Some(_) => &answer.body,
    };
    print(&pretty(shown));
    Ok(())
}

pub async fn put(
    admin: &Admin,
    kind: Kind,
    name: &str,
    input: &Input,
    if_match: Option<u64>,
) -> Result<(), CtlError> {
    let body = input.value()?;
    let path = format!("/{}/{}", kind.plural(), segment(name));
    let headers: Vec<(&str, String)> = if_match
        .map(|v| ("if-match", v.to_string()))
        .into_iter()
        .collect();
    let answer = admin.call("PUT", &path, Some(&body), &headers).await?;
    print(&pretty(&answer.body));
    let what = if answer.status == 201 {
        "created"
    } else {
        "saved"
    };
    eprintln!(
        "{what} {} {name}{}",
        kind.singular(),
        at_revision(answer.revision)
    );
    Ok(())
}

pub async fn delete(
    admin: &Admin,
    kind: Kind,
    name: &str,
    if_match: Option<u64>,
) -> Result<(), CtlError> {
    let path = format!("/{}/{}", kind.plural(), segment(name));
    let headers: Vec<(&str, String)> = if_match
        .map(|v| ("if-match", v.to_string()))
        .into_iter()
        .collect();
    let answer = admin.call("DELETE", &path, None, &headers).await?;
    print(&format!(
        "deleted {} {name}{}",
        kind.singular(),
        at_revision(answer.revision)
    ));
    Ok(())
}

pub async fn keys(admin: &Admin, cmd: KeysCmd) -> Result<(), CtlError> {
    match cmd {
        KeysCmd::Create { consumer, key } => {
            let body = match key {
                Some(k) => json!({ "key": k }),
                None => json!({}),
            };
            let path = format!("/consumers/{}/keys", segment(&consumer));
            let answer = admin.send("POST", &path, Some(&body)).await?;
            print(&pretty(&answer.body));
            eprintln!("the key is shown this once: the cluster keeps only its hash");
        }
        KeysCmd::List { consumer } => {
            let path = format!("/consumers/{}/keys", segment(&consumer));
            let answer = admin.get(&path).await?;
            print(&pretty(data(&answer.body)));
        }
        KeysCmd::Revoke { consumer, id } => {
            let path = format!("/consumers/{}/keys/{}", segment(&consumer), segment(&id));
            let answer = admin.send("DELETE", &path, None).await?;
            print(&format!(
                "revoked key {id} of {consumer}{}",
                at_revision(answer.revision)
            ));
        }
    }
    Ok(())
}

pub async fn jwt(admin: &Admin, cmd: JwtCmd) -> Result<(), CtlError> {
    let one = |consumer: &str, kid: &str| {
        format!("/consumers/{}/jwt/{}", segment(consumer), segment(kid))
    };
    match cmd {
        JwtCmd::Put {
            consumer,
            key_id,
            input,
        } => {
            let body = input.value()?;
            let answer = admin
                .send("PUT", &one(&consumer, &key_id), Some(&body))
                .await?;
            print(&pretty(&answer.body));
        }
        JwtCmd::Get { consumer, key_id } => {
            let answer = admin.get(&one(&consumer, &key_id)).await?;
            print(&pretty(&answer.body));
        }
        JwtCmd::List { consumer } => {
            let answer = admin
                .get(&format!("/consumers/{}/jwt", segment(&consumer)))
                .await?;
            print(&pretty(data(&answer.body)));
        }
        JwtCmd::Delete { consumer, key_id } => {
            let answer = admin.send("DELETE", &one(&consumer, &key_id), None).await?;
            print(&format!(
                "deleted JWT credential {key_id} of {consumer}{}",
                at_revision(answer.revision)
            ));
        }
    }
    Ok(())
}

pub fn at_revision(revision: Option<u64>) -> String {
    revision
        .map(|r| format!(" (revision {r})"))
        .unwrap_or_default()
}

/// A list answer (`{"data": [...]}`) without its wrapper.
fn data(v: &Value) -> &Value {
    v.get("data").unwrap_or(v)
}
