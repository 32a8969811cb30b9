// End-to-end test helpers for ferry: a throwaway PKI (openssl CLI), recording
// mTLS upstreams (JSON echo and GraphQL) written in Node, and the ferry process
// itself on free loopback ports. Every wait here is bounded.

import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSchema, graphql } from 'graphql';

export const LOOPBACK = '127.0.0.1';
export const REQUEST_TIMEOUT_MS = 5000;   // every client request in the suite
const START_TIMEOUT_MS = 10000;           // ferry must answer /healthz within this
const STOP_GRACE_MS = 3000;               // beyond drain_timeout before SIGKILL
const DRAIN_TIMEOUT_MS = 2000;            // ferry's drain_timeout in these tests

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');

export const UUID4_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
export const TRACEPARENT_RE = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;
export const VIA_OUT_RE = /^1\.1 ferry-[0-9a-f]{8}-out$/i;

export function ferryBin() {
  return process.env.FERRY_BIN || path.join(REPO, 'build', 'ferry');
}

export function tempDir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Like sleep, but does not keep the process alive. */
function unrefSleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

const portsGiven = new Set();

/** The low end of the kernel's ephemeral port range (local ports of
 *  outgoing connections and of bind(0)). */
function ephemeralLow() {
  try {
    return Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').split(/\s+/)[0]) || 32768;
  } catch {
    return 32768;
  }
}

// the upper half of the 20000 ports below the ephemeral range: the Python
// harness (tests/integration/harness.py) picks in the lower half, so the
// suites meson runs side by side never pick the same port
const PORT_HIGH = ephemeralLow();
const PORT_LOW = Math.max(1024, PORT_HIGH - 10000);

/** Is PORT free on loopback now (a bind that succeeds)? */
function portFree(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, LOOPBACK, () => srv.close(() => resolve(true)));
  });
}

/**
 * A loopback TCP port that is free now, for ferry to bind soon: never the
 * same one twice in this process, and below the ephemeral range, so no
 * connection anywhere on the machine takes it first (test files run in
 * parallel processes).
 */
export async function freePort() {
  for (;;) {
    const port = PORT_LOW + Math.floor(Math.random() * (PORT_HIGH - PORT_LOW));
    if (portsGiven.has(port)) continue;
    if (await portFree(port)) {
      portsGiven.add(port);
      return port;
    }
  }
}

// ---------------------------------------------------------------------------
// PKI

/**
 * A throwaway CA with a server certificate (CN=backend; DNS:backend,
 * IP:127.0.0.1) for the upstreams and a client certificate (CN=app;
 * URI:spiffe://e2e/app, DNS:app) for ferry. Files live in `dir`.
 */
export function makePKI(dir = tempDir('ferry-e2e-pki-')) {
  const run = (...args) => {
    try {
      execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], timeout: 30000 });
    } catch (e) {
      throw new Error(`openssl ${args[0]} failed: ${e.stderr?.toString().trim() || e.message}`);
    }
  };
  const p = (name) => path.join(dir, name);
  const ecKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

  run('req', '-x509', '-new', ...ecKey, '-keyout', p('ca.key'), '-out', p('ca.pem'),
    '-days', '30', '-subj', '/CN=ferry e2e CA',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign');

  const leaf = (name, cn, sans) => {
    run('req', '-new', ...ecKey, '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`),
      '-subj', `/CN=${cn}`);
    fs.writeFileSync(p(`${name}.ext`),
      'basicConstraints=CA:FALSE\n' +
      'keyUsage=critical,digitalSignature,keyEncipherment\n' +
      'extendedKeyUsage=serverAuth,clientAuth\n' +
      'subjectKeyIdentifier=hash\n' +
      'authorityKeyIdentifier=keyid\n' +
      `subjectAltName=${sans}\n`);
    run('x509', '-req', '-in', p(`${name}.csr`), '-CA', p('ca.pem'), '-CAkey', p('ca.key'),
      '-CAcreateserial', '-days', '30', '-sha256', '-extfile', p(`${name}.ext`),
      '-out', p(`${name}.pem`));
    return { cert: p(`${name}.pem`), key: p(`${name}.key`) };
  };

  return {
    dir,
    ca: { cert: p('ca.pem'), key: p('ca.key') },
    server: leaf('server', 'backend', 'DNS:backend,IP:127.0.0.1'),
    client: leaf('client', 'app', 'URI:spiffe://e2e/app,DNS:app'),
    cleanup() { fs.rmSync(dir, { recursive: true, force: true }); },
  };
}

// ---------------------------------------------------------------------------
// Upstreams

const SCHEMA = buildSchema(`
  type User { id: ID! email: String! name: String! }
  "What the upstream saw of this HTTP request (so tests can see what crossed the wire)."
  type Wire {
    serviceAuthPresent: Boolean!
    correlationId: String
    requestId: String
    host: String
    peerCN: String
  }
  type Query {
    user(id: ID!): User
    wire: Wire!
  }
`);

const USERS = {
  1: { id: '1', email: 'ada@example.com', name: 'Ada Lovelace' },
  123: { id: '123', email: 'grace@example.com', name: 'Grace Hopper' },
};

const ROOT = {
  user: ({ id }) => USERS[id] ?? null,
  wire: (_args, ctx) => ({
    serviceAuthPresent: typeof ctx.req.headers['x-service-auth'] === 'string',
    correlationId: ctx.req.headers['x-correlation-id'] ?? null,
    requestId: ctx.req.headers['x-request-id'] ?? null,
    host: ctx.req.headers.host ?? null,
    peerCN: ctx.peer?.subjectCN ?? null,
  }),
};

export const GRAPHQL_USERS = USERS;

function peerOf(socket) {
  const cert = socket.getPeerCertificate?.();
  if (!cert || !cert.subject) return null;
  return {
    subjectCN: cert.subject.CN,
    subjectaltname: cert.subjectaltname,
    authorized: socket.authorized,
  };
}

/**
 * An HTTPS upstream that demands a client certificate signed by the test CA
 * (mTLS). It records every request (method, url, headers, rawHeaders, body,
 * peer certificate, SNI, which TLS connection carried it) in `requests`, and
 * counts the TLS connections it accepted.
 *
 *   POST /graphql       executes the tiny schema above
 *   anything else       200 JSON echo {upstream, method, url, headers, body, peer, conn}
 *     ?status=N         answer with status N instead
 *     ?ids=upstream     also set x-correlation-id / x-request-id response headers
 *                       of its own (ferry must replace them)
 *     ?delay=MS         answer after MS milliseconds
 */
export async function startUpstream(pki, name = 'upstream') {
  const state = {
    name,
    requests: [],
    tlsConnections: 0,
    tcpConnections: 0,
    tlsErrors: [],
  };
  let nextConn = 0;
  const sockets = new Set();

  const server = https.createServer({
    key: fs.readFileSync(pki.server.key),
    cert: fs.readFileSync(pki.server.cert),
    ca: fs.readFileSync(pki.ca.cert),
    requestCert: true,
    rejectUnauthorized: true,
    keepAliveTimeout: 30000,
  }, async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const body = Buffer.concat(chunks).toString('utf8');
    const url = new URL(req.url, 'https://upstream.invalid');
    const record = {
      method: req.method,
      url: req.url,
      httpVersion: req.httpVersion,
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      body,
      peer: peerOf(req.socket),
      servername: req.socket.servername ?? null,
      conn: req.socket.e2eConnId,
    };
    state.requests.push(record);

    if (req.method === 'POST' && url.pathname === '/graphql') {
      let result;
      try {
        const { query, variables, operationName } = JSON.parse(body);
        result = await graphql({
          schema: SCHEMA, source: query, rootValue: ROOT,
          variableValues: variables, operationName,
          contextValue: { req, peer: record.peer },
        });
      } catch (e) {
        result = { errors: [{ message: `bad request: ${e.message}` }] };
      }
      const out = JSON.stringify(result);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
      res.end(out);
      return;
    }

    const delay = Number(url.searchParams.get('delay') || 0);
    if (delay > 0) await sleep(delay);
    const status = Number(url.searchParams.get('status') || 200);
    const headers = { 'content-type': 'application/json', 'x-upstream': name };
    if (url.searchParams.get('ids') === 'upstream') {
      headers['x-correlation-id'] = 'set-by-upstream';
      headers['x-request-id'] = 'set-by-upstream';
    }
    const out = JSON.stringify({ upstream: name, ...record, rawHeaders: undefined });
    headers['content-length'] = Buffer.byteLength(out);
    res.writeHead(status, headers);
    res.end(out);
  });

  server.on('connection', (sock) => {
    state.tcpConnections++;
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
  });
  server.on('secureConnection', (tls) => {
    state.tlsConnections++;
    tls.e2eConnId = ++nextConn;
  });
  server.on('tlsClientError', (err) => state.tlsErrors.push(err.message));

  server.listen(0, LOOPBACK);
  await once(server, 'listening');
  state.port = server.address().port;
  state.address = `${LOOPBACK}:${state.port}`;
  state.last = () => state.requests[state.requests.length - 1];
  state.close = async () => {
    const closed = new Promise((resolve) => server.close(resolve));
    server.closeAllConnections?.();
    for (const s of sockets) s.destroy();
    await Promise.race([closed, unrefSleep(2000)]);
  };
  return state;
}

// ---------------------------------------------------------------------------
// ferry

/** A YAML scalar: JSON strings are valid YAML double-quoted scalars. */
function y(v) {
  return typeof v === 'string' ? JSON.stringify(v) : String(v);
}

function toYaml(obj, indent = 0) {
  const pad = ' '.repeat(indent);
  const lines = [];
  if (Array.isArray(obj)) {
    return `[${obj.map(y).join(', ')}]`;
  }
  for (const [k, v] of Object.entries(obj)) {
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      lines.push(`${pad}${y(k)}:`);
      lines.push(toYaml(v, indent + 2));
    } else if (Array.isArray(v)) {
      lines.push(`${pad}${y(k)}: ${toYaml(v)}`);
    } else {
      lines.push(`${pad}${y(k)}: ${y(v)}`);
    }
  }
  return lines.join('\n');
}

/** A service's `tls:` block: the test CA, ferry's client cert, SNI backend. */
export function tlsBlock(pki, serverName = 'backend') {
  return { ca: pki.ca.cert, cert: pki.client.cert, key: pki.client.key, server_name: serverName };
}

/**
 * Start ferry with `services` on fresh loopback ports; `env` is added to the
 * environment. `listeners` (optional) adds listeners beside the outbound and
 * admin ones, e.g. `{inbound: {address, tls, auth, local_app}}`; `tracing`
 * (optional) is the `tracing:` section (SPEC §13). Resolves
 * once /healthz answers 200 and every listener accepts.
 */
export async function startFerry({ services, env = {}, defaults, listeners = {}, tracing }) {
  const bin = ferryBin();
  try {
    fs.accessSync(bin, fs.constants.X_OK);
  } catch {
    throw new Error(`no ferry binary at ${bin} (set FERRY_BIN)`);
  }
  const dir = tempDir('ferry-e2e-run-');
  const outboundPort = await freePort();
  const adminPort = await freePort();
  const config = {
    workers: 2,
    log: { level: 'info', access: 'stdout' },
    drain_delay: '0s',
    drain_timeout: `${DRAIN_TIMEOUT_MS}ms`,
    listeners: {
      outbound: { address: `${LOOPBACK}:${outboundPort}` },
      admin: { address: `${LOOPBACK}:${adminPort}` },
      ...listeners,
    },
    ...(defaults ? { defaults } : {}),
    ...(tracing ? { tracing } : {}),
    services,
  };
  const configPath = path.join(dir, 'ferry.yaml');
  fs.writeFileSync(configPath, toYaml(config) + '\n');

  const stdoutPath = path.join(dir, 'stdout');
  const stderrPath = path.join(dir, 'stderr');
  const out = fs.openSync(stdoutPath, 'w');
  const err = fs.openSync(stderrPath, 'w');
  const proc = spawn(bin, ['-c', configPath], {
    cwd: dir,
    env: { ...process.env, ...env },
    stdio: ['ignore', out, err],
  });
  fs.closeSync(out);
  fs.closeSync(err);

  let exited = null;
  const exitPromise = new Promise((resolve) => {
    proc.on('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
  });

  const ferry = {
    dir, configPath, proc, outboundPort, adminPort,
    outboundURL: `http://${LOOPBACK}:${outboundPort}`,
    listenPorts: {},
    stderr: () => fs.readFileSync(stderrPath, 'utf8'),
    stdout: () => fs.readFileSync(stdoutPath, 'utf8'),
    stderrTail: (n = 30) => fs.readFileSync(stderrPath, 'utf8').split('\n').slice(-n).join('\n'),
    accessLog: () => fs.readFileSync(stdoutPath, 'utf8').split('\n')
      .filter(Boolean).flatMap((l) => { try { return [JSON.parse(l)]; } catch { return []; } }),
    exited: () => exited,
    admin: (p) => httpGet(adminPort, p),

    /** SIGTERM; resolves {code, signal} (SIGKILL after the drain budget). */
    async stop() {
      if (exited) return { ...exited, killed: false, alreadyExited: true };
      proc.kill('SIGTERM');
      const timer = unrefSleep(DRAIN_TIMEOUT_MS + STOP_GRACE_MS).then(() => null);
      const res = await Promise.race([exitPromise, timer]);
      if (res) return { ...res, killed: false };
      proc.kill('SIGKILL');
      const after = await exitPromise;
      return { ...after, killed: true };
    },
    cleanup() { fs.rmSync(dir, { recursive: true, force: true }); },
  };
  for (const [name, svc] of Object.entries(services)) {
    if (svc.listen) ferry.listenPorts[name] = Number(String(svc.listen).split(':').pop());
  }
  if (listeners.inbound?.address) {
    ferry.inboundPort = Number(String(listeners.inbound.address).split(':').pop());
    ferry.inboundAddress = `${LOOPBACK}:${ferry.inboundPort}`;
  }

  const deadline = Date.now() + START_TIMEOUT_MS;
  const waitFor = async (what, predicate) => {
    for (;;) {
      if (exited) {
        throw new Error(`ferry exited (${JSON.stringify(exited)}) while starting:\n${ferry.stderrTail()}`);
      }
      if (await predicate()) return;
      if (Date.now() > deadline) {
        proc.kill('SIGKILL');
        throw new Error(`ferry not ready: ${what}\n${ferry.stderrTail()}`);
      }
      await sleep(25);
    }
  };
  await waitFor('/healthz did not answer 200', async () => {
    try { return (await httpGet(adminPort, '/healthz', 500)).status === 200; } catch { return false; }
  });
  const inboundPorts = ferry.inboundPort ? [ferry.inboundPort] : [];
  for (const port of [outboundPort, ...Object.values(ferry.listenPorts), ...inboundPorts]) {
    await waitFor(`port ${port} not accepting`, () => connectable(port));
  }
  return ferry;
}

/** Plain GET on loopback with a timeout: {status, headers, body}. */
export function httpGet(port, urlPath, timeout = REQUEST_TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: LOOPBACK, port, path: urlPath, timeout, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({
        status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8'),
      }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${urlPath} timed out`)));
    req.on('error', reject);
  });
}

function connectable(port) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: LOOPBACK, port });
    const done = (ok) => { sock.destroy(); resolve(ok); };
    sock.setTimeout(500, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

// ---------------------------------------------------------------------------
// The stack every test file runs against

/**
 * PKI, upstreams and ferry with these services (all mTLS to `backend`, all
 * with `auth: {key_env: E2E_KEY}`):
 *
 *   user-service      the REST echo upstream `up`
 *   graphql-service   the GraphQL upstream `gql`, also on its own `listen` port
 *   pool-service      a third upstream `poolUp` (its connection count is clean)
 *   dead-service      a loopback port nothing listens on (own `listen` port too)
 */
export async function startStack() {
  const pki = makePKI();
  const key = `e2e-key-${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`;
  const up = await startUpstream(pki, 'user-upstream');
  const gql = await startUpstream(pki, 'graphql-upstream');
  const poolUp = await startUpstream(pki, 'pool-upstream');
  const deadPort = await freePort();
  const graphqlListen = await freePort();
  const deadListen = await freePort();
  const svc = (endpoint, extra = {}) => ({
    endpoints: [endpoint],
    tls: tlsBlock(pki),
    auth: { key_env: 'E2E_KEY' },
    ...extra,
  });
  let ferry;
  try {
    ferry = await startFerry({
      env: { E2E_KEY: key },
      services: {
        'user-service': svc(up.address),
        'graphql-service': svc(gql.address, { listen: `${LOOPBACK}:${graphqlListen}` }),
        'pool-service': svc(poolUp.address),
        'dead-service': svc(`${LOOPBACK}:${deadPort}`, { listen: `${LOOPBACK}:${deadListen}` }),
      },
    });
  } catch (e) {
    await Promise.all([up.close(), gql.close(), poolUp.close()]);
    pki.cleanup();
    throw e;
  }
  const upstreams = [up, gql, poolUp];
  return {
    pki, key, up, gql, poolUp, ferry, deadPort,
    deadAddress: `${LOOPBACK}:${deadPort}`,
    graphqlPort: graphqlListen,
    deadListenPort: deadListen,
    /** Total requests all upstreams have received so far. */
    upstreamRequestCount: () => upstreams.reduce((n, u) => n + u.requests.length, 0),
    /** Stop ferry (SIGTERM) first, then the upstreams; the exit of ferry. */
    async stop() {
      const exit = await ferry.stop();
      await Promise.all(upstreams.map((u) => u.close()));
      return exit;
    },
    cleanup() {
      ferry.cleanup();
      pki.cleanup();
    },
  };
}

/** Assert-friendly description of how ferry ended. */
export function describeExit(exit, ferry) {
  return `ferry exit ${JSON.stringify(exit)}\nstderr tail:\n${ferry.stderrTail()}`;
}

// ---------------------------------------------------------------------------
// A raw HTTP/1.1 connection: exact bytes out, one Content-Length-framed
// response back at a time (enough for ferry's own JSON errors and the echo).

export async function rawConnection(port, timeout = REQUEST_TIMEOUT_MS) {
  const sock = net.connect({ host: LOOPBACK, port });
  await once(sock, 'connect');
  let buf = Buffer.alloc(0);
  let ended = false;
  let wake = null;
  sock.on('data', (d) => { buf = Buffer.concat([buf, d]); wake?.(); });
  sock.on('end', () => { ended = true; wake?.(); });
  sock.on('close', () => { ended = true; wake?.(); });
  sock.on('error', () => { ended = true; wake?.(); });
  const waitData = () => new Promise((resolve, reject) => {
    const t = setTimeout(() => { wake = null; reject(new Error('raw read timed out')); }, timeout);
    wake = () => { clearTimeout(t); wake = null; resolve(); };
  });
  return {
    /** Whether the peer has closed (or reset) the connection. */
    get closed() { return ended; },
    write(data) { sock.write(data); },
    /** The next response: {statusLine, status, headers (lower-case names), body}; null on EOF. */
    async response() {
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end >= 0) {
          const head = buf.subarray(0, end).toString('latin1').split('\r\n');
          const headers = {};
          for (const line of head.slice(1)) {
            const i = line.indexOf(':');
            const name = line.slice(0, i).trim().toLowerCase();
            const value = line.slice(i + 1).trim();
            headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
          }
          const len = Number(headers['content-length'] ?? 0);
          while (buf.length < end + 4 + len && !ended) await waitData();
          if (buf.length < end + 4 + len) throw new Error('EOF inside a response body');
          const body = buf.subarray(end + 4, end + 4 + len).toString('utf8');
          buf = buf.subarray(end + 4 + len);
          return { statusLine: head[0], status: Number(head[0].split(' ')[1]), headers, body };
        }
        if (ended) {
          if (buf.length) throw new Error(`EOF inside a response head: ${buf.toString('latin1')}`);
          return null;
        }
        await waitData();
      }
    },
    /** Resolves true if the peer closes within ms, false otherwise. */
    async closesWithin(ms) {
      if (ended) return true;
      await Promise.race([new Promise((r) => { wake = r; }), unrefSleep(ms)]);
      wake = null;
      return ended;
    },
    close() { sock.destroy(); },
  };
}
