//! How the S3 member reports errors: object_store's errors (and the S3 XML bodies inside them)
//! turned into one-line `MemberError`s, with the bucket missing, refused credentials and
//! unreachable servers told apart from plain I/O failures.

use super::MemberError;

/// An error and its causes on one line.
pub(super) fn one_line(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The text between `<tag>` and `</tag>` in an S3 error body.
fn xml_field<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    let start = text.find(&format!("<{tag}>"))? + tag.len() + 2;
    let len = text[start..].find(&format!("</{tag}>"))?;
    Some(&text[start..start + len])
}

/// An S3 error as one short line: the server's status, code and message where it sent them,
/// else the client's error chain.
fn short(e: &object_store::Error) -> String {
    let full = one_line(e);
    let status = full
        .split_once("status code: ")
        .map(|(_, rest)| rest.split(':').next().unwrap_or(rest).trim().to_string());
    match (status, xml_field(&full, "Code")) {
        (Some(status), Some(code)) => {
            let message = xml_field(&full, "Message").unwrap_or("");
            format!("HTTP {status}: {code}: {message}")
        }
        _ => full,
    }
}

pub(super) fn member_err(e: object_store::Error) -> MemberError {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => MemberError::Missing,
        E::AlreadyExists { .. } => MemberError::AlreadyExists,
        E::Precondition { .. } => MemberError::Conflict,
        other => {
            let msg = short(&other);
            if msg.contains("NoSuchBucket") {
                return MemberError::Absent("the bucket does not exist".into());
            }
            let refused = [
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "AccessDenied",
                "403 Forbidden",
                "Connection refused",
                "dns error",
            ];
            if let Some(server) = msg.contains("Connection refused").then(|| server_of(&msg)) {
                MemberError::Unavailable(format!("cannot connect to {server}: connection refused"))
            } else if let Some(server) = msg.contains("dns error").then(|| server_of(&msg)) {
                MemberError::Unavailable(format!("cannot resolve {server}: {msg}"))
            } else if refused.iter().any(|r| msg.contains(r)) {
                MemberError::Unavailable(msg)
            } else {
                MemberError::Io(msg)
            }
        }
    }
}

/// The `host:port` of the first URL in an error message (object_store names the request's
/// URL), or "the server" when there is none.
fn server_of(msg: &str) -> String {
    ["http://", "https://"]
        .iter()
        .filter_map(|scheme| {
            let at = msg.find(scheme)? + scheme.len();
            let rest = &msg[at..];
            Some(rest[..rest.find(['/', ' ']).unwrap_or(rest.len())].to_string())
        })
        .next()
        .unwrap_or_else(|| "the server".into())
}

/// An object larger than `cap` is damaged, and its body is not read.
pub(super) fn too_large(size: u64, cap: u64) -> Result<(), MemberError> {
    if size > cap {
        return Err(MemberError::Corrupt(format!(
            "{size} bytes, more than the {cap} an object of its kind may hold (not read)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_server_is_named_from_the_request_url() {
        let msg = "Error performing GET http://127.0.0.1:8334/b/x/shardfs-store.json in 2ms - tcp connect error: Connection refused";
        assert_eq!(super::server_of(msg), "127.0.0.1:8334");
        assert_eq!(super::server_of("no url here"), "the server");
    }
}
