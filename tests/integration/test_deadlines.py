"""Deadline propagation (SPEC §16): x-ferry-deadline-ms on every forwarded
request (the time left, per attempt), a received one caps the request
deadline outbound and the local app's timeout inbound, 0 left is a 504 that
reaches nobody, malformed values are ignored, header rules cannot touch it,
and one budget holds across a chain of three apps and four ferries."""

import os
import select
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time

import harness
from harness import FerryTestCase, Reader, build_request, delay, free_port, pki, read_response, service

KEY = "deadline-mesh-key-0123456789"
HDR = "x-ferry-deadline-ms"


def deadline_of(req):
    """The one x-ferry-deadline-ms a request carried, as an int."""
    values = req.header_all(HDR)
    if len(values) != 1:
        raise AssertionError("%s lines: %r" % (HDR, values))
    if not values[0].isdigit():
        raise AssertionError("%s: %r is not a number" % (HDR, values[0]))
    return int(values[0])


def mesh_service(inbound_port, **extra):
    """A service reached through a peer ferry's inbound listener (mTLS + key)."""
    return harness.deep_merge({"endpoints": ["127.0.0.1:%d" % inbound_port],
                               "tls": harness.tls_client("backend"),
                               "auth": {"key_env": "MESH_KEY"}}, extra)


class DeadlineCase(FerryTestCase):

    def inbound_ferry(self, app, timeouts=None, services=None, **inbound_extra):
        """A ferry whose inbound listener fronts APP (and that may have
        outbound services too); returns (ferry, inbound port)."""
        p = pki()
        port = free_port()
        inbound = {"address": "127.0.0.1:%d" % port,
                   "tls": {"cert": p.server.cert, "key": p.server.key, "client_ca": p.ca.cert},
                   "auth": {"keys_env": ["MESH_KEY"]},
                   "local_app": app.address, **inbound_extra}
        if timeouts:
            inbound["timeouts"] = timeouts
        f = self.ferry(services or {}, env={"MESH_KEY": KEY}, listeners={"inbound": inbound})
        return f, port

    def call_inbound(self, port, headers, timeout=8, key=KEY):
        """One request straight to an inbound listener, as a peer ferry
        would send it: (response, seconds taken)."""
        p = pki()
        ctx = ssl.create_default_context(cafile=p.ca.cert)
        ctx.check_hostname = False
        ctx.load_cert_chain(p.client.cert, p.client.key)
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s = ctx.wrap_socket(raw, server_hostname="backend")
        t0 = time.monotonic()
        try:
            s.sendall(build_request("GET", "/in", [("Host", "svc"), ("x-service-auth", key)] + headers))
            return read_response(Reader(s)), time.monotonic() - t0
        finally:
            s.close()

    def timed(self, f, headers, host="svc", method="GET", timeout=8):
        t0 = time.monotonic()
        with f.client(timeout=timeout) as c:
            resp = c.request(method, "/d", [("Host", host)] + headers)
        return resp, time.monotonic() - t0


class OutboundTest(DeadlineCase):

    def test_header_added_with_the_time_left(self):
        up = self.upstream(tls=False)
        f = self.ferry({"svc": service(up, timeouts={"request": "2s"})})
        resp, _ = self.timed(f, [])
        self.assertEqual(resp.status, 200, resp.body[:300])
        left = deadline_of(up.last)
        self.assertTrue(1500 < left <= 2000, left)

    def test_retry_carries_less_time(self):
        """Each attempt is sent with the time left then: the retry after a
        300 ms per-try timeout carries at least 300 ms less."""
        up = self.upstream(harness.sequence(delay(5), harness.echo()), tls=False)
        f = self.ferry({"svc": service(up, timeouts={"per_try": "300ms", "request": "3s"},
                                       retries={"max": 1, "on": ["per-try-timeout"]})})
        resp, _ = self.timed(f, [])
        self.assertEqual(resp.status, 200, resp.body[:300])
        first, second = (deadline_of(r) for r in up.wait_requests(2))
        self.assertTrue(2500 < first <= 3000, first)
        self.assertLessEqual(second, first - 300, (first, second))
        self.assertGreater(second, 0)

    def test_app_caps_the_deadline(self):
        up = self.upstream(delay(5), tls=False)
        f = self.ferry({"svc": service(up, timeouts={"request": "10s"}, retries={"max": 0})})
        resp, took = self.timed(f, [(HDR, "400")])
        self.assert_ferry_error(resp, 504, "SERVICE_TIMEOUT", message_re=r"request's own deadline")
        self.assertGreater(took, 0.35)
        self.assertLess(took, 1.5, "the app's 400 ms did not cap the 10 s timeout")
        self.assertTrue(0 < deadline_of(up.last) <= 400, up.last.header_all(HDR))

    def test_app_cannot_extend_the_deadline(self):
        up = self.upstream(delay(5), tls=False)
        f = self.ferry({"svc": service(up, timeouts={"request": "500ms"}, retries={"max": 0})})
        resp, took = self.timed(f, [(HDR, "60000")])
        self.assert_ferry_error(resp, 504, "SERVICE_TIMEOUT")
        self.assertLess(took, 1.5, "the app extended the 500 ms timeout")
        self.assertTrue(0 < deadline_of(up.last) <= 500, up.last.header_all(HDR))

    def test_smallest_line_wins_and_only_one_is_sent(self):
        up = self.upstream(tls=False)
        f = self.ferry({"svc": service(up, timeouts={"request": "5s"})})
        resp, _ = self.timed(f, [(HDR, "4000"), ("X-Ferry-Deadline-Ms", "700"), (HDR, "2000")])
        self.assertEqual(resp.status, 200)
        self.assertTrue(0 < deadline_of(up.last) <= 700, up.last.header_all(HDR))

    def test_h2c_app_caps_and_zero_is_504(self):
        """The same over HTTP/2 from the app (one stream each)."""
        harness.need_python_h2()
        import test_h2
        up = self.upstream(delay(5), tls=False)
        f = self.ferry({"svc": service(up, timeouts={"request": "10s"}, retries={"max": 0})})
        with test_h2.H2(f.outbound_port) as c:
            t0 = time.monotonic()
            st = c.get("/h2cap", headers=[(HDR, "400")], timeout=5)
            took = time.monotonic() - t0
            self.assert_ferry_error(st.response(), 504, "SERVICE_TIMEOUT")
            self.assertLess(took, 1.5)
            self.assertTrue(0 < deadline_of(up.last) <= 400)
            st = c.get("/h2zero", headers=[(HDR, "0")])
            self.assert_ferry_error(st.response(), 504, "SERVICE_TIMEOUT")
        self.assertEqual([r.target for r in up.requests], ["/h2cap"])

    def test_zero_left_is_504_at_once(self):
        up = self.upstream(tls=False)
        f = self.ferry({"svc": service(up, timeouts={"request": "5s"})})
        for value in ("0", "000"):
            resp, took = self.timed(f, [(HDR, value), ("x-correlation-id", "dl-zero")])
            self.assert_ferry_error(resp, 504, "SERVICE_TIMEOUT", message_re=r"no time left",
                                    correlation_id="dl-zero")
            self.assertLess(took, 0.5)
        time.sleep(0.2)
        self.assertEqual(up.requests, [], "a request with no time left reached the upstream")
        self.assertEqual(up.connections_accepted, 0)
        lines = harness.wait_until(lambda: len(f.access_log()) >= 2 and f.access_log(), 3)
        self.assertEqual([(l["status"], l["error"]) for l in lines],
                         [(504, "SERVICE_TIMEOUT")] * 2)

    def test_zero_left_grpc_form(self):
        """gRPC gets the gRPC form (DEADLINE_EXCEEDED), from either header."""
        hole = self.blackhole()
        f = self.ferry({"svc": service(hole.port, protocol="h2")})
        for hdrs in ([(HDR, "0")], [("grpc-timeout", "0m")], [("grpc-timeout", "0n"), (HDR, "900")]):
            t0 = time.monotonic()
            with f.client() as c:
                r = c.request("POST", "/pkg.Svc/Call", [("Host", "svc"),
                                                        ("content-type", "application/grpc"),
                                                        *hdrs], b"\x00\x00\x00\x00\x00")
            self.assertEqual((r.status, r.header("grpc-status"), r.header("x-ferry-error")),
                             (200, "4", "SERVICE_TIMEOUT"), (hdrs, r.headers))
            self.assertLess(time.monotonic() - t0, 0.5)

    def test_malformed_values_are_ignored(self):
        """A value that is not a whole number of milliseconds is ignored
        (logged): the service's own timeout applies, never 0 or a wrap."""
        up = self.upstream(tls=False)
        f = self.ferry({"svc": service(up, timeouts={"request": "2s"})})
        for value in ("-5", "abc", "1.5", "5ms", "0x10", "-0", "", "1 2",
                      "99999999999999999999999999999999", "18446744073709551616"):
            resp, _ = self.timed(f, [(HDR, value)])
            self.assertEqual(resp.status, 200, (value, resp.body[:300]))
            left = deadline_of(up.last)
            self.assertTrue(1500 < left <= 2000, (value, left))
        self.assertIn("ignored malformed x-ferry-deadline-ms", f.stderr_text())
        # a look-alike (read as the real one by CGI-style apps) is dropped,
        # and caps nothing
        resp, _ = self.timed(f, [("x_ferry_deadline_ms", "0")])
        self.assertEqual(resp.status, 200)
        self.assertNotIn("x_ferry_deadline_ms", up.last.names())
        self.assertTrue(1500 < deadline_of(up.last) <= 2000)
        self.assertTrue(f.alive())

    def test_header_rules_cannot_touch_it(self):
        # nor grpc-timeout, the time left for gRPC (a rule's line went
        # upstream before ferry's: "99999999H" then "00002000m"), nor a
        # '_' look-alike, which CGI-style apps read as the real one
        for rules, name in (({"request": {"set": {"X-Ferry-Deadline-Ms": "99999"}}}, HDR),
                            ({"request": {"add": {HDR: "1"}}}, HDR),
                            ({"request": {"remove": [HDR]}}, HDR),
                            ({"request": {"set": {"grpc-timeout": "99999999H"}}}, "grpc-timeout"),
                            ({"request": {"add": {"x_ferry_deadline_ms": "1"}}},
                             "x_ferry_deadline_ms")):
            cfg = harness.ferry_config({"svc": {"endpoints": ["127.0.0.1:1"], "headers": rules}})
            d = tempfile.mkdtemp(prefix="ferry-dl-")
            self._closers.append(lambda d=d: shutil.rmtree(d, ignore_errors=True))
            path = os.path.join(d, "ferry.yaml")
            with open(path, "w") as fh:
                fh.write(harness.to_yaml(cfg) + "\n")
            proc = subprocess.run([harness.ferry_bin(), "-t", "-c", path], capture_output=True,
                                  text=True, timeout=10, stdin=subprocess.DEVNULL)
            self.assertEqual(proc.returncode, 1, (rules, proc.stdout, proc.stderr))
            self.assertIn('"%s" is managed by ferry' % name, proc.stderr, rules)


class InboundTest(DeadlineCase):

    def test_app_gets_the_time_left(self):
        app = self.upstream(tls=False)
        _, port = self.inbound_ferry(app, timeouts={"request": "3s"})
        resp, _ = self.call_inbound(port, [])
        self.assertEqual(resp.status, 200, resp.body[:300])
        self.assertTrue(2500 < deadline_of(app.last) <= 3000)
        resp, _ = self.call_inbound(port, [(HDR, "800")])
        self.assertEqual(resp.status, 200)
        self.assertTrue(0 < deadline_of(app.last) <= 800, app.last.header_all(HDR))

    def test_peer_deadline_caps_the_local_app_timeout(self):
        app = self.upstream(delay(5), tls=False)
        f, port = self.inbound_ferry(app, timeouts={"request": "10s"})
        resp, took = self.call_inbound(port, [(HDR, "400")])
        self.assert_ferry_error(resp, 504, "SERVICE_TIMEOUT")
        self.assertGreater(took, 0.35)
        self.assertLess(took, 1.5, "the peer's 400 ms did not cap the 10 s local-app timeout")
        self.assertTrue(0 < deadline_of(app.last) <= 400)

    def test_zero_left_never_reaches_the_app(self):
        app = self.upstream(tls=False)
        _, port = self.inbound_ferry(app)
        resp, took = self.call_inbound(port, [(HDR, "0")])
        self.assert_ferry_error(resp, 504, "SERVICE_TIMEOUT")
        self.assertLess(took, 0.5)
        # the key is still checked first: a stranger learns nothing
        resp, _ = self.call_inbound(port, [(HDR, "0")], key="wrong")
        self.assert_ferry_error(resp, 403, "INVALID_SERVICE_AUTH")
        time.sleep(0.2)
        self.assertEqual(app.requests, [])
        self.assertEqual(app.connections_accepted, 0)

    def test_h2c_local_app_gets_it_too(self):
        harness.need_python_h2()
        import test_h2_upstream
        app = test_h2_upstream.H2Upstream()
        self._closers.append(app.close)
        _, port = self.inbound_ferry(app, timeouts={"request": "3s"}, local_app_protocol="h2c")
        resp, _ = self.call_inbound(port, [(HDR, "900")])
        self.assertEqual(resp.status, 200, resp.body[:300])
        value = app.headers["/in"][HDR]
        self.assertTrue(value.isdigit() and 0 < int(value) <= 900, repr(value))


class GrpcTest(DeadlineCase):
    """Both deadline headers on one gRPC call: the smaller wins, and the two
    sent on agree."""

    def setUp(self):
        super().setUp()
        harness.need_python_h2()
        import test_h2_upstream
        self.up = test_h2_upstream.H2Upstream()
        self._closers.append(self.up.close)
        self.f = self.ferry({"svc": {"endpoints": [self.up.address], "protocol": "h2",
                                     "timeouts": {"request": "10s"}}})

    def grpc(self, path, hdrs):
        t0 = time.monotonic()
        with self.f.client() as c:
            r = c.request("POST", path, [("Host", "svc"), ("content-type", "application/grpc"),
                                         *hdrs], b"\x00\x00\x00\x00\x00")
        return r, time.monotonic() - t0

    def sent(self, path):
        h = self.up.headers[path]
        return int(h["grpc-timeout"][:-1]), h[HDR]

    def test_the_smaller_wins_and_both_agree(self):
        for path, hdrs, most in (("/a/okgrpc", [("grpc-timeout", "5S"), (HDR, "400")], 400),
                                 ("/b/okgrpc", [("grpc-timeout", "300m"), (HDR, "5000")], 300)):
            r, _ = self.grpc(path, hdrs)
            self.assertEqual((r.status, harness.find_all(r.trailers, "grpc-status")), (200, ["0"]),
                             (r.headers, r.trailers))
            gt, dl = self.sent(path)
            self.assertTrue(dl.isdigit(), repr(dl))
            self.assertEqual(gt, int(dl), "grpc-timeout and %s disagree" % HDR)
            self.assertTrue(most - 200 < gt <= most, (path, gt))

    def test_of_several_grpc_timeouts_the_shortest_counts(self):
        # one line is what gRPC sends; of more, the shortest well-formed
        # one counts (a caller only shortens its deadline), and the
        # upstream gets one, ferry's (it used to take the first line)
        r, _ = self.grpc("/c/okgrpc", [("grpc-timeout", "5S"), ("grpc-timeout", "x"),
                                       ("grpc-timeout", "250m")])
        self.assertEqual(r.status, 200)
        gt, dl = self.sent("/c/okgrpc")
        self.assertTrue(50 < gt <= 250, gt)
        self.assertEqual(gt, int(dl))

    def test_deadline_header_bounds_a_grpc_call(self):
        # /slow answers after 1 s: past the 400 ms
        r, took = self.grpc("/slowgrpc", [("grpc-timeout", "5S"), (HDR, "400")])
        self.assertEqual((r.status, r.header("grpc-status"), r.header("x-ferry-error")),
                         (200, "4", "SERVICE_TIMEOUT"))
        self.assertLess(took, 0.9)


class ChainTest(DeadlineCase):
    """app A -> ferry A (outbound, request 1s) -> ferry B (inbound, 10s) ->
    app B -> ferry B (outbound, 10s) -> ferry C (inbound, 10s) -> app C,
    which takes 5 s. App B forwards the header on its own call, as it
    forwards x-correlation-id. Every hop gives up when A's second is over,
    not after its own 10 s."""

    def test_one_budget_for_the_whole_chain(self):
        t0 = None
        seen = {}
        lock = threading.Lock()

        def note(key, value):
            with lock:
                seen.setdefault(key, value)

        def app_c(conn, req):
            note("c_header", req.header_all(HDR))
            note("c_arrived", time.monotonic() - t0)
            # slow: no answer for 5 s, unless ferry C gives up first (EOF)
            end = time.monotonic() + 5
            while time.monotonic() < end and not conn.upstream.stopping.is_set():
                r, _, _ = select.select([conn.sock], [], [], 0.02)
                if r:
                    try:
                        gone = conn.sock.recv(1) == b""
                    except OSError:
                        gone = True
                    if gone:
                        note("c_given_up", time.monotonic() - t0)
                        conn.closed = True
                        return
            if conn.sleep(0):
                conn.respond(200, [], b"too late")

        def app_b(conn, req):
            note("b_header", req.header_all(HDR))
            hdrs = [("Host", "svc-c"), ("x-correlation-id", req.header("x-correlation-id"))]
            hdrs += [(HDR, v) for v in req.header_all(HDR)]
            try:
                r = harness.request(ferry_b.outbound_port, "GET", "/c", hdrs, timeout=8)
                note("b_call", (r.status, r.header("x-ferry-error")))
            except OSError as e:
                note("b_call", repr(e))
            note("b_call_returned", time.monotonic() - t0)
            try:
                conn.respond(502, [], b"downstream failed")
            except OSError:
                conn.closed = True       # ferry B already gave up on us

        c_app = self.upstream(app_c, tls=False)
        b_app = self.upstream(app_b, tls=False)
        ferry_c, c_port = self.inbound_ferry(c_app, timeouts={"request": "10s"})
        ferry_b, b_port = self.inbound_ferry(b_app, timeouts={"request": "10s"}, services={
            "svc-c": mesh_service(c_port, timeouts={"request": "10s"})})
        ferry_a = self.ferry({"svc-b": mesh_service(b_port, timeouts={"request": "1s"})},
                             env={"MESH_KEY": KEY})

        t0 = time.monotonic()
        with ferry_a.client(timeout=8) as c:
            resp = c.request("GET", "/a", [("Host", "svc-b"), ("x-correlation-id", "chain-1")])
        a_done = time.monotonic() - t0
        self.assert_ferry_error(resp, 504, "SERVICE_TIMEOUT", correlation_id="chain-1")
        harness.wait_until(lambda: "c_given_up" in seen and "b_call_returned" in seen, 8)

        b_left = [int(v) for v in seen.get("b_header", [])]
        c_left = [int(v) for v in seen.get("c_header", [])]
        self.assertEqual(len(b_left), 1, seen)
        self.assertEqual(len(c_left), 1, seen)
        self.assertTrue(0 < b_left[0] <= 1000, seen)
        self.assertTrue(0 < c_left[0] <= b_left[0], seen)
        self.assertEqual(seen.get("b_call"), (504, "SERVICE_TIMEOUT"), seen)
        moments = {"ferry A answered app A": a_done,
                   "ferry B answered app B's call": seen.get("b_call_returned"),
                   "ferry C gave up on app C": seen.get("c_given_up")}
        for what, at in moments.items():
            self.assertIsNotNone(at, "%s: never (%r)" % (what, seen))
            self.assertTrue(0.9 <= at <= 1.5, "%s at %.3f s, not at A's 1 s deadline: %r"
                            % (what, at, moments))
        # and each ferry's access log says so: every line ends near 1 s,
        # as its own 504 or cut by the caller's giving up a moment sooner
        for f in (ferry_a, ferry_b, ferry_c):
            lines = harness.wait_until(lambda: f.access_log(), 3)
            self.assertTrue(lines)
            for line in lines:
                self.assertTrue(line["status"] == 504 or line["error"] == "client_closed", line)
                self.assertLess(line["duration_ms"], 1500, line)


if __name__ == "__main__":
    harness.main()
