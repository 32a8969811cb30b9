"""The fate of each request (SPEC §16): every request ends with one fate,
in the access log's `fate` and in ferry_request_fate_total; the access log
lists each attempt (`attempts_detail`), and ferry's JSON errors carry the
same list as `error.attempts`.

One test per fate, each produced for real: the real binary against real
upstreams (or dead ports) on loopback."""

import re
import signal
import socket
import struct
import threading

import harness
from harness import (FerryTestCase, build_request, deep_merge, delay, echo, fixed, free_port,
                     raw, wait_until)

NO_BREAKER = {"consecutive_failures": 1000}
NO_OUTLIER = {"consecutive_failures": 1000}
QUICK = {"base": "1ms", "max": "2ms"}


def plain_service(targets, **extra):
    """A plain-HTTP service over Upstreams (tls=False) or bare ports."""
    eps = [t.address if hasattr(t, "address") else "127.0.0.1:%d" % t for t in targets]
    return deep_merge({"endpoints": eps, "circuit_breaker": NO_BREAKER,
                       "outlier_detection": NO_OUTLIER}, extra)


class FateTest(FerryTestCase):

    # helpers

    def upstream(self, behaviour=None, **kw):
        return super().upstream(behaviour, tls=False, **kw)

    def get(self, f, path, host="svc", headers=(), timeout=harness.IO_TIMEOUT):
        return f.get(path, host=host, headers=headers, timeout=timeout)

    def log_line(self, f, path, timeout=3.0):
        """The access log line of the request to path (they reach stdout
        within a second)."""
        found = []

        def look():
            found[:] = [e for e in f.access_log() if e.get("path") == path]
            return found
        self.assertTrue(wait_until(look, timeout), "no access log line for %s:\n%s"
                        % (path, f.stdout_text()[-2000:]))
        self.assertEqual(len(found), 1, found)
        return found[0]

    def fate_count(self, f, fate, service="svc", direction="outbound"):
        text = f.admin("/metrics").body.decode()
        m = re.search(r'^ferry_request_fate_total\{direction="%s",service="%s",fate="%s"\} (\d+)$'
                      % (direction, re.escape(service), fate), text, re.M)
        return int(m.group(1)) if m else 0

    def assert_fate(self, f, path, fate, count=1, service="svc", results=None):
        """The access log line of path says FATE (and lists RESULTS, the
        attempts' results, when given); the metric counts COUNT of it.
        Returns the line."""
        line = self.log_line(f, path)
        self.assertEqual(line.get("fate"), fate, line)
        detail = line.get("attempts_detail")
        self.assertIsInstance(detail, list, line)
        for a in detail:
            self.assertEqual(set(a), {"endpoint", "result", "ms"}, a)
            self.assertIsInstance(a["ms"], int, a)
            self.assertGreaterEqual(a["ms"], 0, a)
        if results is not None:
            self.assertEqual([a["result"] for a in detail], results, line)
        # counted before the response's last byte (README: /metrics)
        self.assertEqual(self.fate_count(f, fate, service), count,
                         "ferry_request_fate_total{fate=%r}" % fate)
        # one fate per request: no other fate counted for it
        text = f.admin("/metrics").body.decode()
        total = sum(int(v) for v in re.findall(
            r'^ferry_request_fate_total\{[^}]*service="%s"[^}]*\} (\d+)$' % re.escape(service),
            text, re.M))
        requests = sum(int(v) for v in re.findall(
            r'^ferry_requests_total\{[^}]*service="%s"[^}]*\} (\d+)$' % re.escape(service),
            text, re.M))
        self.assertEqual(total, requests, "fates and requests differ:\n%s" % text)
        return line

    def assert_error_attempts(self, resp, status, code, line, results):
        """ferry's JSON error lists the same attempts as the access log."""
        body = self.assert_ferry_error(resp, status, code)
        attempts = body["error"].get("attempts")
        self.assertIsInstance(attempts, list, body)
        self.assertEqual([a["result"] for a in attempts], results, body)
        self.assertEqual([a["endpoint"] for a in attempts],
                         [a["endpoint"] for a in line["attempts_detail"]], (body, line))
        for a in attempts:
            self.assertIsInstance(a["ms"], int, a)
        return attempts

    # the fates

    def test_ok(self):
        up = self.upstream(echo())
        f = self.ferry({"svc": plain_service([up])})
        self.assertEqual(self.get(f, "/ok").status, 200)
        line = self.assert_fate(f, "/ok", "ok", results=["ok"])
        self.assertEqual(line["attempts_detail"][0]["endpoint"], up.address)
        self.assertIsNone(line["error"])

    def test_upstream_4xx_is_ok(self):
        up = self.upstream(fixed(404, body=b"no such user"))
        f = self.ferry({"svc": plain_service([up])})
        self.assertEqual(self.get(f, "/missing").status, 404)
        self.assert_fate(f, "/missing", "ok", results=["ok"])

    def test_ok_after_retry(self):
        dead = free_port()      # nothing listens: refused
        up = self.upstream(echo())
        f = self.ferry({"svc": plain_service([dead, up], load_balancer="round_robin",
                                             retries={"backoff": QUICK})}, workers=1)
        # round robin on one worker: the dead endpoint comes first once
        # (then its connect backoff and the retry's other endpoint keep
        # requests off it); each request is its own path
        fates = []
        for i in range(4):
            self.assertEqual(self.get(f, "/r%d" % i).status, 200)
            fates.append(self.log_line(f, "/r%d" % i))
        retried = [l for l in fates if l["fate"] == "ok_after_retry"]
        self.assertTrue(retried, fates)
        self.assertTrue(all(l["fate"] in ("ok", "ok_after_retry") for l in fates), fates)
        line = retried[0]
        self.assertEqual([(a["endpoint"], a["result"]) for a in line["attempts_detail"]],
                         [("127.0.0.1:%d" % dead, "refused"), (up.address, "ok")], line)
        self.assertEqual(line["attempts"], 2)
        self.assertEqual(self.fate_count(f, "ok_after_retry"), len(retried))

    def test_upstream_error(self):
        up = self.upstream(fixed(503, body=b"busy"))
        f = self.ferry({"svc": plain_service([up], retries={"max": 1, "backoff": QUICK})})
        resp = self.get(f, "/busy")
        self.assertEqual((resp.status, resp.body), (503, b"busy"))
        self.assertIsNone(resp.header("x-ferry-error"))
        self.assert_fate(f, "/busy", "upstream_error", results=["503", "503"])

    def test_upstream_error_when_budget_stops_retries(self):
        # the app got the upstream's own 5xx: upstream_error, not budget_exhausted
        up = self.upstream(fixed(502, body=b"bad"))
        f = self.ferry({"svc": plain_service([up], retries={
            "max": 2, "budget": {"ratio": 0, "min_per_second": 0}})})
        resp = self.get(f, "/bad")
        self.assertEqual((resp.status, resp.body), (502, b"bad"))
        self.assert_fate(f, "/bad", "upstream_error", results=["502"])

    def test_timeout(self):
        up = self.upstream(delay(2.0))
        f = self.ferry({"svc": plain_service([up], timeouts={"request": "300ms"})})
        resp = self.get(f, "/slow")
        line = self.assert_fate(f, "/slow", "timeout", results=["timeout"])
        attempts = self.assert_error_attempts(resp, 504, "SERVICE_TIMEOUT", line, ["timeout"])
        self.assertEqual(attempts[0]["endpoint"], up.address)
        self.assertGreaterEqual(attempts[0]["ms"], 250, attempts)
        self.assertLess(attempts[0]["ms"], 1500, attempts)

    def test_timeout_deadline_spent_on_arrival(self):
        # x-ferry-deadline-ms: 0 (SPEC §16): ferry's 504 before any attempt
        up = self.upstream(echo())
        f = self.ferry({"svc": plain_service([up])})
        resp = self.get(f, "/spent", headers=[("x-ferry-deadline-ms", "0")])
        line = self.assert_fate(f, "/spent", "timeout", results=[])
        self.assert_error_attempts(resp, 504, "SERVICE_TIMEOUT", line, [])
        self.assertEqual(up.requests, [])

    def test_connect_failed(self):
        dead = free_port()
        f = self.ferry({"svc": plain_service([dead], retries={"max": 1, "backoff": QUICK})})
        resp = self.get(f, "/dead")
        line = self.assert_fate(f, "/dead", "connect_failed", results=["refused", "refused"])
        attempts = self.assert_error_attempts(resp, 503, "SERVICE_UNAVAILABLE", line,
                                              ["refused", "refused"])
        self.assertEqual({a["endpoint"] for a in attempts}, {"127.0.0.1:%d" % dead})
        self.assertEqual(line["attempts"], 2)

    def test_reset(self):
        # the upstream closes in the middle of its response head
        up = self.upstream(raw(b"HTTP/1.1 200 OK\r\nContent-Le"))
        f = self.ferry({"svc": plain_service([up], retries={"max": 1, "backoff": QUICK})})
        resp = self.get(f, "/cut")
        line = self.assert_fate(f, "/cut", "reset", results=["reset", "reset"])
        self.assert_error_attempts(resp, 502, "SERVICE_ERROR", line, ["reset", "reset"])

    def test_reset_after_head(self):
        # cut after the head went to the app: reset, with the access log's cause
        up = self.upstream(raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"))
        f = self.ferry({"svc": plain_service([up])})
        with f.client() as c:
            c.send(build_request("GET", "/cut-body", [("Host", "svc")]))
            self.assertTrue(c.peer_closed(3.0))
        line = self.assert_fate(f, "/cut-body", "reset", results=["ok"])
        self.assertEqual(line["error"], "upstream_closed")

    def test_breaker_open(self):
        up = self.upstream(fixed(503, body=b"down"))
        f = self.ferry({"svc": plain_service([up], retries={"max": 0}, circuit_breaker={
            "consecutive_failures": 2, "open_for": "10s"})})
        for i in range(2):
            self.assertEqual(self.get(f, "/fail%d" % i).status, 503)
            self.assert_fate(f, "/fail%d" % i, "upstream_error", count=i + 1, results=["503"])
        resp = self.get(f, "/open")
        line = self.assert_fate(f, "/open", "breaker_open", results=[])
        self.assert_error_attempts(resp, 503, "SERVICE_UNAVAILABLE", line, [])
        self.assertEqual(len(up.requests), 2)

    def test_rate_limited(self):
        up = self.upstream(echo())
        f = self.ferry({"svc": plain_service([up], rate_limit={"rps": 1, "burst": 1})})
        self.assertEqual(self.get(f, "/first").status, 200)
        resp = self.get(f, "/second")
        line = self.assert_fate(f, "/second", "rate_limited", results=[])
        self.assert_error_attempts(resp, 429, "RATE_LIMITED", line, [])
        self.assert_fate(f, "/first", "ok")

    def test_over_concurrency(self):
        up = self.upstream(delay(1.0))
        f = self.ferry({"svc": plain_service([up], circuit_breaker={"max_concurrent": 1})})
        t = threading.Thread(target=lambda: self.get(f, "/slow"))
        t.start()
        try:
            up.wait_requests(1)
            resp = self.get(f, "/second")
        finally:
            t.join(5)
        line = self.assert_fate(f, "/second", "over_concurrency", results=[])
        self.assert_error_attempts(resp, 503, "SERVICE_UNAVAILABLE", line, [])
        self.assert_fate(f, "/slow", "ok")

    def test_no_endpoint(self):
        # the only endpoint is ejected (outlier detection): none is left to
        # try (health checks never empty the set: when none is healthy, all
        # are used, SPEC §6)
        dead = free_port()
        f = self.ferry({"svc": plain_service([dead], retries={"max": 0}, outlier_detection={
            "consecutive_failures": 1, "base_ejection": "30s", "max_ejection_percent": 100})})
        resp = self.get(f, "/eject")
        line = self.assert_fate(f, "/eject", "connect_failed", results=["refused"])
        self.assert_error_attempts(resp, 503, "SERVICE_UNAVAILABLE", line, ["refused"])
        resp = self.get(f, "/none")
        line = self.assert_fate(f, "/none", "no_endpoint", results=[])
        self.assert_error_attempts(resp, 503, "SERVICE_UNAVAILABLE", line, [])
        self.assertRegex(resp.json()["error"]["message"], r"no available endpoint")

    def test_budget_exhausted(self):
        # the budget allows no retry at all: ferry's own error, because the
        # budget refused the retry that would have followed
        dead = free_port()
        f = self.ferry({"svc": plain_service([dead], retries={
            "max": 2, "budget": {"ratio": 0, "min_per_second": 0}})})
        resp = self.get(f, "/budget")
        line = self.assert_fate(f, "/budget", "budget_exhausted", results=["refused"])
        self.assert_error_attempts(resp, 503, "SERVICE_UNAVAILABLE", line, ["refused"])
        m = re.search(r'^ferry_retry_budget_exhausted_total\{service="svc"\} (\d+)$',
                      f.admin("/metrics").body.decode(), re.M)
        self.assertEqual(int(m.group(1)), 1)

    def test_rejected(self):
        up = self.upstream(echo())
        f = self.ferry({"svc": plain_service([up])},
                       outbound={"max_request_body": 10})
        resp = self.get(f, "/nowhere", host="no-such-service")
        line = self.assert_fate(f, "/nowhere", "rejected", service="", results=[])
        self.assert_error_attempts(resp, 404, "UNKNOWN_SERVICE", line, [])
        resp = harness.request(f.outbound_port, "POST", "/big", [("Host", "svc")],
                               body=b"x" * 100)
        line = self.assert_fate(f, "/big", "rejected", count=2, service="", results=[])
        self.assert_error_attempts(resp, 413, "PAYLOAD_TOO_LARGE", line, [])
        self.assertEqual(up.requests, [])

    def test_client_gone(self):
        # the client resets its connection while ferry waits for the answer
        # (a bare FIN after a complete request is a half-close that still
        # gets its answer, SPEC-wise; a reset is not)
        up = self.upstream(delay(2.0))
        f = self.ferry({"svc": plain_service([up])})
        c = f.client()
        c.send(build_request("GET", "/gone", [("Host", "svc")]))
        up.wait_requests(1)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        line = self.assert_fate(f, "/gone", "client_gone", results=["cancelled"])
        self.assertEqual(line["attempts_detail"][0]["endpoint"], up.address)
        self.assertLess(line["attempts_detail"][0]["ms"], 1500, line)
        self.assertIn(line["error"], ("client_read_error", "client_closed"))

    def test_client_gone_mid_body(self):
        # the client closes before its request body is complete
        up = self.upstream(echo())
        f = self.ferry({"svc": plain_service([up])})
        c = f.client()
        c.send(b"POST /gone-body HTTP/1.1\r\nHost: svc\r\nContent-Length: 100\r\n\r\nabc")
        # the attempt is under way (the upstream sees no complete request)
        opened = r'^ferry_upstream_connections_opened_total\{service="svc"\} 1$'
        self.assertTrue(wait_until(lambda: re.search(
            opened, f.admin("/metrics").body.decode(), re.M), 3))
        c.close()
        line = self.assert_fate(f, "/gone-body", "client_gone")
        self.assertEqual(line["error"], "client_closed")

    def test_shutdown(self):
        # SIGTERM while a request waits past drain_timeout: it is ended and
        # counted. The process is gone by then, so only the access log
        # (flushed on a clean exit) can tell; /metrics is checked to count
        # nothing for it before.
        up = self.upstream(delay(5.0))
        f = self.ferry({"svc": plain_service([up])}, drain_timeout="500ms")
        c = f.client(timeout=5.0)
        c.send(build_request("GET", "/waiting", [("Host", "svc")]))
        up.wait_requests(1)
        self.assertEqual(self.fate_count(f, "shutdown"), 0)
        f.signal(signal.SIGTERM)
        self.assertTrue(c.peer_closed(4.0), "drain_timeout did not end the request")
        c.close()
        f.proc.wait(5)
        self.assertEqual(f.proc.returncode, 0)
        line = self.log_line(f, "/waiting")
        self.assertEqual(line["fate"], "shutdown", line)
        self.assertEqual([a["result"] for a in line["attempts_detail"]], ["cancelled"], line)
        self.assertEqual(line["error"], "shutdown")

    # the shape

    def test_metric_family_declared(self):
        up = self.upstream(echo())
        f = self.ferry({"svc": plain_service([up])})
        text = f.admin("/metrics").body.decode()
        self.assertIn("# TYPE ferry_request_fate_total counter\n", text)
        self.assertEqual(self.get(f, "/x").status, 200)
        self.assert_fate(f, "/x", "ok")

    def test_attempts_detail_bounded(self):
        # more attempts than the list keeps: the first 7 and the last
        dead = free_port()
        f = self.ferry({"svc": plain_service([dead], retries={
            "max": 11, "backoff": QUICK, "budget": {"ratio": 100, "min_per_second": 1000}})})
        resp = self.get(f, "/many")
        line = self.assert_fate(f, "/many", "connect_failed", results=["refused"] * 8)
        self.assertEqual(line["attempts"], 12)
        self.assert_error_attempts(resp, 503, "SERVICE_UNAVAILABLE", line, ["refused"] * 8)

    def test_field_order(self):
        # SPEC §16's fields follow those of §9 and §12, in a stable order
        up = self.upstream(echo())
        f = self.ferry({"svc": plain_service([up])})
        self.assertEqual(self.get(f, "/order").status, 200)
        self.log_line(f, "/order")
        raw_line = [l for l in f.stdout_text().splitlines() if '"/order"' in l][0]
        keys = re.findall(r'"([a-z_]+)":', raw_line)
        keys = [k for k in keys if k not in ("endpoint", "result", "ms")]
        self.assertEqual(keys[-3:], ["grpc_status", "fate", "attempts_detail"], raw_line)


if __name__ == "__main__":
    harness.main()
