// Two sidecars carrying gRPC (SPEC §1, §12 `local_app_protocol: h2c`):
//
//   grpc-js client ─h2c─▶ ferry A outbound ─mTLS, HTTP/2─▶ ferry B inbound ─h2c─▶ grpc-js server
//
// ferry A owns service `orders-grpc` (endpoint = ferry B's inbound address,
// protocol auto: ALPN picks h2); ferry B checks the peer certificate and the
// key, then speaks h2c to the local gRPC server. Every call type, metadata
// both ways, the server's own errors, and deadlines crossing both hops.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import http2 from 'node:http2';
import { after, before, describe, test } from 'node:test';
import grpc from '@grpc/grpc-js';
import {
  LOOPBACK, describeExit, freePort, makePKI, sleep, startFerry, tlsBlock,
} from './helpers.mjs';
import {
  assertOk, clientFor, collect, deadline, metric, pingPong, startEchoServer, statusName, tagged, unary,
} from './grpc_helpers.mjs';

const PEER_ID = 'spiffe://e2e/app';   // the URI SAN of makePKI()'s client certificate
const VIA_MESH_RE = /^1\.1 ferry-([0-9a-f]{8})-out, 1\.1 ferry-([0-9a-f]{8})-in$/;
const STREAM_MESSAGES = 30;
const PING_PONG_ROUNDS = 30;
const CONCURRENT_CALLS = 100;
const WORKERS = 2;                    // startFerry's; each may hold its own h2c connection
const METRIC_WAIT_MS = 3000;

/** One gRPC call on a raw HTTP/2 stream with `grpc-timeout` and no
 *  deadline timer of the client's own: whatever ends it is ferry's doing.
 *  Resolves {headers, trailers, ms}. */
function rawGrpcCall(port, authority, path, message, grpcTimeout) {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const session = http2.connect(`http://${LOOPBACK}:${port}`);
    const timer = setTimeout(() => { session.destroy(); reject(new Error('no answer within 5 s')); }, 5000);
    session.on('error', (e) => { clearTimeout(timer); reject(e); });
    const body = Buffer.from(message);
    // EchoRequest { message = 1 }: tag 0x0a, length, bytes; after the 5-byte gRPC prefix
    const msg = Buffer.concat([Buffer.from([0x0a, body.length]), body]);
    const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, msg.length]), msg]);
    const req = session.request({
      ':method': 'POST', ':path': path, ':authority': authority,
      'content-type': 'application/grpc', te: 'trailers', 'grpc-timeout': grpcTimeout,
    });
    let headers = null;
    let trailers = null;
    req.on('response', (h) => { headers = h; });
    req.on('trailers', (t) => { trailers = t; });
    req.on('data', () => {});
    req.on('error', () => {});
    req.on('close', () => {
      clearTimeout(timer);
      session.close();
      resolve({ headers, trailers, ms: Date.now() - t0 });
    });
    req.end(frame);
  });
}

/** The exchanges FERRY has accounted for SERVICE, outbound: each gets
 *  one fate (SPEC §16), whatever ended it. */
function accounted(text, service) {
  const want = ['direction="outbound"', `service="${service}"`];
  let n = 0;
  for (const line of text.split('\n')) {
    const m = line.match(/^ferry_request_fate_total\{(.*)\}\s+(\S+)$/);
    if (m && want.every((w) => m[1].split(',').includes(w))) n += Number(m[2]);
  }
  return n;
}

async function waitAccounted(ferry, service, n) {
  const until = Date.now() + METRIC_WAIT_MS;
  for (;;) {
    const v = accounted((await ferry.admin('/metrics')).body, service);
    if (v >= n || Date.now() > until) return v;
    await sleep(50);
  }
}

async function waitMetric(ferry, name, labels, pred) {
  const until = Date.now() + METRIC_WAIT_MS;
  for (;;) {
    const v = metric((await ferry.admin('/metrics')).body, name, labels);
    if (pred(v) || Date.now() > until) return v;
    await sleep(50);
  }
}

describe('gRPC mesh: grpc-js → ferry A → mTLS HTTP/2 → ferry B → h2c → grpc-js server', () => {
  let pki;
  let server;
  let ferryA;
  let ferryB;
  let client;
  const clients = [];
  const key = `grpc-mesh-key-${randomUUID()}`;

  before(async () => {
    pki = makePKI();
    server = await startEchoServer(grpc.ServerCredentials.createInsecure());
    const inboundPort = await freePort();
    ferryB = await startFerry({
      env: { MESH_KEY: key },
      services: {},
      listeners: {
        inbound: {
          address: `${LOOPBACK}:${inboundPort}`,
          tls: {
            cert: pki.server.cert, key: pki.server.key, client_ca: pki.ca.cert,
            allowed_peers: [PEER_ID],
          },
          auth: { keys_env: ['MESH_KEY'] },
          local_app: server.address,
          local_app_protocol: 'h2c',
        },
      },
    });
    ferryA = await startFerry({
      env: { MESH_KEY: key },
      services: {
        'orders-grpc': {
          endpoints: [ferryB.inboundAddress],
          tls: tlsBlock(pki),
          auth: { key_env: 'MESH_KEY' },
        },
      },
    });
    client = clientFor(ferryA, 'orders-grpc');
    clients.push(client);
  });

  after(async () => {
    for (const c of clients) c.close();
    const problems = [];
    for (const [name, f] of [['ferry A', ferryA], ['ferry B', ferryB]]) {
      if (!f) continue;
      const exit = await f.stop();
      if (exit.killed) problems.push(`${name} did not exit within its drain budget\n${describeExit(exit, f)}`);
      else if (exit.signal !== null) problems.push(`${name} died by a signal\n${describeExit(exit, f)}`);
      else if (exit.code !== 0) problems.push(`${name} exited non-zero after SIGTERM\n${describeExit(exit, f)}`);
    }
    server?.close();
    ferryA?.cleanup();
    ferryB?.cleanup();
    pki?.cleanup();
    assert.deepEqual(problems, []);
  });

  /** What ferry B's inbound rules (§5) promise the server, as gRPC metadata. */
  function assertInboundMetadata(seen) {
    const md = seen.metadata;
    assert.deepEqual(md.get('x-ferry-peer'), [PEER_ID], 'x-ferry-peer is the verified identity');
    assert.deepEqual(md.get('x-service-auth'), [], 'the service key reached the server');
    assert.ok(!JSON.stringify(md.getMap()).includes(key), 'the key appears in the metadata');
    assert.deepEqual(md.get('x-forwarded-proto'), ['https']);
    assert.match(md.get('via').join(', '), VIA_MESH_RE);
    assert.equal(md.get('x-correlation-id').length, 1);
    // ferry A sends the service's server_name as :authority (SPEC §3 upstream Host)
    assert.equal(seen.authority, 'backend');
  }

  test('unary: the reply comes back; the server saw the peer identity, no key, the mesh via', async () => {
    const tag = randomUUID();
    const res = await unary(client, { message: 'hello mesh' }, tagged(tag, { 'x-correlation-id': 'grpc-mesh-1' }));
    assertOk(res, 'Unary');
    assert.equal(res.reply.message, 'hello mesh');
    const seen = server.callsTagged(tag);
    assert.equal(seen.length, 1, `server saw ${seen.length} calls tagged ${tag}`);
    assertInboundMetadata(seen[0]);
    assert.deepEqual(seen[0].metadata.get('x-correlation-id'), ['grpc-mesh-1']);
    assert.equal(res.initial?.get('x-correlation-id')[0], 'grpc-mesh-1');
  });

  test(`server streaming: ${STREAM_MESSAGES} messages in order, then OK`, async () => {
    const tag = randomUUID();
    const r = await collect(client.ServerStream({ message: 'item', count: STREAM_MESSAGES }, tagged(tag), deadline()));
    assert.equal(r.err, null, `ServerStream: ${r.err && `${statusName(r.err.code)} ${r.err.details}`}`);
    assert.equal(r.status.code, grpc.status.OK);
    assert.deepEqual(r.messages.map((m) => m.message), Array.from({ length: STREAM_MESSAGES }, (_, i) => `item-${i}`));
    assertInboundMetadata(server.callsTagged(tag)[0]);
  });

  test('client streaming: the server gets every message in order, the client its one reply', async () => {
    const tag = randomUUID();
    const sent = Array.from({ length: STREAM_MESSAGES }, (_, i) => `part-${i}`);
    const reply = await new Promise((resolve) => {
      const call = client.ClientStream(tagged(tag), deadline(), (err, r) => resolve({ err, r }));
      for (const m of sent) call.write({ message: m });
      call.end();
    });
    assert.equal(reply.err, null, `ClientStream: ${reply.err && `${statusName(reply.err.code)} ${reply.err.details}`}`);
    assert.equal(reply.r.message, sent.join(','));
    const seen = server.callsTagged(tag);
    assert.equal(seen.length, 1);
    assert.deepEqual(seen[0].received, sent);
  });

  test(`bidi: ping-pong, ${PING_PONG_ROUNDS} rounds, each pong before the next ping`, async () => {
    const tag = randomUUID();
    const { pongs, status } = await pingPong(client, PING_PONG_ROUNDS, tagged(tag));
    assert.equal(status.code, grpc.status.OK, `status ${statusName(status.code)} ${status.details}`);
    assert.deepEqual(pongs.map((p) => p.message), Array.from({ length: PING_PONG_ROUNDS }, (_, i) => `pong:ping-${i}`));
    assert.equal(server.callsTagged(tag).length, 1);
  });

  test('metadata both ways: request metadata reaches the server; initial and trailing metadata reach the client', async () => {
    const tag = randomUUID();
    const bin = Buffer.from([0, 10, 13, 200, 255]);
    const md = tagged(tag, { 'x-e2e-echo': tag, 'x-e2e-custom': 'a value, with; punctuation', 'x-e2e-req-bin': bin });
    const res = await unary(client, { message: 'meta' }, md);
    assertOk(res, 'Unary with metadata');
    const got = server.callsTagged(tag)[0].metadata;
    assert.equal(got.get('x-e2e-custom')[0], 'a value, with; punctuation');
    assert.deepEqual(got.get('x-e2e-req-bin')[0], bin);
    assert.equal(res.initial?.get('x-e2e-initial')[0], `initial:${tag}`);
    assert.deepEqual(res.initial.get('x-e2e-initial-bin')[0], Buffer.from([0, 1, 2, 255, 254]));
    assert.equal(res.status.metadata.get('x-e2e-trailer')[0], `trailer:${tag}`);
    assert.deepEqual(res.status.metadata.get('x-e2e-trailer-bin')[0], Buffer.from([255, 0, 128]));

    const tag2 = randomUUID();
    const b = await pingPong(client, 3, tagged(tag2, { 'x-e2e-echo': tag2 }));
    assert.equal(b.status.code, grpc.status.OK);
    assert.equal(b.initial?.get('x-e2e-initial')[0], `initial:${tag2}`);
    assert.equal(b.status.metadata.get('x-e2e-trailer')[0], `trailer:${tag2}`);
  });

  test("the server's own error status passes both ferries unchanged, with its details and trailers", async () => {
    const tag = randomUUID();
    const res = await unary(client, { message: 'w-42', fail: 'NOT_FOUND' }, tagged(tag));
    assert.equal(res.err?.code, grpc.status.NOT_FOUND, `got ${res.err && `${statusName(res.err.code)} ${res.err.details}`}`);
    assert.equal(res.err.details, 'widget w-42 not found: ünïcode, 100% "quoted"');
    assert.equal(res.err.metadata.get('x-e2e-error-reason')[0], 'no-such-widget');
    assert.deepEqual(res.err.metadata.get('grpc-status-details-bin')[0],
      Buffer.from('rich details \u0000\u00ff', 'latin1'));
    assert.equal(res.err.metadata.get('x-ferry-error').length, 0, "the server's error is not ferry's");
    assert.equal(server.callsTagged(tag).length, 1, 'a NOT_FOUND was retried');
    const b = await waitMetric(ferryB, 'ferry_grpc_responses_total',
      { direction: 'inbound', service: 'local_app', grpc_status: '5' }, (v) => v >= 1);
    assert.ok(b >= 1, `ferry B counted ${b} NOT_FOUND`);
  });

  test('a 300 ms deadline to a server that never answers: DEADLINE_EXCEEDED well under 2 s', async () => {
    const tag = randomUUID();
    const done = accounted((await ferryA.admin('/metrics')).body, 'orders-grpc');
    const t0 = Date.now();
    const res = await unary(client, { message: 'never-answer' }, tagged(tag), 300);
    const took = Date.now() - t0;
    assert.equal(res.err?.code, grpc.status.DEADLINE_EXCEEDED,
      `got ${res.err ? `${statusName(res.err.code)} ${res.err.details}` : 'OK'}`);
    assert.ok(took < 1000, `DEADLINE_EXCEEDED after ${took} ms`);
    // the deadline crossed both ferries as grpc-timeout: the server's own
    // deadline is no later than the client's
    const seen = server.callsTagged(tag);
    assert.equal(seen.length, 1);
    const left = new Date(seen[0].deadline).getTime() - seen[0].receivedAt;
    assert.ok(left > 0 && left <= 300, `the server got a deadline ${left} ms away`);
    // grpc-js's own timer can end the call before ferry A's does: the call
    // is counted once ferry A ends it, which the next test must not see
    assert.equal(await waitAccounted(ferryA, 'orders-grpc', done + 1), done + 1);
  });

  test('grpc-timeout 300m with no client timer: DEADLINE_EXCEEDED within 2 s, counted in ferry A\'s ferry_grpc_responses_total', async () => {
    const before = metric((await ferryA.admin('/metrics')).body, 'ferry_grpc_responses_total',
      { direction: 'outbound', service: 'orders-grpc', grpc_status: '4' }) ?? 0;
    const callsBefore = server.calls.length;
    const r = await rawGrpcCall(ferryA.outboundPort, 'orders-grpc', '/ferry.e2e.Echo/Unary', 'never-answer', '300m');
    assert.ok(r.ms < 2000, `answered after ${r.ms} ms`);
    const fields = { ...r.headers, ...(r.trailers ?? {}) };
    assert.equal(fields['grpc-status'], '4', `grpc-status ${fields['grpc-status']} ${fields['grpc-message']}`);
    const after = await waitMetric(ferryA, 'ferry_grpc_responses_total',
      { direction: 'outbound', service: 'orders-grpc', grpc_status: '4' }, (v) => v >= before + 1);
    assert.equal(after, before + 1, 'ferry_grpc_responses_total{grpc_status="4"} did not count it');
    const seen = server.calls.slice(callsBefore).filter((c) => c.message === 'never-answer');
    assert.equal(seen.length, 1);
    const left = new Date(seen[0].deadline).getTime() - seen[0].receivedAt;
    assert.ok(left > 0 && left <= 300, `the server got a deadline ${left} ms away`);
  });

  test(`${CONCURRENT_CALLS} concurrent calls: all succeed; ferry B multiplexes them on at most ${WORKERS} h2c connections`, async () => {
    const tag = randomUUID();
    const results = await Promise.all(Array.from({ length: CONCURRENT_CALLS },
      (_, i) => unary(client, { message: `c-${i}` }, tagged(tag), 20000)));
    const failed = results.filter((r) => r.err);
    assert.equal(failed.length, 0, `${failed.length} calls failed: ${failed[0]?.err?.details}`);
    results.forEach((r, i) => assert.equal(r.reply.message, `c-${i}`));
    const peers = new Set(server.callsTagged(tag).map((c) => c.peer));
    assert.ok(peers.size >= 1 && peers.size <= WORKERS, `the server saw ${peers.size} connections`);
    const opened = metric((await ferryB.admin('/metrics')).body, 'ferry_upstream_connections_opened_total',
      { service: 'local_app' });
    assert.ok(opened >= 1 && opened <= WORKERS, `ferry B opened ${opened} connections to the local app`);
    // ferry A reaches ferry B over HTTP/2 (protocol auto, ALPN h2)
    const svc = JSON.parse((await ferryA.admin('/services')).body).services
      .find((s) => s.name === 'orders-grpc');
    assert.equal(svc.endpoints[0].protocol, 'h2', JSON.stringify(svc.endpoints[0]));
  });
});
