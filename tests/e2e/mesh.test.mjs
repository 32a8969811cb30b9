// Two sidecars as a mesh (SPEC §1, §3 listeners.inbound, §5 inbound headers):
//
//   app A (axios) ─plain─▶ ferry A outbound ─mTLS─▶ ferry B inbound ─plain─▶ app B
//
// ferry A owns service `order-service` (endpoint = ferry B's inbound address,
// client cert with URI SAN spiffe://e2e/app, key from MESH_KEY); ferry B
// checks the peer certificate against allowed_peers and the key against
// keys_env, then hands the request to app B, a plain-HTTP Node server on
// loopback that records what it received.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import http from 'node:http';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import axios from 'axios';
import {
  LOOPBACK, REQUEST_TIMEOUT_MS, TRACEPARENT_RE, UUID4_RE, describeExit, freePort, makePKI, sleep,
  startFerry, tlsBlock,
} from './helpers.mjs';

const PEER_ID = 'spiffe://e2e/app';   // the URI SAN of makePKI()'s client certificate
const VIA_MESH_RE = /^1\.1 ferry-([0-9a-f]{8})-out, 1\.1 ferry-([0-9a-f]{8})-in$/;
const LOG_WAIT_MS = 3000;             // access log lines reach their file within 1 s (§9)

/** All values of a header, in order, from Node's rawHeaders. */
function rawValues(rawHeaders, name) {
  const out = [];
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i].toLowerCase() === name) out.push(rawHeaders[i + 1]);
  }
  return out;
}

/** App B: plain HTTP on loopback, records every request, answers a JSON echo. */
async function startAppB() {
  const state = { requests: [] };
  const sockets = new Set();
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = Buffer.concat(chunks).toString('utf8');
    const record = {
      method: req.method,
      url: req.url,
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      body,
      remoteAddress: req.socket.remoteAddress,
    };
    state.requests.push(record);
    const out = JSON.stringify({ app: 'app-b', method: req.method, url: req.url, body });
    res.writeHead(200, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(out),
      'x-app': 'app-b',
    });
    res.end(out);
  });
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  server.listen(0, LOOPBACK);
  await once(server, 'listening');
  state.address = `${LOOPBACK}:${server.address().port}`;
  state.close = async () => {
    const closed = new Promise((resolve) => server.close(resolve));
    for (const s of sockets) s.destroy();
    await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
  };
  return state;
}

/**
 * One HTTP/1.1 request straight to ferry B's inbound listener over mTLS with
 * ferry A's client certificate (what ferry A would send), Connection: close;
 * resolves {status, headers (lower-case), body}.
 */
function directToInbound(pki, port, head) {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({
      host: LOOPBACK, port, servername: 'backend',
      ca: fs.readFileSync(pki.ca.cert),
      cert: fs.readFileSync(pki.client.cert),
      key: fs.readFileSync(pki.client.key),
    });
    const chunks = [];
    const timer = setTimeout(() => sock.destroy(new Error('direct inbound request timed out')), REQUEST_TIMEOUT_MS);
    sock.on('secureConnect', () => sock.write(head));
    sock.on('data', (d) => chunks.push(d));
    sock.on('error', (e) => { clearTimeout(timer); reject(e); });
    sock.on('end', () => {
      clearTimeout(timer);
      sock.destroy();
      const raw = Buffer.concat(chunks).toString('utf8');
      const end = raw.indexOf('\r\n\r\n');
      if (end < 0) { reject(new Error(`no response head: ${JSON.stringify(raw)}`)); return; }
      const lines = raw.slice(0, end).split('\r\n');
      const headers = {};
      for (const line of lines.slice(1)) {
        const i = line.indexOf(':');
        headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      let body = raw.slice(end + 4);
      if (headers['content-length'] !== undefined) body = body.slice(0, Number(headers['content-length']));
      resolve({ status: Number(lines[0].split(' ')[1]), headers, body });
    });
  });
}

/** Poll a ferry's access log until `pred` matches a line (or give up). */
// the lines of FERRY's access log matching PRED, once there are at least
// MIN of them (each worker flushes its own lines: they arrive apart)
async function waitLogLine(ferry, pred, min = 1) {
  const deadline = Date.now() + LOG_WAIT_MS;
  for (;;) {
    const hits = ferry.accessLog().filter(pred);
    if (hits.length >= min || Date.now() > deadline) return hits;
    await sleep(50);
  }
}

describe('mesh: app A → ferry A (outbound) → mTLS → ferry B (inbound) → app B', () => {
  let pki;
  let appB;
  let ferryA;
  let ferryB;
  let client;       // app A's order-service client: baseURL = ferry A's outbound port
  const key = `mesh-key-${randomUUID()}`;
  const staleKey = `mesh-stale-${randomUUID()}`;

  before(async () => {
    pki = makePKI();
    appB = await startAppB();
    const inboundPort = await freePort();
    ferryB = await startFerry({
      env: { MESH_KEY: key },
      services: {},
      listeners: {
        inbound: {
          address: `${LOOPBACK}:${inboundPort}`,
          tls: {
            cert: pki.server.cert,
            key: pki.server.key,
            client_ca: pki.ca.cert,
            allowed_peers: [PEER_ID],
          },
          auth: { keys_env: ['MESH_KEY'] },
          local_app: appB.address,
        },
      },
    });
    ferryA = await startFerry({
      env: { MESH_KEY: key, MESH_STALE_KEY: staleKey },
      services: {
        'order-service': {
          endpoints: [ferryB.inboundAddress],
          tls: tlsBlock(pki),
          auth: { key_env: 'MESH_KEY' },
        },
        // ferry A with a key ferry B does not accept (say, before a rotation reached it)
        'order-service-stale': {
          endpoints: [ferryB.inboundAddress],
          tls: tlsBlock(pki),
          auth: { key_env: 'MESH_STALE_KEY' },
        },
      },
    });
    client = axios.create({
      baseURL: ferryA.outboundURL,
      timeout: REQUEST_TIMEOUT_MS,
      proxy: false,
      headers: { Host: 'order-service' },
    });
  });

  after(async () => {
    http.globalAgent.destroy();   // app A's idle keep-alive connections
    const problems = [];
    // app A's sidecar goes first (its pooled mTLS connections to B close), then B
    for (const [name, f] of [['ferry A', ferryA], ['ferry B', ferryB]]) {
      if (!f) continue;
      const exit = await f.stop();
      if (exit.killed) problems.push(`${name} did not exit within its drain budget\n${describeExit(exit, f)}`);
      else if (exit.signal !== null) problems.push(`${name} died by a signal\n${describeExit(exit, f)}`);
      else if (exit.code !== 0) problems.push(`${name} exited non-zero after SIGTERM\n${describeExit(exit, f)}`);
    }
    await appB?.close();
    ferryA?.cleanup();
    ferryB?.cleanup();
    pki?.cleanup();
    assert.deepEqual(problems, []);
  });

  /** The one request app B received carrying this tag. */
  function seenWith(tag) {
    const hits = appB.requests.filter((r) => r.headers['x-e2e-tag'] === tag);
    assert.equal(hits.length, 1, `app B received ${hits.length} requests tagged ${tag}`);
    return hits[0];
  }

  /** What ferry B's inbound rules (§5) promise app B, for every request. */
  function assertInboundHeaders(seen) {
    const raw = seen.rawHeaders;
    assert.deepEqual(rawValues(raw, 'x-ferry-peer'), [PEER_ID], 'x-ferry-peer is the verified identity');
    assert.deepEqual(rawValues(raw, 'x-service-auth'), [], 'the service key reached app B');
    assert.ok(!JSON.stringify(raw).includes(key), 'the service key appears in a header app B received');
    assert.deepEqual(rawValues(raw, 'x-forwarded-proto'), ['https']);
    const xff = rawValues(raw, 'x-forwarded-for').join(', ');
    assert.match(xff, /(^|, )127\.0\.0\.1$/, `x-forwarded-for ${JSON.stringify(xff)} lacks ferry A's address`);
    const via = rawValues(raw, 'via').join(', ');
    const m = via.match(VIA_MESH_RE);
    assert.ok(m, `via ${JSON.stringify(via)} is not "1.1 ferry-XXXXXXXX-out, 1.1 ferry-XXXXXXXX-in"`);
    assert.notEqual(m[1], m[2], 'ferry A and ferry B drew the same via token');
    assert.equal(rawValues(raw, 'x-correlation-id').length, 1);
    assert.equal(rawValues(raw, 'x-request-id').length, 1);
    assert.match(seen.headers.traceparent ?? '', TRACEPARENT_RE);
    assert.equal(seen.remoteAddress, LOOPBACK, 'ferry B reaches app B on loopback');
    return { viaOut: m[1], viaIn: m[2] };
  }

  test('GET with an app correlation id: 200 end to end; app B sees the peer identity, no key, https, the ids', async () => {
    const tag = randomUUID();
    const corr = `checkout:${Date.now()}.mesh_1`;
    const res = await client.get('/api/orders/42?expand=items&q=a+b', {
      headers: { 'x-correlation-id': corr, 'x-e2e-tag': tag },
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers['x-app'], 'app-b');
    assert.deepEqual(res.data, { app: 'app-b', method: 'GET', url: '/api/orders/42?expand=items&q=a+b', body: '' });
    assert.equal(res.headers['x-ferry-error'], undefined);

    const seen = seenWith(tag);
    assert.equal(seen.method, 'GET');
    assert.equal(seen.url, '/api/orders/42?expand=items&q=a+b', 'the target crosses both hops byte for byte');
    assertInboundHeaders(seen);
    // the app's correlation id is kept by both ferries; the request id ferry A made travels on
    assert.equal(seen.headers['x-correlation-id'], corr);
    assert.match(seen.headers['x-request-id'] ?? '', UUID4_RE);
    assert.equal(res.headers['x-correlation-id'], corr);
    assert.equal(res.headers['x-request-id'], seen.headers['x-request-id']);
  });

  test('GET without a correlation id: one is generated, app B and app A see the same value', async () => {
    const tag = randomUUID();
    const res = await client.get('/api/orders', { headers: { 'x-e2e-tag': tag } });
    assert.equal(res.status, 200);
    const seen = seenWith(tag);
    assertInboundHeaders(seen);
    const corr = seen.headers['x-correlation-id'];
    assert.match(corr ?? '', UUID4_RE);
    assert.equal(res.headers['x-correlation-id'], corr);
    assert.equal(res.headers['x-request-id'], seen.headers['x-request-id']);
    assert.notEqual(corr, seen.headers['x-request-id']);
  });

  test('POST with a JSON body: body intact at app B, 200 with app B\'s answer', async () => {
    const tag = randomUUID();
    const corr = 'order-create-mesh-7';
    const body = { orderId: 42, items: [{ sku: 'A-1', qty: 2 }, { sku: 'ü✓', qty: 1 }], note: 'a "quoted" note' };
    const res = await client.post('/api/orders', body, {
      headers: { 'Content-Type': 'application/json', 'x-correlation-id': corr, 'x-e2e-tag': tag },
    });
    assert.equal(res.status, 200);
    assert.equal(res.data.app, 'app-b');
    assert.deepEqual(JSON.parse(res.data.body), body);

    const seen = seenWith(tag);
    assert.equal(seen.method, 'POST');
    assert.equal(seen.url, '/api/orders');
    assert.equal(seen.body, JSON.stringify(body));
    assert.match(seen.headers['content-type'] ?? '', /^application\/json/);
    assert.equal(Number(seen.headers['content-length']), Buffer.byteLength(JSON.stringify(body)));
    assertInboundHeaders(seen);
    assert.equal(seen.headers['x-correlation-id'], corr);
    assert.equal(res.headers['x-correlation-id'], corr);
  });

  test('several requests in a row (GET and POST): all 200, same via tokens, distinct generated ids', async () => {
    const tokens = new Set();
    const corrs = new Set();
    for (let i = 0; i < 6; i++) {
      const tag = randomUUID();
      const res = i % 2
        ? await client.post(`/api/orders/${i}/lines`, { line: i }, { headers: { 'x-e2e-tag': tag } })
        : await client.get(`/api/orders/${i}`, { headers: { 'x-e2e-tag': tag } });
      assert.equal(res.status, 200, `request ${i}`);
      const seen = seenWith(tag);
      if (i % 2) assert.deepEqual(JSON.parse(seen.body), { line: i });
      const { viaOut, viaIn } = assertInboundHeaders(seen);
      tokens.add(`${viaOut}/${viaIn}`);
      corrs.add(seen.headers['x-correlation-id']);
      assert.equal(res.headers['x-correlation-id'], seen.headers['x-correlation-id']);
    }
    assert.equal(tokens.size, 1, `via tokens change between requests: ${[...tokens]}`);
    assert.equal(corrs.size, 6, 'generated correlation ids repeat');
  });

  test('ferry A reaches ferry B over HTTP/2 by default (protocol auto, ALPN h2; SPEC §12)', async () => {
    const res = await client.get('/api/orders/h2', { headers: { 'x-e2e-tag': randomUUID() } });
    assert.equal(res.status, 200);
    const services = JSON.parse((await ferryA.admin('/services')).body).services;
    const svc = services.find((s) => s.name === 'order-service');
    assert.ok(svc, `no order-service in ferry A's /services: ${JSON.stringify(services)}`);
    assert.equal(svc.endpoints.length, 1);
    assert.equal(svc.endpoints[0].address, ferryB.inboundAddress);
    assert.equal(svc.endpoints[0].protocol, 'h2', `ferry A speaks ${svc.endpoints[0].protocol} to ferry B`);
    // app B still gets HTTP/1.1 (local_app_protocol http1, the default)
    assert.equal(JSON.parse((await ferryB.admin('/config')).body).listeners.inbound.local_app_protocol, 'http1');
  });

  test('headers app A tries to spoof are replaced: x-ferry-peer by the verified identity, x-service-auth by the key', async () => {
    const tag = randomUUID();
    const res = await client.get('/api/orders/spoof', {
      headers: {
        'X-Ferry-Peer': 'spiffe://evil/admin',
        'x-service-auth': 'stale-key-from-app-env',
        'X-Forwarded-For': '10.1.2.3',
        'X-Forwarded-Proto': 'http',
        'x-e2e-tag': tag,
      },
    });
    assert.equal(res.status, 200);
    const seen = seenWith(tag);
    assertInboundHeaders(seen);
    assert.ok(!JSON.stringify(seen.rawHeaders).includes('spiffe://evil/admin'));
    assert.ok(!JSON.stringify(seen.rawHeaders).includes('stale-key-from-app-env'));
    assert.equal(rawValues(seen.rawHeaders, 'x-forwarded-for').join(', '), '10.1.2.3, 127.0.0.1');
  });

  test('ferry A with a wrong key: app A gets ferry B\'s 403 INVALID_SERVICE_AUTH unchanged; app B sees nothing', async () => {
    const before = appB.requests.length;
    const corr = 'mesh-stale-key-1';
    const res = await client.get('/api/orders/1', {
      headers: { Host: 'order-service-stale', 'x-correlation-id': corr },
      validateStatus: () => true,
    });
    assert.equal(res.status, 403, `status (body ${JSON.stringify(res.data)})`);
    assert.match(String(res.headers['content-type']), /^application\/json\b/i);
    assert.equal(res.headers['x-ferry-error'], 'INVALID_SERVICE_AUTH');
    assert.equal(typeof res.data, 'object', `body is not JSON: ${res.data}`);
    assert.deepEqual(Object.keys(res.data).sort(), ['error', 'success']);
    assert.equal(res.data.success, false);
    assert.equal(res.data.error?.code, 'INVALID_SERVICE_AUTH');
    assert.equal(typeof res.data.error.message, 'string');
    assert.ok(res.data.error.message.length > 0, 'empty error message');
    for (const secret of [key, staleKey]) {
      assert.ok(!JSON.stringify(res.data).includes(secret), 'the 403 leaks a key');
      assert.ok(!JSON.stringify(res.headers).includes(secret), 'the 403 headers leak a key');
    }
    assert.equal(res.headers['x-correlation-id'], corr);
    assert.equal(appB.requests.length, before, 'a request with a wrong key reached app B');

    // it is ferry B's answer, relayed as it was: the same request straight to
    // ferry B's inbound gets the same status, error header and body
    const direct = await directToInbound(pki, ferryB.inboundPort,
      'GET /api/orders/1 HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n' +
      `x-service-auth: ${staleKey}\r\nx-correlation-id: ${corr}\r\n\r\n`);
    assert.equal(direct.status, 403);
    assert.equal(direct.headers['x-ferry-error'], 'INVALID_SERVICE_AUTH');
    assert.deepEqual(res.data, JSON.parse(direct.body), 'ferry A changed ferry B\'s 403 body');
    assert.equal(appB.requests.length, before);

    // both access logs agree: ferry B refused it once (no retry by ferry A), ferry A relayed a 403
    const inB = await waitLogLine(ferryB, (l) => l.direction === 'inbound' && l.correlation_id === corr, 2);
    assert.equal(inB.length, 2, `ferry B logged ${JSON.stringify(inB)}`);   // via ferry A, then direct
    for (const l of inB) {
      assert.equal(l.status, 403);
      assert.equal(l.error, 'INVALID_SERVICE_AUTH');
    }
    const outA = await waitLogLine(ferryA, (l) => l.direction === 'outbound' && l.correlation_id === corr);
    assert.equal(outA.length, 1, `ferry A logged ${JSON.stringify(outA)}`);
    assert.equal(outA[0].status, 403);
    assert.equal(outA[0].service, 'order-service-stale');
    assert.equal(outA[0].upstream, ferryB.inboundAddress);
    assert.equal(outA[0].attempts, 1, 'ferry A retried a 403');

    // and the right key still works on the same mesh
    const ok = await client.get('/api/orders/1');
    assert.equal(ok.status, 200);
    assert.equal(appB.requests.length, before + 1);
  });
});
