// gRPC helpers of the e2e suite (grpc.test.mjs, grpc_mesh.test.mjs): the
// Echo service of echo.proto as a grpc-js server that records what it saw
// of every call, and grpc-js clients on a ferry's outbound port, every call
// with a deadline so every wait is bounded.

import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import { LOOPBACK } from './helpers.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const CALL_TIMEOUT_MS = 10000;      // deadline of every call
export const MAX_MESSAGE = 16 * 1024 * 1024;   // grpc max message sizes, both sides

const packageDefinition = protoLoader.loadSync(path.join(HERE, 'echo.proto'), {
  keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
});
export const { Echo } = grpc.loadPackageDefinition(packageDefinition).ferry.e2e;

// ---------------------------------------------------------------------------
// The upstream: a grpc-js Echo server recording what it saw of every call.

export function echoService(state) {
  const record = (method, call, extra = {}) => {
    const rec = {
      method,
      peer: call.getPeer(),
      authority: call.getHost(),
      metadata: call.metadata,
      auth: call.getAuthContext?.() ?? null,
      deadline: call.getDeadline(),     // from the grpc-timeout it got
      receivedAt: Date.now(),
      cancelled: false,                 // the stream was reset under it
      ...extra,
    };
    call.on('cancelled', () => { rec.cancelled = true; });
    state.calls.push(rec);
    return rec;
  };
  // x-e2e-echo: name this value in initial metadata and trailers
  const replyMetadata = (call) => {
    const tag = call.metadata.get('x-e2e-echo')[0];
    if (tag === undefined) return { initial: null, trailer: undefined };
    const initial = new grpc.Metadata();
    initial.set('x-e2e-initial', `initial:${tag}`);
    initial.set('x-e2e-initial-bin', Buffer.from([0, 1, 2, 255, 254]));
    const trailer = new grpc.Metadata();
    trailer.set('x-e2e-trailer', `trailer:${tag}`);
    trailer.set('x-e2e-trailer-bin', Buffer.from([255, 0, 128]));
    return { initial, trailer };
  };

  return {
    Unary(call, callback) {
      const req = call.request;
      record('Unary', call, { message: req.message, payloadLength: req.payload.length });
      if (req.message === 'never-answer') return;     // the deadline tests
      if (req.fail) {
        const md = new grpc.Metadata();
        md.set('x-e2e-error-reason', 'no-such-widget');
        md.set('grpc-status-details-bin', Buffer.from('rich details \u0000\u00ff', 'latin1'));
        callback({ code: grpc.status[req.fail], details: `widget ${req.message} not found: ünïcode, 100% "quoted"`, metadata: md });
        return;
      }
      const { initial, trailer } = replyMetadata(call);
      if (initial) call.sendMetadata(initial);
      callback(null, { message: req.message, payload: req.payload, authority: call.getHost() }, trailer);
    },
    ServerStream(call) {
      const req = call.request;
      record('ServerStream', call, { message: req.message });
      const { initial, trailer } = replyMetadata(call);
      if (initial) call.sendMetadata(initial);
      for (let i = 0; i < req.count; i++) call.write({ message: `${req.message}-${i}`, index: i });
      call.end(trailer);
    },
    ClientStream(call, callback) {
      const rec = record('ClientStream', call);
      const got = [];
      call.on('data', (m) => got.push(m.message));
      call.on('error', () => {});
      call.on('end', () => {
        rec.received = got;
        const { initial, trailer } = replyMetadata(call);
        if (initial) call.sendMetadata(initial);
        callback(null, { message: got.join(','), index: got.length }, trailer);
      });
    },
    Bidi(call) {
      record('Bidi', call);
      const { initial, trailer } = replyMetadata(call);
      if (initial) call.sendMetadata(initial);
      let n = 0;
      call.on('data', (m) => call.write({ message: `pong:${m.message}`, index: n++ }));
      call.on('error', () => {});
      call.on('end', () => call.end(trailer));
    },
  };
}

export async function startEchoServer(credentials) {
  const state = { calls: [] };
  const server = new grpc.Server({
    'grpc.max_receive_message_length': MAX_MESSAGE,
    'grpc.max_send_message_length': MAX_MESSAGE,
  });
  server.addService(Echo.service, echoService(state));
  const port = await new Promise((resolve, reject) => {
    server.bindAsync(`${LOOPBACK}:0`, credentials, (err, p) => (err ? reject(err) : resolve(p)));
  });
  state.port = port;
  state.address = `${LOOPBACK}:${port}`;
  state.callsTagged = (tag) => state.calls.filter((c) => c.metadata.get('x-e2e-tag')[0] === tag);
  state.close = () => server.forceShutdown();
  return state;
}

// ---------------------------------------------------------------------------
// The app side: grpc-js clients on ferry's outbound port.

export function clientFor(ferry, authority, options = {}) {
  return new Echo(`${LOOPBACK}:${ferry.outboundPort}`, grpc.credentials.createInsecure(), {
    'grpc.default_authority': authority,
    'grpc.max_receive_message_length': MAX_MESSAGE,
    'grpc.max_send_message_length': MAX_MESSAGE,
    ...options,
  });
}

export const deadline = (ms = CALL_TIMEOUT_MS) => ({ deadline: Date.now() + ms });

export function tagged(tag, extra = {}) {
  const md = new grpc.Metadata();
  md.set('x-e2e-tag', tag);
  for (const [k, v] of Object.entries(extra)) md.set(k, v);
  return md;
}

/** Resolves (never rejects) once the call's status arrives: {err, reply, initial, status}. */
export function unary(client, req, metadata = new grpc.Metadata(), ms = CALL_TIMEOUT_MS) {
  return new Promise((resolve) => {
    const out = { err: null, reply: null, initial: null, status: null };
    const call = client.Unary(req, metadata, deadline(ms), (err, reply) => {
      out.err = err;
      out.reply = reply ?? null;
    });
    call.on('metadata', (md) => { out.initial = md; });
    call.on('status', (st) => { out.status = st; resolve(out); });
  });
}

export function statusName(code) {
  return Object.entries(grpc.status).find(([, v]) => v === code)?.[0] ?? String(code);
}

export function assertOk(res, what) {
  assert.equal(res.err, null,
    `${what}: ${res.err && `${statusName(res.err.code)} ${res.err.details}`}`);
  assert.equal(res.status.code, grpc.status.OK);
}

/** A streaming call's messages and status, each read bounded by the call's deadline. */
export function collect(call) {
  return new Promise((resolve) => {
    const out = { messages: [], initial: null, status: null, err: null };
    call.on('metadata', (md) => { out.initial = md; });
    call.on('data', (m) => out.messages.push(m));
    call.on('error', (e) => { out.err = e; });
    call.on('status', (st) => { out.status = st; resolve(out); });
  });
}

/** Bidi ping-pong: each ping waits for its pong. Resolves {pongs, status, initial}. */
export async function pingPong(client, rounds, metadata = new grpc.Metadata()) {
  const call = client.Bidi(metadata, deadline());
  let initial = null;
  call.on('metadata', (md) => { initial = md; });
  const statusP = new Promise((resolve) => call.on('status', resolve));
  call.on('error', () => {});   // the status says it
  const it = call[Symbol.asyncIterator]();
  const pongs = [];
  try {
    for (let i = 0; i < rounds; i++) {
      call.write({ message: `ping-${i}` });
      const { value, done } = await it.next();
      assert.equal(done, false, `the stream ended after ${i} pongs`);
      pongs.push(value);
    }
    call.end();
    const last = await it.next();
    assert.equal(last.done, true, 'a pong nobody pinged for');
  } catch (e) {
    call.cancel();
    const st = await statusP;
    throw new Error(`ping-pong failed after ${pongs.length} rounds: ${e.message} (status ${statusName(st.code)} ${st.details})`);
  }
  return { pongs, status: await statusP, initial };
}

export function metric(text, name, labels) {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && line.split(' ')[0] !== name) continue;
    const m = line.match(/^([a-z_]+)(?:\{(.*)\})?\s+(\S+)$/);
    if (!m || m[1] !== name) continue;
    const have = (m[2] ?? '').split(',');
    if (want.every((w) => have.includes(w))) return Number(m[3]);
  }
  return undefined;
}
