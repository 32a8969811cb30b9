// The status page (GET /, SPEC §8) in a real headless chromium, against the
// real ferry while traffic flows through it: the page must show the service,
// its endpoint, the circuit state and a request rate, refresh itself from
// /services and /metrics, and follow the circuit breaker when the upstream
// starts failing, and show per endpoint the protocol ferry speaks to it
// and its open HTTP/2 streams (an h2c upstream holds a few). Nothing it
// loads may come from anywhere but ferry's admin listener. Its charts (SPEC
// §16, from /history) must rise when traffic starts and show errors once
// the upstream fails, and be drawn (a screenshot of them is not blank).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import path from 'node:path';
import zlib from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import { chromium } from 'playwright-core';
import {
  LOOPBACK, REQUEST_TIMEOUT_MS, describeExit, httpGet, makePKI, sleep, startFerry, startUpstream,
  tempDir, tlsBlock,
} from '../e2e/helpers.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SERVICE = 'user-service';
const H2_SERVICE = 'h2-service';
const PAGE_WAIT_MS = 15000;     // several of the page's 2 s refreshes
const MAX_PAGE_BYTES = 25 * 1024;

describe('status page in chromium', () => {
  let pki, up, ferry, browser, profile, page, adminOrigin, h2up, h2address;
  const held = [];              // h2c upstream streams not answered yet
  const h2sessions = new Set();
  const pageErrors = [];
  const foreignRequests = [];

  before(async () => {
    pki = makePKI();
    up = await startUpstream(pki, 'status-upstream');
    // h2c: /hold/... waits for the test; anything else is answered at once
    h2up = http2.createServer();
    h2up.on('session', (s) => { h2sessions.add(s); s.on('close', () => h2sessions.delete(s)); });
    h2up.on('stream', (stream, headers) => {
      stream.on('error', () => {});
      if (headers[':path'].startsWith('/hold')) {
        held.push(stream);
        return;
      }
      stream.respond({ ':status': 200 });
      stream.end('h2 ok');
    });
    await new Promise((resolve) => h2up.listen(0, LOOPBACK, resolve));
    h2address = `${LOOPBACK}:${h2up.address().port}`;
    ferry = await startFerry({
      services: {
        [H2_SERVICE]: { endpoints: [h2address], protocol: 'h2', retries: { max: 0 } },
        [SERVICE]: {
          endpoints: [up.address],
          tls: tlsBlock(pki),
          retries: { max: 0 },
          circuit_breaker: { consecutive_failures: 2, open_for: '30s' },
        },
      },
    });
    adminOrigin = `http://${LOOPBACK}:${ferry.adminPort}`;
    // a new, empty profile, removed in after()
    profile = tempDir('ferry-browser-profile-');
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1100, height: 700 },
      timeout: 30000,
    });
    page = browser.pages()[0] ?? await browser.newPage();
    page.setDefaultTimeout(PAGE_WAIT_MS);
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('request', (r) => {
      if (!r.url().startsWith(`${adminOrigin}/`)) foreignRequests.push(r.url());
    });
  });

  after(async () => {
    await browser?.close().catch(() => {});
    if (profile) fs.rmSync(profile, { recursive: true, force: true });
    let exit;
    if (ferry) exit = await ferry.stop();
    await up?.close();
    for (const st of held) st.destroy();
    for (const sess of h2sessions) sess.destroy();
    await new Promise((resolve) => (h2up ? h2up.close(resolve) : resolve()));
    try {
      if (exit) {
        assert.equal(exit.killed, false, `ferry did not exit within its drain budget\n${describeExit(exit, ferry)}`);
        assert.equal(exit.code, 0, `ferry exited non-zero\n${describeExit(exit, ferry)}`);
      }
    } finally {
      ferry?.cleanup();
      pki?.cleanup();
    }
  });

  /** One GET through ferry's outbound listener to the service. */
  function request(agent, urlPath = '/status-page-traffic', service = SERVICE) {
    return new Promise((resolve, reject) => {
      const req = http.get({
        host: LOOPBACK, port: ferry.outboundPort, path: urlPath, agent,
        headers: { host: service }, timeout: REQUEST_TIMEOUT_MS,
      }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers }));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`GET ${urlPath} timed out`)));
      req.on('error', reject);
    });
  }

  /** Requests in a loop until stop() resolves with how many were answered. */
  function traffic() {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 2 });
    let running = true, answered = 0, failure = null;
    const loop = (async () => {
      while (running) {
        try {
          const r = await request(agent);
          if (r.status !== 200) throw new Error(`traffic got ${r.status}`);
          answered++;
        } catch (e) {
          failure = e;
          return;
        }
        await sleep(10);
      }
    })();
    return {
      async stop() {
        running = false;
        await loop;
        agent.destroy();
        if (failure) throw failure;
        return answered;
      },
    };
  }

  async function screenshot(name) {
    const dir = process.env.BROWSER_SCREENSHOT_DIR;
    if (!dir) return;
    fs.mkdirSync(dir, { recursive: true });
    await page.screenshot({ path: path.join(dir, `${name}.png`), fullPage: true });
  }

  const section = () => page.locator(`section[data-service="${SERVICE}"]`);

  /** A chart's drawn series, read from the DOM: values and y of each point. */
  function chartSeries(name, series) {
    return page.evaluate(([svc, chartName, key]) => {
      const line = document.querySelector(`section[data-service="${svc}"] ` +
        `[data-chart="${chartName}"] polyline[data-series="${key}"]`);
      if (!line) return null;
      return {
        values: line.getAttribute('data-values').split(',').map(Number),
        y: line.getAttribute('points').split(' ').map((p) => Number(p.split(',')[1])),
      };
    }, [SERVICE, name, series]);
  }

  /** Waits until the chart's newest buckets hold a value above 0. */
  async function waitForRise(name, series) {
    await page.waitForFunction(([svc, chartName, key]) => {
      const line = document.querySelector(`section[data-service="${svc}"] ` +
        `[data-chart="${chartName}"] polyline[data-series="${key}"]`);
      return line && line.getAttribute('data-values').split(',').slice(-4).some((v) => Number(v) > 0);
    }, [SERVICE, name, series]);
    return chartSeries(name, series);
  }

  /** The chart drew a rise: 180 points, zeros before, some above 0 in the
   * newest buckets, drawn higher (smaller y) than the zeros. */
  function assertRise(c, what) {
    assert.ok(c, `no ${what} chart`);
    assert.equal(c.values.length, 180, `${what}: ${c.values.length} points`);
    assert.equal(c.y.length, 180);
    const last = c.values.length - 1 - [...c.values].reverse().findIndex((v) => v > 0);
    assert.ok(c.values[last] > 0, `${what}: no point above 0: ${c.values.slice(-6)}`);
    assert.ok(last >= 176, `${what}: the rise is not in the newest buckets (${last})`);
    assert.equal(c.values[0], 0, `${what}: the chart began above 0`);
    assert.ok(c.y[last] < c.y[0], `${what}: drawn at y ${c.y[last]}, the zeros at ${c.y[0]}`);
  }

  test('GET / is one small self-contained HTML page', async () => {
    const r = await httpGet(ferry.adminPort, '/');
    assert.equal(r.status, 200, `GET / answered ${r.status}: ${r.body.slice(0, 200)}`);
    assert.match(String(r.headers['content-type']), /^text\/html\b/i);
    assert.ok(Buffer.byteLength(r.body) < MAX_PAGE_BYTES, `page is ${Buffer.byteLength(r.body)} bytes`);
    assert.match(r.body, /^<!DOCTYPE html>/i);
    // no external scripts, styles, fonts or images
    assert.doesNotMatch(r.body, /<(script|link|img|iframe)\b[^>]*\b(src|href)\s*=\s*["']?(https?:)?\/\//i);
    assert.doesNotMatch(r.body, /@import|url\(\s*["']?(https?:)?\/\//i);
  });

  test('shows the service, its endpoint, circuit closed and a request rate', async () => {
    const load = traffic();
    try {
      const resp = await page.goto(`${adminOrigin}/`, { waitUntil: 'load' });
      assert.equal(resp.status(), 200);
      assert.equal(await page.title(), 'ferry status');

      // the first refresh lists the service; rates need a second scrape
      await section().waitFor();
      const refreshedAt = await page.locator('#refreshed').getAttribute('data-time');
      await page.waitForFunction((svc) => {
        const el = document.querySelector(`section[data-service="${svc}"] [data-field="rate"]`);
        return el && parseFloat(el.textContent.replace(/,/g, '')) > 0;
      }, SERVICE);
      // it keeps refreshing on its own
      await page.waitForFunction((t) => document.querySelector('#refreshed')
        .getAttribute('data-time') !== t, refreshedAt);

      const sec = section();
      assert.equal(await sec.locator('h2').textContent(), SERVICE);
      assert.equal(await sec.getAttribute('data-circuit'), 'closed');
      assert.equal((await sec.locator('.svc-head .badge').textContent()).trim(), 'closed');
      const row = sec.locator(`tr[data-endpoint="${up.address}"]`);
      assert.equal(await row.count(), 1, `no row for endpoint ${up.address}`);
      assert.match(await row.locator('td').first().textContent(), new RegExp(`^${up.address.replace(/\./g, '\\.')}$`));
      assert.match(await row.textContent(), /up/);
      const rate = parseFloat((await sec.locator('[data-field="rate"]').textContent()).replace(/,/g, ''));
      assert.ok(rate > 0, `request rate ${rate}`);
      // latency quantiles come from the histogram: a number with a unit
      assert.match(await sec.locator('[data-field="p50"]').textContent(), /^\d+(\.\d+)? m?s$/);
      assert.match(await sec.locator('[data-field="p99"]').textContent(), /^\d+(\.\d+)? m?s$/);
      assert.match(await page.locator('#refreshed').textContent(), /last refresh \d\d:\d\d:\d\d/);
      assert.equal(await page.locator('#error').isHidden(), true,
        `error banner: ${await page.locator('#error').textContent()}`);

      // the charts: the request rate rose from 0 when the traffic began;
      // no errors; the latency drawn
      assertRise(await waitForRise('rate', 'rate'), 'request rate');
      assert.ok((await chartSeries('errors', 'errors')).values.every((v) => v === 0),
        'errors charted while every request succeeded');
      assertRise(await waitForRise('latency', 'p50'), 'p50');
      const p99 = await chartSeries('latency', 'p99');
      const p50 = await chartSeries('latency', 'p50');
      p50.values.forEach((v, i) => assert.ok(v <= p99.values[i], `p50 ${v} > p99 ${p99.values[i]}`));
      await screenshot('status-closed');
    } finally {
      const n = await load.stop();
      assert.ok(n > 0, 'no request went through ferry');
    }
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(foreignRequests, [], 'the page loaded something from elsewhere');
  });

  test('shows per endpoint the protocol and the open HTTP/2 streams', async () => {
    const N = 3;
    const agent = new http.Agent({ keepAlive: false });
    const row = (svc, address) => page.locator(
      `section[data-service="${svc}"] tr[data-endpoint="${address}"]`);
    const cells = async (svc, address) => ({
      protocol: (await row(svc, address).locator('[data-field="protocol"]').textContent()).trim(),
      streams: (await row(svc, address).locator('[data-field="streams"]').textContent()).trim(),
    });
    const pending = [];
    try {
      if (!page.url().startsWith(adminOrigin)) await page.goto(`${adminOrigin}/`, { waitUntil: 'load' });
      for (let i = 0; i < N; i++) pending.push(request(agent, `/hold/${i}`, H2_SERVICE));
      for (let i = 0; i < 100 && held.length < N; i++) await sleep(50);
      assert.equal(held.length, N, 'the h2c upstream did not get the held requests');
      await page.waitForFunction(([svc, address, n]) => {
        const tr = document.querySelector(`section[data-service="${svc}"] tr[data-endpoint="${address}"]`);
        return tr && tr.querySelector('[data-field="streams"]').textContent === String(n);
      }, [H2_SERVICE, h2address, N]);
      assert.deepEqual(await cells(H2_SERVICE, h2address), { protocol: 'h2', streams: String(N) });
      // what /services says, the page shows
      const svcs = JSON.parse((await httpGet(ferry.adminPort, '/services')).body).services;
      const ep = svcs.find((s) => s.name === H2_SERVICE).endpoints[0];
      assert.deepEqual([ep.protocol, ep.streams], ['h2', N]);
      // the HTTP/1.1 service's endpoint (TLS, the upstream picks no h2)
      assert.deepEqual(await cells(SERVICE, up.address), { protocol: 'http1', streams: '0' });
      await screenshot('status-h2-streams');
    } finally {
      for (const st of held.splice(0)) {
        if (!st.destroyed) {
          st.respond({ ':status': 200 });
          st.end('released');
        }
      }
    }
    for (const r of await Promise.all(pending)) assert.equal(r.status, 200);
    agent.destroy();
    // the streams end; the connection (and its protocol) stays
    await page.waitForFunction(([svc, address]) => document.querySelector(
      `section[data-service="${svc}"] tr[data-endpoint="${address}"] [data-field="streams"]`)
      ?.textContent === '0', [H2_SERVICE, h2address]);
    assert.equal((await cells(H2_SERVICE, h2address)).protocol, 'h2');
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(foreignRequests, []);
  });

  test('shows the circuit open once the upstream fails', async () => {
    const agent = new http.Agent({ keepAlive: false });
    // retries max 0: each 503 of the upstream is one failure; after 2 in a
    // row the breaker opens and ferry answers 503 itself
    let opened = false;
    for (let i = 0; i < 10 && !opened; i++) {
      const r = await request(agent, '/fail?status=503');
      assert.equal(r.status, 503);
      opened = r.headers['x-ferry-error'] !== undefined;
    }
    agent.destroy();
    assert.ok(opened, 'ferry never answered for an open circuit');

    const services = JSON.parse((await httpGet(ferry.adminPort, '/services')).body);
    assert.equal(services.services.find((s) => s.name === SERVICE)?.circuit, 'open',
      `/services: ${JSON.stringify(services)}`);

    await page.waitForFunction((svc) => document.querySelector(`section[data-service="${svc}"]`)
      ?.getAttribute('data-circuit') === 'open', SERVICE);
    assert.equal((await section().locator('.svc-head .badge').textContent()).trim(), 'open');
    assert.match(await page.locator('#summary').textContent(), /1 circuit not closed/);
    // the error chart rises: the upstream's 503s, then ferry's own
    assertRise(await waitForRise('errors', 'errors'), 'error rate');
    // errors only where there were requests, as a share of them
    const errors = await chartSeries('errors', 'errors'), rate = await chartSeries('rate', 'rate');
    errors.values.forEach((v, i) => assert.ok(v <= 100 && (v === 0 || rate.values[i] > 0),
      `bucket ${i}: ${v}% errors at ${rate.values[i]} req/s`));
    await screenshot('status-open');
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(foreignRequests, []);
  });

  test('the charts are drawn: screenshots are not blank', async () => {
    const rate = section().locator('[data-chart="rate"] svg');
    const png = decodePNG(await rate.screenshot());
    assert.ok(png.width >= 100 && png.height >= 30, `chart is ${png.width}x${png.height}`);
    // the background is the most common colour; the rise reaches the top
    // of the chart (its scale is its maximum), the rest is a line at 0
    const bg = mostCommon(png);
    const top = countPixels(png, (x, y, c) => y < png.height / 3 && far(c, bg));
    const bottom = countPixels(png, (x, y, c) => y >= png.height * 2 / 3 && far(c, bg));
    assert.ok(top > 0, 'nothing drawn in the top third of the request rate chart');
    assert.ok(bottom > png.width / 2, `the line at 0 is missing (${bottom} pixels)`);

    const full = decodePNG(await page.screenshot({ fullPage: true }));
    const colours = new Set();
    countPixels(full, (x, y, c) => colours.add(c.join()));
    assert.ok(colours.size > 50, `the page has ${colours.size} colours`);
    const fbg = mostCommon(full);
    const drawn = countPixels(full, (x, y, c) => far(c, fbg));
    assert.ok(drawn > full.width * full.height / 50, `${drawn} non-background pixels`);
    await screenshot('status-charts');
  });

  test("the page's Prometheus parsing and quantiles match histogram_quantile", async () => {
    const got = await page.evaluate(() => {
      const { parseMetrics, digest, quantile } = window.ferryStatus;
      const inf = Infinity;
      const text = [
        '# HELP ferry_requests_total Requests answered.',
        '# TYPE ferry_requests_total counter',
        'ferry_requests_total{direction="outbound",service="a\\"b\\\\c",code="200"} 7',
        'ferry_requests_total{direction="outbound",service="a\\"b\\\\c",code="503"} 2',
        'ferry_requests_total{direction="outbound",service="a\\"b\\\\c",code="0"} 1',
        'ferry_requests_total{direction="inbound",service="",code="404"} 5',
        'ferry_request_duration_seconds_bucket{direction="inbound",service="",le="0.001"} 1',
        'ferry_request_duration_seconds_bucket{direction="inbound",service="",le="+Inf"} 5',
        'ferry_upstream_attempts_total{service="x",result="ok"} 9',
      ].join('\n');
      const d = digest(parseMetrics(text));
      return {
        keys: Object.keys(d).sort(),
        svc: d['outbound\na"b\\c'],
        inb: d['inbound\n'],
        q: [
          quantile(0.5, [[0.1, 0], [0.2, 10], [inf, 10]]),
          quantile(0.99, [[1, 50], [2, 100], [inf, 100]]),
          quantile(0.5, [[0.5, 10], [inf, 10]]),
          quantile(0.5, [[1, 0], [inf, 10]]),          // all above the last bound
          quantile(0.5, [[1, 0], [inf, 0]]),           // nothing observed
        ],
      };
    });
    assert.deepEqual(got.keys, ['inbound\n', 'outbound\na"b\\c']);
    assert.equal(got.svc.req, 10);
    assert.equal(got.svc.err, 3, '5xx and code 0 are errors');
    assert.equal(got.inb.err, 0, '4xx are not');
    assert.deepEqual(got.inb.le, { '0.001': 1, '+Inf': 5 });
    assert.ok(Math.abs(got.q[0] - 0.15) < 1e-9, `q50 ${got.q[0]}`);
    assert.ok(Math.abs(got.q[1] - 1.98) < 1e-9, `q99 ${got.q[1]}`);
    assert.ok(Math.abs(got.q[2] - 0.25) < 1e-9, `first bucket ${got.q[2]}`);
    assert.equal(got.q[3], 1);
    assert.ok(Number.isNaN(got.q[4]), 'NaN when nothing was observed');
  });
});

// ------------------------------------------------------------- PNG ---
// page.screenshot() gives 8-bit RGB(A) PNGs: enough of a decoder for them.

function decodePNG(buf) {
  assert.equal(buf.subarray(0, 8).toString('hex'), '89504e470d0a1a0a', 'not a PNG');
  let off = 8, width = 0, height = 0, type = 0;
  const idat = [];
  while (off < buf.length) {
    const len = buf.readUInt32BE(off), kind = buf.toString('latin1', off + 4, off + 8);
    const data = buf.subarray(off + 8, off + 8 + len);
    if (kind === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      assert.equal(data[8], 8, 'bit depth');
      type = data[9];
      assert.ok(type === 2 || type === 6, `colour type ${type}`);
      assert.equal(data[12], 0, 'interlaced');
    } else if (kind === 'IDAT') {
      idat.push(data);
    }
    off += 12 + len;
  }
  const bpp = type === 6 ? 4 : 3, stride = width * bpp;
  const raw = zlib.inflateSync(Buffer.concat(idat));
  const px = Buffer.alloc(stride * height);
  for (let y = 0; y < height; y++) {
    const f = raw[y * (stride + 1)], src = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let i = 0; i < stride; i++) {
      const a = i >= bpp ? px[y * stride + i - bpp] : 0;
      const b = y > 0 ? px[(y - 1) * stride + i] : 0;
      const c = i >= bpp && y > 0 ? px[(y - 1) * stride + i - bpp] : 0;
      let v = src[i];
      if (f === 1) v += a;
      else if (f === 2) v += b;
      else if (f === 3) v += (a + b) >> 1;
      else if (f === 4) {
        const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
        v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      px[y * stride + i] = v & 0xff;
    }
  }
  return { width, height, bpp, px };
}

/** Calls fn(x, y, [r, g, b]) for each pixel; counts those it is true for. */
function countPixels(png, fn) {
  let n = 0;
  for (let y = 0; y < png.height; y++) {
    for (let x = 0; x < png.width; x++) {
      const o = (y * png.width + x) * png.bpp;
      if (fn(x, y, [png.px[o], png.px[o + 1], png.px[o + 2]])) n++;
    }
  }
  return n;
}

function mostCommon(png) {
  const seen = new Map();
  countPixels(png, (x, y, c) => seen.set(c.join(), (seen.get(c.join()) || 0) + 1));
  return [...seen].sort((p, q) => q[1] - p[1])[0][0].split(',').map(Number);
}

function far(c, bg) {
  return Math.abs(c[0] - bg[0]) + Math.abs(c[1] - bg[1]) + Math.abs(c[2] - bg[2]) > 24;
}
