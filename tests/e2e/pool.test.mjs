// Connection pooling: many concurrent axios requests over a keep-alive agent
// all succeed, each gets its own response, and ferry reuses a few mTLS
// connections to the upstream instead of opening one per request.

import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import axios from 'axios';
import { REQUEST_TIMEOUT_MS, describeExit, startStack } from './helpers.mjs';

const REQUESTS = 200;
const APP_SOCKETS = 16;   // the app's keep-alive agent: at most this many in flight

function metric(text, name, labels) {
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

describe('connection pooling', () => {
  let s;
  let agent;
  let client;

  before(async () => {
    s = await startStack();
    agent = new http.Agent({ keepAlive: true, maxSockets: APP_SOCKETS });
    client = axios.create({
      baseURL: s.ferry.outboundURL,
      timeout: REQUEST_TIMEOUT_MS,
      proxy: false,
      httpAgent: agent,
      headers: { Host: 'pool-service' },
    });
  });

  after(async () => {
    agent?.destroy();
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

  test(`${REQUESTS} concurrent requests all succeed over far fewer upstream TLS connections`, async () => {
    const tlsBefore = s.poolUp.tlsConnections;
    const ids = Array.from({ length: REQUESTS }, (_, i) => `pool-req-${i}`);
    const results = await Promise.allSettled(ids.map((rid, i) => client.post(
      `/api/items/${i}`, { i }, { params: { delay: 5 }, headers: { 'x-request-id': rid } },
    )));

    const failed = results.map((r, i) => [r, i]).filter(([r]) => r.status !== 'fulfilled' || r.value.status !== 200);
    assert.equal(failed.length, 0, `${failed.length} of ${REQUESTS} failed, first: ` +
      (failed.length ? (failed[0][0].reason?.response
        ? `${failed[0][0].reason.response.status} ${JSON.stringify(failed[0][0].reason.response.data)}`
        : String(failed[0][0].reason)) : ''));

    // each app request got its own response (no cross-talk on reused connections)
    results.forEach((r, i) => {
      const res = r.value;
      assert.equal(res.data.url, `/api/items/${i}?delay=5`);
      assert.deepEqual(JSON.parse(res.data.body), { i });
      assert.equal(res.data.headers['x-request-id'], ids[i]);
      assert.equal(res.headers['x-request-id'], ids[i]);
      assert.equal(res.data.headers['x-service-auth'], s.key);
      assert.equal(res.data.peer?.subjectCN, 'app');
    });
    const seen = s.poolUp.requests.filter((r) => r.headers['x-request-id']?.startsWith('pool-req-'));
    assert.equal(seen.length, REQUESTS, 'each request reached the upstream exactly once');
    const corrIds = new Set(seen.map((r) => r.headers['x-correlation-id']));
    assert.equal(corrIds.size, REQUESTS, 'every request got its own correlation id');

    const opened = s.poolUp.tlsConnections - tlsBefore;
    const conns = new Set(seen.map((r) => r.conn));
    assert.ok(opened >= 1);
    assert.ok(opened <= 2 * APP_SOCKETS,
      `upstream accepted ${opened} TLS connections for ${REQUESTS} requests ` +
      `(at most ${APP_SOCKETS} were in flight at once): no pooling`);
    assert.ok(conns.size <= opened);
    assert.ok(Math.max(...[...conns].map((c) => seen.filter((r) => r.conn === c).length)) > 1,
      'no upstream connection carried more than one request');
    assert.deepEqual(s.poolUp.tlsErrors, []);
  });

  test('ferry_upstream_connections_opened_total agrees with the TLS connections the upstream accepted', async () => {
    const res = await s.ferry.admin('/metrics');
    assert.equal(res.status, 200, `GET /metrics: ${res.status} ${res.body.slice(0, 200)}`);
    const opened = metric(res.body, 'ferry_upstream_connections_opened_total', { service: 'pool-service' });
    assert.equal(opened, s.poolUp.tlsConnections,
      'ferry_upstream_connections_opened_total{service="pool-service"} vs TLS connections the upstream accepted');
  });

  test('sequential requests after the burst reuse pooled connections (no new TLS connection)', async () => {
    const tlsBefore = s.poolUp.tlsConnections;
    const tcpBefore = s.poolUp.tcpConnections;
    for (let i = 0; i < 20; i++) {
      const res = await client.get('/api/seq', { params: { i } });
      assert.equal(res.status, 200);
      assert.equal(res.data.headers['x-service-auth'], s.key);
    }
    assert.equal(s.poolUp.tlsConnections - tlsBefore, 0, 'new upstream TLS connections for sequential requests');
    assert.equal(s.poolUp.tcpConnections - tcpBefore, 0);
  });
});
