//! Output that never shows secrets or message bodies: in `Debug`, tokens, authenticate payloads, metadata and
//! application data print as `[redacted]`; [`url`] hides the credentials a URL may carry.

use std::borrow::Cow;

/// What stands for a hidden value.
const REDACTED: &str = "[redacted]";

/// `text` (a URL) as it may be shown or logged: the password of its userinfo and its query string (and fragment)
/// become `[redacted]`, e.g. `redis://app:s3cret@redis:6379/0` → `redis://app:[redacted]@redis:6379/0` and
/// `http://auth/check?key=k` → `http://auth/check?[redacted]`. A userinfo without `:` is hidden whole, since
/// some clients read a lone userinfo as a password. Text that is not a URL is returned as is, less what
/// follows a `?` or `#`.
pub fn url(text: &str) -> Cow<'_, str> {
    // Everything after the authority that may carry a credential: `?query` and `#fragment`.
    let (head, tail) = match text.find(['?', '#']) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let after_scheme = head.find("://").map_or(0, |at| at + 3);
    let (scheme, rest) = head.split_at(after_scheme);
    // The authority ends at the path; userinfo is what precedes its last `@` (RFC 3986: no `/` inside it).
    let authority_len = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_len);
    let host_part = authority.rfind('@').map(|at| authority.split_at(at));
    if host_part.is_none() && tail.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    out.push_str(scheme);
    match host_part {
        Some((userinfo, host)) => {
            if let Some((user, _password)) = userinfo.split_once(':') {
                out.push_str(user);
                out.push(':');
            }
            out.push_str(REDACTED);
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    out.push_str(path);
    if let Some(mark) = tail.chars().next() {
        out.push(mark);
        out.push_str(REDACTED);
    }
    Cow::Owned(out)
}

/// Implements `Debug` for a struct, printing `shown` fields and `[redacted]` for `hidden` ones.
macro_rules! debug_redacted {
    ($ty:ty { $($shown:ident),* ; $($hidden:ident),* }) => {
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut d = f.debug_struct(stringify!($ty));
                $( d.field(stringify!($shown), &self.$shown); )*
                $( let _ = &self.$hidden; d.field(stringify!($hidden), &format_args!("[redacted]")); )*
                d.finish()
            }
        }
    };
}

pub(crate) use debug_redacted;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::url;

    #[test]
    fn url_passwords_are_hidden_and_users_hosts_and_paths_kept() {
        assert_eq!(
            url("redis://app:s3cret@redis:6379/0"),
            "redis://app:[redacted]@redis:6379/0"
        );
        assert_eq!(url("redis://:s3cret@redis:6379"), "redis://:[redacted]@redis:6379");
        assert_eq!(
            url("rediss://a:p@ss@h"),
            "rediss://a:[redacted]@h",
            "an unencoded @ in the password"
        );
        assert_eq!(url("redis://s3cret@redis"), "redis://[redacted]@redis");
    }

    #[test]
    fn url_query_strings_and_fragments_are_hidden() {
        assert_eq!(
            url("http://auth:3000/check?key=s3cret"),
            "http://auth:3000/check?[redacted]"
        );
        assert_eq!(url("http://auth/check#s3cret"), "http://auth/check#[redacted]");
        assert_eq!(url("http://u:p@h/x?k=v"), "http://u:[redacted]@h/x?[redacted]");
    }

    #[test]
    fn urls_without_credentials_are_unchanged() {
        for plain in [
            "redis://127.0.0.1:6379",
            "http://auth/users/@me",
            "",
            "not a url",
            "unix:///tmp/r.sock",
        ] {
            assert_eq!(url(plain), plain);
        }
    }

    #[test]
    fn payloads_tokens_and_bodies_never_reach_debug_output() {
        let secret = "tok-SECRET-123";
        let mut data = serde_json::Map::new();
        data.insert("token".into(), json!(secret));
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(axum::http::header::COOKIE, format!("session={secret}").parse().unwrap());
        let upgrade = crate::hooks::UpgradeRequest::new(headers, Some(format!("token={secret}")), None);
        let auth = crate::AuthRequest {
            client_id: "c".into(),
            data: data.clone(),
            upgrade: Some(std::sync::Arc::new(upgrade)),
        };
        let hs = crate::HandshakeRequest {
            client_id: "c".into(),
            user_id: None,
            data,
        };
        let msg = crate::IncomingMessage {
            client_id: "c".into(),
            user_id: Some("u".into()),
            event: "chat".into(),
            data: json!(secret),
            id: None,
        };
        let ident = crate::Identity::user("u").with_metadata(json!({ "token": secret }));
        let env = crate::protocol::Envelope::parse(
            format!(r#"{{"serverId":"s","type":"broadcast","event":"e","data":"{secret}"}}"#).as_bytes(),
        )
        .unwrap();
        for out in [
            format!("{auth:?}"),
            format!("{hs:?}"),
            format!("{msg:?}"),
            format!("{ident:?}"),
            format!("{env:?}"),
            format!(
                "{:?}",
                crate::Transformed::Replace {
                    event: "e".into(),
                    data: json!(secret)
                }
            ),
        ] {
            assert!(!out.contains(secret), "{out}");
            assert!(out.contains("[redacted]"), "{out}");
        }
    }
}
