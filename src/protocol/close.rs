//! WebSocket close codes and their fixed reason strings (wsenc/1 §9; 4001–4004 keep the reference's meaning).

/// Why the server closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCode {
    /// 1000: normal closure.
    Normal,
    /// 1001: graceful shutdown.
    ShuttingDown,
    /// 1002: the client broke the WebSocket framing rules (unmasked or malformed frames).
    ProtocolError,
    /// 1007: a text message that is not UTF-8.
    InvalidPayload,
    /// 1008: policy violation (e.g. an expired token).
    PolicyViolation,
    /// 1009: a frame or message over the size limit.
    TooLarge,
    /// 1011: unexpected server condition.
    InternalError,
    /// 1013: capacity exhausted, try again later.
    TryAgainLater,
    /// 4001: no accepted `authenticate` before the deadline.
    AuthenticationTimeout,
    /// 4002: authenticated client silent past the heartbeat timeout.
    HeartbeatTimeout,
    /// 4003: the authenticator rejected the credentials or failed.
    AuthenticationFailed,
    /// 4004: encryption required but missing or invalid, or a plaintext frame on an encrypted session.
    EncryptionRequired,
    /// 4005: a record-layer failure.
    DecryptionFailed,
    /// 4006: sequence or epoch limit reached.
    KeyExhausted,
    /// 4007: the outbound queue overflowed.
    SlowConsumer,
    /// 4008: inbound message or join rate over the limit.
    RateLimited,
}

impl CloseCode {
    /// The numeric code sent in the close frame.
    pub const fn code(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::ShuttingDown => 1001,
            Self::ProtocolError => 1002,
            Self::InvalidPayload => 1007,
            Self::PolicyViolation => 1008,
            Self::TooLarge => 1009,
            Self::InternalError => 1011,
            Self::TryAgainLater => 1013,
            Self::AuthenticationTimeout => 4001,
            Self::HeartbeatTimeout => 4002,
            Self::AuthenticationFailed => 4003,
            Self::EncryptionRequired => 4004,
            Self::DecryptionFailed => 4005,
            Self::KeyExhausted => 4006,
            Self::SlowConsumer => 4007,
            Self::RateLimited => 4008,
        }
    }

    /// The fixed reason string sent with the code; never derived from input.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Normal => "Normal closure",
            Self::ShuttingDown => "Server shutting down",
            Self::ProtocolError => "Protocol error",
            Self::InvalidPayload => "Invalid payload",
            Self::PolicyViolation => "Policy violation",
            Self::TooLarge => "Message too large",
            Self::InternalError => "Internal error",
            Self::TryAgainLater => "Try again later",
            Self::AuthenticationTimeout => "Authentication timeout",
            Self::HeartbeatTimeout => "Heartbeat timeout",
            Self::AuthenticationFailed => "Authentication failed",
            Self::EncryptionRequired => "Encryption required",
            Self::DecryptionFailed => "Decryption failed",
            Self::KeyExhausted => "Key exhausted",
            Self::SlowConsumer => "Slow consumer",
            Self::RateLimited => "Rate limited",
        }
    }

    /// The code for a numeric value the server itself uses, if any.
    pub fn from_code(code: u16) -> Option<Self> {
        ALL.iter().copied().find(|c| c.code() == code)
    }
}

/// Every code the server sends.
pub(crate) const ALL: [CloseCode; 16] = [
    CloseCode::Normal,
    CloseCode::ShuttingDown,
    CloseCode::ProtocolError,
    CloseCode::InvalidPayload,
    CloseCode::PolicyViolation,
    CloseCode::TooLarge,
    CloseCode::InternalError,
    CloseCode::TryAgainLater,
    CloseCode::AuthenticationTimeout,
    CloseCode::HeartbeatTimeout,
    CloseCode::AuthenticationFailed,
    CloseCode::EncryptionRequired,
    CloseCode::DecryptionFailed,
    CloseCode::KeyExhausted,
    CloseCode::SlowConsumer,
    CloseCode::RateLimited,
];

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code(), self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_number() {
        for c in ALL {
            assert_eq!(CloseCode::from_code(c.code()), Some(c));
        }
        assert_eq!(CloseCode::from_code(4999), None);
    }
}
