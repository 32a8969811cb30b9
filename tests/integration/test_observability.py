"""Observability against real traffic: /metrics (SPEC §8), the access log
(§9), /services, and secrets kept out of every output (§3, §8).

Each test sends known traffic through a real ferry and asserts the exact
values the metrics, the access log and /services must show for it."""

import calendar
import json
import math
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time

import harness
from harness import (FerryTestCase, RawClient, Reader, build_request, echo, fixed, free_port,
                     pki, read_response, service, tls_client, wait_until)

# SPEC §9, in that order, and resends (ferry(8) ACCESS LOG); grpc_status (§12);
# fate and attempts_detail (§16)
LOG_FIELDS = ["time", "direction", "service", "method", "path", "status", "duration_ms",
              "upstream", "attempts", "resends", "correlation_id", "request_id", "trace_id",
              "bytes_in", "bytes_out", "error", "peer", "grpc_status", "fate",
              "attempts_detail"]
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
FLUSH_BOUND = 1.5           # lines reach their target within a second (+ slack)
FAST_RETRIES = {"backoff": {"base": "1ms", "max": "2ms"}}


# ---------------------------------------------------------------------------
# Prometheus text format


_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?$")
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')


def _unescape(v):
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), v)


def _parse_labels(text):
    labels, pos = {}, 0
    while pos < len(text):
        m = _LABEL_RE.match(text, pos)
        if not m:
            raise ValueError("bad label set %r" % text)
        labels[m.group(1)] = _unescape(m.group(2))
        pos = m.end()
    return labels


class Scrape:
    """One /metrics answer, parsed: samples as (name, labels, value)."""

    def __init__(self, text):
        self.text = text
        self.samples = []
        self.types = {}
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(None, 3)
                self.types[name] = kind
            if not line or line.startswith("#"):
                continue
            m = _SAMPLE_RE.match(line)
            if not m:
                raise ValueError("unparsable metrics line %r" % line)
            self.samples.append((m.group(1), _parse_labels(m.group(2) or ""),
                                 float(m.group(3))))

    def series(self, name, /, **labels):
        """[(labels, value)] of NAME whose labels include LABELS."""
        return [(l, v) for n, l, v in self.samples
                if n == name and all(l.get(k) == v2 for k, v2 in labels.items())]

    def get(self, name, /, **labels):
        """The value of the one series with exactly LABELS; None if absent."""
        hits = [v for n, l, v in self.samples if n == name and l == labels]
        if len(hits) > 1:
            raise AssertionError("series %s%r appears %d times" % (name, labels, len(hits)))
        return hits[0] if hits else None

    def total(self, name, /, **labels):
        return sum(v for _, v in self.series(name, **labels))


def scrape_once(f):
    resp = f.admin("/metrics")
    assert resp.status == 200, "/metrics answered %d" % resp.status
    return Scrape(resp.body.decode("utf-8"))


def scrape(f):
    """/metrics, read once: ferry counts a request before the last byte of
    its response is written (ferry(8) METRICS), so a scrape made after the
    client has its response already includes it. No waiting, no retry: a
    count that lags is a bug this must catch."""
    return scrape_once(f)


def promtool_check(test, text):
    exe = shutil.which("promtool")
    if not exe:
        # the only assertion skipped without promtool
        print("\nSKIP promtool check: promtool not installed (Debian package prometheus)")
        return
    proc = subprocess.run([exe, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=30)
    test.assertEqual(proc.returncode, 0, "promtool check metrics failed:\n%s%s"
                     % (proc.stdout, proc.stderr))


# ---------------------------------------------------------------------------
# access log


def log_lines(text):
    """Non-empty lines; each must be a JSON object (AssertionError if not).
    A last line without its newline is one ferry's log thread is still
    writing (a reader of the file can see part of a write(2)): not yet a
    line, so it is left for the next read."""
    out = []
    for i, line in enumerate(text[:text.rfind("\n") + 1].splitlines()):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise AssertionError("access log line %d is not JSON (%s): %r" % (i + 1, e, line[:300]))
        if not isinstance(obj, dict):
            raise AssertionError("access log line %d is not an object: %r" % (i + 1, line[:300]))
        out.append(obj)
    return out


def wait_lines(read, n, timeout):
    """Wait until read() holds at least n lines; (lines, seconds waited)."""
    start = time.monotonic()
    lines = []
    while True:
        lines = log_lines(read())
        if len(lines) >= n or time.monotonic() - start > timeout:
            return lines, time.monotonic() - start
        time.sleep(0.02)


def read_file(path):
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8")     # the log must be valid UTF-8
    except FileNotFoundError:
        return ""


def trace_id_of(traceparent):
    m = re.match(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$", traceparent or "")
    return m.group(1) if m else None


def raw_get(port, target, host, headers=(), body=b"", method="GET"):
    """One request on its own connection: (response, bytes sent, bytes received)."""
    req = build_request(method, target, [("Host", host), *headers], body)
    with RawClient(port) as c:
        c.send(req)
        resp = c.read_response(method)
    return resp, req, len(resp.raw_head) + len(resp.body)


# ---------------------------------------------------------------------------


class ObsCase(FerryTestCase):

    def assert_metric(self, m, expected, name, /, **labels):
        got = m.get(name, **labels)
        if got != expected:
            near = ["%s %s" % (l, v) for l, v in m.series(name)]
            self.fail("%s%s = %r, expected %r; the family holds:\n  %s"
                      % (name, json.dumps(labels, sort_keys=True), got, expected,
                         "\n  ".join(near) or "(nothing)"))

    def assert_log_shape(self, entry):
        self.assertEqual(sorted(entry), sorted(LOG_FIELDS), "access log fields differ from SPEC §9")
        self.assertRegex(entry["time"], TIME_RE)
        stamp = calendar.timegm(time.strptime(entry["time"][:19], "%Y-%m-%dT%H:%M:%S"))
        self.assertLess(abs(stamp - time.time()), 60, "time %s is not now in UTC" % entry["time"])
        self.assertIsInstance(entry["duration_ms"], (int, float))
        self.assertGreaterEqual(entry["duration_ms"], 0)
        for k in ("status", "attempts", "bytes_in", "bytes_out"):
            self.assertIsInstance(entry[k], int, k)
            self.assertGreaterEqual(entry[k], 0, k)

    def assert_bytes(self, entry, name, body_len, wire_len):
        """bytes_in/bytes_out count the body, or the whole message."""
        self.assertIn(entry[name], (body_len, wire_len),
                      "%s = %r, expected the body (%d) or the whole message (%d)"
                      % (name, entry[name], body_len, wire_len))


class MetricsTest(ObsCase):

    def test_requests_errors_histogram_and_promtool(self):
        up = self.upstream()
        other = self.upstream()
        f = self.ferry({"A": service(up), "B": service(other)})
        n = 7
        for i in range(n):
            self.assertEqual(f.get("/a/%d?x=%d" % (i, i), host="A").status, 200)
        self.assertEqual(f.get("/", host="B").status, 200)
        for host in ("nope.example", "also-unknown"):
            self.assert_ferry_error(f.get("/", host=host), 404, "UNKNOWN_SERVICE")
        m = scrape(f)

        self.assert_metric(m, n, "ferry_requests_total", direction="outbound", service="A", code="200")
        self.assert_metric(m, 1, "ferry_requests_total", direction="outbound", service="B", code="200")
        self.assert_metric(m, 2, "ferry_requests_total", direction="outbound", service="", code="404")
        self.assertEqual(m.total("ferry_requests_total"), n + 3, "requests_total counts other requests")
        self.assert_metric(m, 2, "ferry_errors_total", direction="outbound", service="",
                           code="UNKNOWN_SERVICE")
        self.assertEqual(m.total("ferry_errors_total"), 2, "errors counted for successful requests")
        self.assert_metric(m, n, "ferry_upstream_attempts_total", service="A", result="ok")
        for result in ("connect_failure", "timeout", "reset", "5xx"):
            self.assertIn(m.get("ferry_upstream_attempts_total", service="A", result=result),
                          (None, 0.0), result)
        self.assertIn(m.get("ferry_retries_total", service="A"), (None, 0.0))

        # histogram: per (direction, service) series, cumulative buckets,
        # +Inf = _count = requests answered
        hist = "ferry_request_duration_seconds"
        self.assertEqual(m.types.get(hist), "histogram")
        counts = {(l["direction"], l["service"]): v for l, v in m.series(hist + "_count")}
        self.assertEqual(counts.get(("outbound", "A")), n)
        self.assertEqual(counts.get(("outbound", "B")), 1)
        self.assertEqual(counts.get(("outbound", "")), 2)
        for (direction, svc), count in counts.items():
            answered = m.total("ferry_requests_total", direction=direction, service=svc)
            self.assertEqual(count, answered, "%s_count{%s,%r} vs requests_total" % (hist, direction, svc))
            buckets = sorted(((float(l["le"]), v) for l, v in
                              m.series(hist + "_bucket", direction=direction, service=svc)))
            les = [le for le, _ in buckets]
            self.assertEqual(les[0], 0.0005, "first bucket (SPEC: 0.5 ms)")
            self.assertEqual(les[-2], 60.0, "last finite bucket (SPEC: 60 s)")
            self.assertEqual(les[-1], math.inf)
            values = [v for _, v in buckets]
            self.assertEqual(values, sorted(values), "buckets not cumulative: %r" % buckets)
            self.assertEqual(values[-1], count, 'le="+Inf" != _count')
            total = m.get(hist + "_sum", direction=direction, service=svc)
            self.assertIsNotNone(total)
            self.assertGreaterEqual(total, 0)
        self.assertGreater(m.get(hist + "_sum", direction="outbound", service="A"), 0)

        # every family of SPEC §8 is exposed with HELP and TYPE
        for family, kind in [("requests_total", "counter"), ("request_duration_seconds", "histogram"),
                             ("upstream_attempts_total", "counter"), ("retries_total", "counter"),
                             ("retry_budget_exhausted_total", "counter"),
                             ("upstream_resends_total", "counter"),
                             ("circuit_state", "gauge"), ("circuit_opened_total", "counter"),
                             ("errors_total", "counter"), ("requests_cut_total", "counter"),
                             ("request_fate_total", "counter"),
                             ("rate_limited_total", "counter"),
                             ("upstream_connections", "gauge"),
                             ("upstream_connections_opened_total", "counter"),
                             ("tls_handshakes_total", "counter"), ("endpoint_healthy", "gauge"),
                             ("downstream_connections", "gauge"), ("auth_failures_total", "counter"),
                             ("config_reloads_total", "counter"),
                             ("certificate_expiry_seconds", "gauge"), ("build_info", "gauge")]:
            self.assertEqual(m.types.get("ferry_" + family), kind, "TYPE of ferry_" + family)
            self.assertIn("# HELP ferry_%s " % family, m.text)
        self.assert_metric(m, 0, "ferry_circuit_state", service="A")
        self.assert_metric(m, 1, "ferry_endpoint_healthy", service="A", endpoint=up.address)
        expiry = m.get("ferry_certificate_expiry_seconds", name="A")
        self.assertIsNotNone(expiry, "no certificate_expiry_seconds{name=\"A\"}")
        self.assertTrue(360 * 86400 < expiry <= 365 * 86400, expiry)   # the test certs: 365 days
        promtool_check(self, m.text)

    def test_retries_on_5xx_counted_per_attempt(self):
        up = self.upstream(fixed(503, body=b"busy"))
        f = self.ferry({"R": service(up, retries=dict(FAST_RETRIES, max=2),
                                     circuit_breaker={"consecutive_failures": 100},
                                     outlier_detection={"consecutive_failures": 100})})
        reqs = 3
        for _ in range(reqs):
            resp = f.get("/r", host="R")
            self.assertEqual(resp.status, 503)
            self.assertIsNone(resp.header("x-ferry-error"), "the upstream's 503 became ferry's own")
            self.assertEqual(resp.body, b"busy")
        self.assertEqual(len(up.requests), 3 * reqs, "attempts the upstream saw")
        m = scrape(f)
        self.assert_metric(m, 3 * reqs, "ferry_upstream_attempts_total", service="R", result="5xx")
        self.assert_metric(m, 2 * reqs, "ferry_retries_total", service="R")
        self.assert_metric(m, reqs, "ferry_requests_total", direction="outbound", service="R", code="503")
        self.assertEqual(m.total("ferry_errors_total", service="R"), 0,
                         "a passed-through upstream 503 counted as ferry's error")
        self.assertIn(m.get("ferry_retry_budget_exhausted_total", service="R"), (None, 0.0))
        lines, _ = wait_lines(f.stdout_text, reqs, FLUSH_BOUND + 0.5)
        self.assertEqual([(e["status"], e["attempts"], e["error"], e["upstream"]) for e in lines],
                         [(503, 3, None, up.address)] * reqs)
        promtool_check(self, m.text)

    def test_connect_failure_attempts(self):
        dead = free_port()
        f = self.ferry({"D": service(dead, retries=dict(FAST_RETRIES, max=2),
                                     circuit_breaker={"consecutive_failures": 100})})
        resp = f.get("/d", host="D")
        self.assert_ferry_error(resp, 503, "SERVICE_UNAVAILABLE", r"3 attempts")
        m = scrape(f)
        self.assert_metric(m, 3, "ferry_upstream_attempts_total", service="D", result="connect_failure")
        self.assertIn(m.get("ferry_upstream_attempts_total", service="D", result="ok"), (None, 0.0))
        self.assert_metric(m, 2, "ferry_retries_total", service="D")
        self.assert_metric(m, 1, "ferry_errors_total", direction="outbound", service="D",
                           code="SERVICE_UNAVAILABLE")
        self.assert_metric(m, 1, "ferry_requests_total", direction="outbound", service="D", code="503")
        for state in ("active", "idle"):
            self.assertIn(m.get("ferry_upstream_connections", service="D", state=state), (None, 0.0),
                          "refused connects left in the %s gauge" % state)
        (entry,), _ = wait_lines(f.stdout_text, 1, FLUSH_BOUND + 0.5)
        self.assertEqual((entry["status"], entry["attempts"], entry["error"], entry["upstream"]),
                         (503, 3, "SERVICE_UNAVAILABLE", "127.0.0.1:%d" % dead))

    def test_breaker_open_metrics_and_services(self):
        up = self.upstream(fixed(503))
        f = self.ferry({"B": service(up, retries={"max": 0},
                                     circuit_breaker={"consecutive_failures": 3, "open_for": "30s"},
                                     outlier_detection={"consecutive_failures": 100})})
        m = scrape(f)
        self.assert_metric(m, 0, "ferry_circuit_state", service="B")
        self.assert_metric(m, 0, "ferry_circuit_opened_total", service="B")
        for _ in range(3):
            self.assertEqual(f.get("/", host="B").status, 503)
        resp = f.get("/", host="B")
        self.assert_ferry_error(resp, 503, "SERVICE_UNAVAILABLE", "circuit")
        self.assertEqual(len(up.requests), 3, "a request passed the open breaker")
        m = scrape(f)
        self.assert_metric(m, 1, "ferry_circuit_state", service="B")
        self.assert_metric(m, 1, "ferry_circuit_opened_total", service="B")
        self.assert_metric(m, 3, "ferry_upstream_attempts_total", service="B", result="5xx")
        self.assert_metric(m, 1, "ferry_errors_total", direction="outbound", service="B",
                           code="SERVICE_UNAVAILABLE")
        self.assert_metric(m, 4, "ferry_requests_total", direction="outbound", service="B", code="503")
        svc = [s for s in f.admin("/services").json()["services"] if s["name"] == "B"][0]
        self.assertEqual(svc["circuit"], "open")
        lines, _ = wait_lines(f.stdout_text, 4, FLUSH_BOUND + 0.5)
        rejected = [e for e in lines if e["error"] is not None]
        self.assertEqual([(e["status"], e["attempts"], e["error"]) for e in rejected],
                         [(503, 0, "SERVICE_UNAVAILABLE")])
        promtool_check(self, m.text)
        # refusals built within a microsecond still sent a head: each one
        # is in the histogram (the soak found some missing)
        with f.client() as c:
            for _ in range(2000):
                self.assertEqual(c.request("GET", "/", [("Host", "B")]).status, 503)
        m = scrape(f)
        self.assert_metric(m, 2004, "ferry_requests_total", direction="outbound", service="B",
                           code="503")
        self.assert_metric(m, 2004, "ferry_request_duration_seconds_count", direction="outbound",
                           service="B")

    def test_pool_connections_reused(self):
        up = self.upstream()
        workers = 2
        f = self.ferry({"A": service(up)}, workers=workers)
        n = 30
        for i in range(n):                      # each on a new downstream connection
            self.assertEqual(f.get("/p/%d" % i, host="A").status, 200)
        m = scrape(f)
        opened = m.get("ferry_upstream_connections_opened_total", service="A")
        self.assertEqual(opened, up.connections_accepted, "opened_total vs connections the upstream accepted")
        self.assertLessEqual(opened, workers, "sequential requests did not reuse pooled connections")
        self.assertGreaterEqual(opened, 1)
        self.assert_metric(m, opened, "ferry_upstream_connections", service="A", state="idle")
        self.assert_metric(m, 0, "ferry_upstream_connections", service="A", state="active")
        self.assert_metric(m, opened, "ferry_tls_handshakes_total", direction="outbound", resumed="false")
        ep = [s for s in f.admin("/services").json()["services"] if s["name"] == "A"][0]["endpoints"][0]
        self.assertEqual(ep["pool"], {"idle": opened, "active": 0})
        # a gauge of connections follows the client's close, not a response
        self.assertTrue(wait_until(lambda: scrape(f).get(
            "ferry_downstream_connections", listener="outbound") == 0, 3))

    def test_counters_and_pool_survive_reload(self):
        """Counters are kept across a reload (SIGHUP), and so is the pool of
        an unchanged endpoint (SPEC §10): no new upstream connection."""
        up = self.upstream()
        f = self.ferry({"A": service(up)}, workers=1)
        for _ in range(3):
            self.assertEqual(f.get("/", host="A").status, 200)
        f.signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: scrape_once(f).get("ferry_config_reloads_total",
                                                                result="success") == 1, 5),
                        "reload not counted")
        for _ in range(4):
            self.assertEqual(f.get("/", host="A").status, 200)
        self.assertEqual(f.get("/", host="nowhere").status, 404)
        m = scrape(f)
        self.assert_metric(m, 7, "ferry_requests_total", direction="outbound", service="A", code="200")
        self.assert_metric(m, 7, "ferry_request_duration_seconds_count", direction="outbound", service="A")
        self.assert_metric(m, 7, "ferry_upstream_attempts_total", service="A", result="ok")
        self.assert_metric(m, 1, "ferry_errors_total", direction="outbound", service="",
                           code="UNKNOWN_SERVICE")
        self.assert_metric(m, 1, "ferry_config_reloads_total", result="success")
        self.assert_metric(m, 0, "ferry_config_reloads_total", result="failure")
        self.assertEqual(up.connections_accepted, 1, "the pool did not survive the reload")
        self.assert_metric(m, 1, "ferry_upstream_connections_opened_total", service="A")
        self.assert_metric(m, 1, "ferry_upstream_connections", service="A", state="idle")
        promtool_check(self, m.text)

    def test_outbound_tls_resumption_counted(self):
        reused = []

        def behave(conn, req):
            reused.append(conn.sock.session_reused)
            echo()(conn, req)
        up = self.upstream(behave)
        f = self.ferry({"A": service(up, pool={"max_requests_per_connection": 1})}, workers=1)
        n = 4
        for _ in range(n):
            self.assertEqual(f.get("/", host="A").status, 200)
        self.assertEqual(up.connections_accepted, n, "max_requests_per_connection: 1 did not retire")
        m = scrape(f)
        self.assert_metric(m, n, "ferry_upstream_connections_opened_total", service="A")
        # the metric tells the truth about what the upstream saw ...
        self.assert_metric(m, reused.count(True), "ferry_tls_handshakes_total",
                           direction="outbound", resumed="true")
        self.assert_metric(m, reused.count(False), "ferry_tls_handshakes_total",
                           direction="outbound", resumed="false")
        # ... and sessions are resumed (SPEC §6 Pool): only the first is full
        self.assertEqual(reused, [False] + [True] * (n - 1),
                         "outbound TLS sessions not resumed (upstream's session_reused per connection)")

    def test_rate_limited_counted(self):
        up = self.upstream()
        f = self.ferry({"A": service(up, rate_limit={"rps": 1, "burst": 2})})
        statuses = []
        with f.client() as c:
            for _ in range(5):
                resp = c.request("GET", "/", [("Host", "A")])
                statuses.append(resp.status)
                if resp.status == 429:
                    self.assert_ferry_error(resp, 429, "RATE_LIMITED")
        self.assertEqual(statuses, [200, 200, 429, 429, 429])
        m = scrape(f)
        self.assert_metric(m, 3, "ferry_rate_limited_total", direction="outbound", service="A")
        self.assert_metric(m, 3, "ferry_errors_total", direction="outbound", service="A", code="RATE_LIMITED")
        self.assert_metric(m, 3, "ferry_requests_total", direction="outbound", service="A", code="429")
        self.assert_metric(m, 2, "ferry_requests_total", direction="outbound", service="A", code="200")
        self.assertEqual(m.total("ferry_upstream_attempts_total", service="A"), 2,
                         "rate-limited requests counted as upstream attempts")


KEY_IN = "obs-inbound-key-4f1c2a"


class InboundObsTest(ObsCase):
    """One inbound listener: auth failures in /metrics, peers in the log."""

    def setUp(self):
        super().setUp()
        p = pki()
        self.app = self.upstream(tls=False)
        self.inbound_port = free_port()
        self.f = self.ferry({}, env={"OBS_IN_KEY": KEY_IN}, listeners={
            "inbound": {
                "address": "127.0.0.1:%d" % self.inbound_port,
                "tls": {"cert": p.server.cert, "key": p.server.key, "client_ca": p.ca.cert,
                        "allowed_peers": ["spiffe://test/app", 'spiffe://test/q"b\\s']},
                "auth": {"keys_env": ["OBS_IN_KEY"]},
                "local_app": self.app.address,
            }})

    def call(self, cert, headers, target="/in/x?secret=1", body=b"", method="GET"):
        p = pki()
        ctx = ssl.create_default_context(cafile=p.ca.cert)
        ctx.check_hostname = False
        if cert is not None:
            ctx.load_cert_chain(cert.cert, cert.key)
        raw = socket.create_connection(("127.0.0.1", self.inbound_port), timeout=3)
        with ctx.wrap_socket(raw, server_hostname="backend") as s:
            s.sendall(build_request(method, target, [("Host", "me")] + list(headers), body))
            return read_response(Reader(s), method)

    def test_auth_failures_counted(self):
        p = pki()
        self.assertEqual(self.call(p.client, [("x-service-auth", KEY_IN)]).status, 200)
        self.assertEqual(self.call(p.client, []).status, 403)
        for bad in ("wrong", KEY_IN + "x"):
            self.assertEqual(self.call(p.client, [("x-service-auth", bad)]).status, 403)
        self.assertEqual(self.call(p.client_dns, [("x-service-auth", KEY_IN)]).status, 403)
        self.assertEqual(len(self.app.requests), 1)
        m = scrape(self.f)
        self.assert_metric(m, 1, "ferry_auth_failures_total", reason="missing")
        self.assert_metric(m, 2, "ferry_auth_failures_total", reason="invalid")
        self.assert_metric(m, 1, "ferry_auth_failures_total", reason="peer_not_allowed")
        self.assert_metric(m, 0, "ferry_auth_failures_total", reason="no_client_cert")
        self.assertEqual(m.total("ferry_errors_total", direction="inbound", code="INVALID_SERVICE_AUTH"), 4,
                         "errors_total{inbound,INVALID_SERVICE_AUTH}: %r\n%s" % (
                             m.series("ferry_errors_total", direction="inbound"),
                             m.series("ferry_requests_total", direction="inbound")))
        self.assertEqual(m.total("ferry_requests_total", direction="inbound", code="403"), 4)
        self.assertEqual(m.total("ferry_requests_total", direction="inbound", code="200"), 1)
        self.assertEqual(m.total("ferry_requests_total", direction="outbound"), 0)
        self.assertGreaterEqual(m.total("ferry_tls_handshakes_total", direction="inbound"), 5)
        promtool_check(self, m.text)

    def test_no_client_cert_counted(self):
        with self.assertRaises((ssl.SSLError, ConnectionError, harness.IncompleteMessage, socket.timeout)):
            self.call(None, [("x-service-auth", KEY_IN)])
        # not a request: OpenSSL sends its alert before ferry hears of the
        # failure, so this counter may lag the client's error a moment
        self.assertTrue(wait_until(lambda: scrape(self.f).get(
            "ferry_auth_failures_total", reason="no_client_cert") == 1, 3))
        self.assertEqual(self.app.requests, [])

    def test_access_log_inbound_lines(self):
        p = pki()
        hostile = p._make_leaf("obs-hostile-peer", "hostile", 'URI:"spiffe://test/q\\"b\\\\s"', p.ca)
        body = b"x" * 300
        ok = self.call(p.client, [("x-service-auth", KEY_IN), ("x-correlation-id", "in-corr-1")],
                       body=body, method="POST")
        self.assertEqual(ok.status, 200)
        odd = self.call(hostile, [("x-service-auth", KEY_IN)], target="/odd")
        self.assertEqual(odd.status, 200)
        self.assertEqual(self.app.last.header_all("x-ferry-peer"), ['spiffe://test/q"b\\s'])
        denied = self.call(p.client, [("x-service-auth", "nope")], target="/denied?k=v")
        self.assertEqual(denied.status, 403)
        lines, _ = wait_lines(self.f.stdout_text, 3, FLUSH_BOUND + 0.5)
        self.assertEqual(len(lines), 3, lines)
        by_path = {e["path"]: e for e in lines}
        self.assertEqual(sorted(by_path), ["/denied", "/in/x", "/odd"])
        for e in lines:
            self.assert_log_shape(e)
            self.assertEqual(e["direction"], "inbound")
        e = by_path["/in/x"]
        seen = self.app.requests[0]
        self.assertEqual((e["method"], e["status"], e["peer"], e["error"], e["attempts"]),
                         ("POST", 200, "spiffe://test/app", None, 1))
        self.assertEqual(e["upstream"], self.app.address)
        self.assertEqual(e["correlation_id"], "in-corr-1")
        self.assertEqual(e["request_id"], seen.header("x-request-id"))
        self.assertEqual(e["trace_id"], trace_id_of(seen.header("traceparent")))
        wire = build_request("POST", "/in/x?secret=1", [("Host", "me"), ("x-service-auth", KEY_IN),
                                                         ("x-correlation-id", "in-corr-1")], body)
        self.assert_bytes(e, "bytes_in", len(body), len(wire))
        self.assertEqual(by_path["/odd"]["peer"], 'spiffe://test/q"b\\s')
        d = by_path["/denied"]
        self.assertEqual((d["status"], d["error"], d["attempts"], d["upstream"]),
                         (403, "INVALID_SERVICE_AUTH", 0, None))


class AccessLogTest(ObsCase):

    def test_fields_and_values_outbound(self):
        up = self.upstream()
        dead = free_port()
        f = self.ferry({"A": service(up), "D": service(dead, retries=dict(FAST_RETRIES, max=1))})
        port = f.outbound_port
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        # 1: ids and traceparent supplied, query string to cut
        r1, q1, w1 = raw_get(port, "/orders/42?token=abc&x=1", "A",
                             [("x-correlation-id", "corr-obs-1"), ("x-request-id", "req-obs-1"),
                              ("traceparent", tp)])
        t1 = time.monotonic()
        # 2: POST with a body, ids generated by ferry
        body = harness.payload(1500, seed=3)
        r2, q2, w2 = raw_get(port, "/upload", "A", [("Content-Type", "application/octet-stream")],
                             body=body, method="POST")
        # 3: unknown service, 4: connect failure
        r3, q3, w3 = raw_get(port, "/x?y=z", "nowhere", [("x-correlation-id", "corr-obs-3")])
        r4, q4, w4 = raw_get(port, "/dead", "D")
        self.assertEqual([r.status for r in (r1, r2, r3, r4)], [200, 200, 404, 503])
        lines, waited = wait_lines(f.stdout_text, 4, 3)
        self.assertEqual(len(lines), 4, "one line per request")
        self.assertLessEqual(time.monotonic() - t1, FLUSH_BOUND + 1.0)
        for e in lines:
            self.assert_log_shape(e)
            self.assertEqual(e["direction"], "outbound")
            self.assertIsNone(e["peer"])
        by_path = {e["path"]: e for e in lines}
        self.assertEqual(sorted(by_path), ["/dead", "/orders/42", "/upload", "/x"])
        seen1, seen2 = up.requests

        e = by_path["/orders/42"]
        self.assertEqual((e["service"], e["method"], e["status"], e["attempts"], e["error"], e["upstream"]),
                         ("A", "GET", 200, 1, None, up.address))
        self.assertEqual((e["correlation_id"], e["request_id"], e["trace_id"]),
                         ("corr-obs-1", "req-obs-1", "4bf92f3577b34da6a3ce929d0e0e4736"))
        self.assertEqual(seen1.header("traceparent"), tp)
        self.assert_bytes(e, "bytes_in", 0, len(q1))
        self.assert_bytes(e, "bytes_out", len(r1.body), w1)

        e = by_path["/upload"]
        self.assertEqual((e["service"], e["method"], e["status"], e["attempts"], e["error"]),
                         ("A", "POST", 200, 1, None))
        self.assertEqual(e["correlation_id"], seen2.header("x-correlation-id"))
        self.assertEqual(e["request_id"], seen2.header("x-request-id"))
        self.assertEqual(e["correlation_id"], r2.header("x-correlation-id"))
        self.assertRegex(e["request_id"], harness.UUID4_RE)
        self.assertEqual(e["trace_id"], trace_id_of(seen2.header("traceparent")))
        self.assertIsNotNone(e["trace_id"])
        self.assert_bytes(e, "bytes_in", len(body), len(q2))
        self.assert_bytes(e, "bytes_out", len(r2.body), w2)
        self.assertGreater(e["duration_ms"], 0)

        e = by_path["/x"]
        self.assertEqual((e["service"], e["status"], e["attempts"], e["error"], e["upstream"]),
                         ("", 404, 0, "UNKNOWN_SERVICE", None))
        self.assertEqual(e["correlation_id"], "corr-obs-3")
        self.assertEqual(e["request_id"], r3.header("x-request-id"))
        self.assertRegex(e["trace_id"] or "", r"^[0-9a-f]{32}$")
        self.assert_bytes(e, "bytes_out", len(r3.body), w3)

        e = by_path["/dead"]
        self.assertEqual((e["service"], e["status"], e["attempts"], e["error"], e["upstream"]),
                         ("D", 503, 2, "SERVICE_UNAVAILABLE", "127.0.0.1:%d" % dead))
        self.assertEqual(e["correlation_id"], r4.header("x-correlation-id"))

    def test_cut_exchanges_name_their_cause(self):
        """A request that ends without its whole response: the access
        log's error and ferry_requests_cut_total{cause} say the same why
        (ferry(8) ACCESS LOG), and nothing counts it as an error code."""
        gate = threading.Event()

        def behave(conn, req):
            if req.target == "/mid":            # head and part of the body, then gone
                conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)
                time.sleep(0.1)
                conn.keep_open = False
            elif req.target == "/badchunk":     # a chunk size that is not hex
                conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"5\r\nhello\r\nzz\r\n")
                time.sleep(0.1)
                conn.keep_open = False
            else:                               # /slow: the client leaves first
                gate.wait(5)
                conn.keep_open = False
        up = self.upstream(behave)
        f = self.ferry({"A": service(up, retries={"max": 0})})
        port = f.outbound_port
        for path in ("/mid", "/badchunk"):
            with RawClient(port) as c:
                c.send(build_request("GET", path, [("Host", "A")]))
                head = c.sock.recv(65536)
                self.assertTrue(head.startswith(b"HTTP/1.1 200"), head[:80])
                c.sock.settimeout(5)
                try:
                    while c.sock.recv(65536):
                        pass
                except OSError:
                    pass
        # half a body, then FIN: a half-close after a whole request would
        # still be answered, one in the middle of the body cannot be
        c = RawClient(port)
        c.send(b"POST /slow HTTP/1.1\r\nHost: A\r\nContent-Length: 100\r\n\r\n0123456789")
        time.sleep(0.3)
        c.close()
        wait_until(lambda: len(log_lines(f.stdout_text())) >= 3, 5)
        gate.set()
        lines = {e["path"]: e for e in log_lines(f.stdout_text())}
        self.assertEqual({p: (lines[p]["status"], lines[p]["error"]) for p in lines},
                         {"/mid": (200, "upstream_closed"),
                          "/badchunk": (200, "malformed_upstream_body"),
                          "/slow": (0, "client_closed")})
        m = scrape(f)
        for cause in ("upstream_closed", "malformed_upstream_body", "client_closed"):
            self.assert_metric(m, 1, "ferry_requests_cut_total", direction="outbound",
                               service="A", cause=cause)
        self.assertEqual(m.total("ferry_requests_cut_total"), 3)
        self.assertEqual(m.total("ferry_errors_total"), 0)

    def test_line_within_flush_interval(self):
        up = self.upstream()
        f = self.ferry({"A": service(up)})
        for i in range(3):
            self.assertEqual(f.get("/t%d" % i, host="A").status, 200)
            lines, waited = wait_lines(f.stdout_text, i + 1, 3)
            self.assertEqual(len(lines), i + 1)
            self.assertLessEqual(waited, FLUSH_BOUND, "line %d took %.2fs to appear" % (i, waited))
            self.assertEqual(lines[-1]["path"], "/t%d" % i)
            time.sleep(0.3 * i)             # land at different points of the flush timer

    def test_absolute_form_path(self):
        up = self.upstream()
        f = self.ferry({"A": service(up)})
        with f.client() as c:
            resp = c.request("GET", "http://A/abs/path?q=1", [("Host", "ignored")])
        self.assertEqual(resp.status, 200)
        self.assertEqual(up.last.target, "/abs/path?q=1")
        (e,), _ = wait_lines(f.stdout_text, 1, 3)
        self.assertEqual(e["service"], "A")
        self.assertEqual(e["path"], "/abs/path",
                         "path of an absolute-form request (SPEC §9: the path, no query string)")

    def test_hostile_paths_stay_json(self):
        up = self.upstream()
        f = self.ferry({"A": service(up)})
        accepted = [
            b'/q"uote', b'/back\\slash', b'/"\\"\\\\"', b'/nul%00x', b'/enc%22%5C%0D%0A%7F%FF%C3',
            b"/brace{}|^`<>", b"/sub-delims;,@!$&'()*+=:~", b'/quote"in?query="\\&x',
            b"/" + b"\\" * 200 + b'"' * 200, b"/dots/../x/./y//z",
        ]
        rejected = [b"/utf8-\xc3\xa9", b"/bad-\xff\xfe", b"/ctl-\x01x", b"/esc\x1b[31m", b"/del\x7f"]
        sent = []
        for target in accepted + rejected:
            with f.client() as c:
                c.send(b"GET " + target + b" HTTP/1.1\r\nHost: A\r\n\r\n")
                resp = c.read_response()
            if target in accepted:
                self.assertEqual(resp.status, 200, target)
                self.assertEqual(up.last.target.encode("latin-1"), target, "target not forwarded as sent")
            else:
                self.assert_ferry_error(resp, 400, "BAD_REQUEST")
            sent.append((target, resp.header("x-request-id")))
        lines, _ = wait_lines(f.stdout_text, len(sent), 3)   # every line parses as JSON
        self.assertEqual(len(lines), len(sent), "one line per request, 400s included")
        by_id = {e["request_id"]: e for e in lines}
        for target, rid in sent:
            e = by_id.get(rid)
            self.assertIsNotNone(e, "no line with request_id %s (%r)" % (rid, target))
            self.assert_log_shape(e)
            if target in accepted:
                expect = target.split(b"?", 1)[0].decode("ascii")
                self.assertEqual(e["path"], expect, "path did not round-trip")
                self.assertEqual(e["status"], 200)
            else:
                self.assertEqual((e["status"], e["error"]), (400, "BAD_REQUEST"))
                self.assertIsInstance(e["path"], str)
        # the raw bytes of the log are valid UTF-8 without control characters
        with open(f.path("stdout"), "rb") as fh:
            raw = fh.read()
        raw.decode("utf-8")
        self.assertIsNone(re.search(rb"[\x00-\x09\x0b-\x1f\x7f]", raw), "control byte in the log")

    def test_long_path_4k(self):
        up = self.upstream()
        f = self.ferry({"A": service(up)})
        unit = b'/seg"\\%00%FF{}'
        path = (unit * (4096 // len(unit) + 1))[:4096]
        with f.client() as c:
            resp = c.request("GET", path.decode("latin-1") + "?q=" + "v" * 100, [("Host", "A")])
        self.assertEqual(resp.status, 200)
        (e,), _ = wait_lines(f.stdout_text, 1, 3)
        self.assertEqual(len(e["path"]), 4096)
        self.assertEqual(e["path"], path.decode("ascii"))

    def test_all_lines_written_on_sigterm(self):
        up = self.upstream()
        f = self.ferry({"A": service(up)}, workers=2)
        ids = []
        clients = [f.client() for _ in range(4)]
        try:
            for i in range(120):
                resp = clients[i % 4].request("GET", "/n/%d" % i, [("Host", "A")])
                self.assertEqual(resp.status, 200)
                ids.append(resp.header("x-request-id"))
        finally:
            for c in clients:
                c.close()
        f.signal(signal.SIGTERM)                # at once: lines still in the buffers
        f.proc.wait(10)
        self.assertEqual(f.proc.returncode, 0, f.stderr_tail())
        lines = log_lines(f.stdout_text())
        self.assertEqual(len(lines), len(ids), "lines after SIGTERM")
        self.assertEqual(sorted(e["request_id"] for e in lines), sorted(ids))
        self.assertEqual(sorted(e["path"] for e in lines), sorted("/n/%d" % i for i in range(120)))

    def test_file_target_and_reopen(self):
        up = self.upstream()
        d = tempfile.mkdtemp(prefix="ferry-obs-log-")
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, "access.log")
        f = self.ferry({"A": service(up)}, log={"access": path})
        for i in range(5):
            self.assertEqual(f.get("/f/%d?x" % i, host="A").status, 200)
        lines, waited = wait_lines(lambda: read_file(path), 5, 3)
        self.assertEqual([e["path"] for e in sorted(lines, key=lambda e: e["path"])],
                         ["/f/%d" % i for i in range(5)])
        self.assertLessEqual(waited, FLUSH_BOUND)
        for e in lines:
            self.assert_log_shape(e)
        os.rename(path, path + ".1")
        f.signal(signal.SIGUSR1)
        self.assertTrue(wait_until(lambda: os.path.exists(path), 2), "SIGUSR1 did not reopen the file")
        for i in range(3):
            self.assertEqual(f.get("/g/%d" % i, host="A").status, 200)
        self.assertEqual(f.get("/last", host="A").status, 200)
        f.signal(signal.SIGTERM)
        f.proc.wait(10)
        self.assertEqual(f.proc.returncode, 0)
        self.assertEqual(sorted(e["path"] for e in log_lines(read_file(path + ".1"))),
                         ["/f/%d" % i for i in range(5)])
        self.assertEqual(sorted(e["path"] for e in log_lines(read_file(path))),
                         ["/g/0", "/g/1", "/g/2", "/last"])
        self.assertEqual(log_lines(f.stdout_text()), [], "access lines on stdout with a file target")


class SecretsTest(ObsCase):

    def test_secrets_never_shown(self):
        p = pki()
        s_env = "obs-secret-ENV-7d1e93"         # service key_env
        s_file = "obs-secret-FILE-c0ffee"       # service key_file
        s_in_env = "obs-secret-INENV-2b4f6a"    # inbound keys_env
        s_in_file = "obs-secret-INFILE-9e8d7c"  # inbound keys_file
        s_rot = "obs-secret-ROTATED-5a5a5a"     # key_file after a good reload
        s_bad = "obs-secret-BROKEN-1f1f1f"      # in a key file that fails to load
        secrets = [s_env, s_file, s_in_env, s_in_file, s_rot, s_bad]
        d = tempfile.mkdtemp(prefix="ferry-obs-keys-")
        self.addCleanup(shutil.rmtree, d, True)
        key_file = os.path.join(d, "svc.key")
        keys_file = os.path.join(d, "inbound.keys")
        with open(key_file, "w") as fh:
            fh.write(s_file + "\n")
        with open(keys_file, "w") as fh:
            fh.write("# rotation list\n%s\n" % s_in_file)
        e_up = self.upstream()
        f_up = self.upstream()
        app = self.upstream(tls=False)
        inbound_port = free_port()
        env = {"OBS_SVC_KEY": s_env, "OBS_IN_KEY": s_in_env}
        cfg = harness.ferry_config({
            "E": service(e_up, auth={"key_env": "OBS_SVC_KEY"}),
            "F": service(f_up, auth={"key_file": key_file}),
        }, log={"level": "debug"}, listeners={"inbound": {
            "address": "127.0.0.1:%d" % inbound_port,
            "tls": {"cert": p.server.cert, "key": p.server.key, "client_ca": p.ca.cert,
                    "allowed_peers": ["spiffe://test/app"]},
            "auth": {"keys_env": ["OBS_IN_KEY"], "keys_file": keys_file},
            "local_app": app.address}})
        f = self.ferry(config=cfg, env=env)

        def inbound(key, cert=p.client):
            ctx = ssl.create_default_context(cafile=p.ca.cert)
            ctx.check_hostname = False
            ctx.load_cert_chain(cert.cert, cert.key)
            raw = socket.create_connection(("127.0.0.1", inbound_port), timeout=3)
            with ctx.wrap_socket(raw, server_hostname="backend") as s:
                hdrs = [("Host", "me")] + ([("x-service-auth", key)] if key is not None else [])
                s.sendall(build_request("GET", "/in?k=v", hdrs))
                return read_response(Reader(s)).status

        # traffic: the keys work (so ferry did load them) ...
        self.assertEqual(f.get("/e?x=1", host="E", headers=[("x-service-auth", "app-own")]).status, 200)
        self.assertEqual(e_up.last.header_all("x-service-auth"), [s_env])
        self.assertEqual(f.get("/f", host="F").status, 200)
        self.assertEqual(f_up.last.header_all("x-service-auth"), [s_file])
        self.assertEqual(inbound(s_in_env), 200)
        self.assertEqual(inbound(s_in_file), 200)
        # ... and are refused when wrong: 403s
        self.assertEqual(inbound(s_in_env[:-1]), 403)
        self.assertEqual(inbound(s_in_env + s_in_file), 403)
        self.assertEqual(inbound(None), 403)
        self.assertEqual(inbound(s_in_env, cert=p.client_dns), 403)
        self.assertEqual(f.get("/", host="unknown").status, 404)

        # a reload that fails on a key file holding a control character:
        # the old key stays in force, and the file's content is shown nowhere
        with open(key_file, "w") as fh:
            fh.write(s_bad + "\x01tail\n")
        f.signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: scrape(f).get("ferry_config_reloads_total",
                                                           result="failure") == 1, 5),
                        "the broken key file did not fail the reload")
        self.assertEqual(f.get("/f", host="F").status, 200)
        self.assertEqual(f_up.last.header_all("x-service-auth"), [s_file], "old key not kept")
        # a reload of a broken config file
        with open(f.config_path) as fh:
            good_yaml = fh.read()
        with open(key_file, "w") as fh:
            fh.write(s_rot + "\n")
        with open(f.config_path, "w") as fh:
            fh.write(good_yaml + "bogus_key: [unterminated\n  - ${OBS_SVC_KEY}\n")
        f.signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: scrape(f).get("ferry_config_reloads_total",
                                                           result="failure") == 2, 5),
                        "the broken config did not fail the reload")
        check = subprocess.run([harness.ferry_bin(), "-t", "-c", f.config_path],
                               env=dict(os.environ, **env), capture_output=True, text=True, timeout=10)
        self.assertEqual(check.returncode, 1, check.stdout + check.stderr)
        # then a good reload picks the rotated key up
        with open(f.config_path, "w") as fh:
            fh.write(good_yaml)
        f.signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: scrape(f).get("ferry_config_reloads_total",
                                                           result="success") == 1, 5))
        self.assertEqual(f.get("/f", host="F").status, 200)
        self.assertEqual(f_up.last.header_all("x-service-auth"), [s_rot], "rotated key not loaded")

        # /config: every key shown as <redacted> beside its source
        config = f.admin("/config")
        self.assertEqual(config.status, 200)
        conf = config.json()
        svcs = conf["services"]
        svcs = {s["name"]: s for s in svcs} if isinstance(svcs, list) else svcs
        self.assertEqual(svcs["E"]["auth"].get("key_env"), "OBS_SVC_KEY")
        self.assertEqual(svcs["E"]["auth"].get("key"), "<redacted>")
        self.assertEqual(svcs["F"]["auth"].get("key_file"), key_file)
        self.assertEqual(svcs["F"]["auth"].get("key"), "<redacted>")
        in_auth = conf["listeners"]["inbound"]["auth"]
        self.assertEqual(in_auth.get("keys_env"), ["OBS_IN_KEY"])
        self.assertEqual(in_auth.get("keys_file"), keys_file)
        self.assertEqual(json.dumps(in_auth).count('"<redacted>"'), 2,
                         "inbound auth should show its two loaded keys as <redacted>: %r" % in_auth)

        outputs = {"GET /config": config.body.decode("utf-8", "replace"),
                   "GET /services": f.admin("/services").body.decode("utf-8", "replace"),
                   "GET /metrics": f.admin("/metrics").body.decode("utf-8", "replace"),
                   "GET /": f.admin("/").body.decode("utf-8", "replace"),
                   "ferry -t": check.stdout + check.stderr}
        f.signal(signal.SIGTERM)
        f.proc.wait(10)
        outputs["access log"] = f.stdout_text()
        outputs["stderr"] = f.stderr_text()
        self.assertEqual(len(log_lines(outputs["access log"])), 11, "access lines")
        self.assertRegex(outputs["stderr"], re.escape(key_file), "the failed reload names the file")
        leaks = ["%s contains %s" % (where, s) for where, text in outputs.items()
                 for s in secrets if s in text]
        # prefixes too: a truncated secret is still a leak
        leaks += ["%s contains a prefix of %s" % (where, s) for where, text in outputs.items()
                  for s in secrets if s not in text and s[:16] in text]
        self.assertEqual(leaks, [])


class ServicesTest(ObsCase):

    def service_of(self, f, name):
        return [s for s in f.admin("/services").json()["services"] if s["name"] == name][0]

    def test_services_reflect_traffic(self):
        release = threading.Event()

        def behave(conn, req):
            if req.target.startswith("/slow"):
                release.wait(5)
            echo()(conn, req)
        up = self.upstream(behave)
        f = self.ferry({"A": service(up)}, workers=1)
        svc = self.service_of(f, "A")
        self.assertEqual((svc["circuit"], svc["in_flight"]), ("closed", 0))
        (ep,) = svc["endpoints"]
        self.assertEqual(ep["address"], up.address)
        self.assertEqual((ep["healthy"], ep["ejected"], ep["in_flight"], ep["pool"]),
                         (True, False, 0, {"idle": 0, "active": 0}))
        for _ in range(3):
            self.assertEqual(f.get("/", host="A").status, 200)

        result = {}
        t = threading.Thread(target=lambda: result.update(r=f.get("/slow", host="A", timeout=8)))
        t.start()
        try:
            self.assertTrue(wait_until(lambda: len(up.requests) == 4, 3))
            svc = self.service_of(f, "A")
            (ep,) = svc["endpoints"]
            self.assertEqual(svc["in_flight"], 1)
            self.assertEqual(ep["in_flight"], 1)
            self.assertEqual(ep["pool"], {"idle": 0, "active": 1})
            m = scrape(f)
            self.assert_metric(m, 1, "ferry_upstream_connections", service="A", state="active")
            self.assert_metric(m, 0, "ferry_upstream_connections", service="A", state="idle")
        finally:
            release.set()
            t.join(8)
        self.assertEqual(result["r"].status, 200)
        svc = self.service_of(f, "A")
        (ep,) = svc["endpoints"]
        self.assertEqual((svc["in_flight"], ep["in_flight"], ep["pool"]),
                         (0, 0, {"idle": 1, "active": 0}))
        self.assertIsInstance(ep["ewma_ms"], (int, float))
        self.assertGreater(ep["ewma_ms"], 0)
        self.assertLess(ep["ewma_ms"], 10000)
        # a request leaves in_flight before its last bytes can reach the
        # client, so no read right after an answer sees it (it did, now
        # and then, when the slot was given back after the write)
        for _ in range(30):
            self.assertEqual(f.get("/", host="A").status, 200)
            self.assertEqual(self.service_of(f, "A")["in_flight"], 0)

    def test_ejected_and_unhealthy_endpoints(self):
        def health(status):
            def behave(conn, req):
                if req.target == "/health":
                    conn.respond(status, [], b"")
                else:
                    echo()(conn, req)
            return behave
        good = self.upstream(health(200))
        sick = self.upstream(health(503))
        dead = free_port()
        f = self.ferry({
            "O": {"endpoints": [good.address, "127.0.0.1:%d" % dead], "tls": tls_client(),
                  "retries": dict(FAST_RETRIES, max=2),
                  "circuit_breaker": {"consecutive_failures": 100},
                  "outlier_detection": {"consecutive_failures": 1, "base_ejection": "60s"}},
            "H": {"endpoints": [good.address, sick.address], "tls": tls_client(),
                  "health_check": {"path": "/health", "interval": "100ms", "timeout": "500ms",
                                   "healthy": 1, "unhealthy": 1}},
        }, workers=1)
        dead_addr = "127.0.0.1:%d" % dead

        def ejected():
            self.assertEqual(f.get("/", host="O").status, 200)
            eps = {e["address"]: e for e in self.service_of(f, "O")["endpoints"]}
            return eps[dead_addr]["ejected"]
        self.assertTrue(wait_until(ejected, 5, interval=0), "dead endpoint never ejected")
        eps = {e["address"]: e for e in self.service_of(f, "O")["endpoints"]}
        self.assertEqual(sorted(eps), sorted([good.address, dead_addr]))
        self.assertFalse(eps[good.address]["ejected"])
        self.assertEqual(self.service_of(f, "O")["circuit"], "closed")

        def sick_flagged():
            eps = {e["address"]: e for e in self.service_of(f, "H")["endpoints"]}
            return eps[sick.address]["healthy"] is False
        self.assertTrue(wait_until(sick_flagged, 3), "endpoint failing its health check still healthy")
        eps = {e["address"]: e for e in self.service_of(f, "H")["endpoints"]}
        self.assertIs(eps[good.address]["healthy"], True)
        m = scrape(f)
        self.assert_metric(m, 0, "ferry_endpoint_healthy", service="H", endpoint=sick.address)
        self.assert_metric(m, 1, "ferry_endpoint_healthy", service="H", endpoint=good.address)


if __name__ == "__main__":
    harness.main()
