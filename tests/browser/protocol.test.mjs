// The JavaScript protocol mirror (signaling/web/protocol.js) against the Rust definition:
// - statically, against protocol-examples.json (Rust's `room_protocol::examples()`, one object
//   per message type, written by the Rust side);
// - live, by sending every message the JS builders make to the real server from a page.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cleanup, startServer, launchBrowser, openPage, poll, WEB_DIR } from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const EXAMPLES = path.join(here, 'protocol-examples.json');
const protocol = await import(path.join(WEB_DIR, 'protocol.js'));

function loadExamples() {
  assert.ok(
    fs.existsSync(EXAMPLES),
    `${EXAMPLES} is missing: it is written from Rust's room_protocol::examples() by the Rust tests`,
  );
  const examples = JSON.parse(fs.readFileSync(EXAMPLES, 'utf8'));
  assert.ok(Array.isArray(examples.client) && examples.client.length > 0, 'examples.client is a non-empty list');
  assert.ok(Array.isArray(examples.server) && examples.server.length > 0, 'examples.server is a non-empty list');
  return examples;
}

const keys = (obj) => Object.keys(obj).filter((k) => k !== 'type').sort();

/** The example's keys fit the JS spec: all known, all required present. */
function assertFits(spec, obj, what) {
  for (const k of keys(obj)) assert.ok(spec.fields.includes(k), `${what}: field ${k} unknown to protocol.js`);
  for (const f of spec.fields) {
    if (!spec.optional.includes(f)) assert.ok(Object.hasOwn(obj, f), `${what}: protocol.js requires ${f}, Rust has no such field`);
  }
}

test('protocol.js knows exactly the client message types of Rust, with the same fields', () => {
  const { client } = loadExamples();
  const rustTypes = [...new Set(client.map((m) => m.type))].sort();
  assert.deepEqual(Object.keys(protocol.CLIENT_MESSAGES).sort(), rustTypes);
  for (const example of client) {
    const spec = protocol.CLIENT_MESSAGES[example.type];
    assertFits(spec, example, `client ${example.type}`);
    // The Rust examples set every optional field, so all JS fields must appear.
    assert.deepEqual([...spec.fields].sort(), keys(example), `client ${example.type} fields`);
  }
});

test('protocol.js builders make exactly the Rust examples', () => {
  const { client } = loadExamples();
  for (const example of client) {
    const spec = protocol.CLIENT_MESSAGES[example.type];
    const builder = protocol.client[example.type];
    assert.equal(typeof builder, 'function', `no builder for ${example.type}`);
    const built = builder(...spec.fields.map((f) => example[f]));
    assert.deepEqual(built, example, `builder ${example.type}`);
    assert.deepEqual(JSON.parse(JSON.stringify(built)), example, `builder ${example.type} as JSON`);
    // Unset optional fields are left out, as serde's skip_serializing_if does.
    if (spec.optional.length) {
      const partial = builder(...spec.fields.map((f) => (spec.optional.includes(f) ? undefined : example[f])));
      assert.deepEqual(keys(partial), keys(example).filter((k) => !spec.optional.includes(k)), `builder ${example.type} without optionals`);
    }
  }
});

test('protocol.js knows every server message type of Rust, with the same fields', () => {
  const { server } = loadExamples();
  const rustTypes = [...new Set(server.map((m) => m.type))].sort();
  assert.deepEqual(Object.keys(protocol.SERVER_MESSAGES).sort(), rustTypes);
  const S = protocol.STRUCTS;
  for (const example of server) {
    assertFits(protocol.SERVER_MESSAGES[example.type], example, `server ${example.type}`);
    assert.doesNotThrow(() => protocol.parseServerMessage(JSON.stringify(example)), example.type);
    switch (example.type) {
      case 'state':
        for (const s of example.ice_servers) assertFits(S.iceServer, s, 'IceServer');
        for (const p of example.participants) {
          assertFits(S.participant, p, 'Participant');
          for (const s of p.streams) assertFits(S.streamInfo, s, 'StreamInfo');
        }
        break;
      case 'published':
        assertFits(S.streamInfo, example.stream, 'StreamInfo');
        break;
      case 'sdp':
        assertFits(S.sessionDescription, example.description, 'SessionDescription');
        assert.ok(protocol.SDP_TYPES.includes(example.description.type));
        break;
      case 'failed':
        assert.ok(Object.hasOwn(protocol.FAIL_REASONS, example.reason), `fail reason ${example.reason}`);
        break;
      case 'error':
        assert.ok(Object.hasOwn(protocol.ERROR_CODES, example.code), `error code ${example.code}`);
        break;
    }
  }
  for (const c of server.filter((m) => m.type === 'sdp').concat(loadExamples().client.filter((m) => m.type === 'sdp'))) {
    assertFits(S.sessionDescription, c.description, 'SessionDescription');
  }
  assert.throws(() => protocol.parseServerMessage('{"type":"explode"}'));
});

test('withId makes exactly the Rust request-id example, and refusals with an id parse', () => {
  const { with_id: withIdExample } = loadExamples();
  assert.ok(withIdExample, 'the fixture has the request-id examples');
  const request = withIdExample.client;
  const { id, type, ...rest } = request;
  const spec = protocol.CLIENT_MESSAGES[type];
  const plain = protocol.client[type](...spec.fields.map((f) => rest[f]));
  assert.deepEqual(protocol.withId(plain, id), request);
  assert.throws(() => protocol.withId(plain, 'x'.repeat(protocol.MAX_REQUEST_ID_CHARS + 1)), RangeError);
  const refusal = withIdExample.server;
  assertFits(protocol.SERVER_MESSAGES[refusal.type], refusal, 'server error with id');
  assert.equal(protocol.parseServerMessage(JSON.stringify(refusal)).id, id);
});

test('name rules match Rust (validate_name / validate_username)', () => {
  assert.equal(protocol.validateName('demo-room_1'), null);
  assert.notEqual(protocol.validateName(''), null);
  assert.notEqual(protocol.validateName('a'.repeat(65)), null);
  assert.equal(protocol.validateName('a'.repeat(64)), null);
  assert.notEqual(protocol.validateName('a b'), null);
  assert.notEqual(protocol.validateName('é'), null);
  assert.notEqual(protocol.validateName('a.b'), null);
  assert.equal(protocol.validateUsername('bot.1'), null);
  assert.notEqual(protocol.validateUsername('a'.repeat(33)), null);
  assert.notEqual(protocol.validateUsername('<script>'), null);
});

// ---------------------------------------------------------------------------------------------
// Live: the server parses everything the builders make.

let server;
let browser;

before(async () => {
  server = await startServer({ maxParticipants: 3 });
  browser = await launchBrowser();
});

after(cleanup);

test('the real server accepts every JS-built client message (never error/malformed)', async () => {
  const page = await openPage(browser, server.url, { room: 'mirror', user: 'mirror' });
  const { client } = loadExamples();
  const result = await page.evaluate(
    async ({ wsUrl, examples }) => {
      const { client, CLIENT_MESSAGES } = await import('/protocol.js');
      const ws = new WebSocket(wsUrl);
      const received = [];
      ws.onmessage = (ev) => received.push(JSON.parse(ev.data));
      await new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = () => reject(new Error('websocket failed'));
      });
      const sent = [];
      // Built from the Rust examples' values, in a valid order: join first (no token: the
      // test server has none), leave last. Messages that fail for state reasons are fine.
      const order = ['join', 'publish', 'mute', 'message', 'play', 'sdp', 'ice', 'stop', 'unpublish', 'leave'];
      const build = (type) => {
        const ex = examples.find((m) => m.type === type);
        const args = CLIENT_MESSAGES[type].fields.map((f) => ex[f]);
        if (type === 'join') args[1] = 'mirror'; // username
        if (type === 'join') args[2] = undefined; // token
        return client[type](...args);
      };
      const messages = order.map(build);
      // Also the forms without optional fields, while still in the room.
      messages.splice(order.indexOf('unpublish'), 0, client.message('to all'), client.ice('s1', 'candidate:x', 0));
      for (const msg of messages) {
        sent.push(msg);
        ws.send(JSON.stringify(msg));
      }
      // A control: something really malformed must get error/malformed, proving we'd see it.
      ws.send(JSON.stringify({ type: 'explode', bogus: 1 }));
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline && !received.some((m) => m.type === 'error' && m.code === 'malformed')) {
        await new Promise((r) => setTimeout(r, 50));
      }
      ws.close();
      return { sent, received };
    },
    { wsUrl: server.wsUrl, examples: client },
  );
  if (process.env.DEBUG_PROTOCOL) console.log(JSON.stringify(result, null, 1));
  const types = result.received.map((m) => m.type);
  assert.equal(types[0], 'welcome', `first message: ${JSON.stringify(result.received[0])}`);
  assert.ok(types.includes('state'), `join answered with state: ${JSON.stringify(result.received)}`);
  const malformed = result.received.filter((m) => m.type === 'error' && m.code === 'malformed');
  assert.equal(malformed.length, 1, `only the control message is malformed: ${JSON.stringify(malformed)}`);
  assert.match(malformed[0].message, /explode|unknown variant/);
  const chat = result.received.filter((m) => m.type === 'message');
  assert.ok(chat.some((m) => m.text === 'to all' && m.from === 'mirror'), 'room chat came back');
  await page.context().close();
});

test('in the browser, a refused request comes back with its own id among several in flight', async () => {
  const page = await openPage(browser, server.url, { room: 'ids', user: 'ids' });
  const received = await page.evaluate(async (wsUrl) => {
    const { client, withId } = await import('/protocol.js');
    const open = async () => {
      const ws = new WebSocket(wsUrl);
      const got = [];
      ws.onmessage = (ev) => got.push(JSON.parse(ev.data));
      await new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = () => reject(new Error('websocket failed'));
      });
      return { ws, got };
    };
    const until = async (got, pred) => {
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline && !got.some(pred)) await new Promise((r) => setTimeout(r, 20));
    };
    const bob = await open();
    bob.ws.send(JSON.stringify(client.join('ids', 'bob')));
    bob.ws.send(JSON.stringify(client.publish('main', true, true)));
    bob.ws.send(JSON.stringify(client.publish('screen', false, true)));
    const alice = await open();
    alice.ws.send(JSON.stringify(client.join('ids', 'alice')));
    // bob's publishes travel on his own connection: alice knows both streams once her state
    // lists them or their `published` events have come.
    const streamsKnown = () =>
      alice.got.filter((m) => m.type === 'published').length +
      alice.got
        .filter((m) => m.type === 'state')
        .flatMap((m) => m.participants)
        .flatMap((p) => p.streams).length;
    await until(alice.got, () => streamsKnown() >= 2);
    // Three plays in flight (two streams: one session per viewer and stream is the server's
    // rule); only the middle one names nobody.
    alice.ws.send(JSON.stringify(withId(client.play('bob', 'main'), 'play-1')));
    alice.ws.send(JSON.stringify(withId(client.play('ghost', 'main'), 'play-2')));
    alice.ws.send(JSON.stringify(withId(client.play('bob', 'screen'), 'play-3')));
    await until(alice.got, (m) => m.type === 'error');
    await until(alice.got, (m) => m.type === 'session-started' && alice.got.filter((x) => x.type === 'session-started').length === 2);
    bob.ws.close();
    alice.ws.close();
    return alice.got;
  }, server.wsUrl);
  const errors = received.filter((m) => m.type === 'error');
  assert.equal(errors.length, 1, JSON.stringify(received));
  assert.equal(errors[0].code, 'unknown-participant');
  assert.equal(errors[0].id, 'play-2');
  const started = received.filter((m) => m.type === 'session-started');
  assert.equal(started.length, 2, JSON.stringify(received));
  assert.ok(started.every((m) => !('id' in m)), 'only refusals carry ids');
  await page.context().close();
});

test('the server answers a join through the page with state, and a refused join with failed', async () => {
  // Same-name join in the same room: name-taken, shown plainly.
  const a = await openPage(browser, server.url, { room: 'names', user: 'same', autojoin: 1, publish: 0 });
  await poll(() => a.evaluate(() => window.room.state.joined), { what: 'first page joined' });
  const b = await openPage(browser, server.url, { room: 'names', user: 'same', autojoin: 1, publish: 0 });
  const failure = await poll(
    () => b.evaluate(() => document.getElementById('session-status').textContent === 'FAILED' && document.getElementById('failure').textContent),
    { what: 'second page failed' },
  );
  assert.match(failure, /^Name is taken/);
  assert.equal(await b.evaluate(() => window.room.state.joined), false);
  await a.context().close();
  await b.context().close();
});

test('page defaults: random names, ws URL of the serving host, invite link; conference.html redirects', async () => {
  const page = await openPage(browser, server.url, {});
  const v = await page.evaluate(() => ({
    server: document.getElementById('server-url').value,
    user: document.getElementById('username').value,
    room: document.getElementById('room').value,
    invite: document.getElementById('invite').textContent,
    session: document.getElementById('session-status').textContent,
    publish: document.getElementById('publish-status').textContent,
  }));
  assert.equal(v.server, server.wsUrl);
  assert.match(v.user, /^user-[a-z0-9]{4}$/);
  assert.match(v.room, /^room-[a-z0-9]{6}$/);
  assert.equal(v.invite, `${server.url}/?room=${v.room}`);
  assert.equal(v.session, 'DISCONNECTED');
  assert.equal(v.publish, 'UNPUBLISHED');
  // Typing a room name updates the invite link.
  await page.fill('#room', 'typed-room');
  assert.equal(await page.textContent('#invite'), `${server.url}/?room=typed-room`);
  // A name the server would refuse is refused before connecting, plainly.
  await page.fill('#username', 'no spaces');
  await page.click('#join');
  assert.equal(await page.textContent('#session-status'), 'FAILED');
  assert.match(await page.textContent('#failure'), /^Invalid name: .*not allowed/);
  // The old page name keeps working, with the invite's room.
  await page.goto(`${server.url}/conference.html?room=via-redirect`);
  await poll(() => page.evaluate(() => document.getElementById('room')?.value === 'via-redirect'), { what: 'redirected page' });
  assert.equal(new URL(page.url()).pathname, '/');
  await page.context().close();
});
