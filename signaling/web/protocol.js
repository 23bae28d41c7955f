// The gst-room protocol, mirrored in JavaScript.
//
// The one definition is Rust: signaling/protocol/src/lib.rs (ClientMessage / ServerMessage).
// This module mirrors it for the web page; tests/browser/protocol.test.mjs checks the mirror
// against the examples the Rust crate prints (tests/browser/protocol-examples.json).
// Wire form: one JSON object per WebSocket text frame, "type" is the kebab-case variant name,
// the other keys are the variant's snake_case fields. Optional fields are left out when unset
// (serde `skip_serializing_if = "Option::is_none"`); the server rejects unknown fields.
//
// Plain ES module, no imports: the page loads it with `import`, the tests with Node.

/** ServerMessage::Welcome.protocol */
export const PROTOCOL_VERSION = 1;
/** Largest frame the server accepts (bytes). */
export const MAX_MESSAGE_BYTES = 64 * 1024;
/** Longest chat text (bytes of UTF-8). */
export const MAX_CHAT_BYTES = 4 * 1024;
/** Longest room or stream name (characters). */
export const MAX_NAME_CHARS = 64;
/** Longest username (characters). */
export const MAX_USERNAME_CHARS = 32;
/** How many characters of offending input the server quotes in errors (then "…"). */
export const MAX_ECHO_CHARS = 64;
/** Longest request id (characters); see withId. */
export const MAX_REQUEST_ID_CHARS = 64;

/**
 * Every ClientMessage: its fields in builder-argument order, and which of them are optional
 * (absent from the JSON when undefined/null).
 */
export const CLIENT_MESSAGES = Object.freeze({
  join: { fields: ['room', 'username', 'token'], optional: ['token'] },
  leave: { fields: [], optional: [] },
  publish: { fields: ['stream', 'audio', 'video'], optional: [] },
  unpublish: { fields: ['stream'], optional: [] },
  mute: { fields: ['stream', 'audio_muted', 'video_muted'], optional: [] },
  message: { fields: ['text', 'to'], optional: ['to'] },
  play: { fields: ['participant', 'stream'], optional: [] },
  sdp: { fields: ['session', 'description'], optional: [] },
  ice: { fields: ['session', 'candidate', 'sdp_m_line_index', 'sdp_mid'], optional: ['sdp_mid'] },
  stop: { fields: ['session'], optional: [] },
});

/** Every ServerMessage: its fields and which of them may be absent. */
export const SERVER_MESSAGES = Object.freeze({
  welcome: { fields: ['protocol', 'participant_id'], optional: [] },
  state: { fields: ['room', 'username', 'capacity', 'participants', 'ice_servers'], optional: [] },
  joined: { fields: ['username'], optional: [] },
  left: { fields: ['username'], optional: [] },
  published: { fields: ['username', 'stream'], optional: [] },
  unpublished: { fields: ['username', 'stream'], optional: [] },
  muted: { fields: ['username', 'stream', 'audio_muted', 'video_muted'], optional: [] },
  message: { fields: ['from', 'to', 'text', 'ts'], optional: ['to'] },
  failed: { fields: ['reason', 'detail', 'id'], optional: ['id'] },
  'session-request': { fields: ['session', 'stream', 'viewer'], optional: [] },
  'session-started': { fields: ['session', 'participant', 'stream'], optional: [] },
  sdp: { fields: ['session', 'description'], optional: [] },
  ice: { fields: ['session', 'candidate', 'sdp_m_line_index', 'sdp_mid'], optional: ['sdp_mid'] },
  'session-ended': { fields: ['session', 'reason'], optional: [] },
  'active-speaker': { fields: ['username'], optional: ['username'] },
  error: { fields: ['code', 'message', 'id'], optional: ['id'] },
});

/** The structs nested in messages. */
export const STRUCTS = Object.freeze({
  /** Participant, in state.participants */
  participant: { fields: ['username', 'streams'], optional: [] },
  /** StreamInfo, in state.participants[].streams and published.stream */
  streamInfo: { fields: ['stream', 'audio', 'video', 'audio_muted', 'video_muted'], optional: [] },
  /** SessionDescription, in sdp.description (`type` is "offer" or "answer") */
  sessionDescription: { fields: ['type', 'sdp'], optional: [] },
  /** IceServer, in state.ice_servers (same shape as RTCIceServer; only joined participants get them) */
  iceServer: { fields: ['urls', 'username', 'credential'], optional: ['username', 'credential'] },
});

/** SdpType */
export const SDP_TYPES = Object.freeze(['offer', 'answer']);

/** FailReason → what the page shows. */
export const FAIL_REASONS = Object.freeze({
  'room-full': 'Room is full',
  'name-taken': 'Name is taken',
  unauthorized: 'Not authorized',
  'invalid-name': 'Invalid name',
  'already-joined': 'Already in a room',
  unavailable: 'Server unavailable, try again shortly',
});

/** ErrorCode → what the page shows. */
export const ERROR_CODES = Object.freeze({
  malformed: 'Malformed message',
  'too-large': 'Message too large',
  binary: 'Binary frames are not supported',
  'not-joined': 'Not in a room',
  'invalid-name': 'Invalid stream name',
  'text-too-long': 'Chat text too long',
  'unknown-participant': 'No such participant',
  'unknown-stream': 'No such stream',
  'stream-exists': 'Stream already published',
  'unknown-session': 'No such session',
  'bad-sdp': 'SDP does not fit this end of the session',
  'own-stream': 'Cannot play an own stream',
  'too-many-streams': 'Too many streams published',
  'already-playing': 'Already playing this stream',
  'rate-limited': 'Too many messages, slow down',
  unauthorized: 'Your token does not allow this',
});

function build(type, values) {
  const spec = CLIENT_MESSAGES[type];
  const msg = { type };
  spec.fields.forEach((field, i) => {
    const value = values[i];
    if (value === undefined || value === null) {
      if (spec.optional.includes(field)) return;
      throw new TypeError(`${type}: field ${field} is required`);
    }
    msg[field] = value;
  });
  return msg;
}

/** Builders for every ClientMessage; arguments in CLIENT_MESSAGES[type].fields order. */
export const client = Object.freeze({
  /** Join `room` as `username` (token: an access token or the shared token, when the server wants one). */
  join: (room, username, token) => build('join', [room, username, token]),
  leave: () => build('leave', []),
  publish: (stream, audio, video) => build('publish', [stream, !!audio, !!video]),
  unpublish: (stream) => build('unpublish', [stream]),
  mute: (stream, audioMuted, videoMuted) => build('mute', [stream, !!audioMuted, !!videoMuted]),
  /** Chat to the room, or to one participant when `to` is given. */
  message: (text, to) => build('message', [text, to || undefined]),
  play: (participant, stream) => build('play', [participant, stream]),
  /** `description` is {type: 'offer'|'answer', sdp} (an RTCSessionDescription works too). */
  sdp: (session, description) =>
    build('sdp', [session, { type: description.type, sdp: description.sdp }]),
  ice: (session, candidate, sdpMLineIndex, sdpMid) =>
    build('ice', [session, candidate, sdpMLineIndex, sdpMid]),
  stop: (session) => build('stop', [session]),
});

/**
 * Any client message with a request id (Rust: WithId<ClientMessage>): the server echoes `id` in
 * the `error` or `failed` this message causes, and in nothing else.
 */
export function withId(msg, id) {
  const text = String(id);
  if ([...text].length > MAX_REQUEST_ID_CHARS) throw new RangeError(`request id longer than ${MAX_REQUEST_ID_CHARS}`);
  return { ...msg, id: text };
}

function check(name, max, allowed) {
  const chars = [...name];
  if (chars.length === 0 || chars.length > max) {
    return `"${name}" must have 1 to ${max} characters, it has ${chars.length}`;
  }
  const bad = chars.find((c) => !allowed.test(c));
  return bad === undefined ? null : `"${name}" contains "${bad}", which is not allowed`;
}

/** Room or stream name: 1 to 64 of A-Z a-z 0-9 _ -. Returns null when valid, else why not. */
export function validateName(name) {
  return check(String(name), MAX_NAME_CHARS, /^[A-Za-z0-9_-]$/);
}

/** Username: 1 to 32 of A-Z a-z 0-9 _ - . Returns null when valid, else why not. */
export function validateUsername(name) {
  return check(String(name), MAX_USERNAME_CHARS, /^[A-Za-z0-9_.-]$/);
}

/** Bytes of `text` in UTF-8 (the server's chat limit counts bytes). */
export function utf8Length(text) {
  return new TextEncoder().encode(text).length;
}

/**
 * Parses one server frame. Returns the message object, or throws when it is not an object
 * with a known "type".
 */
export function parseServerMessage(data) {
  const msg = JSON.parse(data);
  if (!msg || typeof msg !== 'object' || Array.isArray(msg)) throw new Error('not an object');
  if (!Object.hasOwn(SERVER_MESSAGES, msg.type)) throw new Error(`unknown type ${msg.type}`);
  return msg;
}
