/**
 * Typed errors and the wsenc/1 / sealcast close-code table.
 *
 * Messages are fixed strings: they never contain tokens, keys, salts, derived
 * secrets, plaintext or any other input.
 */

/** Close codes used by the sealcast server (wsenc/1 §9). */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  ProtocolError: 1002,
  Abnormal: 1006,
  PolicyViolation: 1008,
  TooLarge: 1009,
  TryAgainLater: 1013,
  AuthenticationTimeout: 4001,
  HeartbeatTimeout: 4002,
  AuthenticationFailed: 4003,
  EncryptionRequired: 4004,
  DecryptionFailed: 4005,
  KeyExhausted: 4006,
  SlowConsumer: 4007,
  RateLimited: 4008,
} as const;

const REASONS: Readonly<Record<number, string>> = {
  1000: "Normal closure",
  1001: "Server shutting down",
  1002: "Protocol error",
  1005: "No status",
  1006: "Connection lost",
  1008: "Policy violation",
  1009: "Message too large",
  1011: "Internal server error",
  1013: "Try again later",
  4001: "Authentication timeout",
  4002: "Heartbeat timeout",
  4003: "Authentication failed",
  4004: "Encryption required",
  4005: "Decryption failed",
  4006: "Key exhausted",
  4007: "Slow consumer",
  4008: "Rate limited",
};

/** Map a WebSocket close code to its fixed, human-readable reason. */
export function closeReason(code: number): string {
  return REASONS[code] ?? (code >= 4000 && code <= 4999 ? "Application close" : "Unknown close code");
}

/** Close codes after which reconnecting cannot help: the encryption configuration was rejected. Never retried. */
export const FATAL_CLOSE_CODES: ReadonlySet<number> = new Set([CloseCode.EncryptionRequired]);

/**
 * Close codes about the credentials rather than the connection: 4003 (rejected, e.g. expired before it was
 * sent) and 1008 (expired without a refresh, too many sessions for the user, or removed by the operator).
 * Retrying with the same token cannot help and an operator's disconnect must not be undone blindly, so these
 * are retried once with a fresh token from `getToken`, and otherwise end the client.
 */
export const CREDENTIAL_CLOSE_CODES: ReadonlySet<number> = new Set([
  CloseCode.PolicyViolation,
  CloseCode.AuthenticationFailed,
]);

/** What the client does after a close: see the reconnect policy table in the README. */
export type ReconnectDecision = "reconnect" | "fresh-token" | "stop";

/**
 * The reconnect policy for a close code. `hasGetToken`: whether the client can fetch a fresh token.
 * `retriedWithFreshToken`: whether the previous close already used the one fresh-token retry without a
 * session being established since.
 */
export function reconnectPolicy(code: number, hasGetToken: boolean, retriedWithFreshToken = false): ReconnectDecision {
  if (FATAL_CLOSE_CODES.has(code)) return "stop";
  if (CREDENTIAL_CLOSE_CODES.has(code)) return hasGetToken && !retriedWithFreshToken ? "fresh-token" : "stop";
  return "reconnect";
}

export type SealcastErrorCode =
  | "CONFIG" // invalid options (programming error)
  | "PROTOCOL" // malformed handshake message from the server
  | "DOWNGRADE" // server did not provide encryption although it is required
  | "SERVER_AUTH_FAILED" // unknown kid, bad server key or confirm mismatch
  | "DECRYPTION_FAILED" // record-layer failure (wsenc/1 §6) -> close 4005
  | "KEY_EXHAUSTED" // seq / epoch limits -> close 4006
  | "NOT_CONNECTED" // send on a closed client
  | "TOKEN_UNAVAILABLE" // getToken threw, returned no string, or a token that has already expired
  | "SERVER_ERROR"; // {"event":"error"} from the server

/** The single error type thrown and emitted by this library. */
export class SealcastError extends Error {
  /** Machine-readable kind. */
  readonly code: SealcastErrorCode;
  /** The WebSocket close code this error leads to or came from, if any. */
  readonly closeCode: number | undefined;
  /** Whether the client gives up (no reconnect) after this error. */
  readonly fatal: boolean;
  /** For `SERVER_ERROR`: the server's `data.message`, if it sent one. */
  serverMessage?: string;

  constructor(code: SealcastErrorCode, message: string, opts: { closeCode?: number; fatal?: boolean } = {}) {
    super(message);
    this.name = "SealcastError";
    this.code = code;
    this.closeCode = opts.closeCode;
    this.fatal = opts.fatal ?? false;
  }
}

export function decryptionFailed(): SealcastError {
  return new SealcastError("DECRYPTION_FAILED", closeReason(CloseCode.DecryptionFailed), {
    closeCode: CloseCode.DecryptionFailed,
  });
}

export function keyExhausted(): SealcastError {
  return new SealcastError("KEY_EXHAUSTED", closeReason(CloseCode.KeyExhausted), {
    closeCode: CloseCode.KeyExhausted,
  });
}

export function serverAuthFailed(): SealcastError {
  return new SealcastError("SERVER_AUTH_FAILED", "server authentication failed", {
    closeCode: CloseCode.EncryptionRequired,
    fatal: true,
  });
}
