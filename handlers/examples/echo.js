// The frontdesk echo bot in Node.js, written from protocol/SPEC.md alone (no frontdesk SDK):
// the same behaviour as echo.py, the port of the original article's jobWorker.
//
//   cd handlers/examples && npm install      # @msgpack/msgpack
//   frontdesk check-handler -- node handlers/examples/echo.js
'use strict';
const { encode, decode } = require('@msgpack/msgpack');

const PROTOCOL = 1;
const NAME = 'echo-js';
const MAX_IN_FLIGHT = 8;

// stdout carries frames only: keep its writer private, send everything else to stderr.
const writeFrameBytes = process.stdout.write.bind(process.stdout);
process.stdout.write = process.stderr.write.bind(process.stderr);
console.log = console.info = console.debug = console.error;

let maxFrameBytes = 16 * 1024 * 1024;
let handshaken = false;
let dispatcherGone = false;
let nextMsgid = 0;
const calls = new Map(); // msgid of our API request -> {resolve, reject}

function send(message) {
  const body = encode(message);
  const header = Buffer.alloc(4);
  header.writeUInt32BE(body.length);
  writeFrameBytes(Buffer.concat([header, body])); // synchronous for pipes on Linux
}

function violation(text) {
  process.stderr.write(`${NAME}: protocol error on stdin: ${text}\n`);
  process.exit(2); // the stream cannot be resynchronised
}

class ApiError extends Error {
  constructor(error) {
    super(error && typeof error.message === 'string' ? error.message : 'API call failed');
    this.status = (error && error.status) || 0;
    this.details = (error && error.details) || [];
    this.retry = Boolean(error && error.retryable); // a nack carries it on
  }
}

// --- API calls: [0, msgid, method, [eventId, args]] ------------------------------------------------
function call(eventId, method, args) {
  if (dispatcherGone) {
    return Promise.reject(new ApiError({ message: 'dispatcher gone: stdin closed', retryable: true }));
  }
  const msgid = nextMsgid;
  nextMsgid = (nextMsgid + 1) >>> 0; // unsigned 32-bit, wraps to 0
  return new Promise((resolve, reject) => {
    calls.set(msgid, { resolve, reject });
    send([0, msgid, method, [eventId, args]]);
  });
}

// --- the bot ------------------------------------------------------------------------------------
const PHRASES = {
  image: '写真ですね...',
  video: '動画ですね...',
  audio: 'ボイスメッセージですね...',
  location: '位置情報ですね...',
  sticker: 'スタンプですね',
};

async function answer(id, event, text) {
  const userId = event.source && event.source.userId;
  if (userId) {
    const profile = await call(id, 'profile', { userId });
    text = `${profile.displayName}さん、${text}`;
  }
  await call(id, 'reply', { replyToken: event.replyToken, messages: [{ type: 'text', text }] });
}

async function onEvent(id, event) {
  const userId = event.source && event.source.userId;
  if (event.type === 'message') {
    if (event.message.type === 'text') return answer(id, event, `はい、${event.message.text}、ですね。`);
    const phrase = PHRASES[event.message.type];
    if (phrase) return answer(id, event, phrase);
    console.error(`event=message_unanswered event_id=${id} message_type=${event.message.type}`);
  } else if (event.type === 'follow') {
    await answer(id, event, 'ようこそ！');
    console.error(`event=follow_answered event_id=${id} user=${userId}`);
  } else if (event.type === 'unfollow') {
    console.error(`event=unfollow_recorded event_id=${id} user=${userId}`);
    await call(id, 'user_set_data', { userId, data: { blocked_at: event.timestamp } });
  }
  // Other event types: nothing to do; returning acks them.
}

const MAX_NACK_MESSAGE = 1000; // characters: a nack must always fit in a frame (SPEC section 12)

function malformed(doc) {
  return !doc || typeof doc !== 'object' || !doc.o || typeof doc.o !== 'object'
    || typeof doc.o._id !== 'string' || !doc.o.event || typeof doc.o.event !== 'object' || Array.isArray(doc.o.event);
}

async function handleEvent(msgid, doc) {
  let error = null;
  if (malformed(doc)) {
    error = { message: `malformed event document: ${JSON.stringify(doc).slice(0, 200)}`, retry: false };
    console.error(`event=malformed_event_document msgid=${msgid}`);
    send([1, msgid, error, null]);
    return false;
  }
  try {
    await onEvent(doc.o._id, doc.o.event);
  } catch (err) {
    error = { message: String((err && err.message) || err).slice(0, MAX_NACK_MESSAGE),
              retry: err && err.retry !== undefined ? Boolean(err.retry) : true };
    console.error(`event=event_nacked event_id=${doc.o._id} error=${JSON.stringify(error.message)}`);
  }
  send([1, msgid, error, null]); // ack (error nil) or nack
  return error === null;
}

// A batch (the `batch` feature, SPEC section 7): one conversation's events, one after the other;
// after a nack the rest are answered unhandled (the dispatcher gives them back).
async function handleBatch(entries) {
  let acked = true;
  for (const [msgid, doc] of entries) {
    if (acked) acked = await handleEvent(msgid, doc);
    else send([1, msgid, { message: 'skipped: an earlier event of its batch was nacked' }, null]);
  }
}

// --- incoming messages --------------------------------------------------------------------------
function onHello(msgid, offer) {
  if (!offer || !Array.isArray(offer.protocol) || !offer.protocol.includes(PROTOCOL)) {
    send([1, msgid, { message: `handler speaks protocol ${PROTOCOL}, dispatcher offered ${JSON.stringify(offer && offer.protocol)}` }, null]);
    process.exit(1);
  }
  if (Number.isInteger(offer.max_frame_bytes) && offer.max_frame_bytes > 0) maxFrameBytes = offer.max_frame_bytes;
  handshaken = true;
  const features = Array.isArray(offer.features) && offer.features.includes('batch') ? ['batch'] : [];
  send([1, msgid, null, { protocol: PROTOCOL, name: NAME, max_in_flight: MAX_IN_FLIGHT, features }]);
}

function onMessage(m) {
  if (!Array.isArray(m)) return violation('a message must be an array');
  const kind = m[0];
  if (!handshaken) {
    if (kind !== 0 || m.length !== 4 || m[2] !== 'hello') return violation('the first message must be the hello request');
    return onHello(m[1], Array.isArray(m[3]) ? m[3][0] : null);
  }
  if (kind === 0 && m.length === 4) { // a request from the dispatcher
    if (m[2] === 'event') handleEvent(m[1], m[3][0]);
    else send([1, m[1], { message: `unknown method ${m[2]}` }, null]);
  } else if (kind === 1 && m.length === 4) { // the answer to one of our API calls
    const pending = calls.get(m[1]);
    if (!pending) return console.error(`event=unknown_response_ignored msgid=${m[1]}`);
    calls.delete(m[1]);
    if (m[2] === null || m[2] === undefined) pending.resolve(m[3]);
    else pending.reject(new ApiError(m[2]));
  } else if (kind === 2 && m.length === 3) {
    if (m[1] !== 'batch') return; // other dispatcher notifications: ignore
    if (!Array.isArray(m[2]) || !m[2].every((e) => Array.isArray(e) && e.length === 2 && Number.isInteger(e[0]))) {
      return violation('batch params must be [[msgid, document], ...]');
    }
    handleBatch(m[2]);
  } else {
    violation(`unknown message shape ${JSON.stringify(m).slice(0, 80)}`);
  }
}

let buffer = Buffer.alloc(0);
process.stdin.on('data', (chunk) => {
  buffer = buffer.length ? Buffer.concat([buffer, chunk]) : chunk;
  let offset = 0;
  while (buffer.length - offset >= 4) {
    const length = buffer.readUInt32BE(offset);
    if (length > maxFrameBytes) return violation(`frame length ${length} exceeds the maximum ${maxFrameBytes} bytes`);
    if (buffer.length - offset - 4 < length) break;
    let value;
    try {
      value = decode(buffer.subarray(offset + 4, offset + 4 + length));
    } catch (err) {
      return violation(`frame body is not valid msgpack: ${err.message}`);
    }
    offset += 4 + length;
    onMessage(value);
  }
  buffer = buffer.subarray(offset);
});

process.stdin.on('end', () => {
  if (buffer.length) violation(`stdin ended inside a frame (${buffer.length} bytes)`);
  // Shutdown: no answers can come any more. Outstanding calls fail, the events finish (nacked),
  // and Node exits with status 0 once nothing is left to do.
  dispatcherGone = true;
  for (const pending of calls.values()) pending.reject(new ApiError({ message: 'dispatcher gone: stdin closed', retryable: true }));
  calls.clear();
});
