"""SPEC §11 limits along a chain of ferries: app A -> ferry A outbound ->
mTLS (HTTP/1.1 or HTTP/2) -> ferry B inbound -> app B.

A request head may hold 100 headers and 64 KiB of what its sender wrote;
Host counts; the headers of the kinds ferry writes itself (ids, traceparent, via,
x-service-auth, x-ferry-*, x-forwarded-*, keep-alive, ...) do not count,
so a head at the limits still passes the next ferry once the first one
added its own. Responses likewise. Only header rules (SPEC §15) can push a
head over: that is a 431 (request) or a 502 (response) at the ferry whose
rules did it, never a refusal by the next hop."""

import json
import re
import socket
import ssl

import harness
from harness import (FerryTestCase, Reader, UUID4_RE, build_request, fixed, free_port, pki,
                     read_response)

KEY = "limits-chain-key-0123456789"
LIMIT_HEADERS = 100
LIMIT_BYTES = 64 * 1024


def h2_client():
    """test_h2's client (H2), or None without python3-h2."""
    try:
        import test_h2
    except (ImportError, SystemExit):
        return None
    return test_h2


def filled(n, mine, start_line, prefix="x-h", fixed_headers=()):
    """N headers named PREFIX000.. (and FIXED_HEADERS first) whose values
    make the sender's part of the head MINE bytes, as ferry counts it: the
    start line, "name: value\\r\\n" for each header not of ferry's own
    kinds, and the empty line."""
    names = ["%s%03d" % (prefix, i) for i in range(n - len(fixed_headers))]
    used = len(start_line) + 2 + sum(len(k) + len(v) + 4 for k, v in fixed_headers)
    used += sum(len(k) + 4 for k in names)
    fill = mine - used
    assert fill >= len(names), "too many headers for %d bytes" % mine
    out = list(fixed_headers)
    for i, name in enumerate(names):
        k = fill // (len(names) - i)
        out.append((name, (chr(0x61 + i % 26) * k)))
        fill -= k
    return out


class ChainTest(FerryTestCase):

    def chain(self, protocol, app_b=None, a_service=None, inbound=None):
        """Ferry B (inbound, mTLS, key) before app B, and ferry A whose
        service order-service is ferry B, spoken to in PROTOCOL."""
        p = pki()
        app_b = app_b or self.upstream(tls=False)
        self.inbound_port = free_port()
        lis = {
            "address": "127.0.0.1:%d" % self.inbound_port,
            "tls": {"cert": p.server.cert, "key": p.server.key, "client_ca": p.ca.cert},
            "auth": {"keys_env": ["CHAIN_KEY"]},
            "local_app": app_b.address,
        }
        lis.update(inbound or {})
        b = self.ferry({}, env={"CHAIN_KEY": KEY}, listeners={"inbound": lis})
        svc = {"endpoints": ["127.0.0.1:%d" % self.inbound_port],
               "tls": harness.tls_client("backend"), "auth": {"key_env": "CHAIN_KEY"},
               "protocol": protocol, "retries": {"max": 0}}
        svc.update(a_service or {})
        a = self.ferry({"order-service": svc}, env={"CHAIN_KEY": KEY})
        return a, b, app_b

    def endpoint_protocol(self, a):
        body = json.loads(a.admin("/services").body)
        return body["services"][0]["endpoints"][0]["protocol"]

    def request_at_the_limits(self, target="/chain"):
        """100 headers of app A's own, Host among them, 64 KiB of them."""
        return filled(LIMIT_HEADERS, LIMIT_BYTES, "GET %s HTTP/1.1\r\n" % target,
                      fixed_headers=[("Host", "order-service")])

    def assert_reached_app(self, app_b, sent):
        seen = app_b.last
        mine = [(k, v) for k, v in sent if k.lower() != "host"]
        got = [(k.lower(), v) for k, v in seen.headers if re.match(r"^x-h\d{3}$", k, re.I)]
        self.assertEqual(got, [(k.lower(), v) for k, v in mine],
                         "app B did not get app A's 99 headers as sent")
        # and every header of ferry's own, from both ferries
        self.assertEqual(seen.header_all("x-ferry-peer"), ["spiffe://test/app"])
        self.assertEqual(seen.header_all("x-forwarded-proto"), ["https"])
        self.assertEqual(seen.header_all("x-forwarded-for"), ["127.0.0.1"])
        self.assertEqual(seen.header_all("x-service-auth"), [])
        self.assertRegex(seen.header("x-correlation-id") or "", UUID4_RE)
        self.assertRegex(seen.header("x-request-id") or "", UUID4_RE)
        self.assertRegex(seen.header("traceparent") or "", r"^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$")
        self.assertRegex(", ".join(seen.header_all("via")),
                         r"^1\.1 ferry-[0-9a-f]{8}-out, 1\.1 ferry-[0-9a-f]{8}-in$")
        self.assertEqual(len(seen.header_all("x-ferry-deadline-ms")), 1)
        self.assertGreaterEqual(len(seen.headers), LIMIT_HEADERS + 8)

    # (a) a request at the limits reaches the local app through both

    def check_request_through(self, protocol):
        a, b, app_b = self.chain(protocol)
        sent = self.request_at_the_limits()
        with a.client() as c:
            resp = c.request("GET", "/chain", sent)
        self.assertEqual(resp.status, 200, resp.body[:300])
        self.assertEqual(self.endpoint_protocol(a), protocol)
        self.assert_reached_app(app_b, sent)
        # a few small ones after it, on the same connections
        with a.client() as c:
            for i in range(3):
                self.assertEqual(c.request("GET", "/small/%d" % i,
                                           [("Host", "order-service")]).status, 200)

    def test_request_at_the_limits_http1(self):
        self.check_request_through("http1")

    def test_request_at_the_limits_h2(self):
        self.check_request_through("h2")

    # (b) a response at the limits reaches app A through both

    def check_response_through(self, protocol):
        start = "HTTP/1.1 200 OK\r\n"
        body = b"fine"
        hdrs = filled(LIMIT_HEADERS, LIMIT_BYTES, start, prefix="x-r",
                      fixed_headers=[("Content-Length", str(len(body)))])
        app_b = self.upstream(fixed(200, hdrs, body), tls=False)
        a, b, _ = self.chain(protocol, app_b=app_b)
        with a.client() as c:
            resp = c.request("GET", "/resp", [("Host", "order-service")])
        self.assertEqual(resp.status, 200, resp.body[:300])
        self.assertEqual(resp.body, body)
        mine = re.compile(r"^x-r\d{3}$", re.I)
        got = [(k.lower(), v) for k, v in resp.headers if mine.match(k)]
        self.assertEqual(got, [(k, v) for k, v in hdrs if mine.match(k)])
        self.assertEqual(resp.header_all("content-length"), [str(len(body))])
        self.assertEqual(len(resp.header_all("x-correlation-id")), 1)
        self.assertEqual(len(resp.header_all("x-request-id")), 1)

    def test_response_at_the_limits_http1(self):
        self.check_response_through("http1")

    def test_response_at_the_limits_h2(self):
        self.check_response_through("h2")

    # (c) over the limits: 431 at the outbound and at the inbound listener

    def test_101_headers_refused_at_the_outbound(self):
        for protocol in ("http1", "h2"):
            with self.subTest(protocol=protocol):
                a, b, app_b = self.chain(protocol)
                hdrs = [("Host", "order-service")] + [("x-h%03d" % i, "v") for i in range(100)]
                with a.client() as c:
                    resp = c.request("GET", "/over", hdrs)
                self.assert_ferry_error(resp, 431, "HEADERS_TOO_LARGE")
                self.assertEqual(app_b.requests, [])

    def tls_socket(self, alpn):
        p = pki()
        ctx = ssl.create_default_context(cafile=p.ca.cert)
        ctx.check_hostname = False
        ctx.load_cert_chain(p.client.cert, p.client.key)
        ctx.set_alpn_protocols([alpn])
        raw = socket.create_connection(("127.0.0.1", self.inbound_port), timeout=5)
        s = ctx.wrap_socket(raw, server_hostname="backend")
        self._closers.append(s.close)
        return s

    def test_101_headers_refused_at_the_inbound_http1(self):
        _, _, app_b = self.chain("http1")
        own = [("Host", "order-service"), ("x-service-auth", KEY),
               ("x-correlation-id", "c-1"), ("Via", "1.1 ferry-00000000-out")]
        # Host and N others: 100 pass, 101 do not
        for n, status in ((99, 200), (100, 431)):
            s = self.tls_socket("http/1.1")
            s.sendall(build_request("GET", "/in/%d" % n,
                                    own + [("x-h%03d" % i, "v") for i in range(n)]))
            resp = read_response(Reader(s))
            if status == 200:
                self.assertEqual(resp.status, 200, resp.body[:300])
            else:
                self.assert_ferry_error(resp, 431, "HEADERS_TOO_LARGE")
        self.assertEqual([r.target for r in app_b.requests], ["/in/99"])

    def test_101_fields_refused_at_the_inbound_h2(self):
        m = h2_client()
        if m is None:
            self.skipTest("python3-h2 not installed")
        _, _, app_b = self.chain("h2")
        with m.H2(sock=self.tls_socket("h2")) as c:
            own = [("x-service-auth", KEY), ("via", "1.1 ferry-00000000-out")]
            # :authority counts as the Host it becomes
            st = c.get("/in/99", authority="order-service",
                       headers=own + [("x-h%03d" % i, "v") for i in range(99)])
            self.assertEqual(st.status, 200, st.headers)
            sid = c.request("/in/100", authority="order-service",
                            headers=own + [("x-h%03d" % i, "v") for i in range(100)])
            st = c.streams[sid]
            c.wait(lambda: st.done, 5)
            if st.reset is None:
                self.assert_ferry_error(st.response(), 431, "HEADERS_TOO_LARGE")
        self.assertEqual([r.target for r in app_b.requests], ["/in/99"])

    # (d) header rules that push a head over: 431 or 502 at that ferry

    def test_request_rule_over_the_limit_is_431_at_the_first_ferry(self):
        a, b, app_b = self.chain("h2", a_service={
            "headers": {"request": {"add": {"x-env": "prod"}}}})
        hdrs = [("Host", "order-service")] + [("x-h%03d" % i, "v") for i in range(99)]
        with a.client() as c:
            resp = c.request("GET", "/rules", hdrs)
        self.assert_ferry_error(resp, 431, "HEADERS_TOO_LARGE",
                                r"over the limit .*ferry's headers and header rules")
        self.assertEqual(app_b.requests, [])
        # with room for it, the rule's header goes on
        with a.client() as c:
            resp = c.request("GET", "/rules-ok", hdrs[:-1])
        self.assertEqual(resp.status, 200, resp.body[:300])
        self.assertEqual(app_b.last.header_all("x-env"), ["prod"])

    def test_response_rule_over_the_limit_is_502(self):
        """Ferry B's response rule pushes the local app's 100-header
        response over: B answers 502 itself (HTTP/1.1 or HTTP/2 towards
        ferry A), and ferry A passes it on."""
        hdrs = [("x-r%03d" % i, "v") for i in range(99)] + [("Content-Length", "2")]
        for protocol in ("http1", "h2"):
            with self.subTest(protocol=protocol):
                app_b = self.upstream(fixed(200, hdrs, b"ok"), tls=False)
                a, b, _ = self.chain(protocol, app_b=app_b, inbound={
                    "headers": {"response": {"add": {"x-frame-options": "DENY"}}}})
                with a.client() as c:
                    resp = c.request("GET", "/resp-rules", [("Host", "order-service")])
                    self.assert_ferry_error(resp, 502, "SERVICE_ERROR",
                                            r"response head over the limit .*header rules")
                    # the connection to app A stays usable
                    app_b.behaviour = fixed(200, hdrs[:-2] + [("Content-Length", "2")], b"ok")
                    resp = c.request("GET", "/resp-rules-ok", [("Host", "order-service")])
                    self.assertEqual(resp.status, 200, resp.body[:300])
                    self.assertEqual(resp.header_all("x-frame-options"), ["DENY"])
                self.assertEqual(len(app_b.requests), 2)

    # (d2) trailers join the head the app got, not the service's

    def test_trailers_count_with_the_head_the_app_got(self):
        """A chunked response's trailers share the head's limits at the
        app's end, where the head carries what ferry added (ids,
        keep-alive). A service's head of 122 fields (70 of them `vary`, of
        ferry's own kinds, which a service may send) reaches the app as
        125: 3 trailers make 128 and pass; 4 would be 129, which the app's
        parser (ferry's own among them) refuses, so ferry cuts the
        response before them, though the service's 126 were within."""
        head = [("vary", "v%d" % i) for i in range(70)] + [("x-h%03d" % i, "v")
                                                           for i in range(50)]
        up = self.upstream()
        f = self.ferry({"svc": harness.service(up)})
        up.behaviour = harness.chunked([b"body"], [("x-t%d" % i, "t") for i in range(3)], head)
        with f.client() as c:
            r = c.request("GET", "/three", [("Host", "svc")])
        self.assertEqual((r.status, r.body, len(r.headers), len(r.trailers)),
                         (200, b"body", 125, 3))
        up.behaviour = harness.chunked([b"body"], [("x-t%d" % i, "t") for i in range(4)], head)
        with f.client() as c:
            c.send(b"GET /four HTTP/1.1\r\nHost: svc\r\n\r\n")
            data = c.reader.read_to_close()
        self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data[:100])
        self.assertNotIn(b"\r\n0\r\n", data, "the response was cut, not ended")
        self.assertNotIn(b"x-t0", data[data.index(b"\r\n\r\n"):])
        self.assertTrue(f.alive())

    # (e) an HTTP/2 client: 100 fields pass, 101 do not

    def test_h2_client_100_fields_pass_101_do_not(self):
        m = h2_client()
        if m is None:
            self.skipTest("python3-h2 not installed")
        a, b, app_b = self.chain("h2")
        # :authority counts as the Host it becomes, bytes and all
        sent = filled(LIMIT_HEADERS, LIMIT_BYTES, "GET /h2c HTTP/1.1\r\n",
                      fixed_headers=[("host", "order-service")])[1:]
        with m.H2(a.outbound_port) as c:
            st = c.get("/h2c", authority="order-service", headers=sent)
            self.assertEqual(st.status, 200, st.headers)
            self.assert_reached_app(app_b, sent)
            sid = c.request("/h2c-over", authority="order-service",
                            headers=[("x-h%03d" % i, "v") for i in range(100)])
            st = c.streams[sid]
            c.wait(lambda: st.done, 5)
            if st.reset is None:
                self.assert_ferry_error(st.response(), 431, "HEADERS_TOO_LARGE")
            st = c.get("/h2c-after", authority="order-service")
            self.assertEqual(st.status, 200, "the connection stopped serving")
        self.assertEqual([r.target for r in app_b.requests], ["/h2c", "/h2c-after"])


if __name__ == "__main__":
    harness.main()
