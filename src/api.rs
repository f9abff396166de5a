//! The HTTP API on the public listener, for application backends: `POST /api/publish`, `POST /api/disconnect`,
//! `POST /api/history` and `POST /api/presence`, authorised with `Authorization: Bearer <key>` (compared in constant time).
//!
//! Publish and disconnect go through the bus, so they reach every instance. Accepted requests answer 202
//! `{"status":"accepted"}` (a publish to a room with history adds its `offset` and `epoch`, and `"duplicate":true`
//! when its `idempotency_key` was already used); `history` answers 200
//! `{"publications":[{"offset","event","data"}],"offset","epoch"}`; `presence` answers 200 what a member's
//! `presence` query gets, `{"room","members":[{"client","user","since"}],"clients","users","truncated"}`. Errors answer
//! `{"error":{"code":..,"message":..}}` with a stable code: `unauthorized` (401), `invalid_request` (400),
//! `reserved_event` (400), `history_not_enabled` (400, the room matches no `history_rooms` pattern),
//! `unrecoverable_position` (409, `since` is of another epoch or out of the window), `payload_too_large` (413,
//! bodies over [`API_BODY_LIMIT`]), `history_unavailable` (503, the Redis history store is unreachable: retry with
//! the same `idempotency_key`), `presence_not_enabled` (400, the room matches no `presence_rooms` pattern),
//! `presence_unavailable` (503, the Redis presence store is unreachable: retry).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::history::{HistoryError, StreamPosition};
use crate::presence::PresenceError;
use crate::protocol::envelope::MAX_EXCLUDE;
use crate::protocol::{ClientId, RoomName, Target, UserId};
use crate::server::server_key;
use crate::shared::{SendError, Shared};
use crate::Server;

/// Largest request body, in bytes (a published message stays well under the bus's envelope limit).
pub const API_BODY_LIMIT: usize = 512 * 1024;

struct Api {
    shared: Arc<Shared>,
    key_digest: [u8; 32],
}

impl Server {
    /// The HTTP API router (`/api/publish`, `/api/disconnect`, `/api/history`, `/api/presence`) guarded by the bearer `api_key`. Merge it into
    /// the public app (of any state `S`: the router carries its own); leave it out to disable the API.
    pub fn api_router<S>(&self, api_key: &str) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let api = Arc::new(Api {
            shared: self.shared().clone(),
            key_digest: Sha256::digest(api_key.as_bytes()).into(),
        });
        Router::new()
            .route("/api/publish", post(publish))
            .route("/api/disconnect", post(disconnect))
            .route("/api/history", post(history))
            .route("/api/presence", post(presence))
            .layer(DefaultBodyLimit::max(API_BODY_LIMIT))
            .with_state(api)
    }
}

/// An error answer: status, stable code, human message.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, axum::Json(body)).into_response()
    }
}

fn error(status: StatusCode, code: &'static str, message: &str) -> ApiError {
    ApiError {
        status,
        code,
        message: message.to_owned(),
    }
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({"status": "accepted"})),
    )
        .into_response()
}

/// Compares SHA-256 digests of the presented and the configured key, so neither content nor length leaks
/// through timing.
fn authorised(api: &Api, headers: &HeaderMap) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let diff = digest
        .iter()
        .zip(api.key_digest.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    !presented.is_empty() && diff == 0
}

/// Authorisation first, then the body: a 401 never depends on the body.
fn read<T: for<'de> Deserialize<'de>>(
    api: &Api,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    if !authorised(api, headers) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API key (Authorization: Bearer <key>)",
        ));
    }
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body over the API's size limit",
            )
        } else {
            error(StatusCode::BAD_REQUEST, "invalid_request", "unreadable request body")
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        let message = format!("request body is not the expected JSON: {e}");
        error(StatusCode::BAD_REQUEST, "invalid_request", &message)
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    client: Option<String>,
    user: Option<String>,
    room: Option<String>,
    #[serde(default)]
    broadcast: bool,
    event: String,
    data: Option<Box<RawValue>>,
    #[serde(default)]
    exclude: Vec<String>,
    idempotency_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryRequest {
    room: String,
    since: Option<StreamPosition>,
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PresenceRequest {
    room: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectRequest {
    client: Option<String>,
    user: Option<String>,
}

fn invalid(message: &str) -> ApiError {
    error(StatusCode::BAD_REQUEST, "invalid_request", message)
}

/// The addressee named in a request, before its id is checked.
enum Named {
    Client(String),
    User(String),
    Room(String),
}

/// Exactly one addressee, with a valid id: the edge where the request's text becomes a [`Target`]. A client must
/// be a client id (a UUID); a user id or room name 1 to 1024 bytes (the bus's target limit).
fn one_target(
    client: Option<String>,
    user: Option<String>,
    room: Option<String>,
    broadcast: bool,
) -> Result<Target, ApiError> {
    let named = [client.map(Named::Client), user.map(Named::User), room.map(Named::Room)];
    let mut given = named.into_iter().flatten();
    let named = match (given.next(), given.next(), broadcast) {
        (Some(t), None, false) => t,
        (None, None, true) => return Ok(Target::Broadcast),
        _ => return Err(invalid("give exactly one of client, user, room or \"broadcast\": true")),
    };
    let too_long = || invalid("the target id must be 1 to 1024 bytes long");
    match named {
        Named::Client(id) => ClientId::parse(&id)
            .map(Target::Client)
            .ok_or_else(|| invalid("client must be a client id (the UUID the client received in `connected`)")),
        Named::User(id) => UserId::parse(&id).map(Target::User).ok_or_else(too_long),
        Named::Room(name) => RoomName::parse(&name).map(Target::Room).ok_or_else(too_long),
    }
}

async fn publish(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: PublishRequest = read(&api, &headers, body)?;
    let target = one_target(req.client, req.user, req.room, req.broadcast)?;
    if req.exclude.len() > MAX_EXCLUDE {
        return Err(invalid("exclude lists at most 1024 client ids"));
    }
    // Entries that are not client ids could never match a client: left out, as the bus does.
    let exclude: Vec<ClientId> = req.exclude.iter().filter_map(|id| ClientId::parse(id)).collect();
    let data = match req.data {
        Some(d) => d,
        None => RawValue::from_string("null".to_owned()).map_err(|_| invalid("data"))?,
    };
    // A client on this instance is served directly, like `Server::send_to_client`.
    let publish = match &target {
        Target::Client(id) => api.shared.registry.get(id).is_none(),
        _ => true,
    };
    let sent = match (target, req.idempotency_key) {
        (Target::Room(room), key) => {
            let key = key.map(|k| server_key(&room, &k)).transpose();
            match key {
                Ok(key) => api
                    .shared
                    .publish_room_acked(room, &req.event, data, exclude, key)
                    .await
                    .map(Some),
                Err(e) => Err(e),
            }
        }
        (_, Some(_)) => return Err(invalid("idempotency_key is for room targets only")),
        (target, None) => api
            .shared
            .emit(target, &req.event, data, exclude, publish)
            .map(|_| None),
    };
    match sent {
        Ok(Some(published)) => {
            let mut body = serde_json::json!({"status": "accepted"});
            if let (Some(at), Some(map)) = (&published.position, body.as_object_mut()) {
                map.insert("offset".into(), at.offset.into());
                map.insert("epoch".into(), at.epoch.clone().into());
            }
            if let (true, Some(map)) = (published.duplicate, body.as_object_mut()) {
                map.insert("duplicate".into(), true.into());
            }
            Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
        }
        Ok(None) => Ok(accepted()),
        Err(SendError::Unavailable) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "history_unavailable",
            "the history store is unreachable; retry with the same idempotency_key",
        )),
        Err(SendError::ReservedEvent(name)) => Err(error(
            StatusCode::BAD_REQUEST,
            "reserved_event",
            &format!("event name {name:?} is reserved by the protocol"),
        )),
        Err(e) => Err(invalid(&e.to_string())),
    }
}

async fn history(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: HistoryRequest = read(&api, &headers, body)?;
    let room = RoomName::parse(&req.room).ok_or_else(|| invalid("room must be 1 to 1024 bytes long"))?;
    match api
        .shared
        .history_page_awaited(&room, req.since.as_ref(), req.limit)
        .await
    {
        Ok(page) => {
            let publications: Vec<serde_json::Value> = page
                .publications
                .iter()
                .map(|p| serde_json::json!({"offset": p.offset, "event": p.event, "data": p.data}))
                .collect();
            let body = serde_json::json!({
                "publications": publications,
                "offset": page.position.offset,
                "epoch": page.position.epoch,
            });
            Ok(axum::Json(body).into_response())
        }
        Err(HistoryError::NotEnabled) => Err(error(
            StatusCode::BAD_REQUEST,
            "history_not_enabled",
            "this room keeps no history (history.rooms)",
        )),
        Err(HistoryError::Unrecoverable(_)) => Err(error(
            StatusCode::CONFLICT,
            "unrecoverable_position",
            "since is of another epoch or out of the history window; ask again without since",
        )),
        Err(HistoryError::Unavailable) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "history_unavailable",
            "the history store is unreachable; retry",
        )),
        Err(e) => Err(invalid(&e.to_string())),
    }
}

async fn presence(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: PresenceRequest = read(&api, &headers, body)?;
    let room = RoomName::parse(&req.room).ok_or_else(|| invalid("room must be 1 to 1024 bytes long"))?;
    match api.shared.presence(&room).await {
        Ok(answer) => Ok(axum::Json(answer).into_response()),
        Err(PresenceError::Unavailable) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "presence_unavailable",
            "the presence store is unreachable; retry",
        )),
        Err(PresenceError::NotEnabled) => Err(error(
            StatusCode::BAD_REQUEST,
            "presence_not_enabled",
            "this room keeps no presence (presence.rooms)",
        )),
        Err(e) => Err(invalid(&e.to_string())),
    }
}

async fn disconnect(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: DisconnectRequest = read(&api, &headers, body)?;
    if req.client.is_some() == req.user.is_some() {
        return Err(invalid("give exactly one of client or user"));
    }
    let target = one_target(req.client, req.user, None, false)?;
    api.shared.disconnect_target(&target, true);
    Ok(accepted())
}
