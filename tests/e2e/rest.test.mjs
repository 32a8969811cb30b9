// axios, written the way service teams write it today (seed.txt) minus the
// things ferry now owns: no x-service-auth, no correlation-id interceptor,
// no TLS. Every test asserts on what reached the mTLS upstream.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import axios from 'axios';
import {
  REQUEST_TIMEOUT_MS, TRACEPARENT_RE, UUID4_RE, VIA_OUT_RE, describeExit, rawConnection, startStack,
} from './helpers.mjs';

describe('axios through ferry (REST)', () => {
  let s;
  let client;   // the app's user-service client: baseURL = ferry's outbound port

  before(async () => {
    s = await startStack();
    client = axios.create({
      baseURL: s.ferry.outboundURL,
      timeout: REQUEST_TIMEOUT_MS,
      proxy: false,
      headers: { Host: 'user-service', 'Content-Type': 'application/json' },
    });
  });

  after(async () => {
    if (!s) return;
    http.globalAgent.destroy();   // the app's idle keep-alive connections: ferry need not wait for them
    const exit = await s.stop();
    try {
      assert.equal(exit.killed, false, `ferry did not exit within its drain budget\n${describeExit(exit, s.ferry)}`);
      assert.equal(exit.signal, null, `ferry died by a signal\n${describeExit(exit, s.ferry)}`);
      assert.equal(exit.code, 0, `ferry exited non-zero after SIGTERM\n${describeExit(exit, s.ferry)}`);
    } finally {
      s.cleanup();
    }
  });

  /** The one request the upstream received carrying this tag. */
  function seenWith(upstream, tag) {
    const hits = upstream.requests.filter((r) => r.headers['x-e2e-tag'] === tag);
    assert.equal(hits.length, 1, `upstream ${upstream.name} received ${hits.length} requests tagged ${tag}`);
    return hits[0];
  }

  function assertFerryError(err, status, code, { correlationId, messageIncludes } = {}) {
    assert.ok(err.response, `expected an HTTP response, got ${err.code || err.message}`);
    const r = err.response;
    assert.equal(r.status, status, `status (body ${JSON.stringify(r.data)})`);
    assert.match(String(r.headers['content-type']), /^application\/json\b/i);
    assert.equal(r.headers['x-ferry-error'], code);
    assert.equal(typeof r.data, 'object', `body is not JSON: ${r.data}`);
    assert.equal(r.data.success, false);
    assert.equal(r.data.error?.code, code);
    assert.equal(typeof r.data.error.message, 'string');
    assert.ok(r.data.error.message.length > 0, 'empty error message');
    const corr = r.headers['x-correlation-id'];
    assert.ok(corr, 'ferry error without x-correlation-id');
    if (correlationId) assert.equal(corr, correlationId);
    else assert.match(corr, UUID4_RE);
    if (messageIncludes) {
      assert.ok(r.data.error.message.includes(messageIncludes),
        `message ${JSON.stringify(r.data.error.message)} does not name ${messageIncludes}`);
    }
    assert.ok(!r.data.error.message.includes(s.key), 'error message leaks the service key');
    return r.data;
  }

  test('GET with Host: user-service gets the upstream JSON; ferry added key, ids, trace, client cert', async () => {
    const tag = randomUUID();
    const res = await client.get('/api/users/123?fields=id%2Cemail&q=a+b', { headers: { 'x-e2e-tag': tag } });

    assert.equal(res.status, 200);
    assert.equal(res.headers['x-upstream'], 'user-upstream');
    assert.equal(res.data.upstream, 'user-upstream');
    assert.equal(res.data.method, 'GET');
    assert.equal(res.data.url, '/api/users/123?fields=id%2Cemail&q=a+b');

    const seen = seenWith(s.up, tag);
    assert.equal(seen.method, 'GET');
    assert.equal(seen.url, '/api/users/123?fields=id%2Cemail&q=a+b', 'the target passes byte for byte');
    // the app never sent a key: ferry set the one from E2E_KEY
    assert.equal(seen.headers['x-service-auth'], s.key);
    assert.equal(seen.rawHeaders.filter((h, i) => i % 2 === 0 && h.toLowerCase() === 'x-service-auth').length, 1);
    // fresh ids
    assert.match(seen.headers['x-correlation-id'] ?? '', UUID4_RE);
    assert.match(seen.headers['x-request-id'] ?? '', UUID4_RE);
    assert.notEqual(seen.headers['x-correlation-id'], seen.headers['x-request-id']);
    assert.match(seen.headers.traceparent ?? '', TRACEPARENT_RE);
    assert.match(seen.headers.traceparent, /-01$/, 'a new traceparent is sampled (flags 01)');
    assert.doesNotMatch(seen.headers.traceparent, /^00-0{32}-|-0{16}-/, 'all-zero trace-id or parent-id');
    // Host is the service's server_name, SNI too, and ferry's via token
    assert.equal(seen.headers.host, 'backend');
    assert.equal(seen.servername, 'backend');
    assert.match(seen.headers.via ?? '', VIA_OUT_RE);
    // mTLS: the upstream verified ferry's client certificate
    assert.ok(seen.peer, 'no client certificate reached the upstream');
    assert.equal(seen.peer.authorized, true);
    assert.equal(seen.peer.subjectCN, 'app');
    assert.match(seen.peer.subjectaltname, /URI:spiffe:\/\/e2e\/app/);
    // app headers pass through
    assert.equal(seen.headers['x-e2e-tag'], tag);
    // the app gets the ids that crossed the wire
    assert.equal(res.headers['x-correlation-id'], seen.headers['x-correlation-id']);
    assert.equal(res.headers['x-request-id'], seen.headers['x-request-id']);
  });

  test('two requests get different generated correlation ids', async () => {
    const tags = [randomUUID(), randomUUID()];
    for (const tag of tags) await client.get('/api/ping', { headers: { 'x-e2e-tag': tag } });
    const [a, b] = tags.map((t) => seenWith(s.up, t));
    assert.notEqual(a.headers['x-correlation-id'], b.headers['x-correlation-id']);
    assert.notEqual(a.headers['x-request-id'], b.headers['x-request-id']);
    assert.notEqual(a.headers.traceparent.split('-')[1], b.headers.traceparent.split('-')[1]);
  });

  test('axios proxy option (absolute-form http://user-service/api/users) is routed to user-service', async () => {
    const tag = randomUUID();
    const res = await axios.get('http://user-service/api/users', {
      timeout: REQUEST_TIMEOUT_MS,
      proxy: {
        protocol: 'http', host: '127.0.0.1', port: s.ferry.outboundPort,
        auth: { username: 'app', password: 'proxy-secret' },
      },
      headers: { 'x-e2e-tag': tag },
    });
    assert.equal(res.status, 200);
    assert.equal(res.data.upstream, 'user-upstream');

    const seen = seenWith(s.up, tag);
    assert.equal(seen.url, '/api/users', 'upstream must see origin-form');
    assert.equal(seen.headers.host, 'backend');
    assert.equal(seen.headers['x-service-auth'], s.key);
    assert.match(seen.headers['x-correlation-id'] ?? '', UUID4_RE);
    // Proxy-Authorization is hop-by-hop: it is for ferry, never for the service
    assert.equal(seen.headers['proxy-authorization'], undefined);
    assert.ok(!JSON.stringify(seen.rawHeaders).includes('cHJveHktc2VjcmV0'), 'proxy credentials leaked upstream');
    assert.equal(res.headers['x-correlation-id'], seen.headers['x-correlation-id']);
  });

  test('HTTP_PROXY=http://127.0.0.1:<outbound> works with a plain axios call', async () => {
    const tag = randomUUID();
    const saved = { HTTP_PROXY: process.env.HTTP_PROXY, NO_PROXY: process.env.NO_PROXY };
    process.env.HTTP_PROXY = s.ferry.outboundURL;
    delete process.env.NO_PROXY;
    let res;
    try {
      res = await axios.get('http://USER-SERVICE:8080/api/users?page=2', {
        timeout: REQUEST_TIMEOUT_MS, headers: { 'x-e2e-tag': tag },
      });
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k]; else process.env[k] = v;
      }
    }
    assert.equal(res.status, 200);
    const seen = seenWith(s.up, tag);
    assert.equal(seen.url, '/api/users?page=2');
    assert.equal(seen.headers.host, 'backend');
    assert.equal(seen.headers['x-service-auth'], s.key);
  });

  test('POST with a JSON body and an app-supplied x-correlation-id: kept end to end', async () => {
    const tag = randomUUID();
    const corr = `order-checkout:${Date.now()}.e2e_1`;
    const body = { name: 'Grace Hopper', email: 'grace@example.com', tags: ['a', 'ü', '✓'], n: 42 };
    const res = await client.post('/api/users', body, {
      headers: { 'x-correlation-id': corr, 'x-e2e-tag': tag },
    });
    assert.equal(res.status, 200);

    const seen = seenWith(s.up, tag);
    assert.equal(seen.method, 'POST');
    assert.equal(seen.url, '/api/users');
    assert.deepEqual(JSON.parse(seen.body), body);
    assert.match(seen.headers['content-type'], /^application\/json/);
    assert.equal(Number(seen.headers['content-length']), Buffer.byteLength(JSON.stringify(body)));
    assert.equal(seen.headers['x-correlation-id'], corr);
    assert.match(seen.headers['x-request-id'] ?? '', UUID4_RE);
    assert.equal(seen.headers['x-service-auth'], s.key);
    assert.equal(res.headers['x-correlation-id'], corr);
    assert.equal(res.headers['x-request-id'], seen.headers['x-request-id']);
    assert.deepEqual(JSON.parse(res.data.body), body);
  });

  test('the seed pattern (app sends its own x-service-auth) still gets the configured key', async () => {
    const tag = randomUUID();
    const seedClient = axios.create({
      baseURL: s.ferry.outboundURL,
      timeout: REQUEST_TIMEOUT_MS,
      proxy: false,
      headers: { Host: 'user-service', 'x-service-auth': 'stale-key-from-app-env' },
    });
    await seedClient.get('/api/users', { headers: { 'x-e2e-tag': tag } });
    const seen = seenWith(s.up, tag);
    assert.equal(seen.headers['x-service-auth'], s.key);
    assert.ok(!JSON.stringify(seen.rawHeaders).includes('stale-key-from-app-env'));
  });

  test('a valid traceparent and app x-request-id pass through unchanged', async () => {
    const tag = randomUUID();
    const tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const res = await client.get('/api/trace', {
      headers: { traceparent: tp, tracestate: 'vendor=abc', 'x-request-id': 'req-123', 'x-e2e-tag': tag },
    });
    const seen = seenWith(s.up, tag);
    assert.equal(seen.headers.traceparent, tp);
    assert.equal(seen.headers.tracestate, 'vendor=abc');
    assert.equal(seen.headers['x-request-id'], 'req-123');
    assert.equal(res.headers['x-request-id'], 'req-123');
  });

  test('ids the upstream returns are replaced by the ones that crossed the wire', async () => {
    const tag = randomUUID();
    const res = await client.get('/api/users', { params: { ids: 'upstream' }, headers: { 'x-e2e-tag': tag } });
    const seen = seenWith(s.up, tag);
    assert.equal(res.headers['x-correlation-id'], seen.headers['x-correlation-id']);
    assert.equal(res.headers['x-request-id'], seen.headers['x-request-id']);
    assert.notEqual(res.headers['x-correlation-id'], 'set-by-upstream');
  });

  test('an upstream 4xx/5xx reaches the app as the service sent it (not a ferry error)', async () => {
    const tag = randomUUID();
    const err = await client.get('/api/users/404', { params: { status: 404 }, headers: { 'x-e2e-tag': tag } })
      .then(() => assert.fail('axios should throw on 404'), (e) => e);
    assert.equal(err.response?.status, 404);
    assert.equal(err.response.headers['x-ferry-error'], undefined);
    assert.equal(err.response.data.upstream, 'user-upstream');
    seenWith(s.up, tag);
  });

  test('unknown service: 404 UNKNOWN_SERVICE JSON with x-ferry-error; nothing reaches any upstream', async () => {
    // fresh connections: what happens to a kept-alive one after a 404 is the next test's business
    const fresh = () => new http.Agent({ keepAlive: false });
    const before = s.upstreamRequestCount();
    const err = await client.get('/api/users', { headers: { Host: 'no-such-service' }, httpAgent: fresh() })
      .then(() => assert.fail('axios should throw on 404'), (e) => e);
    const body = assertFerryError(err, 404, 'UNKNOWN_SERVICE');
    assert.deepEqual(Object.keys(body).sort(), ['error', 'success']);
    assert.equal(s.upstreamRequestCount(), before);

    // and through the proxy option (absolute-form), with the app's correlation id
    const err2 = await axios.get('http://billing-service/api/invoices', {
      timeout: REQUEST_TIMEOUT_MS,
      httpAgent: fresh(),
      proxy: { protocol: 'http', host: '127.0.0.1', port: s.ferry.outboundPort },
      headers: { 'x-correlation-id': 'corr-unknown-1' },
    }).then(() => assert.fail('axios should throw on 404'), (e) => e);
    assertFerryError(err2, 404, 'UNKNOWN_SERVICE', { correlationId: 'corr-unknown-1' });
    assert.equal(s.upstreamRequestCount(), before);
  });

  test('keep-alive after a 404 UNKNOWN_SERVICE: the connection keeps serving, or the 404 said Connection: close', async () => {
    // on the wire: the 404 must not advertise keep-alive and then close
    const c = await rawConnection(s.ferry.outboundPort);
    try {
      c.write('GET /api/a HTTP/1.1\r\nHost: no-such-service\r\n\r\n');
      const r404 = await c.response();
      assert.ok(r404, 'no response to the first request');
      assert.equal(r404.status, 404);
      const saysClose = /(^|,)\s*close\s*(,|$)/i.test(r404.headers.connection ?? '');
      if (!saysClose) {
        assert.equal(await c.closesWithin(300), false,
          `ferry closed the connection right after a 404 without "Connection: close" ` +
          `(it sent keep-alive: ${r404.headers['keep-alive']})`);
        c.write('GET /api/b HTTP/1.1\r\nHost: user-service\r\n\r\n');
        const r200 = await c.response();
        assert.ok(r200, 'the kept-alive connection gave no response to the next request');
        assert.equal(r200.status, 200);
      }
    } finally {
      c.close();
    }

    // what the app sees: Node's keep-alive agent (the default in Node 20),
    // one socket, the next request right after the 404
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const app = axios.create({
        baseURL: s.ferry.outboundURL, timeout: REQUEST_TIMEOUT_MS, proxy: false, httpAgent: agent,
      });
      const e = await app.get('/api/a', { headers: { Host: 'no-such-service' } }).then(() => null, (x) => x);
      assert.equal(e?.response?.status, 404);
      const ok = await app.get('/api/b', { headers: { Host: 'user-service' } })
        .catch((x) => assert.fail(`request after the 404 on a kept-alive connection failed: ${x.code || x.message}`));
      assert.equal(ok.status, 200);
    } finally {
      agent.destroy();
    }
  });

  test('dead endpoint (nothing listens): 503 SERVICE_UNAVAILABLE JSON naming the endpoint', async () => {
    const started = Date.now();
    const err = await client.get('/api/orders', {
      headers: { Host: 'dead-service', 'x-correlation-id': 'corr-dead-1' },
    }).then(() => assert.fail('axios should throw on 503'), (e) => e);
    assertFerryError(err, 503, 'SERVICE_UNAVAILABLE', {
      correlationId: 'corr-dead-1', messageIncludes: s.deadAddress,
    });
    assert.ok(Date.now() - started < REQUEST_TIMEOUT_MS, 'a refused connect must fail fast');
    // the live service is unaffected
    const ok = await client.get('/api/users');
    assert.equal(ok.status, 200);
  });
});
