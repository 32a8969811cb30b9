"""Allocations that fail while ferry serves traffic (SPEC §7, §10, §11).

ferry runs with failmalloc.so preloaded (tests/integration/failmalloc.c):
while a control file exists, 1 in RATE of the malloc/calloc/realloc calls
of the threads named by a pattern fail (OpenSSL's and nghttp2's
allocations end in malloc too). Each case switches that on for a couple
of seconds under concurrent traffic, at a few rates, then off, and checks:

- ferry never exits or dies;
- every answer meanwhile is right (status and body), or one of ferry's 5xx
  errors in SPEC §7's shape, or a closed connection (a reset stream, a
  GOAWAY); never a wrong body, nor a wait past the configured timeouts;
- after it, 50 polite requests on each path succeed and /healthz says 200;
- its open descriptors come back to where they were before (no connection
  left behind), and neither the bytes the shim counts live nor RssAnon
  grow from round to round (no leak on the paths an allocation failure
  takes).

Runs in the normal build (meson passes the shim's path in
FERRY_FAILMALLOC, else it is looked for beside FERRY_BIN); skipped where
the shim is not built (sanitizer builds: ASan replaces malloc itself)."""

import collections
import http.client
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time

import harness
from harness import (LOOPBACK, FerryTestCase, IncompleteMessage, Reader, anon_kib,
                     build_request, ferry_bin, ferry_config, free_port, payload, pki,
                     read_response, service, sha256, to_yaml, wait_until)


def shim_path():
    path = os.environ.get("FERRY_FAILMALLOC")
    if path:
        return path
    path = os.path.join(os.path.dirname(ferry_bin()), "tests", "failmalloc.so")
    return path if os.path.exists(path) else None


def sanitized_binary(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    return b"libasan.so" in data or b"libtsan.so" in data


SHIM = shim_path()
if SHIM is None or not os.path.exists(SHIM) or sanitized_binary(ferry_bin()):
    print("SKIP: no failmalloc shim for this build (sanitizer builds have none)")
    sys.exit(77)

harness.need_python_h2()
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402
import h2.exceptions  # noqa: E402

from test_compression import big_json  # noqa: E402
from test_h2 import H2, Stream  # noqa: E402
from test_tracing import Collector, exported, ok_after  # noqa: E402

KEY = "oom-inbound-key-0123456789"
HANG = 8.0          # no answer within this: a hang (request 3s, stream_idle 3s)
WINDOW = 1.3        # seconds of injection a round
SMALL = payload(64, seed=3)
LARGE = payload(256 * 1024, seed=4)
BIG = payload(256 * 1024, seed=5)
JSON = big_json(48 * 1024)
FD_SLACK = 3
# Growth allowed from the first round to the last: ferry keeps bounded
# caches that a round may leave fuller than the one before (up to 16
# HTTP/1 request states a worker, each keeping up to 64 KiB of request
# buffer: 2 MiB with two workers; spare 16 KiB blocks; HTTP/2 streams), so
# only a leak past that over the rounds shows here.
RSS_SLACK_KIB = 3 * 1024
LIVE_SLACK = 5 << 19

DEFAULTS = {
    "timeouts": {"connect": "1s", "request": "3s", "stream_idle": "3s"},
    "retries": {"max": 2, "backoff": {"base": "5ms", "max": "20ms"}},
    "circuit_breaker": {"consecutive_failures": 0},
    "outlier_detection": {"consecutive_failures": 0},
    "pool": {"idle_timeout": "1s", "max_requests_per_connection": 8},
}


def app_behaviour(conn, req):
    """/echo: the body back; /sum: its sha256 and length; /big: 256 KiB;
    /json: 48 KiB of JSON; /slow: "ok" 30 ms late; X-Gen back as it came.
    Every 7th answer closes the connection (so ferry opens new ones), and
    no body is kept (the Upstream records every request)."""
    up = conn.upstream
    path = req.target.split("?")[0]
    ctype = "application/octet-stream"
    if path == "/slow" and not conn.sleep(0.03):
        return
    body = expected_body(path, req.body)
    if path == "/json":
        ctype = "application/json"
    with up._lock:
        up.served = getattr(up, "served", 0) + 1
        if up.served % 7 == 0:
            conn.keep_open = False
        req.body = b""
        if len(up.requests) > 100:
            del up.requests[:-10]
    conn.respond(200, [("Content-Type", ctype), ("X-Gen", req.header("x-gen", ""))], body)


def expected_body(path, body):
    if path == "/echo":
        return body
    if path == "/sum":
        return ("%s:%d" % (sha256(body), len(body))).encode()
    if path == "/big":
        return BIG
    if path == "/json":
        return JSON
    return b"ok"


class H2App(harness.LoopbackServer):
    """An HTTP/2 server over TLS (ALPN h2) answering /echo, /sum and
    anything else as app_behaviour does (small answers: within any window)."""

    def __init__(self):
        p = pki()
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(p.server.cert, p.server.key)
        self.ctx.set_alpn_protocols(["h2"])
        self.socks = set()
        super().__init__()

    def close(self):
        super().close()
        with self.lock:
            socks = list(self.socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def serve(self, s, n):
        with self.lock:
            self.socks.add(s)
        try:
            s.settimeout(5)
            s = self.ctx.wrap_socket(s, server_side=True)
            s.settimeout(30)
            conn = h2.connection.H2Connection(config=h2.config.H2Configuration(
                client_side=False, header_encoding="utf-8", validate_outbound_headers=False))
            conn.initiate_connection()
            s.sendall(conn.data_to_send())
            streams = {}
            while not self.stopping.is_set():
                data = s.recv(65536)
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        streams[ev.stream_id] = (dict(ev.headers), bytearray())
                    elif isinstance(ev, h2.events.DataReceived):
                        if ev.stream_id in streams:
                            streams[ev.stream_id][1].extend(ev.data)
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamReset):
                        streams.pop(ev.stream_id, None)
                    elif isinstance(ev, h2.events.StreamEnded):
                        st = streams.pop(ev.stream_id, None)
                        if st is None:
                            continue
                        headers, body = st
                        path = headers.get(":path", "/").split("?")[0]
                        out = expected_body(path, bytes(body)) if path != "/big" else b"no"
                        conn.send_headers(ev.stream_id, [
                            (":status", "200"), ("content-length", str(len(out))),
                            ("x-gen", headers.get("x-gen", ""))])
                        conn.send_data(ev.stream_id, out, end_stream=True)
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        return
                s.sendall(conn.data_to_send())
        except (OSError, ssl.SSLError, h2.exceptions.H2Error):
            pass
        finally:
            with self.lock:
                self.socks.discard(s)
            try:
                s.close()
            except OSError:
                pass


def ferry_error_shape(resp):
    """None if RESP is one of ferry's 5xx errors (SPEC §7), else why not."""
    if not 500 <= resp.status < 600:
        return "status %d" % resp.status
    ctype = (resp.header("content-type") or "").split(";")[0].strip().lower()
    if ctype != "application/json":
        return "content-type %r" % ctype
    if not resp.header("x-ferry-error"):
        return "no x-ferry-error"
    if len(resp.header_all("x-correlation-id")) != 1:
        return "x-correlation-id %r" % resp.header_all("x-correlation-id")
    try:
        body = resp.json()
        ok = (set(body) == {"success", "error"} and body["success"] is False
              and body["error"]["code"] == resp.header("x-ferry-error")
              and isinstance(body["error"]["message"], str) and body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        ok = False
    return None if ok else "body %r" % resp.body[:200]


class Tally:
    """What the clients of a round got: counts by outcome, and every
    outcome that is a failure of the test (wrong answers, hangs)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = collections.Counter()
        self.bad = []

    def add(self, what, detail=None):
        with self.lock:
            self.counts[what] += 1
            if what in ("bad", "hang"):
                self.bad.append(detail)

    def judge(self, resp, path, body, gen=None, what=""):
        """RESP to a request of PATH with BODY (expected X-Gen one of GEN)."""
        if resp.status == 200:
            want = expected_body(path, body)
            if resp.body != want:
                self.add("bad", "%s %s: wrong body (%d bytes, sha %s; wanted %d); headers %r"
                         % (what, path, len(resp.body), sha256(resp.body)[:12], len(want),
                            resp.headers))
            elif gen is not None and resp.header("x-gen") not in gen:
                self.add("bad", "%s %s: x-gen %r, not one of %r"
                         % (what, path, resp.header("x-gen"), sorted(gen)))
            else:
                self.add("ok")
            return
        why = ferry_error_shape(resp)
        if why is None:
            self.add("error:%s" % resp.header("x-ferry-error"))
        else:
            self.add("bad", "%s %s: not a right answer nor ferry's error: %s; headers %r; "
                     "body %r" % (what, path, why, resp.headers, resp.body[:200]))


class H1Client:
    """HTTP/1.1 over a plain or TLS connection: keep-alive, or a new
    connection for each request (KEEP false)."""

    def __init__(self, port, ctx=None, keep=True, host="svc", headers=()):
        self.port, self.ctx, self.keep, self.host = port, ctx, keep, host
        self.headers = list(headers)
        self.sock = None

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None

    def connect(self):
        s = socket.create_connection((LOOPBACK, self.port), timeout=HANG)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ctx is not None:
            s = self.ctx.wrap_socket(s, server_hostname="backend")
        self.sock, self.reader = s, Reader(s)

    def call(self, method, path, body=b""):
        """The response; raises socket.timeout (a hang) or OSError,
        ssl.SSLError, IncompleteMessage (closed)."""
        if self.sock is None:
            self.connect()
        headers = [("Host", self.host), *self.headers]
        if not self.keep:
            headers.append(("Connection", "close"))
        try:
            self.sock.sendall(build_request(method, path, headers, body))
            resp = read_response(self.reader, method)
        except BaseException:
            self.close()
            raise
        if not self.keep or resp.has_token("connection", "close"):
            self.close()
        return resp

    def exchange(self, tally, method, path, body=b"", gen=None):
        try:
            resp = self.call(method, path, body)
        except socket.timeout:
            tally.add("hang", "HTTP/1.1 %s %s: no answer within %.0fs" % (method, path, HANG))
            return
        except (OSError, ssl.SSLError, IncompleteMessage):
            tally.add("closed")
            return
        except ValueError as e:
            tally.add("bad", "HTTP/1.1 %s %s: %s" % (method, path, e))
            return
        tally.judge(resp, path, body, gen, "HTTP/1.1")


REQUESTS = (("POST", "/echo", SMALL), ("POST", "/sum", LARGE), ("GET", "/big", b""))


def h1_load(port, ctx=None, keep=True, host="svc", headers=(), kinds=REQUESTS, gen=None):
    """A client thread's loop: the requests of KINDS in turn."""
    def run(stop, tally):
        c = H1Client(port, ctx, keep, host, headers)
        i = 0
        while not stop.is_set():
            method, path, body = kinds[i % len(kinds)]
            c.exchange(tally, method, path, body, gen() if gen else None)
            i += 1
        c.close()
    return run


def h2_connect(port, ctx):
    if ctx is None:
        return H2(port, timeout=HANG)
    s = socket.create_connection((LOOPBACK, port), timeout=HANG)
    s = ctx.wrap_socket(s, server_hostname="backend")
    if s.selected_alpn_protocol() != "h2":
        raise AssertionError("ALPN picked %r" % s.selected_alpn_protocol())
    return H2(sock=s, timeout=HANG)


def h2_over(c, st):
    """Whether stream ST of connection C has its answer, or never will: a
    reset, a closed connection, a GOAWAY that did not take it."""
    return st.done or c.closed or any(st.sid > last for _, last in c.goaways)


def h2_load(port, authorities, ctx=None, headers=(), streams=3):
    """A client thread's loop: STREAMS streams at a time on one HTTP/2
    connection (a new one once it closed or went away), to AUTHORITIES in
    turn, each a small or a large POST."""
    kinds = (("/echo", SMALL), ("/sum", LARGE), ("/echo", SMALL))

    def run(stop, tally):
        c, i = None, 0
        while not stop.is_set():
            if c is None or c.closed or c.goaways:
                if c is not None:
                    c.close()
                try:
                    c = h2_connect(port, ctx)
                except socket.timeout:
                    tally.add("hang", "HTTP/2 connect: no handshake within %.0fs" % HANG)
                    c = None
                    continue
                except (OSError, ssl.SSLError):
                    tally.add("closed")
                    c = None
                    continue
            sent = []
            for _ in range(streams):
                path, body = kinds[i % len(kinds)]
                auth = authorities[i % len(authorities)]
                i += 1
                sid = c.request(path, auth, method="POST", body=body, headers=headers)
                sent.append((sid, path, body))
            deadline = time.monotonic() + HANG
            for sid, path, body in sent:
                st = c.streams.setdefault(sid, Stream(sid))
                while not h2_over(c, st) and c.pump(deadline):
                    pass
                if st.ended and st.headers is not None:
                    tally.judge(st.response(), path, body, None, "HTTP/2")
                elif h2_over(c, st):
                    tally.add("closed")
                else:
                    tally.add("hang", "HTTP/2 stream %d %s: no end within %.0fs (headers %r)"
                              % (sid, path, HANG, st.headers))
                    c.closed = True
        if c is not None:
            c.close()
    return run


def admin_load(f):
    """GETs of the admin pages: 200, a 5xx, or closed."""
    def run(stop, tally):
        paths = ["/healthz", "/metrics", "/services", "/config", "/ready"]
        i = 0
        while not stop.is_set():
            path = paths[i % len(paths)]
            i += 1
            try:
                resp = f.admin(path, timeout=HANG)
            except socket.timeout:
                tally.add("hang", "admin %s: no answer within %.0fs" % (path, HANG))
                continue
            except (OSError, IncompleteMessage, http.client.HTTPException):
                tally.add("closed")
                continue
            if resp.status == 200 or resp.status >= 500:
                tally.add("admin:%d" % resp.status)
            else:
                tally.add("bad", "admin %s: %d %r" % (path, resp.status, resp.body[:200]))
            time.sleep(0.01)
    return run


class Load:
    """Client threads running until stopped; their outcomes in a Tally."""

    def __init__(self, runs):
        self.stop = threading.Event()
        self.tally = Tally()
        self.threads = [threading.Thread(target=r, args=(self.stop, self.tally), daemon=True)
                        for r in runs]
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(HANG * 3)
        return [t for t in self.threads if t.is_alive()]


class OomCase(FerryTestCase):

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="ferry-oom-")
        self._closers.append(lambda: shutil.rmtree(self.dir, True))
        self.control = os.path.join(self.dir, "inject")
        self.stats_path = os.path.join(self.dir, "stats")
        self.env = {"LD_PRELOAD": SHIM, "FAILMALLOC_CONTROL": self.control,
                    "FAILMALLOC_STATS": self.stats_path, "FAILMALLOC_SEED": "7",
                    # a crash leaves a core where the system puts them
                    "FERRY_DUMPABLE": "1"}

    def start(self, cfg, env=None):
        self.f = self.ferry(config=cfg, env=dict(self.env, **(env or {})))
        return self.f

    # the shim

    def inject(self, rate, threads="ferry-worker"):
        tmp = self.control + ".tmp"
        with open(tmp, "w") as fh:
            fh.write("%d %s\n" % (rate, threads))
        os.replace(tmp, self.control)

    def inject_off(self):
        try:
            os.unlink(self.control)
        except FileNotFoundError:
            pass
        time.sleep(0.05)

    def stats(self):
        """(calls that could fail, calls failed, bytes live), as of the
        shim's last look at the control file: /metrics makes the main
        thread allocate (/healthz may take only kept blocks), and so look,
        first."""
        time.sleep(0.02)
        self.f.admin("/metrics")
        try:
            with open(self.stats_path) as fh:
                e, fl, live = (int(x) for x in fh.read().split())
            return e, fl, live
        except (OSError, ValueError):
            return 0, 0, 0

    # ferry's state

    def fds(self):
        return len(os.listdir("/proc/%d/fd" % self.f.proc.pid))

    def settle(self):
        """Waits for what traffic left to go (pooled connections idle for
        pool.idle_timeout, spare blocks a second): (fds, RssAnon KiB, live
        bytes)."""
        time.sleep(1.6)
        return self.fds(), anon_kib(self.f.proc.pid), self.stats()[2]

    def assert_alive(self, when):
        self.assertTrue(self.f.alive(), "ferry died %s: %s\n%s"
                        % (when, self.f.exit_description(), self.f.stderr_tail()))

    # a case

    def rounds(self, loads, polite, rates, during=None, after=None):
        """Warm up (LOADS and POLITE without injection), then a round for
        each (rate, threads) of RATES (a rate alone: the workers): LOADS
        (functions of (stop, tally), each a thread) with injection on in
        those threads for WINDOW seconds (DURING called meanwhile, if
        given), off, AFTER() if given, then POLITE(): the 50 requests on
        each path that must succeed. Checks each round's answers, then
        ferry's descriptors and memory against where they were."""
        warm = Load(loads)
        time.sleep(0.8)
        self.assertEqual(warm.finish(), [], "a client thread of the warm-up never ended")
        self.assertEqual(warm.tally.bad, [], "wrong answers without injection")
        polite()
        base_fds, base_anon, base_live = self.settle()
        marks = []
        for n, rate in enumerate(rates):
            rate, threads = rate if isinstance(rate, tuple) else (rate, "ferry-worker")
            e0, f0, _ = self.stats()
            load = Load(loads)
            time.sleep(0.2)
            self.inject(rate, threads)
            if during:
                during(WINDOW)
            else:
                time.sleep(WINDOW)
            self.inject_off()
            stuck = load.finish()
            e1, f1, _ = self.stats()
            sys.stderr.write("round %d: 1/%d in %s: %d of %d calls failed; answers %s\n"
                             % (n, rate, threads, f1 - f0, e1 - e0,
                                dict(sorted(load.tally.counts.items()))))
            self.assert_alive("in round %d (1/%d)" % (n, rate))
            self.assertEqual(stuck, [], "client threads still waiting after %.0fs" % (HANG * 3))
            self.assertFalse(load.tally.bad, "round %d (1/%d): %d wrong answers or hangs:\n%s"
                             % (n, rate, len(load.tally.bad),
                                "\n".join(sorted(set(load.tally.bad))[:20])))
            self.assertGreater(f1 - f0, 0, "round %d: the shim failed no call" % n)
            if after:
                after()
            polite()
            self.assertEqual(self.f.admin("/healthz").status, 200)
            fds = wait_until(lambda: self.fds() <= base_fds + FD_SLACK, 6, 0.1) and self.fds()
            self.assertLessEqual(fds, base_fds + FD_SLACK,
                                 "round %d: %d descriptors open, %d before: %s"
                                 % (n, fds, base_fds, self.fd_kinds()))
            marks.append(self.settle())
            sys.stderr.write("  after: fds %d (before %d), RssAnon %d KiB (before %d), "
                             "live %d KiB (before %d)\n"
                             % (marks[-1][0], base_fds, marks[-1][1], base_anon,
                                marks[-1][2] >> 10, base_live >> 10))
        self.assert_alive("after the rounds")
        if len(marks) > 1:
            first, last = marks[0], marks[-1]
            self.assertLessEqual(last[2] - first[2], LIVE_SLACK,
                                 "bytes live grew %d KiB from round 0 to round %d"
                                 % ((last[2] - first[2]) >> 10, len(marks) - 1))
            self.assertLessEqual(last[1] - first[1], RSS_SLACK_KIB,
                                 "RssAnon grew %d KiB from round 0 to round %d"
                                 % (last[1] - first[1], len(marks) - 1))

    def fd_kinds(self):
        kinds = collections.Counter()
        d = "/proc/%d/fd" % self.f.proc.pid
        for name in os.listdir(d):
            try:
                kinds[os.readlink(os.path.join(d, name)).split(":")[0]] += 1
            except OSError:
                pass
        return dict(kinds)

    def polite_h1(self, port, ctx=None, host="svc", headers=(), kinds=REQUESTS, gen=None):
        tally = Tally()
        c = H1Client(port, ctx, True, host, headers)
        for method, path, body in kinds:
            for _ in range(50):
                c.exchange(tally, method, path, body, gen)
        c.close()
        self.assertEqual(dict(tally.counts), {"ok": 50 * len(kinds)},
                         "polite HTTP/1.1 requests after injection: %r" % tally.bad)

    def polite_h2(self, port, authorities, ctx=None, headers=()):
        tally = Tally()
        c = h2_connect(port, ctx)
        try:
            for auth in authorities:
                for i in range(50):
                    path, body = ("/sum", LARGE) if i % 10 == 0 else ("/echo", SMALL)
                    sid = c.request(path, auth, method="POST", body=body, headers=headers)
                    st = c.response(sid, HANG)
                    tally.judge(st.response(), path, body, None, "HTTP/2")
        finally:
            c.close()
        self.assertEqual(dict(tally.counts), {"ok": 50 * len(authorities)},
                         "polite HTTP/2 requests after injection: %r" % tally.bad)


class OutboundH1Test(OomCase):
    """Outbound HTTP/1.1 to a TLS service (pool, retries): keep-alive and
    new client connections, 64 B and 256 KiB bodies both ways."""

    def test_outbound_http1(self):
        up = self.upstream(app_behaviour, idle_close_after=1.0)
        self.start(ferry_config({"svc": service(up, protocol="http1")}, defaults=DEFAULTS))
        port = self.f.outbound_port
        loads = [h1_load(port), h1_load(port), h1_load(port, keep=False),
                 h1_load(port, keep=False, kinds=REQUESTS[:1])]
        self.rounds(loads, lambda: self.polite_h1(port), [50, 500, 50])


class OutboundH2Test(OomCase):
    """h2c with prior knowledge from the app, to a service over TLS with
    protocol h2 and to one with http1."""

    def test_outbound_h2c(self):
        up = self.upstream(app_behaviour, idle_close_after=1.0)
        h2app = H2App()
        self._closers.append(h2app.close)
        self.start(ferry_config({
            "one": service(up, protocol="http1"),
            "two": {"endpoints": [h2app.address], "protocol": "h2",
                    "tls": harness.tls_client("backend")},
        }, defaults=DEFAULTS))
        port = self.f.outbound_port
        loads = [h2_load(port, ["one", "two"]), h2_load(port, ["two", "one"]),
                 h2_load(port, ["two"], streams=1)]
        self.rounds(loads, lambda: self.polite_h2(port, ["one", "two"]), [50, 500])


class InboundTest(OomCase):
    """The inbound mTLS listener in front of a local app: HTTP/1.1 on kept
    and new TLS connections (full handshakes), HTTP/2 by ALPN."""

    def test_inbound_tls(self):
        p = pki()
        app = self.upstream(app_behaviour, tls=False, idle_close_after=1.0)
        port = free_port()
        self.start(ferry_config({}, defaults=DEFAULTS, listeners={"inbound": {
            "address": "%s:%d" % (LOOPBACK, port),
            "tls": {"cert": p.server.cert, "key": p.server.key, "client_ca": p.ca.cert},
            "auth": {"keys_env": ["K"]},
            "local_app": app.address}}), env={"K": KEY})

        def ctx(alpn=None):
            c = ssl.create_default_context(cafile=p.ca.cert)
            c.check_hostname = False
            c.load_cert_chain(p.client.cert, p.client.key)
            if alpn:
                c.set_alpn_protocols(alpn)
            return c
        auth = [("x-service-auth", KEY)]
        loads = [h1_load(port, ctx(), headers=auth), h1_load(port, ctx(), keep=False,
                                                              headers=auth),
                 h1_load(port, ctx(), keep=False, headers=auth, kinds=REQUESTS[:1]),
                 h2_load(port, ["app"], ctx(["h2"]), headers=auth)]

        def polite():
            self.polite_h1(port, ctx(), headers=auth)
            self.polite_h2(port, ["app"], ctx(["h2"]), headers=auth)
        self.rounds(loads, polite, [50, 500])


class MeshTest(OomCase):
    """ferry's outbound side to its own inbound listener, with what SPEC
    §13-§16 add on the way: the inbound side compresses the app's JSON and
    the outbound side decodes it (both directions' coders), header rules
    on both, spans of both sides exported to a collector, deadlines
    passed on; and hedged GETs to a service whose answers come late (a
    hedge after 10 ms, the loser cancelled)."""

    def test_mesh_features(self):
        p = pki()
        app = self.upstream(app_behaviour, tls=False, idle_close_after=1.0)
        late = [self.upstream(app_behaviour, idle_close_after=1.0) for _ in range(2)]
        collector = Collector(ok_after(0))
        self._closers.append(collector.close)
        inbound_port = free_port()
        comp = {"encodings": ["zstd", "gzip"], "min_size": "1KiB"}
        rules = {"request": {"set": {"x-tenant": "t1"}, "add": {"x-env": "prod"},
                             "remove": ["x-debug"]},
                 "response": {"set": {"x-frame-options": "DENY"}, "remove": ["server"]}}
        self.start(ferry_config({
            "mesh": {"endpoints": ["%s:%d" % (LOOPBACK, inbound_port)],
                     "tls": harness.tls_client("backend"), "auth": {"key_env": "K"},
                     "compression": comp, "headers": rules},
            "late": {"endpoints": [u.address for u in late], "protocol": "http1",
                     "tls": harness.tls_client("backend"),
                     "hedging": {"after": "10ms", "max": 1}},
        }, defaults=DEFAULTS, listeners={"inbound": {
            "address": "%s:%d" % (LOOPBACK, inbound_port),
            "tls": {"cert": p.server.cert, "key": p.server.key, "client_ca": p.ca.cert},
            "auth": {"keys_env": ["K"]}, "local_app": app.address,
            "compression": comp, "headers": rules}},
            tracing={"otlp": "http://%s/v1/traces" % collector.address,
                     "service_name": "oom", "sample_ratio": 1, "max_queue": 512,
                     "batch": {"max_spans": 64, "interval": "100ms"}}), env={"K": KEY})
        port = self.f.outbound_port
        mesh = (("GET", "/json", b""), ("POST", "/echo", SMALL), ("POST", "/sum", LARGE))
        slow = (("GET", "/slow", b""),)
        loads = [h1_load(port, host="mesh", kinds=mesh),
                 h1_load(port, host="mesh", keep=False, kinds=mesh[:1]),
                 h1_load(port, host="late", kinds=slow),
                 h2_load(port, ["mesh"])]

        def polite():
            self.polite_h1(port, host="mesh", kinds=mesh)
            self.polite_h1(port, host="late", kinds=slow)
            self.polite_h2(port, ["mesh"])
        self.rounds(loads, polite, [50, 500])
        # it ran what it is for (every service's series is there, at 0 too)
        m = self.f.admin("/metrics").body.decode().splitlines()
        for head in ('ferry_compression_bytes_total{direction="inbound"',
                     'ferry_compression_bytes_total{direction="outbound"',
                     'ferry_hedges_total{service="late",result="won"}'):
            self.assertGreater(sum(float(line.rsplit(" ", 1)[1]) for line in m
                                   if line.startswith(head)), 0, head)
        self.assertGreater(exported(self.f), 0)


class ReloadTest(OomCase):
    """SIGHUPs while the main thread's allocations fail (then the
    workers'): ferry keeps the old config or takes the new one, and never
    dies; with injection off, a reload succeeds."""

    def config(self, gen):
        return ferry_config({"svc": service(self.up, protocol="http1",
                                            headers={"request": {"set": {"x-gen": gen}}},
                                            health_check={"path": "/health",
                                                          "interval": "200ms",
                                                          "timeout": "1s", "healthy": 1,
                                                          "unhealthy": 3})},
                            defaults=DEFAULTS, **self.ports)

    def write_config(self, cfg):
        tmp = self.f.config_path + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(to_yaml(cfg) + "\n")
        os.replace(tmp, self.f.config_path)

    def test_reload_under_injection(self):
        self.up = self.upstream(app_behaviour, idle_close_after=1.0)
        first = ferry_config({}, defaults=DEFAULTS)
        self.ports = {"listeners": first["listeners"]}
        self.gens = {"g0"}
        self.start(self.config("g0"))
        port = self.f.outbound_port
        count = [0]

        def reloads(window):
            end = time.monotonic() + window
            while time.monotonic() < end:
                count[0] += 1
                gen = "g%d" % count[0]
                self.gens.add(gen)
                self.write_config(self.config(gen))
                self.f.signal(signal.SIGHUP)
                time.sleep(0.2)

        def reload_clean():
            """A reload without injection succeeds; its config is in force."""
            count[0] += 1
            gen = "g%d" % count[0]
            self.gens.add(gen)
            self.f.reload(self.config(gen))
            self.final = gen
            # health checks may have marked the endpoint down meanwhile
            wait_until(lambda: self.f.get("/echo", host="svc").status == 200, 3, 0.1)

        kinds = REQUESTS[:1]
        loads = [h1_load(port, kinds=kinds, gen=lambda: self.gens),
                 h1_load(port, keep=False, kinds=kinds, gen=lambda: self.gens),
                 admin_load(self.f)]

        def polite():
            self.polite_h1(port, kinds=REQUESTS, gen={getattr(self, "final", "g0")})
        self.rounds(loads, polite, [(20, "ferry$"), (300, "ferry$"), (50, "ferry-worker")],
                    during=reloads, after=reload_clean)
        sys.stderr.write("reloads: %r\n" % {
            r: harness.counter(self.f, "ferry_config_reloads_total", result=r)
            for r in ("success", "failure")})


if __name__ == "__main__":
    harness.main()
