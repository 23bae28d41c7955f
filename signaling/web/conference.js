// gst-room conference page: join a room, publish the camera, play everyone else, chat.
//
// The protocol (message shapes) lives in protocol.js, the mirror of the Rust definition in
// signaling/protocol/src/lib.rs. Media is a mesh: for every stream a viewer plays, the
// publisher makes one RTCPeerConnection and offers (sendonly); the viewer answers (recvonly).
// The server relays SDP and ICE for a "session" it assigns, and carries no media.
//
// Optional URL parameters (for invite links and for tests):
//   room=NAME        room to join (an invite link is /?room=NAME); random room-xxxxxx if absent
//   user=NAME        username; random user-xxxx if absent
//   server=URL       WebSocket URL; default ws(s)://<this host>/ws. A server of another origin
//                    is never joined without a click on Join, and the page names it first
//   autojoin=1       join as soon as the page has loaded (only with this page's own server)
//   publish=0        do not publish the camera automatically on join (default: publish)
//   autoplay=0       do not play remote streams automatically (default: play every stream)
//   audio=0 / video=0  publish without audio / without video
//   w=320&h=240&fps=15  camera constraints (default: the browser's choice, ideally 640x480)
//   processing=0     turn off echoCancellation, noiseSuppression and autoGainControl
//   relay=1          relayed (TURN) candidates only: peers never learn this machine's addresses
//                    (needs a TURN server from the room server: gst-room server --turn-secret)
//
// The access token (when the server wants one) comes from the fragment, #token=TOKEN — a
// fragment is never sent to any server in an HTTP request, so the token stays out of access
// logs and Referer headers — or from the Token field. The page then removes it from the
// address bar. A token in the query string (?token=) is refused for the same reason.
//
// Test hook: window.room (see the end of this file) exposes a snapshot of the state, the peer
// connections and inbound RTP statistics per remote participant. Tests otherwise use the DOM:
// slots are [data-participant="NAME"] with data-status / data-audio-muted / data-video-muted,
// and the speaking one has the class `speaking` (data-speaking="true"); the slots container
// has the class `large-speaker` while the speaker is shown large (SFU rooms, many participants).

import {
  client,
  FAIL_REASONS,
  ERROR_CODES,
  MAX_CHAT_BYTES,
  validateName,
  validateUsername,
  utf8Length,
  parseServerMessage,
  withId,
} from './protocol.js';
import { Detector, levelFromAmplitude } from './speaker.js';

const params = new URLSearchParams(location.search);
const fragment = new URLSearchParams(location.hash.slice(1));
const STREAM = 'main';
const AUTOPUBLISH = params.get('publish') !== '0';
const AUTOPLAY = params.get('autoplay') !== '0';
const ICE_TRANSPORT_POLICY = params.get('relay') === '1' ? 'relay' : 'all';

const $ = (id) => document.getElementById(id);
const ui = {
  form: $('join-form'),
  server: $('server-url'),
  token: $('token'),
  username: $('username'),
  room: $('room'),
  join: $('join'),
  leave: $('leave'),
  session: $('session-status'),
  failure: $('failure'),
  roomInfo: $('room-info'),
  invite: $('invite'),
  notice: $('notice'),
  slots: $('slots'),
  serverNotice: $('server-notice'),
  slotTemplate: $('slot-template'),
  localName: $('local-name'),
  localVideo: $('local-video'),
  publishStatus: $('publish-status'),
  muteAudio: $('mute-audio'),
  muteVideo: $('mute-video'),
  publishToggle: $('publish-toggle'),
  chatLog: $('chat-log'),
  chatForm: $('chat-form'),
  chatTo: $('chat-to'),
  chatText: $('chat-text'),
  chatSend: $('chat-send'),
};

/** Everything the page knows. */
const S = {
  /** Who speaks (speaker.js), fed ten times a second with the levels of the played audio. */
  speaking: new Detector(),
  speaker: null,
  /** The server decides who speaks (SFU rooms: it sent `active-speaker`); the page's own rule
   * only measures then. */
  serverDecides: false,
  ws: null,
  /** DISCONNECTED | CONNECTING | ESTABLISHED | FAILED */
  session: 'DISCONNECTED',
  iceServers: [],
  joined: false,
  room: null,
  username: null,
  capacity: 0,
  /** username → remote participant (insertion order = join order) */
  remotes: new Map(),
  /** request id → username, for each `play` in flight: a refusal echoes its id */
  playRequests: new Map(),
  /** numbers request ids */
  requestSeq: 0,
  publish: {
    /** UNPUBLISHED | STARTING | PUBLISHING | FAILED */
    status: 'UNPUBLISHED',
    stream: STREAM,
    local: null,
    audioMuted: false,
    videoMuted: false,
  },
  /** session id → {pc, viewer, stream}: sessions where this page publishes */
  pubSessions: new Map(),
  /** session id → {pc, participant, stream}: sessions where this page views */
  viewSessions: new Map(),
  /** session id → ICE candidates received before the peer connection could take them */
  iceQueue: new Map(),
  /** recent messages both ways, for debugging and tests */
  log: [],
};

// ---------------------------------------------------------------------------------------------
// Small helpers

function randomSuffix(n) {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const bytes = crypto.getRandomValues(new Uint8Array(n));
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join('');
}

function defaultServerUrl() {
  if (!location.host) return 'ws://localhost:8080/ws';
  return `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws`;
}

/**
 * The host:port of `url` when it is a room server other than the one that served this page,
 * else null. Camera and microphone go wherever the page connects: a link must not pick that
 * place silently.
 */
function foreignServer(url) {
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    return url; // not even a URL: certainly not this server
  }
  return parsed.host === location.host ? null : parsed.host;
}

/** Tells, in plain words, where Join would send camera and microphone when that is elsewhere. */
function updateServerNotice() {
  const foreign = S.ws ? null : foreignServer(ui.server.value.trim());
  ui.serverNotice.hidden = !foreign;
  ui.serverNotice.textContent = foreign
    ? `This link uses another server: ${foreign}. Joining sends your camera and microphone to ${foreign}, not to ${location.host}. Nothing is sent until you click Join.`
    : '';
  ui.join.textContent = foreign ? `Join ${foreign}` : 'Join';
}

/**
 * Why a WebSocket to `url` could not be opened, in plain words. Browsers do not say why (a TLS
 * failure and an unreachable server look the same), so a wss:// failure carries the likely
 * cause: a certificate this browser has not accepted. `error` is what `new WebSocket` threw.
 */
function connectFailure(url, error) {
  let target;
  try {
    target = new URL(url);
  } catch {
    return `Cannot connect: ${url} is not a WebSocket URL (ws://host:port/ws or wss://host:port/ws)`;
  }
  if (location.protocol === 'https:' && target.protocol === 'ws:') {
    return `Cannot connect to ${url}: this page is secure (https) and browsers do not allow it an insecure ws:// connection. Use wss://${target.host}${target.pathname}`;
  }
  if (target.protocol === 'wss:') {
    return (
      `Cannot open a secure connection to ${target.host}: the server is not reachable, or this browser does not trust its certificate. ` +
      `With a self-signed certificate, open https://${target.host}/ in this browser once, accept the certificate, and join again.`
    );
  }
  return `Cannot connect to ${url}${error ? `: ${error.message}` : ''}`;
}

function inviteUrl(room) {
  return `${location.origin}/?room=${encodeURIComponent(room)}`;
}

function record(dir, msg) {
  // The log is for debugging and tests; a token has no business there.
  if (msg.token) msg = { ...msg, token: '<redacted>' };
  S.log.push({ dir, t: Date.now(), msg });
  if (S.log.length > 500) S.log.splice(0, S.log.length - 500);
}

function send(msg) {
  if (!S.ws || S.ws.readyState !== WebSocket.OPEN) return false;
  record('out', msg);
  S.ws.send(JSON.stringify(msg));
  return true;
}

function pad2(n) {
  return String(n).padStart(2, '0');
}

function clock(ts) {
  const d = new Date(ts);
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

function setNotice(text) {
  ui.notice.textContent = text || '';
  ui.notice.hidden = !text;
}

// ---------------------------------------------------------------------------------------------
// Session (connection + room membership)

function setSession(status, failure) {
  S.session = status;
  ui.session.textContent = status;
  ui.session.dataset.status = status;
  if (failure !== undefined) ui.failure.textContent = failure;
  const connected = S.ws !== null;
  ui.join.disabled = connected;
  ui.leave.disabled = !connected;
  updateServerNotice();
  for (const input of [ui.server, ui.token, ui.username, ui.room]) input.disabled = connected;
  updateControls();
}

function updateRoomInfo() {
  ui.invite.href = inviteUrl(ui.room.value.trim() || S.room || '');
  ui.invite.textContent = ui.invite.href;
  if (S.joined) {
    const seats = S.remotes.size + 1;
    ui.roomInfo.textContent = `Room ${S.room} — ${seats} of ${S.capacity} seats taken`;
  } else {
    ui.roomInfo.textContent = 'Not in a room';
  }
  document.title = S.joined ? `${S.room} — gst-room` : 'gst-room conference';
}

function join() {
  if (S.ws) return;
  const url = ui.server.value.trim();
  const username = ui.username.value.trim();
  const room = ui.room.value.trim();
  const bad = validateUsername(username) ?? validateName(room);
  if (bad) {
    setSession('FAILED', `Invalid name: ${bad}`);
    return;
  }
  setNotice('');
  let ws;
  try {
    ws = new WebSocket(url);
  } catch (e) {
    setSession('FAILED', connectFailure(url, e));
    return;
  }
  S.ws = ws;
  S.username = username;
  S.room = room;
  let opened = false;
  ws.onopen = () => {
    opened = true;
  };
  ws.onmessage = (ev) => {
    if (S.ws !== ws) return;
    let msg;
    try {
      msg = parseServerMessage(ev.data);
    } catch (e) {
      console.warn('ignoring bad server frame', ev.data, e);
      return;
    }
    record('in', msg);
    try {
      handle(msg);
    } catch (e) {
      console.error('handling', msg, e);
    }
  };
  ws.onclose = (ev) => {
    if (S.ws !== ws) return;
    S.ws = null;
    teardown();
    if (!opened) setSession('FAILED', connectFailure(url));
    else setSession('DISCONNECTED', `Connection closed${ev.reason ? `: ${ev.reason}` : ''} (code ${ev.code})`);
  };
  setSession('CONNECTING', '');
}

/** Leave the room and close the connection (user action). */
function leave() {
  const ws = S.ws;
  if (!ws) return;
  if (S.joined) send(client.leave());
  S.ws = null;
  teardown();
  try {
    ws.close(1000, 'leave');
  } catch {
    /* already closed */
  }
  setSession('DISCONNECTED', '');
}

/** Forget the room: close every peer connection, stop the camera, empty the slots. */
function teardown() {
  S.joined = false;
  for (const id of [...S.pubSessions.keys()]) closePubSession(id);
  for (const id of [...S.viewSessions.keys()]) closeViewSession(id);
  S.iceQueue.clear();
  S.playRequests.clear();
  stopLocalMedia();
  setPublish('UNPUBLISHED');
  for (const name of [...S.remotes.keys()]) removeRemote(name, true);
  S.speaking = new Detector();
  S.speaker = null;
  S.serverDecides = false;
  S.capacity = 0;
  renderFreeSeats();
  updateChatTargets();
  updateRoomInfo();
}

// ---------------------------------------------------------------------------------------------
// Server messages

function handle(msg) {
  switch (msg.type) {
    case 'welcome':
      setSession('ESTABLISHED', '');
      send(client.join(S.room, S.username, ui.token.value.trim() || undefined));
      break;
    case 'state':
      onState(msg);
      break;
    case 'joined':
      if (!S.remotes.has(msg.username)) addRemote(msg.username, []);
      chatEvent(`${msg.username} joined`);
      updateRoomInfo();
      break;
    case 'left':
      removeRemote(msg.username);
      chatEvent(`${msg.username} left`);
      updateRoomInfo();
      break;
    case 'published':
      onPublished(msg.username, msg.stream);
      break;
    case 'unpublished':
      onUnpublished(msg.username, msg.stream);
      break;
    case 'muted': {
      const r = S.remotes.get(msg.username);
      const info = r?.streams.get(msg.stream);
      if (info) {
        info.audio_muted = msg.audio_muted;
        info.video_muted = msg.video_muted;
        updateSlot(r);
      }
      break;
    }
    case 'message':
      chatMessage(msg);
      break;
    case 'failed': {
      const text = FAIL_REASONS[msg.reason] ?? `Refused (${msg.reason})`;
      const ws = S.ws;
      S.ws = null;
      teardown();
      ws?.close(1000, 'join refused');
      setSession('FAILED', msg.detail ? `${text}: ${msg.detail}` : text);
      break;
    }
    case 'session-request':
      onSessionRequest(msg);
      break;
    case 'session-started':
      onSessionStarted(msg);
      break;
    case 'sdp':
      onSdp(msg);
      break;
    case 'ice':
      onIce(msg);
      break;
    case 'session-ended':
      onSessionEnded(msg);
      break;
    case 'active-speaker':
      S.serverDecides = true;
      showSpeaker(msg.username ?? null);
      break;
    case 'error':
      onError(msg);
      break;
  }
}

function onState(msg) {
  S.joined = true;
  // ICE (and TURN credentials) arrive only with a successful join.
  S.iceServers = Array.isArray(msg.ice_servers) ? msg.ice_servers : [];
  S.room = msg.room;
  S.username = msg.username;
  S.capacity = msg.capacity;
  ui.localName.textContent = msg.username;
  for (const p of msg.participants) addRemote(p.username, p.streams);
  renderFreeSeats();
  updateRoomInfo();
  updateChatTargets();
  chatEvent(`You joined room ${msg.room} as ${msg.username}`);
  const url = new URL(location.href);
  url.searchParams.set('room', msg.room);
  url.hash = '';
  history.replaceState(null, '', url);
  if (AUTOPUBLISH) startPublish();
  updateControls();
}

function onError(msg) {
  const text = ERROR_CODES[msg.code] ?? msg.code;
  console.warn('server error', msg);
  setNotice(`Server: ${text}${msg.message ? ` — ${msg.message}` : ''}`);
  // A refused play names its request: the id the play was sent with.
  const name = msg.id && S.playRequests.get(msg.id);
  if (name) {
    S.playRequests.delete(msg.id);
    const r = S.remotes.get(name);
    if (r && r.pendingPlay === msg.id) {
      // Without the grant to play, asking again would be refused again.
      if (msg.code === 'unauthorized') r.wanted = false;
      r.pendingPlay = false;
      setStreamStatus(r, 'FAILED');
      return;
    }
  }
  if (msg.code === 'unauthorized' && onUnauthorized(msg)) return;
  if (['stream-exists', 'invalid-name'].includes(msg.code) && S.publish.status === 'PUBLISHING') {
    setPublish('FAILED', text);
  }
}

/**
 * A refusal for want of a grant that is not a play (plays are matched by their request id):
 * which request it answers is told by the server's message (publish / chat). Returns true when
 * it was handled.
 */
function onUnauthorized(msg) {
  const why = msg.message || 'your token does not allow this';
  if (/publish/.test(why) && (S.publish.status === 'PUBLISHING' || S.publish.status === 'STARTING')) {
    for (const id of [...S.pubSessions.keys()]) closePubSession(id);
    stopLocalMedia();
    setPublish('FAILED', why);
    return true;
  }
  // A refused play is matched by its request id in onError, before this.
  return /play/.test(why);
}

// ---------------------------------------------------------------------------------------------
// Remote participants and their slots

function addRemote(username, streams) {
  const el = ui.slotTemplate.content.firstElementChild.cloneNode(true);
  el.dataset.participant = username;
  el.querySelector('.name').textContent = username;
  const r = {
    username,
    streams: new Map(),
    stream: null,
    session: null,
    pendingPlay: false,
    wanted: AUTOPLAY,
    status: 'STOPPED',
    audioOn: true,
    media: null,
    el,
    video: el.querySelector('video'),
  };
  el.querySelector('.play-toggle').addEventListener('click', () => {
    if (r.session || r.pendingPlay) {
      r.wanted = false;
      stopPlaying(r);
    } else {
      r.wanted = true;
      play(r);
    }
  });
  el.querySelector('.audio-toggle').addEventListener('click', () => {
    r.audioOn = !r.audioOn;
    r.video.muted = !r.audioOn;
    if (r.audioOn) r.video.play().catch(() => {});
    updateSlot(r);
  });
  r.video.addEventListener('playing', () => {
    if (r.session) setStreamStatus(r, 'PLAYING');
  });
  S.remotes.set(username, r);
  const firstFree = ui.slots.querySelector('.slot.free');
  ui.slots.insertBefore(el, firstFree);
  for (const info of streams) r.streams.set(info.stream, { ...info });
  chooseStream(r);
  renderFreeSeats();
  updateChatTargets();
  updateSlot(r);
  showSpeaker(S.speaker);
  if (r.wanted) play(r);
}

function removeRemote(username, quiet) {
  const r = S.remotes.get(username);
  if (!r) return;
  for (const [id, vs] of [...S.viewSessions]) if (vs.participant === username) closeViewSession(id);
  for (const [id, ps] of [...S.pubSessions]) if (ps.viewer === username) closePubSession(id);
  r.video.srcObject = null;
  r.el.remove();
  S.remotes.delete(username);
  const change = S.speaking.remove(username);
  if (change && !S.serverDecides) showSpeaker(change.speaker);
  else showSpeaker(S.speaker);
  if (!quiet) {
    renderFreeSeats();
    updateChatTargets();
  }
}

/** The stream a slot shows: "main" when published, else the first one. */
function chooseStream(r) {
  if (r.streams.has(STREAM)) r.stream = STREAM;
  else r.stream = r.streams.keys().next().value ?? null;
}

function onPublished(username, info) {
  const r = S.remotes.get(username) ?? (addRemote(username, []), S.remotes.get(username));
  r.streams.set(info.stream, { ...info });
  const before = r.stream;
  chooseStream(r);
  if (before && before !== r.stream && (r.session || r.pendingPlay)) stopPlaying(r);
  if (AUTOPLAY) r.wanted = true;
  updateSlot(r);
  if (r.wanted) play(r);
}

function onUnpublished(username, stream) {
  const r = S.remotes.get(username);
  if (!r) return;
  r.streams.delete(stream);
  if (r.stream === stream) {
    stopPlaying(r, true);
    chooseStream(r);
    if (r.wanted && r.stream) play(r);
  }
  updateSlot(r);
}

function renderFreeSeats() {
  const want = S.joined ? Math.max(0, S.capacity - 1 - S.remotes.size) : 0;
  const free = [...ui.slots.querySelectorAll('.slot.free')];
  for (let i = free.length; i < want; i++) {
    const seat = document.createElement('article');
    seat.className = 'tile slot free';
    const box = document.createElement('div');
    box.className = 'video-box';
    const label = document.createElement('span');
    label.className = 'free-label';
    label.textContent = 'Free seat';
    box.append(label);
    seat.append(box);
    ui.slots.append(seat);
  }
  for (let i = want; i < free.length; i++) free[i].remove();
  ui.slots.dataset.count = String(S.remotes.size);
}

function setStreamStatus(r, status) {
  r.status = status;
  updateSlot(r);
}

function updateSlot(r) {
  const el = r.el;
  const info = r.stream ? r.streams.get(r.stream) : null;
  el.dataset.status = r.status;
  el.dataset.stream = r.stream ?? '';
  el.dataset.audioMuted = String(!!info?.audio_muted);
  el.dataset.videoMuted = String(!!info?.video_muted);
  el.dataset.audio = r.audioOn ? 'on' : 'off';
  const status = el.querySelector('.stream-status');
  status.textContent = info ? r.status : r.status === 'FAILED' ? 'FAILED' : 'STOPPED';
  status.dataset.status = r.status;
  const detail = el.querySelector('.stream-name');
  detail.textContent = info ? info.stream : 'not publishing';
  const playing = !!(r.session || r.pendingPlay);
  const playBtn = el.querySelector('.play-toggle');
  playBtn.textContent = playing ? 'Stop' : 'Play';
  playBtn.disabled = !info && !playing;
  const audioBtn = el.querySelector('.audio-toggle');
  audioBtn.textContent = r.audioOn ? 'Audio on' : 'Audio off';
  audioBtn.setAttribute('aria-pressed', String(r.audioOn));
  const muted = el.querySelector('.muted-indicator');
  const parts = [];
  if (info?.audio_muted) parts.push('audio');
  if (info?.video_muted) parts.push('video');
  muted.hidden = parts.length === 0;
  muted.textContent = parts.length ? `Muted: ${parts.join(' + ')}` : '';
}

// ---------------------------------------------------------------------------------------------
// Viewing: play → session-started → offer from the publisher → answer

function play(r) {
  if (!S.joined || !r.stream || r.session || r.pendingPlay) return;
  const id = `play-${++S.requestSeq}`;
  r.pendingPlay = id;
  S.playRequests.set(id, r.username);
  send(withId(client.play(r.username, r.stream), id));
  setStreamStatus(r, 'STARTING');
}

function stopPlaying(r, ended) {
  if (r.session) {
    if (!ended) send(client.stop(r.session));
    closeViewSession(r.session);
  }
  r.pendingPlay = false;
  r.session = null;
  r.video.srcObject = null;
  r.media = null;
  setStreamStatus(r, 'STOPPED');
}

function onSessionStarted(msg) {
  const r = S.remotes.get(msg.participant);
  if (r && r.pendingPlay) S.playRequests.delete(r.pendingPlay);
  if (!r || !r.pendingPlay || r.stream !== msg.stream) {
    // Stopped (or unpublished) while the request was on its way: end the session.
    send(client.stop(msg.session));
    return;
  }
  r.pendingPlay = false;
  r.session = msg.session;
  S.viewSessions.set(msg.session, { pc: null, participant: msg.participant, stream: msg.stream });
  updateSlot(r);
}

function newPeerConnection(session) {
  const pc = new RTCPeerConnection({
    iceServers: S.iceServers,
    iceTransportPolicy: ICE_TRANSPORT_POLICY,
  });
  pc.onicecandidate = (ev) => {
    const c = ev.candidate;
    if (!c || !c.candidate) return; // end of candidates: nothing to send
    send(client.ice(session, c.candidate, c.sdpMLineIndex ?? 0, c.sdpMid ?? undefined));
  };
  return pc;
}

async function onViewerOffer(session, vs, description) {
  let pc = vs.pc;
  if (!pc) {
    pc = newPeerConnection(session);
    vs.pc = pc;
    const r = S.remotes.get(vs.participant);
    r.media = new MediaStream();
    r.video.srcObject = r.media;
    r.video.muted = !r.audioOn;
    pc.ontrack = (ev) => {
      if (!r.media.getTracks().includes(ev.track)) r.media.addTrack(ev.track);
      startVideo(r);
    };
    pc.onconnectionstatechange = () => {
      if (S.viewSessions.get(session) !== vs) return;
      if (pc.connectionState === 'connected') setStreamStatus(r, 'PLAYING');
      else if (pc.connectionState === 'failed') setStreamStatus(r, 'FAILED');
    };
  }
  await pc.setRemoteDescription(description);
  flushIce(session, pc);
  const answer = await pc.createAnswer();
  await pc.setLocalDescription(answer);
  if (S.viewSessions.get(session) !== vs) return;
  send(client.sdp(session, pc.localDescription));
}

/** Plays a remote video; when the browser refuses sound without a click, plays it muted. */
function startVideo(r) {
  r.video.play().catch(() => {
    if (r.video.muted) return;
    r.audioOn = false;
    r.video.muted = true;
    updateSlot(r);
    r.video.play().catch(() => {});
  });
}

function closeViewSession(session) {
  const vs = S.viewSessions.get(session);
  if (!vs) return;
  S.viewSessions.delete(session);
  S.iceQueue.delete(session);
  vs.pc?.close();
}

// ---------------------------------------------------------------------------------------------
// Publishing: publish → session-request per viewer → offer → answer

function mediaConstraints() {
  const num = (name) => {
    const v = Number(params.get(name));
    return Number.isFinite(v) && v > 0 ? v : undefined;
  };
  const video = {};
  if (num('w')) video.width = { ideal: num('w') };
  if (num('h')) video.height = { ideal: num('h') };
  if (num('fps')) video.frameRate = { ideal: num('fps') };
  const processing = params.get('processing') !== '0';
  const audio = processing
    ? true
    : { echoCancellation: false, noiseSuppression: false, autoGainControl: false };
  return {
    audio: params.get('audio') === '0' ? false : audio,
    video: params.get('video') === '0' ? false : Object.keys(video).length ? video : true,
  };
}

function setPublish(status, why) {
  S.publish.status = status;
  ui.publishStatus.textContent = why ? `${status}: ${why}` : status;
  ui.publishStatus.dataset.status = status;
  updateControls();
}

function applyMute() {
  const p = S.publish;
  for (const t of p.local?.getAudioTracks() ?? []) t.enabled = !p.audioMuted;
  for (const t of p.local?.getVideoTracks() ?? []) t.enabled = !p.videoMuted;
}

async function startPublish() {
  const p = S.publish;
  if (!S.joined || p.status === 'PUBLISHING' || p.status === 'STARTING') return;
  setPublish('STARTING');
  let local;
  try {
    local = await navigator.mediaDevices.getUserMedia(mediaConstraints());
  } catch (e) {
    setPublish('FAILED', `camera/microphone: ${e.message || e.name}`);
    return;
  }
  if (!S.joined || p.status !== 'STARTING') {
    for (const t of local.getTracks()) t.stop();
    return;
  }
  p.local = local;
  applyMute();
  ui.localVideo.srcObject = local;
  ui.localVideo.play().catch(() => {});
  const audio = local.getAudioTracks().length > 0;
  const video = local.getVideoTracks().length > 0;
  send(client.publish(p.stream, audio, video));
  setPublish('PUBLISHING');
  if (p.audioMuted || p.videoMuted) send(client.mute(p.stream, p.audioMuted, p.videoMuted));
}

function stopPublish() {
  const p = S.publish;
  if (p.status === 'PUBLISHING') send(client.unpublish(p.stream));
  for (const id of [...S.pubSessions.keys()]) closePubSession(id);
  stopLocalMedia();
  setPublish('UNPUBLISHED');
}

function stopLocalMedia() {
  const p = S.publish;
  for (const t of p.local?.getTracks() ?? []) t.stop();
  p.local = null;
  ui.localVideo.srcObject = null;
}

function toggleMute(kind) {
  const p = S.publish;
  if (kind === 'audio') p.audioMuted = !p.audioMuted;
  else p.videoMuted = !p.videoMuted;
  applyMute();
  if (p.status === 'PUBLISHING') send(client.mute(p.stream, p.audioMuted, p.videoMuted));
  updateControls();
}

async function onSessionRequest(msg) {
  const p = S.publish;
  if (p.status !== 'PUBLISHING' || msg.stream !== p.stream || !p.local) {
    send(client.stop(msg.session));
    return;
  }
  const pc = newPeerConnection(msg.session);
  const ps = { pc, viewer: msg.viewer, stream: msg.stream };
  S.pubSessions.set(msg.session, ps);
  for (const track of p.local.getTracks()) {
    pc.addTransceiver(track, { direction: 'sendonly', streams: [p.local] });
  }
  try {
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    if (S.pubSessions.get(msg.session) !== ps) return;
    send(client.sdp(msg.session, pc.localDescription));
  } catch (e) {
    console.error('offer for', msg.session, e);
    send(client.stop(msg.session));
    closePubSession(msg.session);
  }
}

function closePubSession(session) {
  const ps = S.pubSessions.get(session);
  if (!ps) return;
  S.pubSessions.delete(session);
  S.iceQueue.delete(session);
  ps.pc.close();
}

// ---------------------------------------------------------------------------------------------
// Relayed SDP / ICE / session end, for both ends

async function onSdp(msg) {
  const { session, description } = msg;
  try {
    const ps = S.pubSessions.get(session);
    if (ps && description.type === 'answer') {
      await ps.pc.setRemoteDescription(description);
      flushIce(session, ps.pc);
      return;
    }
    const vs = S.viewSessions.get(session);
    if (vs && description.type === 'offer') {
      await onViewerOffer(session, vs, description);
      return;
    }
    console.warn('sdp for an unknown session', msg);
  } catch (e) {
    console.error('sdp for', session, e);
    const vs = S.viewSessions.get(session);
    const r = vs && S.remotes.get(vs.participant);
    if (r) setStreamStatus(r, 'FAILED');
  }
}

function endOf(session) {
  return S.pubSessions.get(session) ?? S.viewSessions.get(session);
}

function onIce(msg) {
  const candidate = {
    candidate: msg.candidate,
    sdpMLineIndex: msg.sdp_m_line_index,
    sdpMid: msg.sdp_mid ?? null,
  };
  const pc = endOf(msg.session)?.pc;
  if (pc && pc.remoteDescription) {
    pc.addIceCandidate(candidate).catch((e) => console.warn('ice', msg, e));
  } else {
    const queue = S.iceQueue.get(msg.session) ?? [];
    queue.push(candidate);
    S.iceQueue.set(msg.session, queue);
  }
}

function flushIce(session, pc) {
  const queue = S.iceQueue.get(session);
  S.iceQueue.delete(session);
  for (const c of queue ?? []) pc.addIceCandidate(c).catch((e) => console.warn('ice', c, e));
}

function onSessionEnded(msg) {
  if (S.pubSessions.has(msg.session)) {
    closePubSession(msg.session);
    return;
  }
  const vs = S.viewSessions.get(msg.session);
  if (!vs) return;
  const r = S.remotes.get(vs.participant);
  if (r && r.session === msg.session) stopPlaying(r, true);
  else closeViewSession(msg.session);
}

// ---------------------------------------------------------------------------------------------
// Chat (always text, never HTML)

function chatEntry(className) {
  const li = document.createElement('li');
  li.className = className;
  ui.chatLog.append(li);
  ui.chatLog.scrollTop = ui.chatLog.scrollHeight;
  return li;
}

function span(className, text) {
  const s = document.createElement('span');
  s.className = className;
  s.textContent = text;
  return s;
}

function chatMessage(msg) {
  const direct = msg.to !== undefined && msg.to !== null;
  const li = chatEntry(direct ? 'chat-msg direct' : 'chat-msg');
  li.dataset.from = msg.from;
  if (direct) li.dataset.to = msg.to;
  const time = document.createElement('time');
  time.dateTime = new Date(msg.ts).toISOString();
  time.textContent = clock(msg.ts);
  li.append(time, span('from', msg.from));
  if (direct) li.append(span('to', `→ ${msg.to} (direct)`));
  li.append(span('text', msg.text));
}

function chatEvent(text) {
  const li = chatEntry('chat-event');
  li.append(span('text', text));
}

function sendChat() {
  const text = ui.chatText.value;
  if (!text.trim() || !S.joined) return;
  if (utf8Length(text) > MAX_CHAT_BYTES) {
    setNotice(`Message too long: at most ${MAX_CHAT_BYTES} bytes`);
    return;
  }
  const to = ui.chatTo.value || undefined;
  if (send(client.message(text, to))) ui.chatText.value = '';
}

function updateChatTargets() {
  const current = ui.chatTo.value;
  ui.chatTo.replaceChildren();
  const everyone = document.createElement('option');
  everyone.value = '';
  everyone.textContent = 'Everyone';
  ui.chatTo.append(everyone);
  for (const name of S.remotes.keys()) {
    const o = document.createElement('option');
    o.value = name;
    o.textContent = name;
    ui.chatTo.append(o);
  }
  ui.chatTo.value = S.remotes.has(current) ? current : '';
}

// ---------------------------------------------------------------------------------------------
// Controls

function updateControls() {
  const p = S.publish;
  ui.muteAudio.textContent = p.audioMuted ? 'Unmute A' : 'Mute A';
  ui.muteAudio.setAttribute('aria-pressed', String(p.audioMuted));
  ui.muteVideo.textContent = p.videoMuted ? 'Unmute V' : 'Mute V';
  ui.muteVideo.setAttribute('aria-pressed', String(p.videoMuted));
  const on = p.status === 'PUBLISHING' || p.status === 'STARTING';
  ui.publishToggle.textContent = on ? 'Stop' : 'Publish';
  ui.publishToggle.disabled = !S.joined;
  ui.chatSend.disabled = !S.joined;
  ui.chatText.disabled = !S.joined;
  ui.chatTo.disabled = !S.joined;
  const local = document.getElementById('local');
  local.dataset.audioMuted = String(p.audioMuted);
  local.dataset.videoMuted = String(p.videoMuted);
  local.dataset.status = p.status;
}

ui.form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  join();
});
ui.leave.addEventListener('click', leave);
ui.muteAudio.addEventListener('click', () => toggleMute('audio'));
ui.muteVideo.addEventListener('click', () => toggleMute('video'));
ui.publishToggle.addEventListener('click', () => {
  if (S.publish.status === 'PUBLISHING' || S.publish.status === 'STARTING') stopPublish();
  else startPublish();
});
ui.chatForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  sendChat();
});
ui.room.addEventListener('input', updateRoomInfo);
ui.server.addEventListener('input', updateServerNotice);
window.addEventListener('pagehide', () => {
  if (S.ws && S.joined) send(client.leave());
});

// ---------------------------------------------------------------------------------------------
// Start

ui.server.value = params.get('server') || defaultServerUrl();
ui.token.value = fragment.get('token') || '';
if (fragment.has('token')) {
  // Out of the address bar (and so out of screenshots, bookmarks and shared copies).
  history.replaceState(null, '', `${location.pathname}${location.search}`);
}
ui.username.value = params.get('user') || `user-${randomSuffix(4)}`;
ui.room.value = params.get('room') || `room-${randomSuffix(6)}`;
updateChatTargets();
setSession('DISCONNECTED', '');
setPublish('UNPUBLISHED');
updateRoomInfo();
if (params.get('autojoin') === '1' && !foreignServer(ui.server.value.trim())) join();
if (params.has('token')) {
  // After join(), which clears notices. Out of the address bar too, like #token=.
  const url = new URL(location.href);
  url.searchParams.delete('token');
  history.replaceState(null, '', url);
  setNotice('A token in the address (?token=) was ignored: it is sent to the server with the page request. Use #token= in links, or the Token field.');
}

// ---------------------------------------------------------------------------------------------
// Who is speaking: the tile of the active speaker gets a border.
//
// The levels are the RFC 6464 levels of the audio packets each played stream receives
// (RTCRtpReceiver.getSynchronizationSources().audioLevel: browsers and roomsink send them in the
// ssrc-audio-level header extension), read every 100 ms — the same levels roomsrc decides
// from, with the same rule (speaker.js), and no audio processing in the page.
//
// In rooms whose media goes through the server, the server decides for everyone with the same
// rule and says so (`active-speaker`, right after the join and on every change); the page then
// only shows it. There, with SPEAKER_LARGE_FROM or more remote participants, the speaker's tile
// also spans the whole first row of the stage (the class `large-speaker` on the slots).

const LEVEL_INTERVAL_MS = 100;
/** Remote participants from which an SFU room shows the speaker large. */
const SPEAKER_LARGE_FROM = 3;

function sampleLevels() {
  if (!S.joined) return;
  const now = performance.now();
  for (const r of S.remotes.values()) {
    const level = receivedLevel(r);
    if (level !== null) S.speaking.observe(r.username, level, now);
  }
  const change = S.speaking.tick(now);
  if (change && !S.serverDecides) showSpeaker(change.speaker);
}

/** The level of the newest audio packet of `r`'s session since the last call, or null. */
function receivedLevel(r) {
  const pc = r.session && S.viewSessions.get(r.session)?.pc;
  if (!pc) return null;
  for (const receiver of pc.getReceivers()) {
    if (receiver.track?.kind !== 'audio') continue;
    const source = receiver.getSynchronizationSources()[0];
    // A source whose newest packet is the one seen last time sends nothing now.
    if (!source || source.audioLevel === undefined || source.timestamp === r.levelTimestamp) return null;
    r.levelTimestamp = source.timestamp;
    r.level = levelFromAmplitude(source.audioLevel);
    return r.level;
  }
  return null;
}

function showSpeaker(username) {
  S.speaker = username;
  for (const r of S.remotes.values()) {
    const speaking = r.username === username;
    r.el.classList.toggle('speaking', speaking);
    r.el.dataset.speaking = String(speaking);
  }
  const large = S.serverDecides && S.remotes.size >= SPEAKER_LARGE_FROM;
  ui.slots.classList.toggle('large-speaker', large);
}

setInterval(sampleLevels, LEVEL_INTERVAL_MS);

// Test hook: read-only views of the state, plus inbound RTP statistics per remote participant.
window.room = {
  get state() {
    return {
      session: S.session,
      joined: S.joined,
      room: S.room,
      username: S.username,
      capacity: S.capacity,
      speaker: S.speaker,
      publish: S.publish.status,
      audioMuted: S.publish.audioMuted,
      videoMuted: S.publish.videoMuted,
      remotes: [...S.remotes.values()].map((r) => ({
        username: r.username,
        stream: r.stream,
        session: r.session,
        status: r.status,
        level: r.level ?? null,
        streams: [...r.streams.values()],
      })),
    };
  },
  pcs: { publish: S.pubSessions, view: S.viewSessions },
  log: S.log,
  /** {video: inbound-rtp video stats, audio: inbound-rtp audio stats} of the slot's session. */
  async inboundStats(participant) {
    const r = S.remotes.get(participant);
    const pc = r?.session && S.viewSessions.get(r.session)?.pc;
    if (!pc) return null;
    const out = { video: null, audio: null, connectionState: pc.connectionState };
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp') out[s.kind] = { ...s };
    });
    return out;
  },
  join,
  leave,
};
