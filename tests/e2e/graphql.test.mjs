// graphql-request through ferry. Node's fetch (undici) silently drops a Host
// header set by the caller (it always sends the URL's authority), so
// `new GraphQLClient('http://127.0.0.1:<outbound>/graphql', {headers: {Host}})`
// cannot name the service; the service gets its own `listen` port instead
// (SPEC §3/§4 rule 1) and the client points at that port.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ClientError, GraphQLClient, gql } from 'graphql-request';
import {
  GRAPHQL_USERS, LOOPBACK, REQUEST_TIMEOUT_MS, TRACEPARENT_RE, UUID4_RE, VIA_OUT_RE,
  describeExit, startStack,
} from './helpers.mjs';

const GET_USER = gql`
  query GetUser($id: ID!) {
    user(id: $id) { id email name }
  }
`;

describe('graphql-request through ferry', () => {
  let s;
  let client;

  before(async () => {
    s = await startStack();
    client = new GraphQLClient(`http://${LOOPBACK}:${s.graphqlPort}/graphql`, {
      headers: { 'content-type': 'application/json' },
    });
  });

  after(async () => {
    if (!s) return;
    const exit = await s.stop();
    try {
      assert.equal(exit.killed, false, `ferry did not exit within its drain budget\n${describeExit(exit, s.ferry)}`);
      assert.equal(exit.signal, null, `ferry died by a signal\n${describeExit(exit, s.ferry)}`);
      assert.equal(exit.code, 0, `ferry exited non-zero after SIGTERM\n${describeExit(exit, s.ferry)}`);
    } finally {
      s.cleanup();
    }
  });

  const signal = () => AbortSignal.timeout(REQUEST_TIMEOUT_MS);

  function lastGraphqlRequest() {
    const r = s.gql.last();
    assert.ok(r, 'the GraphQL upstream received nothing');
    assert.equal(r.method, 'POST');
    assert.equal(r.url, '/graphql');
    return r;
  }

  test('a query without variables: data matches; the upstream saw the service key over mTLS', async () => {
    const before = s.gql.requests.length;
    const data = await client.request({
      document: gql`{ user(id: "1") { id email name } }`,
      signal: signal(),
    });
    assert.deepEqual(data, { user: GRAPHQL_USERS[1] });

    assert.equal(s.gql.requests.length, before + 1);
    const seen = lastGraphqlRequest();
    assert.equal(seen.headers['x-service-auth'], s.key);
    assert.equal(seen.headers.host, 'backend');
    assert.equal(seen.servername, 'backend');
    assert.equal(seen.peer?.subjectCN, 'app');
    assert.equal(seen.peer.authorized, true);
    assert.match(seen.headers['x-correlation-id'] ?? '', UUID4_RE);
    assert.match(seen.headers['x-request-id'] ?? '', UUID4_RE);
    assert.match(seen.headers.traceparent ?? '', TRACEPARENT_RE);
    assert.match(seen.headers.via ?? '', VIA_OUT_RE);
    assert.match(seen.headers['content-type'], /^application\/json/);
    // the user-service upstream got nothing: the listen port decides
    assert.equal(s.up.requests.filter((r) => r.url === '/graphql').length, 0);
  });

  test('a query with variables', async () => {
    const data = await client.request({ document: GET_USER, variables: { id: '123' }, signal: signal() });
    assert.deepEqual(data, { user: GRAPHQL_USERS[123] });
    const seen = lastGraphqlRequest();
    const sent = JSON.parse(seen.body);
    assert.deepEqual(sent.variables, { id: '123' });
    assert.equal(sent.operationName, 'GetUser');
    assert.equal(seen.headers['x-service-auth'], s.key);

    const none = await client.request({ document: GET_USER, variables: { id: '999' }, signal: signal() });
    assert.deepEqual(none, { user: null });
  });

  test('the wire field: key present, app correlation id kept; response carries the same ids', async () => {
    const res = await client.rawRequest({
      query: `{ wire { serviceAuthPresent correlationId requestId host peerCN } }`,
      requestHeaders: { 'x-correlation-id': 'gql-corr-42' },
      signal: signal(),
    });
    assert.equal(res.status, 200);
    const wire = res.data.wire;
    assert.equal(wire.serviceAuthPresent, true);
    assert.equal(wire.correlationId, 'gql-corr-42');
    assert.match(wire.requestId ?? '', UUID4_RE);
    assert.equal(wire.host, 'backend');
    assert.equal(wire.peerCN, 'app');
    assert.equal(res.headers.get('x-correlation-id'), 'gql-corr-42');
    assert.equal(res.headers.get('x-request-id'), wire.requestId);
  });

  test('seed-style client that sends its own x-service-auth: ferry replaces it', async () => {
    const seedClient = new GraphQLClient(`http://${LOOPBACK}:${s.graphqlPort}/graphql`, {
      headers: { 'x-service-auth': 'app-key-from-old-env' },
    });
    const data = await seedClient.request({
      document: `{ wire { serviceAuthPresent } user(id: "1") { name } }`, signal: signal(),
    });
    assert.deepEqual(data, { wire: { serviceAuthPresent: true }, user: { name: GRAPHQL_USERS[1].name } });
    const seen = lastGraphqlRequest();
    assert.equal(seen.headers['x-service-auth'], s.key);
    assert.ok(!JSON.stringify(seen.rawHeaders).includes('app-key-from-old-env'));
  });

  test('GraphQL errors from the service come back to graphql-request intact', async () => {
    const err = await client.request({ document: `{ nope }`, signal: signal() })
      .then(() => assert.fail('graphql-request should throw ClientError'), (e) => e);
    assert.ok(err instanceof ClientError, `expected ClientError, got ${err}`);
    assert.equal(err.response.status, 200);
    assert.match(err.response.errors?.[0]?.message ?? '', /Cannot query field "nope"/);
    assert.equal(err.response.headers.get('x-ferry-error'), null);
  });

  test('a dead service behind its listen port: ClientError carrying ferry\'s 503 JSON', async () => {
    const deadClient = new GraphQLClient(`http://${LOOPBACK}:${s.deadListenPort}/graphql`);
    const err = await deadClient.request({
      document: GET_USER, variables: { id: '1' }, requestHeaders: { 'x-correlation-id': 'gql-dead-1' },
      signal: signal(),
    }).then(() => assert.fail('graphql-request should throw'), (e) => e);
    assert.ok(err instanceof ClientError, `expected ClientError, got ${err}`);
    assert.equal(err.response.status, 503);
    assert.equal(err.response.headers.get('x-ferry-error'), 'SERVICE_UNAVAILABLE');
    assert.equal(err.response.headers.get('x-correlation-id'), 'gql-dead-1');
    assert.match(err.response.headers.get('content-type') ?? '', /^application\/json/);
    const body = JSON.parse(err.response.body);
    assert.equal(body.success, false);
    assert.equal(body.error?.code, 'SERVICE_UNAVAILABLE');
    assert.equal(s.gql.requests.filter((r) => r.headers['x-correlation-id'] === 'gql-dead-1').length, 0);
  });

  test('several concurrent queries on the listen port all succeed with their own ids', async () => {
    const ids = Array.from({ length: 20 }, (_, i) => `gql-c-${i}`);
    const results = await Promise.all(ids.map((corr) => client.request({
      document: `{ wire { correlationId serviceAuthPresent } }`,
      requestHeaders: { 'x-correlation-id': corr },
      signal: signal(),
    })));
    results.forEach((r, i) => {
      assert.equal(r.wire.correlationId, ids[i]);
      assert.equal(r.wire.serviceAuthPresent, true);
    });
  });
});
