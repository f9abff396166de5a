//! `Debug` output that never shows secrets or message bodies: tokens, authenticate payloads, metadata and
//! application data print as `[redacted]`.

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
