export { connect, SealcastClient } from "./client.js";
export type {
  ConnectOptions,
  ConnectedInfo,
  CloseInfo,
  ClientState,
  ReconnectOptions,
  WebSocketLike,
  WebSocketConstructor,
  StreamPosition,
  JoinResult,
  Ack,
  MessageMeta,
  Presence,
  PresenceMember,
  MemberEvent,
} from "./client.js";
export {
  SealcastError,
  CloseCode,
  closeReason,
  FATAL_CLOSE_CODES,
  CREDENTIAL_CLOSE_CODES,
  reconnectPolicy,
} from "./errors.js";
export type { SealcastErrorCode, ReconnectDecision } from "./errors.js";
export type { ServerKey } from "./wsenc.js";
export { MAX_RECORDS_PER_EPOCH } from "./wsenc.js";
export { encode as base64urlEncode, decode as base64urlDecode, Base64UrlError } from "./b64u.js";
