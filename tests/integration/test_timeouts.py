"""Timeouts (SPEC §3 listeners and defaults.timeouts, §6)."""

import re
import socket
import time

import harness
from harness import FerryTestCase, IncompleteMessage, delay, service, slow_body, wait_until

# more than ferry's queue and the kernel's socket buffers hold (up to 4 MiB
# each way on Linux), so the transfer waits on the reader
SLOW_BODY = 6 << 20


def read_slowly(sock, limit, until, chunk=65536, period=0.1, timeout=40):
    """Reads SOCK 64 KiB every 100 ms, never pausing longer, until
    until(bytes) or the end; (bytes, 'done' | 'eof' | 'reset')."""
    out = bytearray()
    deadline = time.monotonic() + timeout
    while len(out) <= limit and time.monotonic() < deadline:
        time.sleep(period)
        try:
            data = sock.recv(chunk)
        except ConnectionResetError:
            return bytes(out), "reset"
        if not data:
            return bytes(out), "eof"
        out += data
        if until(out):
            return bytes(out), "done"
    raise AssertionError("read_slowly: over the limit or the deadline")


def body_of(raw, size):
    """The body after the head in RAW once SIZE bytes of it are there."""
    head = raw.find(b"\r\n\r\n")
    if head < 0 or len(raw) - head - 4 < size:
        return None
    return bytes(raw[head + 4:head + 4 + size])


def wait_log(f, timeout=3):
    wait_until(lambda: f.access_log(), timeout)
    lines = f.access_log()
    return lines[-1] if lines else {}


class TimeoutsTest(FerryTestCase):

    def timed_get(self, f, host="svc", timeout=10):
        start = time.monotonic()
        resp = f.get("/", host=host, timeout=timeout)
        return resp, time.monotonic() - start

    # before the response head: 504

    def test_tcp_connect_timeout(self):
        hole = self.blackhole()
        f = self.ferry({"svc": service(hole.port, timeouts={"connect": "300ms", "request": "10s"},
                                       retries={"max": 0})})
        resp, elapsed = self.timed_get(f)
        self.assert_ferry_error(resp, 504, "SERVICE_TIMEOUT", message_re=re.escape(hole.address))
        self.assertGreater(elapsed, 0.25)
        self.assertLess(elapsed, 2.5, "connect timeout not enforced")

    def test_tls_handshake_counts_in_connect_timeout(self):
        up = self.upstream(handshake=False)        # accepts TCP, never answers the ClientHello
        f = self.ferry({"svc": service(up, timeouts={"connect": "300ms", "request": "10s"},
                                       retries={"max": 0})})
        resp, elapsed = self.timed_get(f)
        self.assert_ferry_error(resp, 504, "SERVICE_TIMEOUT", message_re=re.escape(up.address))
        self.assertGreater(elapsed, 0.25)
        self.assertLess(elapsed, 2.5, "TLS handshake not bounded by the connect timeout")
        self.assertGreaterEqual(up.connections_accepted, 1)

    def test_request_timeout(self):
        up = self.upstream(delay(5))
        f = self.ferry({"svc": service(up, timeouts={"request": "500ms"})})
        resp, elapsed = self.timed_get(f)
        self.assert_ferry_error(resp, 504, "SERVICE_TIMEOUT", message_re=re.escape(up.address))
        self.assertGreater(elapsed, 0.4)
        self.assertLess(elapsed, 2.5)

    def keepalive_then_slow(self, f, first_host, second_host, pause):
        """A first request answered at once, then, on the same connection,
        a second one to an upstream that never answers in time: its
        504 and how long it took."""
        with f.client() as c:
            first = c.request("GET", "/", [("Host", first_host)])
            self.assertEqual(first.status, 200, first.body[:300])
            time.sleep(pause)
            start = time.monotonic()
            resp = c.request("GET", "/", [("Host", second_host)])
            return resp, time.monotonic() - start

    def test_request_timeout_on_a_reused_connection(self):
        """An exchange leaves its timer armed for the next one on the same
        connection (proxy_end): the next request's deadline, later than
        the one inherited, must still be kept, not the inherited one's."""
        up = self.upstream(harness.sequence(harness.echo(), delay(5)))
        f = self.ferry({"svc": service(up, timeouts={"request": "800ms"})})
        resp, elapsed = self.keepalive_then_slow(f, "svc", "svc", 0.5)
        self.assert_ferry_error(resp, 504, "SERVICE_TIMEOUT", message_re=re.escape(up.address))
        self.assertGreater(elapsed, 0.7, "timed out at the first request's deadline")
        self.assertLess(elapsed, 2.5)

    def test_request_timeout_shorter_than_the_previous_requests(self):
        """The inherited timer fires later than this request's deadline
        (the first one's connect deadline, 20s on): it is moved, the
        short deadline holds."""
        fast = self.upstream()
        slow = self.upstream(delay(5))
        f = self.ferry({"patient": service(fast, timeouts={"connect": "20s", "request": "30s"}),
                        "svc": service(slow, timeouts={"request": "500ms"})})
        resp, elapsed = self.keepalive_then_slow(f, "patient", "svc", 0)
        self.assert_ferry_error(resp, 504, "SERVICE_TIMEOUT", message_re=re.escape(slow.address))
        self.assertGreater(elapsed, 0.4)
        self.assertLess(elapsed, 2.5, "kept the previous request's 30s deadline")

    def test_per_try_timeout_retries_then_504(self):
        up = self.upstream(delay(5))
        f = self.ferry({"svc": service(up, timeouts={"per_try": "300ms", "request": "5s"},
                                       retries={"max": 1, "on": ["per-try-timeout"]})})
        resp, elapsed = self.timed_get(f)
        self.assert_ferry_error(resp, 504, "SERVICE_TIMEOUT")
        self.assertEqual(len(up.wait_requests(2)), 2, "per-try timeout must be retried")
        self.assertGreater(elapsed, 0.55)
        self.assertLess(elapsed, 3.0, "two 300ms tries, not the 5s request budget")

    def test_per_try_timeout_then_success(self):
        up = self.upstream(harness.sequence(delay(5), harness.echo()))
        f = self.ferry({"svc": service(up, timeouts={"per_try": "300ms", "request": "5s"},
                                       retries={"max": 2})})
        resp, elapsed = self.timed_get(f)
        self.assertEqual(resp.status, 200, resp.body[:300])
        self.assertEqual(len(up.requests), 2)
        self.assertLess(elapsed, 2.5)

    # after the response head: only stream_idle

    def test_slow_download_outlives_request_timeout(self):
        parts = [b"%02d" % i * 512 for i in range(7)]
        up = self.upstream(slow_body(parts, interval=0.5))      # ~3 s in all
        f = self.ferry({"svc": service(up, timeouts={"request": "1s", "stream_idle": "2s"})})
        resp, elapsed = self.timed_get(f)
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.body, b"".join(parts))
        self.assertGreater(elapsed, 2.5)

    def test_stream_idle_cuts_stalled_body(self):
        up = self.upstream(slow_body([b"a" * 100], interval=0, declared=1000))
        f = self.ferry({"svc": service(up, timeouts={"stream_idle": "1s"})})
        with f.client(timeout=6) as c:
            c.send(harness.build_request("GET", "/", [("Host", "svc")]))
            start = time.monotonic()
            with self.assertRaises(IncompleteMessage) as cm:
                c.read_response()
            elapsed = time.monotonic() - start
        self.assertEqual(cm.exception.partial, b"a" * 100)
        self.assertGreater(elapsed, 0.8)
        self.assertLess(elapsed, 4.0, "stalled body not cut by stream_idle")

    def test_stream_idle_cuts_a_silent_body_once_due(self):
        # the client read all it got and the upstream went silent: no
        # socket holds a byte for either side, so nothing was taken since
        # the last write; the cut is due at stream_idle, not twice it
        up = self.upstream(slow_body([b"a" * 100], interval=0, declared=1000))
        f = self.ferry({"svc": service(up, retries={"max": 0},
                                       timeouts={"stream_idle": "1s"})})
        with f.client(timeout=6) as c:
            c.send(harness.build_request("GET", "/", [("Host", "svc")]))
            start = time.monotonic()
            with self.assertRaises(IncompleteMessage):
                c.read_response()
            elapsed = time.monotonic() - start
        self.assertGreater(elapsed, 0.8)
        self.assertLess(elapsed, 1.6, "a silent stream lived past stream_idle")
        self.assertEqual(wait_log(f).get("error"), "stream_idle_timeout")

    def test_stream_idle_cuts_stalled_chunked_body(self):
        up = self.upstream(slow_body([b"a" * 100, b"b" * 100], interval=30, chunked=True))
        f = self.ferry({"svc": service(up, timeouts={"stream_idle": "1s"})})
        with f.client(timeout=6) as c:
            c.send(harness.build_request("GET", "/", [("Host", "svc")]))
            start = time.monotonic()
            with self.assertRaises(IncompleteMessage):
                c.read_response()
            self.assertLess(time.monotonic() - start, 4.0)

    # stream_idle counts what either side takes, not only what ferry
    # receives: a slow reader drains ferry's socket buffers while the
    # upstream waits paused, and no byte comes in for a while

    def test_stream_idle_spares_a_slow_steady_reader(self):
        size = SLOW_BODY
        up = self.upstream(harness.large_body(size))
        f = self.ferry({"svc": service(up, retries={"max": 0}, timeouts={"stream_idle": "1s"})})
        s = socket.create_connection(("127.0.0.1", f.outbound_port), timeout=10)
        self.addCleanup(s.close)
        s.sendall(harness.build_request("GET", "/", [("Host", "svc")]))
        got, end = read_slowly(s, limit=size + 4096, until=lambda b: body_of(b, size))
        self.assertEqual(end, "done", "cut after %d bytes" % len(got))
        self.assertEqual(body_of(got, size), harness.payload(size))
        self.assertIsNone(wait_log(f).get("error"))

    def test_stream_idle_cuts_a_reader_that_stops(self):
        # reads a little, then nothing while ferry holds bytes for it
        up = self.upstream(harness.large_body(SLOW_BODY))
        f = self.ferry({"svc": service(up, retries={"max": 0}, timeouts={"stream_idle": "1s"})})
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        s.settimeout(10)
        s.connect(("127.0.0.1", f.outbound_port))
        self.addCleanup(s.close)
        s.sendall(harness.build_request("GET", "/", [("Host", "svc")]))
        s.recv(65536)
        stopped = time.monotonic()
        self.assertTrue(wait_until(lambda: f.access_log(), 6), "the stalled reader was not cut")
        waited = time.monotonic() - stopped
        self.assertEqual(f.access_log()[-1].get("error"), "stream_idle_timeout")
        self.assertGreater(waited, 0.9, "cut before stream_idle")
        # sampled when stream_idle is due: at most twice it
        self.assertLess(waited, 4.0)

    # downstream connection timeouts

    def test_idle_keepalive_connection_closed_silently(self):
        up = self.upstream()
        f = self.ferry({"svc": service(up)}, outbound={"idle_timeout": "1s"})
        with f.client() as c:
            resp = c.request("GET", "/", [("Host", "svc")])
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.header("keep-alive"), "timeout=1")
            self.assertFalse(c.peer_closed(0.5), "closed before idle_timeout")
            self.assertTrue(c.peer_closed(2.5), "idle connection not closed")
            self.assertEqual(bytes(c.reader.buf), b"", "idle close must be silent")

    def test_connection_without_request_closed_after_idle_timeout(self):
        f = self.ferry({"svc": service(self.upstream())}, outbound={"idle_timeout": "1s"})
        with f.client() as c:
            self.assertTrue(c.peer_closed(3.0))
            self.assertEqual(bytes(c.reader.buf), b"")

    def test_header_read_timeout_408(self):
        up = self.upstream()
        f = self.ferry({"svc": service(up)}, outbound={"header_read_timeout": "1s",
                                                       "idle_timeout": "30s"})
        with f.client() as c:
            c.send(b"GET / HTTP/1.1\r\nHost: svc\r\nX-Slow: ")
            start = time.monotonic()
            resp = c.read_response()
            elapsed = time.monotonic() - start
            self.assert_ferry_error(resp, 408, "REQUEST_TIMEOUT")
            self.assertGreater(elapsed, 0.8)
            self.assertLess(elapsed, 3.0)
            self.assertTrue(c.peer_closed(2))
        self.assertEqual(up.requests, [])

    def test_header_read_timeout_counts_from_first_byte(self):
        """A keep-alive connection idle between requests is not a slow head."""
        up = self.upstream()
        f = self.ferry({"svc": service(up)}, outbound={"header_read_timeout": "1s",
                                                       "idle_timeout": "10s"})
        with f.client() as c:
            self.assertEqual(c.request("GET", "/", [("Host", "svc")]).status, 200)
            time.sleep(1.5)
            self.assertEqual(c.request("GET", "/", [("Host", "svc")]).status, 200)

    def test_slow_but_steady_head_within_timeout(self):
        f = self.ferry({"svc": service(self.upstream())},
                       outbound={"header_read_timeout": "2s"})
        with f.client() as c:
            for piece in (b"GET / HT", b"TP/1.1\r\nHo", b"st: svc\r\n", b"\r\n"):
                c.send(piece)
                time.sleep(0.2)
            self.assertEqual(c.read_response().status, 200)


if __name__ == "__main__":
    harness.main()
