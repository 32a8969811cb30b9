// Distributed tracing export (SPEC §13): ferry's spans reach an OTLP/HTTP
// collector written here, which decodes them with the official
// opentelemetry-proto definitions (tests/e2e/otlp, Apache-2.0) through
// protobufjs: what ferry's hand-written encoder sends must be what the
// .proto files say.
//
//   app A ─▶ ferry A (outbound, CLIENT span) ─mTLS─▶ ferry B (inbound, SERVER span) ─▶ app B
//                     └──────── OTLP/HTTP protobuf ──▶ collector ◀──┘

import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import axios from 'axios';
import protobuf from 'protobufjs';
import {
  LOOPBACK, REQUEST_TIMEOUT_MS, TRACEPARENT_RE, describeExit, freePort, makePKI, sleep,
  startFerry, startUpstream, tlsBlock,
} from './helpers.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PROTO_DIR = path.join(HERE, 'otlp');
const PEER_ID = 'spiffe://e2e/app';
const WAIT_MS = 5000;
const BATCH = { max_spans: 512, interval: '100ms' };

/** The ExportTraceServiceRequest type, from the official .proto files. */
function loadExportType() {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => path.join(PROTO_DIR, target);
  root.loadSync('opentelemetry/proto/collector/trace/v1/trace_service.proto', { keepCase: true });
  root.resolveAll();
  return root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest');
}
const ExportRequest = loadExportType();

const hex = (b) => (b && b.length ? Buffer.from(b).toString('hex') : '');

/** A span as the tests look at it: ids in hex, attributes as a plain map. */
function flatten(span, resource, scope) {
  const attrs = {};
  for (const kv of span.attributes ?? []) {
    const v = kv.value;
    attrs[kv.key] = v.string_value !== undefined ? v.string_value :
      v.int_value !== undefined ? Number(v.int_value) : v;
  }
  return {
    service: resource.attributes.find((a) => a.key === 'service.name')?.value.string_value,
    scope: scope?.name,
    traceId: hex(span.trace_id),
    spanId: hex(span.span_id),
    parentId: hex(span.parent_span_id),
    name: span.name,
    kind: span.kind,
    flags: span.flags ?? 0,
    start: BigInt(span.start_time_unix_nano),
    end: BigInt(span.end_time_unix_nano),
    attrs,
    events: (span.events ?? []).map((e) => ({
      name: e.name,
      time: BigInt(e.time_unix_nano),
      attrs: Object.fromEntries((e.attributes ?? []).map((kv) => [kv.key,
        kv.value.string_value ?? Number(kv.value.int_value)])),
    })),
    status: span.status ?? {},
  };
}

/** An OTLP/HTTP collector: POST /v1/traces, protobuf in, 200 (or `failWith`). */
async function startCollector() {
  const state = { posts: [], spans: [], failWith: 0 };
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = Buffer.concat(chunks);
    state.posts.push({ method: req.method, url: req.url, headers: req.headers, bytes: body.length });
    try {
      const msg = ExportRequest.toObject(ExportRequest.decode(body),
        { longs: String, enums: String, defaults: false });
      for (const rs of msg.resource_spans ?? []) {
        for (const ss of rs.scope_spans ?? []) {
          for (const sp of ss.spans ?? []) state.spans.push(flatten(sp, rs.resource, ss.scope));
        }
      }
    } catch (e) {
      state.decodeErrors = (state.decodeErrors ?? 0) + 1;
      state.lastError = e.message;
    }
    const status = state.failWith || 200;
    res.writeHead(status, { 'content-type': 'application/x-protobuf', 'content-length': 0 });
    res.end();
  });
  const sockets = new Set();
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  server.listen(0, LOOPBACK);
  await once(server, 'listening');
  state.url = `http://${LOOPBACK}:${server.address().port}/v1/traces`;
  state.close = async () => {
    const closed = new Promise((resolve) => server.close(resolve));
    for (const s of sockets) s.destroy();
    await Promise.race([closed, sleep(2000)]);
  };
  return state;
}

/** App B: records each request's headers, answers 200 (or ?status=N). */
async function startApp() {
  const state = { requests: [] };
  const server = http.createServer((req, res) => {
    state.requests.push({ url: req.url, headers: req.headers });
    const status = Number(new URL(req.url, 'http://x').searchParams.get('status') || 200);
    res.writeHead(status, { 'content-type': 'text/plain', 'content-length': 2 });
    res.end('ok');
  });
  const sockets = new Set();
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  server.listen(0, LOOPBACK);
  await once(server, 'listening');
  state.address = `${LOOPBACK}:${server.address().port}`;
  state.close = async () => {
    const closed = new Promise((resolve) => server.close(resolve));
    for (const s of sockets) s.destroy();
    await Promise.race([closed, sleep(2000)]);
  };
  return state;
}

async function waitFor(what, pred, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = pred();
    if (v) return v;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** One metric sample from /metrics (0 when absent). */
async function metric(ferry, series) {
  const m = await ferry.admin('/metrics');
  const line = m.body.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.split(' ')[1]) : 0;
}

async function stopClean(ferry, name) {
  const exit = await ferry.stop();
  assert.ok(!exit.killed && exit.signal === null && exit.code === 0,
    `${name} did not exit cleanly\n${describeExit(exit, ferry)}`);
  return exit;
}

function get(ferry, host, url, headers = {}) {
  return axios.get(url, {
    baseURL: ferry.outboundURL, timeout: REQUEST_TIMEOUT_MS, proxy: false,
    headers: { Host: host, ...headers }, validateStatus: () => true,
  });
}

describe('tracing: spans across two sidecars', () => {
  let pki, appB, collector, ferryA, ferryB;
  const key = `trace-key-${Date.now()}`;

  before(async () => {
    pki = makePKI();
    appB = await startApp();
    collector = await startCollector();
    const inboundPort = await freePort();
    ferryB = await startFerry({
      env: { MESH_KEY: key },
      services: {},
      listeners: {
        inbound: {
          address: `${LOOPBACK}:${inboundPort}`,
          tls: { cert: pki.server.cert, key: pki.server.key, client_ca: pki.ca.cert,
            allowed_peers: [PEER_ID] },
          auth: { keys_env: ['MESH_KEY'] },
          local_app: appB.address,
        },
      },
      // ratio 0: ferry B starts no trace itself, but obeys A's sampled flag
      tracing: { otlp: collector.url, service_name: 'app-b', sample_ratio: 0, batch: BATCH },
    });
    ferryA = await startFerry({
      env: { MESH_KEY: key },
      services: {
        'order-service': { endpoints: [ferryB.inboundAddress], tls: tlsBlock(pki),
          auth: { key_env: 'MESH_KEY' } },
      },
      tracing: { otlp: collector.url, service_name: 'app-a', sample_ratio: 1, batch: BATCH },
    });
  });

  after(async () => {
    http.globalAgent.destroy();
    if (ferryA) await stopClean(ferryA, 'ferry A');
    if (ferryB) await stopClean(ferryB, 'ferry B');
    await appB?.close();
    await collector?.close();
    ferryA?.cleanup();
    ferryB?.cleanup();
    pki?.cleanup();
  });

  test('a trace that starts at ferry A: CLIENT span, then SERVER span as its child', async () => {
    const res = await get(ferryA, 'order-service', '/orders/42?token=secret', { 'x-e2e-tag': 'one' });
    assert.equal(res.status, 200);
    const seen = appB.requests.find((r) => r.headers['x-e2e-tag'] === 'one');
    assert.match(seen.headers.traceparent, TRACEPARENT_RE);
    const [, traceId, parentAtB, flags] = seen.headers.traceparent.split('-');
    assert.equal(flags, '01', 'a trace ferry starts and samples carries flags 01');

    const spans = await waitFor('both spans', () => {
      const s = collector.spans.filter((x) => x.traceId === traceId);
      return s.length >= 2 ? s : null;
    });
    assert.equal(spans.length, 2);
    const client = spans.find((s) => s.kind === 'SPAN_KIND_CLIENT');
    const server = spans.find((s) => s.kind === 'SPAN_KIND_SERVER');
    assert.ok(client && server, JSON.stringify(spans.map((s) => s.kind)));
    assert.equal(collector.decodeErrors, undefined, collector.lastError);

    // parent/child: app B's parent is ferry B's SERVER span, whose parent is
    // ferry A's CLIENT span, which is the root (the trace started there)
    assert.equal(client.parentId, '');
    assert.equal(server.parentId, client.spanId);
    assert.equal(parentAtB, server.spanId);
    assert.notEqual(client.spanId, server.spanId);
    assert.ok(client.start <= server.start && server.end <= client.end,
      `SERVER [${server.start}, ${server.end}] within CLIENT [${client.start}, ${client.end}]`);
    assert.ok(client.end > client.start);

    assert.equal(client.service, 'app-a');
    assert.equal(server.service, 'app-b');
    assert.equal(client.scope, 'ferry');
    assert.equal(client.name, 'GET');
    assert.equal(client.flags & 0xff, 1);
    assert.equal(server.flags & 0x300, 0x300, 'SERVER: parent is remote');

    const [inHost, inPort] = ferryB.inboundAddress.split(':');
    assert.deepEqual(client.attrs, {
      'http.request.method': 'GET',
      'url.path': '/orders/42',
      'http.response.status_code': 200,
      'server.address': 'order-service',
      'network.peer.address': inHost,
      'network.peer.port': Number(inPort),
      'ferry.attempts': 1,
      'ferry.service': 'order-service',
    });
    assert.equal(server.attrs['http.request.method'], 'GET');
    assert.equal(server.attrs['url.path'], '/orders/42');
    assert.equal(server.attrs['http.response.status_code'], 200);
    assert.equal(server.attrs['server.address'], 'app-b');
    assert.equal(server.attrs['network.peer.address'], LOOPBACK);
    assert.equal(server.attrs['ferry.attempts'], 1);
    assert.equal(server.attrs['ferry.service'], 'local_app');
    assert.equal(server.attrs['ferry.peer'], PEER_ID);
    assert.equal(client.attrs['ferry.peer'], undefined, 'ferry.peer is on SERVER spans only');
    assert.equal(server.attrs['error.type'], undefined);
    assert.equal(client.events.length, 0);
    assert.equal(client.status.code, undefined, 'a 200 leaves the status unset');

    const post = collector.posts[0];
    assert.equal(post.method, 'POST');
    assert.equal(post.url, '/v1/traces');
    assert.equal(post.headers['content-type'], 'application/x-protobuf');
  });

  test("the app's traceparent: same trace, ferry A's span as its child, tracestate kept", async () => {
    const appTrace = '4bf92f3577b34da6a3ce929d0e0e4736';
    const appSpan = '00f067aa0ba902b7';
    const res = await get(ferryA, 'order-service', '/pay', {
      traceparent: `00-${appTrace}-${appSpan}-01`, tracestate: 'vendor=1', 'x-e2e-tag': 'two',
    });
    assert.equal(res.status, 200);
    const seen = appB.requests.find((r) => r.headers['x-e2e-tag'] === 'two');
    const [, traceId, parent, flags] = seen.headers.traceparent.split('-');
    assert.equal(traceId, appTrace);
    assert.equal(flags, '01');
    assert.equal(seen.headers.tracestate, 'vendor=1');
    const spans = await waitFor('both spans', () => {
      const s = collector.spans.filter((x) => x.traceId === appTrace);
      return s.length >= 2 ? s : null;
    });
    const client = spans.find((s) => s.kind === 'SPAN_KIND_CLIENT');
    const server = spans.find((s) => s.kind === 'SPAN_KIND_SERVER');
    assert.equal(client.parentId, appSpan);
    assert.equal(client.flags & 0x300, 0x300);
    assert.equal(server.parentId, client.spanId);
    assert.equal(parent, server.spanId);
  });

  test('an error answered by ferry: error.type is the §7 code, the status ERROR', async () => {
    // ferry A's own 404: no service, no attempt; a span all the same
    const res = await get(ferryA, 'no-such-service', '/x', { 'x-e2e-tag': 'three' });
    assert.equal(res.status, 404);
    const span = await waitFor('the 404 span', () => collector.spans.find(
      (s) => s.service === 'app-a' && s.attrs['http.response.status_code'] === 404));
    assert.equal(span.attrs['error.type'], 'UNKNOWN_SERVICE');
    assert.equal(span.attrs['ferry.attempts'], 0);
    assert.equal(span.attrs['ferry.service'], '');
    assert.equal(span.status.code, 'STATUS_CODE_ERROR');
    assert.equal(span.status.message, 'UNKNOWN_SERVICE');
  });
});

describe('tracing: one sidecar', () => {
  let pki, up, collector;
  const ferries = [];
  const key = `trace-key-${Date.now()}`;

  before(async () => {
    pki = makePKI();
    up = await startUpstream(pki, 'traced-upstream');
    collector = await startCollector();
  });

  after(async () => {
    http.globalAgent.destroy();
    for (const f of ferries) if (!f.exited()) await stopClean(f, 'ferry');
    await up?.close();
    await collector?.close();
    for (const f of ferries) f.cleanup();
    pki?.cleanup();
  });

  async function ferryWith(tracing, extraServices = {}) {
    const f = await startFerry({
      env: { E2E_KEY: key },
      services: {
        svc: { endpoints: [up.address], tls: tlsBlock(pki), auth: { key_env: 'E2E_KEY' } },
        ...extraServices,
      },
      tracing,
    });
    ferries.push(f);
    return f;
  }

  test('sample_ratio 0: flags 00 forwarded and no span; an incoming sampled flag is obeyed', async () => {
    const f = await ferryWith({ otlp: collector.url, service_name: 'ratio0', sample_ratio: 0,
      batch: BATCH });
    for (let i = 0; i < 5; i++) {
      const res = await get(f, 'svc', `/unsampled/${i}`);
      assert.equal(res.status, 200);
      const tp = up.last().headers.traceparent;
      assert.match(tp, TRACEPARENT_RE);
      assert.equal(tp.split('-')[3], '00', 'a trace ferry starts and does not sample: 00');
    }
    const inTrace = 'aaaabbbbccccddddeeeeffff00001111';
    const inSpan = '1234567890abcdef';
    const res = await get(f, 'svc', '/sampled', { traceparent: `00-${inTrace}-${inSpan}-01` });
    assert.equal(res.status, 200);
    const tp = up.last().headers.traceparent.split('-');
    assert.equal(tp[1], inTrace);
    assert.equal(tp[3], '01');
    assert.notEqual(tp[2], inSpan, 'parent-id is ferry\'s span');
    const span = await waitFor('the sampled span', () => collector.spans.find(
      (s) => s.traceId === inTrace));
    assert.equal(span.spanId, tp[2]);
    assert.equal(span.parentId, inSpan);
    // an unsampled incoming trace is obeyed too
    await get(f, 'svc', '/unsampled-in', { traceparent: `00-${'1'.repeat(32)}-${inSpan}-00` });
    assert.equal(up.last().headers.traceparent.split('-')[3], '00');
    await sleep(500);   // five batch intervals
    assert.equal(collector.spans.filter((s) => s.service === 'ratio0').length, 1,
      'only the sampled request has a span');
  });

  test('retries are span events; a dead endpoint answered 503 has error.type', async () => {
    const dead = `${LOOPBACK}:${await freePort()}`;
    const f = await ferryWith({ otlp: collector.url, service_name: 'retries', batch: BATCH }, {
      deadsvc: { endpoints: [dead], retries: { max: 2, backoff: { base: '1ms', max: '2ms' } } },
    });
    const res = await get(f, 'deadsvc', '/gone');
    assert.equal(res.status, 503);
    const span = await waitFor('the 503 span', () => collector.spans.find(
      (s) => s.service === 'retries' && s.attrs['url.path'] === '/gone'));
    assert.equal(span.attrs['error.type'], 'SERVICE_UNAVAILABLE');
    assert.equal(span.attrs['ferry.attempts'], 3);
    assert.equal(span.attrs['http.response.status_code'], 503);
    assert.equal(span.events.length, 2);
    for (const [i, e] of span.events.entries()) {
      assert.equal(e.name, 'retry');
      assert.equal(e.attrs['ferry.retry'], i + 1);
      assert.match(e.attrs['ferry.retry.reason'], /^(refused|connect-failure)$/);
      assert.equal(e.attrs['network.peer.address'], LOOPBACK);
      assert.ok(e.time >= span.start && e.time <= span.end);
    }
  });

  test('a dead collector: requests unaffected, spans dropped and counted', async () => {
    const deadCollector = `http://${LOOPBACK}:${await freePort()}/v1/traces`;
    const f = await ferryWith({ otlp: deadCollector, batch: BATCH });
    const t0 = Date.now();
    for (let i = 0; i < 20; i++) assert.equal((await get(f, 'svc', `/d/${i}`)).status, 200);
    assert.ok(Date.now() - t0 < 3000, 'requests were not slowed by the dead collector');
    const deadline = Date.now() + WAIT_MS;
    let failed = 0;
    while (Date.now() < deadline) {
      failed = await metric(f, 'ferry_spans_dropped_total{reason="export_failed"}');
      if (failed >= 20) break;
      await sleep(100);
    }
    assert.equal(failed, 20, 'every span went to a failed export');
    assert.equal(await metric(f, 'ferry_spans_exported_total'), 0);
  });

  test('a full queue drops and counts; the rest is flushed on SIGTERM before exit', async () => {
    // the batch never leaves on its own (1h), so only the shutdown flush sends it
    const f = await ferryWith({ otlp: collector.url, service_name: 'flush', max_queue: 4,
      batch: { max_spans: 512, interval: '1h' } });
    for (let i = 0; i < 10; i++) assert.equal((await get(f, 'svc', `/f/${i}`)).status, 200);
    await sleep(300);
    assert.equal(collector.spans.filter((s) => s.service === 'flush').length, 0);
    const full = await metric(f, 'ferry_spans_dropped_total{reason="queue_full"}');
    // two workers, max_queue 4: each worker holds 2
    assert.ok(full >= 6, `queue_full drops: ${full}`);
    await stopClean(f, 'ferry');
    const flushed = collector.spans.filter((s) => s.service === 'flush');
    assert.equal(flushed.length, 10 - full, 'every queued span arrived before exit');
  });
});
