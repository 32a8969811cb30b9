// @grpc/grpc-js, the way service teams write a gRPC client: an insecure
// channel to ferry's outbound port (h2c, prior knowledge), the service picked
// by :authority ('grpc.default_authority'). Behind ferry, grpc-js servers
// (echo.proto): one over h2c (`protocol: h2`, no tls), one over mTLS with
// ALPN h2 (`protocol: auto`). Every call carries a deadline, so every wait is
// bounded; so is every test (node --test --test-timeout). The server and
// client helpers live in grpc_helpers.mjs; two sidecars carrying gRPC to an
// h2c local app are grpc_mesh.test.mjs.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import grpc from '@grpc/grpc-js';
import {
  LOOPBACK, describeExit, freePort, makePKI, startFerry, tlsBlock,
} from './helpers.mjs';
import {
  assertOk, clientFor, collect, deadline, metric, pingPong, startEchoServer, statusName, tagged, unary,
} from './grpc_helpers.mjs';

const BIG = 8 * 1024 * 1024;               // the large message, each way
const STREAM_MESSAGES = 50;
const PING_PONG_ROUNDS = 50;
const CONCURRENT_CALLS = 200;
const MAX_UPSTREAM_CONNECTIONS = 4;


// ---------------------------------------------------------------------------

describe('gRPC through ferry (@grpc/grpc-js)', () => {
  let pki;
  let h2c;        // grpc-js server, plaintext (service echo, protocol h2)
  let tls;        // grpc-js server, mTLS (service echo-tls, protocol auto)
  let ferry;
  const clients = [];
  let echo;       // client with :authority echo

  const client = (authority, options) => {
    const c = clientFor(ferry, authority, options);
    clients.push(c);
    return c;
  };

  before(async () => {
    pki = makePKI();
    h2c = await startEchoServer(grpc.ServerCredentials.createInsecure());
    tls = await startEchoServer(grpc.ServerCredentials.createSsl(
      fs.readFileSync(pki.ca.cert),
      [{ cert_chain: fs.readFileSync(pki.server.cert), private_key: fs.readFileSync(pki.server.key) }],
      true,
    ));
    const deadPort = await freePort();
    ferry = await startFerry({
      services: {
        echo: { endpoints: [h2c.address], protocol: 'h2' },
        'echo-tls': { endpoints: [tls.address], tls: tlsBlock(pki), protocol: 'auto' },
        'dead-grpc': { endpoints: [`${LOOPBACK}:${deadPort}`], protocol: 'h2' },
      },
    });
    echo = client('echo');
  });

  after(async () => {
    for (const c of clients) c.close();
    let exit;
    if (ferry) exit = await ferry.stop();
    h2c?.close();
    tls?.close();
    try {
      if (exit) {
        assert.equal(exit.killed, false, `ferry did not exit within its drain budget\n${describeExit(exit, ferry)}`);
        assert.equal(exit.signal, null, `ferry died by a signal\n${describeExit(exit, ferry)}`);
        assert.equal(exit.code, 0, `ferry exited non-zero after SIGTERM\n${describeExit(exit, ferry)}`);
      }
    } finally {
      ferry?.cleanup();
      pki?.cleanup();
    }
  });

  describe('h2c upstream (service echo, protocol h2)', () => {
    test('unary: the reply comes back; the server saw :authority echo', async () => {
      const tag = randomUUID();
      const res = await unary(echo, { message: 'hello' }, tagged(tag));
      assertOk(res, 'Unary');
      assert.equal(res.reply.message, 'hello');
      const seen = h2c.callsTagged(tag);
      assert.equal(seen.length, 1, `server saw ${seen.length} calls tagged ${tag}`);
      assert.equal(seen[0].method, 'Unary');
      assert.equal(seen[0].authority, 'echo');
      assert.equal(res.reply.authority, 'echo');
    });

    test(`server streaming: ${STREAM_MESSAGES} messages in order, then OK`, async () => {
      const tag = randomUUID();
      const r = await collect(echo.ServerStream({ message: 'item', count: STREAM_MESSAGES }, tagged(tag), deadline()));
      assert.equal(r.err, null, `ServerStream: ${r.err && `${statusName(r.err.code)} ${r.err.details}`}`);
      assert.equal(r.status.code, grpc.status.OK);
      assert.deepEqual(r.messages.map((m) => m.index), Array.from({ length: STREAM_MESSAGES }, (_, i) => i));
      assert.deepEqual(r.messages.map((m) => m.message), Array.from({ length: STREAM_MESSAGES }, (_, i) => `item-${i}`));
      assert.equal(h2c.callsTagged(tag).length, 1);
    });

    test('client streaming: the server gets every message in order, the client its one reply', async () => {
      const tag = randomUUID();
      const sent = Array.from({ length: STREAM_MESSAGES }, (_, i) => `part-${i}`);
      const reply = await new Promise((resolve) => {
        const call = echo.ClientStream(tagged(tag), deadline(), (err, r) => resolve({ err, r }));
        for (const m of sent) call.write({ message: m });
        call.end();
      });
      assert.equal(reply.err, null, `ClientStream: ${reply.err && `${statusName(reply.err.code)} ${reply.err.details}`}`);
      assert.equal(reply.r.index, sent.length);
      assert.equal(reply.r.message, sent.join(','));
      const seen = h2c.callsTagged(tag);
      assert.equal(seen.length, 1);
      assert.deepEqual(seen[0].received, sent);
    });

    test(`bidi: ping-pong, ${PING_PONG_ROUNDS} rounds, each pong before the next ping`, async () => {
      const tag = randomUUID();
      const { pongs, status } = await pingPong(echo, PING_PONG_ROUNDS, tagged(tag));
      assert.equal(status.code, grpc.status.OK, `status ${statusName(status.code)} ${status.details}`);
      assert.deepEqual(pongs.map((p) => p.message), Array.from({ length: PING_PONG_ROUNDS }, (_, i) => `pong:ping-${i}`));
      assert.deepEqual(pongs.map((p) => p.index), Array.from({ length: PING_PONG_ROUNDS }, (_, i) => i));
      assert.equal(h2c.callsTagged(tag).length, 1);
    });

    test('custom metadata both ways: request metadata reaches the server; initial and trailing metadata reach the client', async () => {
      const tag = randomUUID();
      const bin = Buffer.from([0, 10, 13, 200, 255]);
      const md = tagged(tag, { 'x-e2e-echo': tag, 'x-e2e-custom': 'a value, with; punctuation', 'x-e2e-req-bin': bin });
      md.add('x-e2e-multi', 'one');
      md.add('x-e2e-multi', 'two');

      // unary
      const res = await unary(echo, { message: 'meta' }, md);
      assertOk(res, 'Unary with metadata');
      const seen = h2c.callsTagged(tag);
      assert.equal(seen.length, 1);
      const got = seen[0].metadata;
      assert.equal(got.get('x-e2e-custom')[0], 'a value, with; punctuation');
      assert.deepEqual(got.get('x-e2e-req-bin')[0], bin);
      assert.deepEqual(got.get('x-e2e-multi').join(',').split(/,\s*/), ['one', 'two']);
      assert.ok(res.initial, 'no initial metadata reached the client');
      assert.equal(res.initial.get('x-e2e-initial')[0], `initial:${tag}`);
      assert.deepEqual(res.initial.get('x-e2e-initial-bin')[0], Buffer.from([0, 1, 2, 255, 254]));
      assert.equal(res.status.metadata.get('x-e2e-trailer')[0], `trailer:${tag}`);
      assert.deepEqual(res.status.metadata.get('x-e2e-trailer-bin')[0], Buffer.from([255, 0, 128]));
      assert.equal(res.status.metadata.get('x-e2e-initial').length, 0, 'initial metadata repeated in the trailers');

      // server streaming and bidi carry them the same way
      const tag2 = randomUUID();
      const r = await collect(echo.ServerStream({ message: 'm', count: 3 },
        tagged(tag2, { 'x-e2e-echo': tag2 }), deadline()));
      assert.equal(r.status.code, grpc.status.OK, `ServerStream: ${r.status.details}`);
      assert.equal(r.initial?.get('x-e2e-initial')[0], `initial:${tag2}`);
      assert.equal(r.status.metadata.get('x-e2e-trailer')[0], `trailer:${tag2}`);

      const tag3 = randomUUID();
      const b = await pingPong(echo, 3, tagged(tag3, { 'x-e2e-echo': tag3 }));
      assert.equal(b.status.code, grpc.status.OK);
      assert.equal(b.initial?.get('x-e2e-initial')[0], `initial:${tag3}`);
      assert.equal(b.status.metadata.get('x-e2e-trailer')[0], `trailer:${tag3}`);
    });

    test("the server's own error status reaches the client unchanged, with its details and trailers", async () => {
      const tag = randomUUID();
      const res = await unary(echo, { message: 'w-42', fail: 'NOT_FOUND' }, tagged(tag));
      assert.ok(res.err, 'the call succeeded');
      assert.equal(res.err.code, grpc.status.NOT_FOUND, `got ${statusName(res.err.code)} ${res.err.details}`);
      assert.equal(res.err.details, 'widget w-42 not found: ünïcode, 100% "quoted"');
      assert.equal(res.err.metadata.get('x-e2e-error-reason')[0], 'no-such-widget');
      assert.deepEqual(res.err.metadata.get('grpc-status-details-bin')[0],
        Buffer.from('rich details \u0000\u00ff', 'latin1'));
      assert.equal(res.err.metadata.get('x-ferry-error').length, 0, "the service's error is not ferry's");
      assert.equal(h2c.callsTagged(tag).length, 1, 'the call reached the server exactly once');

      const res2 = await unary(echo, { message: 'x', fail: 'FAILED_PRECONDITION' }, tagged(randomUUID()));
      assert.equal(res2.err?.code, grpc.status.FAILED_PRECONDITION);
      assert.equal(res2.err.details, 'widget x not found: ünïcode, 100% "quoted"');
    });

    test('an 8 MiB message each way', async () => {
      const tag = randomUUID();
      const payload = Buffer.alloc(BIG);
      for (let i = 0; i < BIG; i += 4) payload.writeUInt32LE((i * 2654435761) >>> 0, i);
      const res = await unary(echo, { message: 'big', payload }, tagged(tag), 30000);
      assertOk(res, '8 MiB Unary');
      const seen = h2c.callsTagged(tag);
      assert.equal(seen.length, 1);
      assert.equal(seen[0].payloadLength, BIG);
      assert.equal(res.reply.payload.length, BIG);
      assert.ok(res.reply.payload.equals(payload), 'the 8 MiB reply differs from what was sent');
    });

    test(`${CONCURRENT_CALLS} concurrent unary calls on one channel all succeed over at most ${MAX_UPSTREAM_CONNECTIONS} upstream connections`, async () => {
      const tag = randomUUID();
      const results = await Promise.all(Array.from({ length: CONCURRENT_CALLS },
        (_, i) => unary(echo, { message: `c-${i}` }, tagged(tag), 20000)));
      const failed = results.map((r, i) => [i, r]).filter(([, r]) => r.err);
      assert.equal(failed.length, 0, `${failed.length} calls failed, e.g. #${failed[0]?.[0]}: ` +
        `${failed[0] && `${statusName(failed[0][1].err.code)} ${failed[0][1].err.details}`}`);
      results.forEach((r, i) => assert.equal(r.reply.message, `c-${i}`, `call ${i} got another call's reply`));

      const seen = h2c.callsTagged(tag);
      assert.equal(seen.length, CONCURRENT_CALLS, 'the server saw each call once');
      const peers = new Set(seen.map((c) => c.peer));
      assert.ok(peers.size >= 1 && peers.size <= MAX_UPSTREAM_CONNECTIONS,
        `the server saw the calls over ${peers.size} connections: ${[...peers].join(' ')}`);

      const metrics = await ferry.admin('/metrics');
      assert.equal(metrics.status, 200);
      const opened = metric(metrics.body, 'ferry_upstream_connections_opened_total', { service: 'echo' });
      assert.ok(opened !== undefined, 'no ferry_upstream_connections_opened_total{service="echo"} in /metrics');
      assert.ok(opened >= 1 && opened <= MAX_UPSTREAM_CONNECTIONS,
        `ferry opened ${opened} connections to echo for the whole suite`);
    });
  });

  describe("ferry's own errors in the gRPC form", () => {
    function assertFerryGrpcError(res, code, ferryError) {
      assert.ok(res.err, 'the call succeeded');
      assert.equal(res.err.code, code,
        `got ${statusName(res.err.code)} ${JSON.stringify(res.err.details)}, want ${statusName(code)}`);
      assert.ok(res.err.details.length > 0, 'no grpc-message');
      // trailers-only: grpc-js has the response headers in the status metadata
      const where = res.err.metadata.get('x-ferry-error').length ? res.err.metadata
        : res.initial?.get('x-ferry-error').length ? res.initial : null;
      assert.ok(where, `no x-ferry-error in the initial or trailing metadata: ${JSON.stringify(res.err.metadata.getMap())}`);
      assert.equal(where.get('x-ferry-error')[0], ferryError);
      assert.equal(res.initial, null, 'not trailers-only: initial metadata came separately');
    }

    test('unknown service (:authority no-such-service): UNIMPLEMENTED with x-ferry-error UNKNOWN_SERVICE', async () => {
      const unknown = client('no-such-service');
      const res = await unary(unknown, { message: 'hi' }, tagged(randomUUID()));
      assertFerryGrpcError(res, grpc.status.UNIMPLEMENTED, 'UNKNOWN_SERVICE');
      // streaming calls too
      const r = await collect(unknown.ServerStream({ message: 'x', count: 2 }, tagged(randomUUID()), deadline()));
      assert.equal(r.status.code, grpc.status.UNIMPLEMENTED, `ServerStream got ${statusName(r.status.code)}`);
      assert.equal(r.status.metadata.get('x-ferry-error')[0], 'UNKNOWN_SERVICE');
      assert.equal(r.messages.length, 0);
    });

    test('a service whose endpoint is a dead port: UNAVAILABLE with x-ferry-error SERVICE_UNAVAILABLE', async () => {
      const dead = client('dead-grpc');
      const res = await unary(dead, { message: 'hi' }, tagged(randomUUID()));
      assertFerryGrpcError(res, grpc.status.UNAVAILABLE, 'SERVICE_UNAVAILABLE');
      assert.ok(/dead-grpc|connect|refused/i.test(res.err.details), `grpc-message names nothing: ${res.err.details}`);
      const b = await collect(dead.Bidi(tagged(randomUUID()), deadline()));
      assert.equal(b.status.code, grpc.status.UNAVAILABLE, `Bidi got ${statusName(b.status.code)} ${b.status.details}`);
      assert.equal(b.status.metadata.get('x-ferry-error')[0], 'SERVICE_UNAVAILABLE');
    });
  });

  describe('mTLS upstream (service echo-tls, protocol auto: ALPN h2)', () => {
    let echoTls;
    before(() => { echoTls = client('echo-tls'); });

    test('unary over mTLS: the server saw ferry\'s client certificate', async () => {
      const tag = randomUUID();
      const res = await unary(echoTls, { message: 'secure hello' }, tagged(tag, { 'x-e2e-echo': tag }));
      assertOk(res, 'Unary over TLS');
      assert.equal(res.reply.message, 'secure hello');
      assert.equal(res.initial?.get('x-e2e-initial')[0], `initial:${tag}`);
      assert.equal(res.status.metadata.get('x-e2e-trailer')[0], `trailer:${tag}`);
      const seen = tls.callsTagged(tag);
      assert.equal(seen.length, 1);
      assert.equal(seen[0].auth?.transportSecurityType, 'ssl');
      assert.equal(seen[0].auth?.sslPeerCertificate?.subject?.CN, 'app', 'the server did not see ferry\'s client cert');
      assert.equal(seen[0].authority, 'backend', ':authority upstream is the service\'s server_name');
    });

    test(`bidi over mTLS: ping-pong, ${PING_PONG_ROUNDS} rounds`, async () => {
      const tag = randomUUID();
      const { pongs, status } = await pingPong(echoTls, PING_PONG_ROUNDS, tagged(tag));
      assert.equal(status.code, grpc.status.OK, `status ${statusName(status.code)} ${status.details}`);
      assert.deepEqual(pongs.map((p) => p.message), Array.from({ length: PING_PONG_ROUNDS }, (_, i) => `pong:ping-${i}`));
      assert.equal(tls.callsTagged(tag).length, 1);
    });

    test("the server's error over mTLS passes unchanged", async () => {
      const res = await unary(echoTls, { message: 'w-7', fail: 'NOT_FOUND' }, tagged(randomUUID()));
      assert.equal(res.err?.code, grpc.status.NOT_FOUND, `got ${res.err && statusName(res.err.code)}`);
      assert.equal(res.err.details, 'widget w-7 not found: ünïcode, 100% "quoted"');
      assert.equal(res.err.metadata.get('x-e2e-error-reason')[0], 'no-such-widget');
    });
  });
});
