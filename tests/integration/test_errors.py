"""Errors ferry produces on the outbound path (SPEC §6 status codes, §7)."""

import re
import ssl
import threading
import time

import harness
from harness import (FerryTestCase, UUID4_RE, close_without_answer, delay, fixed, pki, raw, reset,
                     service)

CORR = "corr-errors-1"


class ErrorsTest(FerryTestCase):

    def one_service(self, upstream_or_port, **svc):
        """ferry with one service `svc` in front of upstream_or_port."""
        return self.ferry({"svc": service(upstream_or_port, **svc)})

    def get(self, f, path="/", headers=()):
        return f.get(path, host="svc", headers=[("x-correlation-id", CORR), *headers])

    # request errors

    def test_400_content_length_and_transfer_encoding(self):
        up = self.upstream()
        f = self.one_service(up)
        with f.client() as c:
            c.send(b"POST / HTTP/1.1\r\nHost: svc\r\nx-correlation-id: " + CORR.encode() +
                   b"\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
            resp = c.read_response()
            self.assert_ferry_error(resp, 400, "BAD_REQUEST")
            self.assertTrue(c.peer_closed(2), "connection not closed after 400")
        self.assertEqual(up.requests, [])

    def test_400_without_host(self):
        f = self.one_service(self.upstream())
        with f.client() as c:
            resp = c.request("GET", "/", [("x-correlation-id", CORR)])
        self.assert_ferry_error(resp, 400, "BAD_REQUEST", correlation_id=CORR)

    def test_404_unknown_service(self):
        f = self.one_service(self.upstream())
        resp = f.get("/", host="other", headers=[("x-correlation-id", CORR)])
        self.assert_ferry_error(resp, 404, "UNKNOWN_SERVICE", correlation_id=CORR)

    def test_grpc_requests_get_the_grpc_form(self):
        """SPEC §7: a request with content-type application/grpc gets ferry's
        errors trailers-only, as grpc-status; and until ferry speaks HTTP/2
        upstream, a gRPC call to a service is one of them (502 INTERNAL),
        without reaching it."""
        up = self.upstream()
        f = self.one_service(up)
        cases = [("svc", "application/grpc", 13, "SERVICE_ERROR"),
                 ("other", "application/grpc+proto", 12, "UNKNOWN_SERVICE")]
        for host, ctype, status, code in cases:
            with f.client() as c:
                resp = c.request("POST", "/pkg.Greeter/SayHello",
                                 [("Host", host), ("content-type", ctype),
                                  ("x-correlation-id", CORR)], b"\x00\x00\x00\x00\x00")
            self.assertEqual(resp.status, 200, host)
            self.assertEqual(resp.body, b"", host)
            self.assertEqual(resp.header("content-type"), "application/grpc")
            self.assertEqual(resp.header("grpc-status"), str(status), host)
            self.assertEqual(resp.header("x-ferry-error"), code, host)
            self.assertEqual(resp.header("x-correlation-id"), CORR)
            self.assertTrue(resp.header("grpc-message"), host)
        self.assertEqual(up.requests, [])

    def test_404_generates_correlation_id(self):
        f = self.one_service(self.upstream())
        resp = f.get("/", host="other")
        self.assert_ferry_error(resp, 404, "UNKNOWN_SERVICE")
        self.assertRegex(resp.header("x-correlation-id"), UUID4_RE)

    def test_405_connect(self):
        f = self.one_service(self.upstream())
        with f.client() as c:
            resp = c.request("CONNECT", "svc:443", [("Host", "svc:443"), ("x-correlation-id", CORR)])
        self.assert_ferry_error(resp, 405, "METHOD_NOT_ALLOWED", correlation_id=CORR)

    def test_408_head_not_completed(self):
        f = self.ferry({"svc": service(self.upstream())}, outbound={"header_read_timeout": "1s"})
        with f.client() as c:
            c.send(b"GET / HTTP/1.1\r\nHost: svc\r\n")
            start = time.monotonic()
            resp = c.read_response()
            self.assertLess(time.monotonic() - start, 3.0)
        self.assert_ferry_error(resp, 408, "REQUEST_TIMEOUT")

    def test_413_body_too_large(self):
        up = self.upstream()
        f = self.ferry({"svc": service(up)}, outbound={"max_request_body": "1KiB"})
        resp = harness.request(f.outbound_port, "POST", "/", [("Host", "svc"),
                               ("x-correlation-id", CORR)], body=b"x" * 4096)
        self.assert_ferry_error(resp, 413, "PAYLOAD_TOO_LARGE", correlation_id=CORR)
        self.assertEqual(up.requests, [])

    def test_429_rate_limited(self):
        up = self.upstream()
        f = self.one_service(up, rate_limit={"rps": 1, "burst": 1})
        self.assertEqual(self.get(f).status, 200)
        resp = self.get(f)
        self.assert_ferry_error(resp, 429, "RATE_LIMITED", correlation_id=CORR)
        self.assertEqual(resp.header("retry-after"), "1")
        self.assertEqual(len(up.requests), 1)

    def test_431_head_too_large(self):
        f = self.one_service(self.upstream())
        with f.client() as c:
            resp = c.request("GET", "/", [("Host", "svc"), ("X-Big", "a" * (70 * 1024))])
        self.assert_ferry_error(resp, 431, "HEADERS_TOO_LARGE")

    def test_508_loop(self):
        up = self.upstream()
        f = self.one_service(up)
        self.assertEqual(self.get(f).status, 200)
        token = harness.via_tokens(up.last.headers)[-1]
        resp = self.get(f, headers=[("Via", token)])
        self.assert_ferry_error(resp, 508, "LOOP_DETECTED", correlation_id=CORR)

    # upstream failures

    def test_503_connect_refused_names_address(self):
        port = harness.free_port()          # nothing listens there
        f = self.one_service(port)
        start = time.monotonic()
        resp = self.get(f)
        self.assertLess(time.monotonic() - start, 3.0)
        self.assert_ferry_error(resp, 503, "SERVICE_UNAVAILABLE",
                                message_re=re.escape("127.0.0.1:%d" % port), correlation_id=CORR)

    def test_502_upstream_reset(self):
        f = self.one_service(self.upstream(reset()))
        self.assert_ferry_error(self.get(f), 502, "SERVICE_ERROR", correlation_id=CORR)

    def test_502_upstream_closes_without_answer(self):
        f = self.one_service(self.upstream(close_without_answer()))
        self.assert_ferry_error(self.get(f), 502, "SERVICE_ERROR", correlation_id=CORR)

    def test_502_malformed_response(self):
        f = self.one_service(self.upstream(raw(b"NOT HTTP AT ALL\r\n\r\n")))
        self.assert_ferry_error(self.get(f), 502, "SERVICE_ERROR", correlation_id=CORR)

    def test_502_untrusted_server_certificate(self):
        up = self.upstream(cert=pki().other)
        f = self.one_service(up)
        self.assert_ferry_error(self.get(f), 502, "SERVICE_ERROR", correlation_id=CORR)
        self.assertEqual(up.requests, [])

    def test_502_expired_server_certificate(self):
        up = self.upstream(cert=pki().expired)
        f = self.one_service(up)
        self.assert_ferry_error(self.get(f), 502, "SERVICE_ERROR")
        self.assertEqual(up.requests, [])

    def test_502_server_name_mismatch(self):
        up = self.upstream()
        f = self.one_service(up, tls={"server_name": "not-in-the-cert"})
        self.assert_ferry_error(self.get(f), 502, "SERVICE_ERROR")
        self.assertEqual(up.requests, [])

    def test_502_below_tls_min_version(self):
        up = self.upstream(tls_max_version=ssl.TLSVersion.TLSv1_2)
        f = self.one_service(up, tls={"min_version": "1.3"})
        self.assert_ferry_error(self.get(f), 502, "SERVICE_ERROR")
        self.assertEqual(up.requests, [])

    def test_tls12_upstream_by_default(self):
        up = self.upstream(tls_max_version=ssl.TLSVersion.TLSv1_2)
        f = self.one_service(up)
        self.assertEqual(self.get(f).status, 200)
        self.assertEqual(up.last.tls_version, "TLSv1.2")
        self.assertEqual(up.last.peer_cert["uri_sans"], ["spiffe://test/app"])

    def test_verify_san_replaces_server_name_check(self):
        up = self.upstream()
        f = self.ferry({
            "good": service(up, tls={"server_name": "not-in-the-cert",
                                     "verify_san": "spiffe://test/backend"}),
            "bad": service(up, tls={"verify_san": "spiffe://test/someone-else"}),
        })
        self.assertEqual(f.get("/", host="good").status, 200)
        self.assertEqual(len(up.requests), 1)
        self.assert_ferry_error(f.get("/", host="bad"), 502, "SERVICE_ERROR")
        self.assertEqual(len(up.requests), 1)

    def test_504_names_address_and_duration(self):
        up = self.upstream(delay(5))
        f = self.one_service(up, timeouts={"request": "500ms"})
        start = time.monotonic()
        resp = self.get(f)
        elapsed = time.monotonic() - start
        self.assertGreater(elapsed, 0.4)
        self.assertLess(elapsed, 3.0)
        body = self.assert_ferry_error(resp, 504, "SERVICE_TIMEOUT", correlation_id=CORR,
                                       message_re=re.escape(up.address))
        self.assertRegex(body["error"]["message"], r"(500 ?ms|0\.5 ?s)\b")

    # policies that answer 503

    def test_upstream_5xx_passes_then_circuit_opens(self):
        up = self.upstream(fixed(503, [("Content-Type", "text/plain")], b"upstream busy"))
        f = self.one_service(up, retries={"max": 0},
                             circuit_breaker={"consecutive_failures": 2, "open_for": "10s"})
        for _ in range(2):
            resp = self.get(f)
            self.assertEqual(resp.status, 503)
            self.assertEqual(resp.body, b"upstream busy", "the upstream's own 503, as it was")
            self.assertIsNone(resp.header("x-ferry-error"))
        resp = self.get(f)
        self.assert_ferry_error(resp, 503, "SERVICE_UNAVAILABLE", correlation_id=CORR)
        self.assertIn(int(resp.header("retry-after")), range(1, 11))
        self.assertEqual(len(up.requests), 2, "an open circuit must not reach the upstream")

    def test_503_over_max_concurrent(self):
        up = self.upstream(delay(2))
        f = self.one_service(up, circuit_breaker={"max_concurrent": 1})
        first = {}
        t = threading.Thread(target=lambda: first.update(resp=self.get(f)))
        t.start()
        try:
            up.wait_requests(1)
            start = time.monotonic()
            resp = self.get(f)
            self.assertLess(time.monotonic() - start, 1.0, "must be refused at once")
            self.assert_ferry_error(resp, 503, "SERVICE_UNAVAILABLE", correlation_id=CORR)
            self.assertEqual(resp.header("retry-after"), "1")
        finally:
            t.join(10)
        self.assertEqual(first["resp"].status, 200)
        self.assertEqual(len(up.requests), 1)


if __name__ == "__main__":
    harness.main()
