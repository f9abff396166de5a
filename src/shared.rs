//! The state every part of a server shares — configuration, routing table, bus, hooks, limits, counters — and
//! the delivery paths that use it: local fan-out plus hand-off to the bus, and what arrives from the bus.
//!
//! `connection` and `server` depend on this module; it depends on neither. The bus reaches it only through the
//! [`Deliver`] trait of an [`crate::Inbox`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::{Bus, Deliver};
use crate::config::Config;
use crate::hooks::{Authenticator, MessageHandler, OnConnected, OnDisconnected, OutboundTransformer, RoomValidator};
use crate::limits::ConnectionLimits;
use crate::protocol::outbound::TextFrame;
use crate::protocol::{event, outbound, Action, ClientId, CloseCode, Envelope, Target};
use crate::registry::{Exclude, Registry};
use crate::session::Handshake;
use crate::telemetry::Telemetry;
use crate::wsenc::SharedKeys;

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The event name is reserved for the protocol (`connected`, `error`, `encrypted`, ...): delivering it would
    /// confuse or kill encrypted sessions. Pick another name.
    #[error("event name {0:?} is reserved by the protocol; use another name")]
    ReservedEvent(String),
    /// The event name is empty or longer than 256 bytes.
    #[error("event name must be 1 to 256 bytes long")]
    InvalidEvent,
    /// The payload could not be serialised to JSON.
    #[error("payload is not serialisable to JSON: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// How long one outbound-transformer call may take unless the builder says otherwise.
pub(crate) const DEFAULT_TRANSFORMER_TIMEOUT: Duration = Duration::from_secs(1);

/// The application's optional hooks.
pub(crate) struct Hooks {
    pub(crate) room_validator: Option<Arc<RoomValidator>>,
    pub(crate) on_connected: Option<Arc<OnConnected>>,
    pub(crate) on_disconnected: Option<Arc<OnDisconnected>>,
    pub(crate) message_handler: Option<Arc<MessageHandler>>,
    pub(crate) outbound_transformer: Option<Arc<OutboundTransformer>>,
    /// Bound on one outbound-transformer call; past it the message is dropped for that recipient.
    pub(crate) transformer_timeout: Duration,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            room_validator: None,
            on_connected: None,
            on_disconnected: None,
            message_handler: None,
            outbound_transformer: None,
            transformer_timeout: DEFAULT_TRANSFORMER_TIMEOUT,
        }
    }
}

/// One server's shared state; see the module docs.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) server_id: Arc<str>,
    pub(crate) registry: Registry,
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) hooks: Hooks,
    pub(crate) authenticator: Arc<Authenticator>,
    pub(crate) handshake: Option<Arc<Handshake>>,
    pub(crate) static_keys: Option<SharedKeys>,
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    pub(crate) seal_permits: Semaphore,
    /// Outbound-transformer calls in flight, as many as sealing permits but apart from them: a slow transformer
    /// must not hold up sealing.
    pub(crate) transform_permits: Semaphore,
    /// Authenticator calls in flight; apart from the handshakes' permits, which bound CPU work only.
    pub(crate) auth_permits: Semaphore,
    pub(crate) handshake_permits: Semaphore,
    pub(crate) limits: Arc<ConnectionLimits>,
    pub(crate) telemetry: Arc<Telemetry>,
    pub(crate) clock: Instant,
    /// Set off by the first upgrade without a peer address: per-IP limits cannot work, which is said once.
    pub(crate) peerless: std::sync::Once,
}

/// Refuses reserved and malformed application event names.
pub(crate) fn check_event(name: &str) -> Result<(), SendError> {
    if event::is_reserved(name) {
        return Err(SendError::ReservedEvent(name.to_owned()));
    }
    if !event::is_valid_application_event(name) {
        return Err(SendError::InvalidEvent);
    }
    Ok(())
}

impl Shared {
    /// Delivers to local recipients and, when `publish`, hands the envelope to the bus. Returns the local count.
    pub(crate) fn emit(
        &self,
        target: Target,
        event_name: &str,
        data: Box<RawValue>,
        exclude: Vec<ClientId>,
        publish: bool,
    ) -> Result<usize, SendError> {
        check_event(event_name)?;
        let started = Instant::now();
        let text = TextFrame::new(&outbound::message(event_name, Some(&data)));
        let local = self.registry.deliver(&target, &text, &Exclude::from_ids(&exclude));
        self.telemetry.fanout(started.elapsed());
        if publish {
            self.publish_delivery(target, event_name, data, exclude);
        }
        Ok(local)
    }

    /// Hands a message to the bus for the other instances to deliver.
    pub(crate) fn publish_delivery(
        &self,
        target: Target,
        event_name: &str,
        data: Box<RawValue>,
        exclude: Vec<ClientId>,
    ) {
        self.telemetry.bus_published();
        self.bus.publish(Envelope {
            server_id: self.server_id.to_string(),
            target,
            event: event_name.to_owned(),
            data,
            exclude,
            action: Action::Deliver,
        });
    }

    /// Closes the local connections of a client or user target with 1008 and, when `publish`, asks the other
    /// instances to do the same. Returns the local count (rooms and broadcast are not disconnect targets: 0).
    pub(crate) fn disconnect_target(&self, target: &Target, publish: bool) -> usize {
        let entries = match target {
            Target::Client(id) => self.registry.get(id).into_iter().collect(),
            Target::User(id) => self.registry.by_user(id.as_str()),
            Target::Room(_) | Target::Broadcast => return 0,
        };
        let mut closed = 0;
        for e in entries {
            if e.mailbox.close_after_pending(CloseCode::PolicyViolation) {
                tracing::info!(client = %e.id_str, code = CloseCode::PolicyViolation.code(), "disconnect requested");
                closed += 1;
            }
        }
        if publish {
            if let Some(env) = Envelope::disconnect(self.server_id.to_string(), target.clone()) {
                self.telemetry.bus_published();
                self.bus.publish(env);
            }
        }
        closed
    }
}

impl Deliver for Shared {
    fn deliver(&self, env: &Envelope) {
        if env.action == Action::Disconnect {
            self.disconnect_target(&env.target, false);
            self.telemetry.bus_delivered();
            return;
        }
        // Envelope::parse already refused reserved names; envelopes built in-process are checked here.
        if !event::is_valid_application_event(&env.event) {
            self.count_dropped();
            return;
        }
        let text = TextFrame::new(&outbound::message(&env.event, Some(&env.data)));
        let exclude = match env.target {
            Target::Room(_) | Target::Broadcast | Target::User(_) => Exclude::from_ids(&env.exclude),
            Target::Client(_) => Exclude::none(),
        };
        self.registry.deliver(&env.target, &text, &exclude);
        self.telemetry.bus_delivered();
    }

    fn count_dropped(&self) {
        self.telemetry.bus_dropped();
    }
}
