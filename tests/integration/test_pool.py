"""Upstream connection pooling and the stale keep-alive race (SPEC §6)."""

import random
import signal
import threading
import time

import harness
from harness import FerryTestCase, echo, fixed, service


class PoolTest(FerryTestCase):

    def test_sequential_requests_on_one_client_connection_reuse(self):
        up = self.upstream()
        f = self.ferry({"svc": service(up)})
        with f.client() as c:
            for i in range(50):
                resp = c.request("GET", "/%d" % i, [("Host", "svc")])
                self.assertEqual(resp.status, 200)
        self.assertEqual(len(up.requests), 50)
        self.assertLessEqual(up.connections_accepted, 2)
        self.assertFalse(any(r.has_token("connection", "close") for r in up.requests))

    def test_sequential_client_connections_share_the_pool(self):
        up = self.upstream()
        f = self.ferry({"svc": service(up)})
        for i in range(40):
            resp = f.get("/%d" % i, host="svc", headers=[("Connection", "close")])
            self.assertEqual(resp.status, 200)
        self.assertEqual(len(up.requests), 40)
        # one pool per worker (workers: 2), so a handful at most
        self.assertLessEqual(up.connections_accepted, 4)

    def test_concurrent_requests_use_few_connections(self):
        up = self.upstream()
        f = self.ferry({"svc": service(up)})
        errors = []

        def client(n):
            try:
                with f.client() as c:
                    for i in range(25):
                        body = b"%d-%d" % (n, i)
                        resp = c.request("POST", "/c", [("Host", "svc")], body)
                        if resp.status != 200 or resp.json()["body"] != body.decode():
                            errors.append((resp.status, resp.body[:100]))
            except Exception as e:      # reported below, in the test's thread
                errors.append(repr(e))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(len(up.requests), 200)
        self.assertLessEqual(up.connections_accepted, 20, "200 requests, 8 at a time")

    def test_max_requests_per_connection(self):
        up = self.upstream()
        f = self.ferry({"svc": service(up, pool={"max_requests_per_connection": 3})},
                       workers=1)
        with f.client() as c:
            for _ in range(9):
                self.assertEqual(c.request("GET", "/", [("Host", "svc")]).status, 200)
        per_conn = {}
        for r in up.requests:
            per_conn[r.conn_id] = per_conn.get(r.conn_id, 0) + 1
        self.assertEqual(sorted(per_conn.values()), [3, 3, 3])

    def _two_at_once(self, connect_timeout, workers=1):
        up = self.upstream(harness.delay(0.5))
        f = self.ferry({"svc": service(up, pool={"max_per_endpoint": 1},
                                       timeouts={"connect": connect_timeout},
                                       retries={"max": 0})}, workers=workers)
        results = []

        def one():
            with f.client() as c:
                t0 = time.monotonic()
                r = c.request("GET", "/", [("Host", "svc")])
                results.append((r, time.monotonic() - t0))
        threads = [threading.Thread(target=one) for _ in range(2)]
        for t in threads:
            t.start()
            time.sleep(0.05)
        for t in threads:
            t.join(10)
        return up, results

    def test_max_per_endpoint_waits_for_a_connection(self):
        """SPEC 6 Pool: the bound holds for the whole process; a request
        waits for a connection up to the connect timeout."""
        up, results = self._two_at_once("2s")
        self.assertEqual(sorted(r.status for r, _ in results), [200, 200])
        self.assertEqual(up.connections_accepted, 1, "more connections than max_per_endpoint")
        self.assertGreater(max(d for _, d in results), 0.9, "the second did not wait")

    def test_max_per_endpoint_across_workers(self):
        """The bound is for the whole process: a connection idle in one
        worker's pool is let go so a request waiting in another can open
        its own (never two at once)."""
        up, results = self._two_at_once("2s", workers=2)
        self.assertEqual(sorted(r.status for r, _ in results), [200, 200])
        self.assertLessEqual(up.connections_accepted, 2)

    def test_max_per_endpoint_503_after_connect_timeout(self):
        up, results = self._two_at_once("200ms")
        statuses = sorted(r.status for r, _ in results)
        self.assertEqual(statuses, [200, 503])
        refused = [r for r, _ in results if r.status == 503][0]
        self.assert_ferry_error(refused, 503, "SERVICE_UNAVAILABLE", "pool")
        self.assertEqual(up.connections_accepted, 1)

    def _two_endpoints_one_held(self, behaviour_b):
        """Endpoints A and B (round robin, pool.max_per_endpoint 1, one
        worker); A's one connection is held by a /slow request (1.5 s)
        once this returns. The upstreams, and the thread to join."""
        a = self.upstream(lambda conn, req: (conn.sleep(1.5) if req.target == "/slow" else True)
                          and echo()(conn, req), tls=False)
        b = self.upstream(behaviour_b, tls=False)
        f = self.f = self.ferry({"svc": {"endpoints": [a.address, b.address],
                                         "load_balancer": "round_robin",
                                         "pool": {"max_per_endpoint": 1},
                                         "timeouts": {"connect": "3s"}}}, workers=1)
        slow = []
        t = threading.Thread(target=lambda: slow.append(f.get("/slow", host="svc", timeout=10)))
        t.start()
        self.assertTrue(harness.wait_until(lambda: any(r.target == "/slow" for r in a.requests), 5))
        return a, b, t, slow

    def test_a_request_goes_to_an_endpoint_with_room(self):
        """SPEC 6 Pool: while A's one connection is busy, requests go to B,
        which has room, rather than wait for A's."""
        a, b, t, slow = self._two_endpoints_one_held(echo())
        with self.f.client() as c:
            for i in range(6):
                self.assertEqual(c.request("GET", "/n%d" % i, [("Host", "svc")]).status, 200)
        t.join(10)
        self.assertEqual([r.status for r in slow], [200])
        self.assertEqual(sorted(r.target for r in b.requests), ["/n%d" % i for i in range(6)])
        self.assertEqual([r.target for r in a.requests], ["/slow"])
        self.assertEqual(a.connections_accepted, 1)

    def test_a_retry_goes_back_rather_than_wait_on_a_full_pool(self):
        """B answers 503 once: the retry avoids B, but A's pool is full,
        so it goes back to B (the connection it let go is room there) and
        gets B's 200, not a 503 "pool is full" at the connect timeout."""
        seen = []

        def flaky(conn, req):
            seen.append(req.target)
            if seen.count(req.target) == 1:
                conn.respond(503, [("Content-Type", "text/plain")], b"not yet")
            else:
                echo()(conn, req)
        a, b, t, slow = self._two_endpoints_one_held(flaky)
        t0 = time.monotonic()
        r = self.f.get("/flaky", host="svc", timeout=10)
        took = time.monotonic() - t0
        t.join(10)
        self.assertEqual(r.status, 200, r.body[:200])
        self.assertEqual(seen, ["/flaky", "/flaky"])
        self.assertEqual([r.target for r in a.requests], ["/slow"])
        self.assertLess(took, 1.2, "the retry waited for A's pool")

    def test_upstream_connection_close_is_honoured(self):
        up = self.upstream(fixed(200, [("Connection", "close")], b"bye"))
        f = self.ferry({"svc": service(up)})
        with f.client() as c:
            for _ in range(5):
                resp = c.request("GET", "/", [("Host", "svc")])
                self.assertEqual((resp.status, resp.body), (200, b"bye"))
        self.assertEqual(up.connections_accepted, 5)
        self.assertEqual(len(up.connection_ids()), 5)

    # the stale pooled connection race (Envoy's "503 UC")

    def run_spaced(self, f, n, spacing, jitter=0.0):
        """n requests on one client connection, alternating GET and POST,
        spaced by spacing (+- jitter) seconds; the responses."""
        rng = random.Random(7)
        out = []
        with f.client() as c:
            for i in range(n):
                if i:
                    time.sleep(spacing + rng.uniform(-jitter, jitter))
                if i % 2:
                    out.append(c.request("POST", "/p%d" % i, [("Host", "svc")], b"body-%d" % i))
                else:
                    out.append(c.request("GET", "/g%d" % i, [("Host", "svc")]))
        return out

    def assert_all_ok(self, responses, up):
        bad = [(r.status, r.header("x-ferry-error"), r.body[:120]) for r in responses
               if r.status != 200]
        self.assertEqual(bad, [], "requests failed on stale pooled connections")
        posts = [r for r in up.requests if r.method == "POST"]
        self.assertEqual(len(posts), len(responses) // 2, "a POST was sent twice")

    def test_stale_race_advertised_keep_alive(self):
        """The upstream says Keep-Alive: timeout=1 and closes idle
        connections after exactly 1 s; requests come just over 1 s apart."""
        up = self.upstream(idle_close_after=1.0, advertise_keep_alive=1)
        f = self.ferry({"svc": service(up)}, workers=1)
        responses = self.run_spaced(f, 8, spacing=1.0, jitter=0.05)
        self.assert_all_ok(responses, up)

    def test_stale_race_unadvertised_close(self):
        """The upstream closes idle connections after 1 s without saying so:
        ferry must notice the close of an idle pooled connection."""
        up = self.upstream(idle_close_after=1.0)
        f = self.ferry({"svc": service(up)}, workers=1)
        responses = self.run_spaced(f, 8, spacing=1.1)
        self.assert_all_ok(responses, up)
        self.assertGreaterEqual(up.connections_accepted, 7, "each request after an idle close "
                                "needs a new connection")

    def test_reuse_within_keep_alive_timeout(self):
        up = self.upstream(idle_close_after=3.0, advertise_keep_alive=3)
        f = self.ferry({"svc": service(up)}, workers=1)
        responses = self.run_spaced(f, 5, spacing=0.3)
        self.assert_all_ok(responses, up)
        self.assertEqual(up.connections_accepted, 1)

    def test_resend_goes_on_a_new_connection(self):
        """SPEC §6: the re-send after a stale pooled connection goes on a
        new connection. Two pooled connections that the upstream closes
        as each is reused (a restart closes them all): the re-send must
        not take the second one, and is neither a retry nor a failure."""
        armed = threading.Event()

        def behave(conn, req):
            if armed.is_set() and conn.conn_id <= 2:
                conn.keep_open = False      # closed as it was reused
                return
            if not armed.is_set():
                conn.sleep(0.3)             # both busy: two connections
            harness.echo()(conn, req)
        up = self.upstream(behave)
        f = self.ferry({"svc": service(up, retries={"max": 0})}, workers=1)
        warm = []
        threads = [threading.Thread(target=lambda i=i: warm.append(
            f.get("/w%d" % i, host="svc").status)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual((warm, up.connections_accepted), ([200, 200], 2))
        armed.set()
        resp = f.get("/race", host="svc")
        self.assertEqual(resp.status, 200, resp.body[:300])
        self.assertEqual(sum(r.target == "/race" for r in up.requests), 2,
                         "the re-send took another pooled connection")

    def test_resends_counted(self):
        """A re-send after a stale pooled connection is neither an attempt
        nor a retry, but is counted (ferry_upstream_resends_total, the
        access log's resends): the upstream's request count is ferry's
        attempts plus its re-sends."""
        def first_only(conn, req):
            # a later request on a kept connection finds it closed, to
            # ferry exactly the keep-alive race, made deterministic
            if req.seq > 0:
                conn.keep_open = False
            else:
                harness.echo()(conn, req)
        up = self.upstream(first_only)
        f = self.ferry({"svc": service(up, retries={"max": 0})}, workers=1)
        statuses = []
        for i in range(3):
            if i:
                time.sleep(0.2)
            statuses.append(f.get("/r%d" % i, host="svc").status)
        self.assertEqual(statuses, [200, 200, 200])
        # the 2nd and 3rd met a closed pooled connection and went again
        self.assertEqual([r.target for r in up.requests], ["/r0", "/r1", "/r1", "/r2", "/r2"])
        harness.wait_until(lambda: len(self.svc_lines(f)) >= 3, 3)
        lines = self.svc_lines(f)
        self.assertEqual([(e["path"], e["attempts"], e["resends"]) for e in lines],
                         [("/r0", 1, 0), ("/r1", 1, 1), ("/r2", 1, 1)])
        m = f.admin("/metrics").body.decode()
        self.assertIn('ferry_upstream_resends_total{service="svc"} 2\n', m)
        self.assertIn('ferry_upstream_attempts_total{service="svc",result="ok"} 3\n', m)
        self.assertIn('ferry_upstream_attempts_total{service="svc",result="reset"} 0\n', m)
        self.assertIn('ferry_retries_total{service="svc"} 0\n', m)
        attempts = sum(e["attempts"] for e in lines)
        resends = sum(e["resends"] for e in lines)
        self.assertEqual(len(up.requests), attempts + resends)

    def test_post_resent_when_reset_arrived_with_it(self):
        """A POST without Idempotency-Key is re-sent when its reused pooled
        connection fails before any byte of it is written: here the
        upstream's RST reaches the socket in the same turn as the POST
        (ferry is stopped while both arrive, the POST first), so the pool
        hands the connection out before ferry reads the reset. The bytes
        of the requests written on that connection before do not count
        as this one's."""
        go_reset = threading.Event()
        reset_done = threading.Event()

        def reset_after_first(conn, req):
            harness.echo()(conn, req)
            if req.seq == 0 and req.target == "/warm":
                go_reset.wait(10)
                conn.reset()
                reset_done.set()
        up = self.upstream(reset_after_first)
        f = self.ferry({"svc": service(up, retries={"max": 0})}, workers=1)
        with f.client() as c:
            self.assertEqual(c.request("GET", "/warm", [("Host", "svc")]).status, 200)
            time.sleep(0.1)     # the connection is back in the pool
            f.freeze()
            try:
                c.send(harness.build_request("POST", "/once", [("Host", "svc")], b"pay"))
                time.sleep(0.1)
                go_reset.set()
                # a loaded machine may run the upstream's thread late: ferry
                # goes on only once the RST is in its socket
                self.assertTrue(reset_done.wait(10))
                time.sleep(0.1)
            finally:
                f.signal(signal.SIGCONT)
            resp = c.read_response("POST")
        self.assertEqual((resp.status, resp.header("x-ferry-error")), (200, None), resp.body[:200])
        self.assertEqual([r.target for r in up.requests], ["/warm", "/once"])
        self.assertEqual(len(up.connection_ids()), 2)

    @staticmethod
    def svc_lines(f):
        return [e for e in f.access_log() if e["service"] == "svc"]


if __name__ == "__main__":
    harness.main()
