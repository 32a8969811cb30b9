"""Rude peers (SPEC §11): a client that resets the connection at each point
where ferry writes to it, a hostile upstream (framing it did not parse,
endless interim responses, absurd Keep-Alive), hostile trailers and chunk
extensions. After each, ferry must still serve other clients, and the
sanitizer build must stay silent (the harness fails a test whose ferry
printed a sanitizer report or died)."""

import socket
import ssl
import threading
import time

import harness
from harness import (FerryTestCase, rst_close, Reader, build_request, chunked_body, echo, free_port, pki,
                     read_response, response_bytes, service, wait_until)

KEY = "rude-inbound-key-0123456789"


def plain(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=3)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


# A pipelined tail large enough that ferry stops reading the client while it
# waits for the response (CL_WAIT pauses at its buffer limit), so the reset
# is only noticed by the next write.
FILLER = build_request("GET", "/filler", [("Host", "svc")]) * 3000


def cuts(f, direction, cause=None):
    """Requests cut before their end (ferry_requests_cut_total), for CAUSE
    or all causes."""
    total = 0.0
    for line in f.admin("/metrics").body.decode().splitlines():
        if line.startswith("ferry_requests_cut_total{") and \
                'direction="%s"' % direction in line and \
                (cause is None or 'cause="%s"' % cause in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def reset_before_answer(test, up, connect, answer, request, alive):
    """The client (CONNECT()) sends REQUEST and a tail that fills ferry's
    buffer, resets once the upstream UP has it; then UP ANSWERs: ferry's
    write of that answer is the one that fails."""
    gate = threading.Event()

    def behave(conn, req):
        gate.wait(3)
        answer(conn)
    up.behaviour = behave
    for _ in range(3):
        gate.clear()
        n = len(up.requests)
        s = connect()
        s.sendall(request + FILLER)
        up.wait_requests(n + 1)
        time.sleep(0.1)
        rst_close(s)
        time.sleep(0.05)
        gate.set()
        time.sleep(0.3)
        test.assertTrue(alive(), "ferry died")


class Flood:
    """An upstream behaviour: HEAD, then bytes (body or, after a 101,
    tunnel) as fast as ferry takes them, reading nothing; `cut` is set once
    ferry closed the connection."""

    def __init__(self, head):
        self.head = head
        self.sent = 0
        self.cut = threading.Event()

    def __call__(self, conn, req):
        conn.keep_open = False
        conn.sock.settimeout(30)
        try:
            conn.send(self.head)
            while True:
                conn.send(b"z" * 65536)
                self.sent += 65536
        except OSError:
            self.cut.set()

    def wait_stalled(self, test):
        """Until ferry stops taking more (its output to the client is over
        the high mark, so it stopped reading the upstream)."""
        last, deadline = -1, time.monotonic() + 4
        while (self.sent != last or self.sent < (1 << 20)) and time.monotonic() < deadline:
            last = self.sent
            time.sleep(0.3)
        test.assertEqual(self.sent, last, "ferry never stopped reading the upstream")


def stuck_reader(sock):
    """SOCK with a small receive buffer (set before connect)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(3)
    return sock


def flood_tunnel(s):
    """Sends into a tunnel until it stops taking bytes for a while."""
    s.setblocking(False)
    idle_since, deadline = time.monotonic(), time.monotonic() + 4
    while time.monotonic() < deadline and time.monotonic() - idle_since < 0.5:
        try:
            s.send(b"y" * 16384)
            idle_since = time.monotonic()
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            time.sleep(0.02)


def assert_cut_promptly(test, f, direction, before, flood):
    """The reset ended the exchange now, as the failed write it is (ferry
    reads nothing of the client): counted as cut, and its upstream
    connection closed (it lingered until stream_idle: minutes)."""
    test.assertTrue(wait_until(lambda: cuts(f, direction, "client_write_failed") > before, 3),
                    "the reset exchange was not ended")
    test.assertTrue(flood.cut.wait(3), "the upstream connection was kept open")


def inbound_ferry(test, app_address):
    """A ferry with an inbound listener in front of APP_ADDRESS (key KEY),
    and a function that opens an mTLS connection to it as an allowed peer."""
    p = pki()
    port = free_port()
    f = test.ferry({}, env={"K": KEY}, listeners={"inbound": {
        "address": "127.0.0.1:%d" % port,
        "tls": {"cert": p.server.cert, "key": p.server.key, "client_ca": p.ca.cert},
        "auth": {"keys_env": ["K"]},
        "local_app": app_address}})
    ctx = ssl.create_default_context(cafile=p.ca.cert)
    ctx.check_hostname = False
    ctx.load_cert_chain(p.client.cert, p.client.key)

    def connect():
        return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=3),
                               server_hostname="backend")
    return f, connect


class ClientResetTest(FerryTestCase):
    """The client resets right where ferry writes to it; nothing after that
    write may touch the exchange (it was a use-after-free)."""

    def setUp(self):
        super().setUp()
        self.up = self.upstream()
        # one attempt per request: the upstream's count paces the tests
        self.f = self.ferry({"svc": service(self.up, retries={"max": 0})})

    def assert_still_serves(self):
        self.assertTrue(self.f.alive(), "ferry died")
        self.up.behaviour = echo()
        resp = self.f.get("/after", host="svc")
        self.assertEqual(resp.status, 200)

    def test_reset_after_expect_continue(self):
        # the head asks for 100 Continue; the reset is there before ferry
        # answers it, so the 100's write fails
        for _ in range(30):
            s = plain(self.f.outbound_port)
            s.sendall(build_request("POST", "/upload", [
                ("Host", "svc"), ("Expect", "100-continue"), ("Content-Length", "100000")]))
            rst_close(s)
        time.sleep(0.3)
        self.assert_still_serves()

    def reset_before_answer(self, answer, request):
        reset_before_answer(self, self.up, lambda: plain(self.f.outbound_port), answer,
                            request, self.f.alive)
        self.assert_still_serves()

    def test_reset_while_interim_response_relayed(self):
        def answer(conn):
            conn.send(response_bytes(103, [("Link", "</a.css>; rel=preload")], length=False))
            conn.send(response_bytes(103, [("Link", "</b.css>; rel=preload")], length=False))
            conn.respond(200, [], b"late")
        self.reset_before_answer(answer, build_request("GET", "/hints", [("Host", "svc")]))

    def test_reset_before_101_relayed(self):
        def answer(conn):
            conn.send(response_bytes(101, [("Upgrade", "websocket"), ("Connection", "Upgrade")],
                                     length=False))
            conn.keep_open = False
            conn.sleep(0.5)
        self.reset_before_answer(answer, build_request("GET", "/ws", [
            ("Host", "svc"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]))

    def test_reset_before_response_relayed(self):
        self.reset_before_answer(lambda conn: conn.respond(200, [], b"z" * (1 << 20)),
                                 build_request("GET", "/big", [("Host", "svc")]))

    def test_reset_before_error_answered(self):
        # every attempt is reset by the upstream: ferry's own 502 is the
        # write that fails
        self.reset_before_answer(lambda conn: conn.reset(),
                                 build_request("GET", "/err", [("Host", "svc")]))

    def test_reset_before_small_response_relayed(self):
        # a response that comes in one read leaves from the upstream
        # buffer ferry took over, head and body in one writev: that
        # write is the one that fails
        self.reset_before_answer(lambda conn: conn.respond(200, [], b"z" * 64),
                                 build_request("GET", "/small", [("Host", "svc")]))

    def test_reset_inside_tunnel(self):
        # the upstream stops reading, so ferry stops reading the client
        # (back-pressure); the client resets; then the upstream talks
        gate = threading.Event()

        def behave(conn, req):
            conn.send(response_bytes(101, [("Upgrade", "x-raw"), ("Connection", "Upgrade")],
                                     length=False))
            conn.keep_open = False
            gate.wait(5)
            for _ in range(50):
                try:
                    conn.send(b"x" * 16384)
                except OSError:
                    return
                time.sleep(0.005)
        self.up.behaviour = behave
        s = plain(self.f.outbound_port)
        s.sendall(build_request("GET", "/raw", [("Host", "svc"), ("Upgrade", "x-raw"),
                                                ("Connection", "Upgrade")]))
        head = Reader(s).read_until(b"\r\n\r\n")
        self.assertIn(b" 101 ", head.split(b"\r\n")[0] + b" ")
        s.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and sent < (16 << 20):
            try:
                sent += s.send(b"y" * 65536)
            except BlockingIOError:
                time.sleep(0.01)
        rst_close(s)
        time.sleep(0.1)
        gate.set()
        time.sleep(0.6)
        self.assert_still_serves()

    def test_reset_while_response_queued(self):
        # ferry's output to a client that does not read is over the high
        # mark and ferry stopped reading it (the pipelined tail): the
        # reset fails the queued write, and that must end the exchange;
        # it was ignored while reading was paused, and the exchange and
        # its upstream connection lived on until stream_idle
        flood = Flood(response_bytes(200, [("Content-Length", str(1 << 40))], length=False))
        self.up.behaviour = flood
        s = stuck_reader(socket.socket())
        s.connect(("127.0.0.1", self.f.outbound_port))
        s.sendall(build_request("GET", "/stream", [("Host", "svc")]) + FILLER)
        flood.wait_stalled(self)
        before = cuts(self.f, "outbound", "client_write_failed")
        rst_close(s)
        assert_cut_promptly(self, self.f, "outbound", before, flood)
        self.assert_still_serves()

    def test_reset_while_tunnel_output_queued(self):
        # both ways stuck: the upstream floods a client that does not read
        # and reads nothing of what the client floods back
        flood = Flood(response_bytes(101, [("Upgrade", "x-raw"), ("Connection", "Upgrade")],
                                     length=False))
        self.up.behaviour = flood
        s = stuck_reader(socket.socket())
        s.connect(("127.0.0.1", self.f.outbound_port))
        s.sendall(build_request("GET", "/raw", [("Host", "svc"), ("Upgrade", "x-raw"),
                                                ("Connection", "Upgrade")]))
        self.assertIn(b" 101 ", Reader(s).read_until(b"\r\n\r\n").split(b"\r\n")[0] + b" ")
        flood_tunnel(s)
        flood.wait_stalled(self)
        before = cuts(self.f, "outbound", "client_write_failed")
        rst_close(s)
        assert_cut_promptly(self, self.f, "outbound", before, flood)
        self.assert_still_serves()

    def test_thousands_of_pipelined_refusals(self):
        # each is answered at once (unknown service): the answers must not
        # nest one call per request on the stack
        n = 2500
        s = plain(self.f.outbound_port)
        s.sendall(build_request("GET", "/x", [("Host", "no-such-service")]) * n)
        r = Reader(s)
        for i in range(n):
            resp = read_response(r)
            self.assertEqual(resp.status, 404, "response %d" % i)
        s.close()
        self.assert_still_serves()


class InboundResetTest(FerryTestCase):
    """The same resets from an allowed peer with a valid key on the inbound
    listener (mTLS): at each point where ferry writes to it, the TLS write
    fails."""

    def setUp(self):
        super().setUp()
        self.app = self.upstream(tls=False)
        self.start_inbound(self.app.address, KEY, alpn=["http/1.1"])

    def connect(self, sock=None):
        sock = sock or socket.socket()
        sock.settimeout(3)
        sock.connect(("127.0.0.1", self.port))
        return self.ctx.wrap_socket(sock, server_hostname="backend")

    def assert_still_serves(self):
        self.assertTrue(self.f.alive(), "ferry died")
        self.app.behaviour = echo()
        s = self.connect()
        s.sendall(build_request("GET", "/ok", [("Host", "app"), ("x-service-auth", KEY)]))
        self.assertEqual(read_response(Reader(s)).status, 200)
        s.close()

    def request(self, method, target, headers=()):
        return build_request(method, target, [("Host", "app"), ("x-service-auth", KEY),
                                              *headers])

    def reset_before_answer(self, answer, request):
        reset_before_answer(self, self.app, self.connect, answer, request, self.f.alive)
        self.assert_still_serves()

    def test_peer_reset_after_expect_continue(self):
        for _ in range(20):
            s = self.connect()
            s.sendall(self.request("POST", "/up", [("Expect", "100-continue"),
                                                   ("Content-Length", "50000")]))
            rst_close(s)
        time.sleep(0.3)
        self.assert_still_serves()

    def test_peer_reset_while_interim_response_relayed(self):
        def answer(conn):
            conn.send(response_bytes(103, [("Link", "</a.css>; rel=preload")], length=False))
            conn.send(response_bytes(103, [("Link", "</b.css>; rel=preload")], length=False))
            conn.respond(200, [], b"late")
        self.reset_before_answer(answer, self.request("GET", "/hints"))

    def test_peer_reset_before_101_relayed(self):
        def answer(conn):
            conn.send(response_bytes(101, [("Upgrade", "websocket"), ("Connection", "Upgrade")],
                                     length=False))
            conn.keep_open = False
            conn.sleep(0.5)
        self.reset_before_answer(answer, self.request("GET", "/ws", [
            ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]))

    def test_peer_reset_before_response_relayed(self):
        self.reset_before_answer(lambda conn: conn.respond(200, [], b"z" * (1 << 20)),
                                 self.request("GET", "/big"))

    def test_peer_reset_before_error_answered(self):
        # the app resets: ferry's own 502 is the write that fails
        self.reset_before_answer(lambda conn: conn.reset(), self.request("GET", "/err"))

    def test_peer_reset_before_small_response_relayed(self):
        self.reset_before_answer(lambda conn: conn.respond(200, [], b"z" * 64),
                                 self.request("GET", "/small"))

    def test_peer_reset_while_response_queued(self):
        flood = Flood(response_bytes(200, [("Content-Length", str(1 << 40))], length=False))
        self.app.behaviour = flood
        s = self.connect(stuck_reader(socket.socket()))
        s.sendall(self.request("GET", "/stream") + FILLER)
        flood.wait_stalled(self)
        before = cuts(self.f, "inbound", "client_write_failed")
        rst_close(s)
        assert_cut_promptly(self, self.f, "inbound", before, flood)
        self.assert_still_serves()

    def test_peer_reset_inside_tunnel(self):
        # the app stops reading, so ferry stops reading the peer; the peer
        # resets; then the app talks
        gate = threading.Event()

        def behave(conn, req):
            conn.send(response_bytes(101, [("Upgrade", "x-raw"), ("Connection", "Upgrade")],
                                     length=False))
            conn.keep_open = False
            gate.wait(5)
            for _ in range(50):
                try:
                    conn.send(b"x" * 16384)
                except OSError:
                    return
                time.sleep(0.005)
        self.app.behaviour = behave
        s = self.connect()
        s.sendall(self.request("GET", "/raw", [("Upgrade", "x-raw"), ("Connection", "Upgrade")]))
        self.assertIn(b" 101 ", Reader(s).read_until(b"\r\n\r\n").split(b"\r\n")[0] + b" ")
        flood_tunnel(s)
        rst_close(s)
        time.sleep(0.1)
        gate.set()
        time.sleep(0.6)
        self.assert_still_serves()

    def test_peer_reset_while_tunnel_output_queued(self):
        flood = Flood(response_bytes(101, [("Upgrade", "x-raw"), ("Connection", "Upgrade")],
                                     length=False))
        self.app.behaviour = flood
        s = self.connect(stuck_reader(socket.socket()))
        s.sendall(self.request("GET", "/raw", [("Upgrade", "x-raw"), ("Connection", "Upgrade")]))
        self.assertIn(b" 101 ", Reader(s).read_until(b"\r\n\r\n").split(b"\r\n")[0] + b" ")
        flood_tunnel(s)
        flood.wait_stalled(self)
        before = cuts(self.f, "inbound", "client_write_failed")
        rst_close(s)
        assert_cut_promptly(self, self.f, "inbound", before, flood)
        self.assert_still_serves()


class RawApp:
    """A plain local app that records the exact bytes of each request (up
    to the end of a chunked body) and answers 200."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.received = []
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.settimeout(3)
        data = b""
        try:
            while b"\r\n0\r\n" not in data or not data.endswith(b"\r\n\r\n"):
                more = c.recv(65536)
                if not more:
                    break
                data += more
            self.received.append(data)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        except OSError:
            self.received.append(data)
        c.close()

    def close(self):
        self.sock.close()


class TrailerTest(FerryTestCase):
    """Trailers get the head's rules; chunk extensions never pass and count
    as body; the head and its trailers share the head limits."""

    def test_framing_in_a_trailer_is_400(self):
        # Transfer-Encoding after the body (llhttp refuses it): the request
        # is refused (the other hop-by-hop names are dropped: next test)
        app = RawApp()
        self._closers.append(app.close)
        s = inbound_ferry(self, app.address)[1]()
        s.sendall(build_request("POST", "/t", [
            ("Host", "app"), ("x-service-auth", KEY), ("Transfer-Encoding", "chunked")]) +
            b"5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.assertEqual(read_response(Reader(s)).status, 400)
        s.close()

    def test_peer_trailers_and_lookalikes_never_reach_the_app(self):
        app = RawApp()
        self._closers.append(app.close)
        s = inbound_ferry(self, app.address)[1]()
        body = (b"5;ext=aaaa\r\nhello\r\n"
                b"000006\r\n world\r\n0;last=1\r\n"
                b"x-service-auth: stolen-key\r\n"
                b"X-Ferry-Peer: spiffe://evil/admin\r\n"
                b"x_ferry_peer: spiffe://evil/admin\r\n"
                b"Content-Length: 5\r\n"
                b"Connection: close\r\nTE: trailers\r\nKeep-Alive: timeout=5\r\n"
                b"Proxy-Connection: close\r\n"
                b"x-good: kept  \r\n"
                b"x-empty:\r\n\r\n")
        s.sendall(build_request("POST", "/t", [
            ("Host", "app"), ("x-service-auth", KEY), ("Transfer-Encoding", "chunked"),
            ("X_Ferry_Peer", "spiffe://evil/admin"), ("x_service_auth", "k"),
            ("X_Forwarded_For", "10.9.9.9")]) + body)
        self.assertEqual(read_response(Reader(s)).status, 200)
        s.close()
        self.assertTrue(wait_until(lambda: app.received, 3))
        raw = app.received[0]
        head, _, sent_body = raw.partition(b"\r\n\r\n")
        low = head.lower()
        self.assertNotIn(b"x_ferry_peer", low)
        self.assertNotIn(b"x_service_auth", low)
        self.assertNotIn(b"x_forwarded_for", low)
        self.assertIn(b"x-ferry-peer: spiffe://test/app", low)
        self.assertEqual(sent_body, b"5\r\nhello\r\n6\r\n world\r\n0\r\n"
                                    b"x-good: kept\r\nx-empty: \r\n\r\n")

    def setUp(self):
        super().setUp()
        self.up = self.upstream()

    def test_obs_fold_in_trailer_is_400(self):
        f = self.ferry({"svc": service(self.up)})
        with f.client() as c:
            c.send(build_request("POST", "/t", [("Host", "svc"), ("Transfer-Encoding", "chunked")])
                   + b"3\r\nabc\r\n0\r\nx-a: one\r\n two\r\n\r\n")
            resp = c.read_response()
            self.assertEqual(resp.status, 400)
            self.assertTrue(c.peer_closed())
        self.assertEqual(f.get("/ok", host="svc").status, 200)

    def test_trailers_count_toward_head_limits(self):
        f = self.ferry({"svc": service(self.up)})
        trailers = [("x-t%d" % i, "v") for i in range(120)]
        with f.client() as c:
            c.send(build_request("POST", "/t", [("Host", "svc"), ("Transfer-Encoding", "chunked")])
                   + chunked_body([b"abc"], trailers))
            self.assertEqual(c.read_response().status, 431)
        big = [("x-big", "v" * 60000), ("x-big2", "v" * 10000)]
        with f.client() as c:
            c.send(build_request("POST", "/t", [("Host", "svc"), ("Transfer-Encoding", "chunked")])
                   + chunked_body([b"abc"], big))
            self.assertEqual(c.read_response().status, 431)
        # within the limits, trailers pass
        with f.client() as c:
            c.send(build_request("POST", "/t", [("Host", "svc"), ("Transfer-Encoding", "chunked")])
                   + chunked_body([b"abc"], [("x-sum", "1")]))
            resp = c.read_response()
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.json()["trailers"], [["x-sum", "1"]])

    def test_chunk_extensions_count_toward_max_request_body(self):
        f = self.ferry({"svc": service(self.up)}, outbound={"max_request_body": 1000})
        ext = b";x=" + b"e" * 4000
        with f.client() as c:
            c.send(build_request("POST", "/t", [("Host", "svc"), ("Transfer-Encoding", "chunked")])
                   + b"3" + ext + b"\r\nabc\r\n0\r\n\r\n")
            self.assertEqual(c.read_response().status, 413)
        self.assertEqual(len(self.up.requests), 0)


class HostileUpstreamTest(FerryTestCase):

    def setUp(self):
        super().setUp()
        self.up = self.upstream()
        self.f = self.ferry({"svc": service(self.up, retries={"max": 0})})

    def test_transfer_encoding_not_parsed_as_chunked_is_502(self):
        # "chunked<TAB>" is not chunked to the parser; re-emitted as
        # "chunked" it would let the forged response after it reach the app
        forged = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"
        for te in (b"chunked\t", b"chunked, gzip", b"gzip", b"identity", b"gzip, chunked",
                   b"chunked\t\r\nTransfer-Encoding: chunked"):
            self.up.behaviour = harness.raw(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + te + b"\r\n\r\n"
                b"5\r\nhello\r\n0\r\n\r\n" + forged)
            for version in ("HTTP/1.1", "HTTP/1.0"):
                with self.f.client() as c:
                    c.send(build_request("GET", "/te", [("Host", "svc")], version=version))
                    resp = c.read_response()
                    self.assertEqual(resp.status, 502, (te, version))
                    self.assertEqual(resp.header("x-ferry-error"), "SERVICE_ERROR")
                    self.assertNotIn(b"forged", resp.body)
                    if version == "HTTP/1.1":
                        # the same connection goes on: nothing forged waits
                        self.up.behaviour = echo()
                        self.assertEqual(c.request("GET", "/next", [("Host", "svc")]).status,
                                         200)
                        self.up.behaviour = harness.raw(
                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + te + b"\r\n\r\n"
                            b"5\r\nhello\r\n0\r\n\r\n" + forged)

    def test_head_to_http10_client_has_no_transfer_encoding(self):
        # an HTTP/1.0 client never gets Transfer-Encoding (RFC 9112 6.1,
        # SPEC §5), in the answer to a HEAD either
        self.up.behaviour = harness.raw(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\n\r\n")
        with self.f.client() as c:
            resp = c.request("HEAD", "/head10", [("Host", "svc")], version="HTTP/1.0")
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.header("x-up"), "1")
        self.assertIsNone(resp.header("transfer-encoding"))

    def test_interim_response_framing_is_not_forwarded(self):
        # a 1xx has no content (RFC 9110 15.2) and ferry reads none; a
        # Content-Length or Transfer-Encoding on it must not reach a client
        # that would take the final response's bytes for its body (8.6)
        for framing in (b"Content-Length: 5", b"Transfer-Encoding: chunked"):
            self.up.behaviour = harness.raw(
                b"HTTP/1.1 103 Early Hints\r\n" + framing + b"\r\nLink: </a.css>\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            with self.f.client() as c:
                resp = c.request("GET", "/hints", [("Host", "svc")])
            self.assertEqual((resp.status, resp.body), (200, b"ok"), framing)
            self.assertEqual([r.status for r in resp.interim], [103], framing)
            hints = resp.interim[0]
            self.assertEqual(hints.header("link"), "</a.css>", framing)
            self.assertIsNone(hints.header("content-length"), framing)
            self.assertIsNone(hints.header("transfer-encoding"), framing)

    def test_no_content_response_framing_is_not_forwarded(self):
        # a 204 has no content either (RFC 9110 15.3.5): its Content-Length
        # or Transfer-Encoding must not reach the client, and the
        # connection serves the next request
        for framing in (b"Content-Length: 5", b"Transfer-Encoding: chunked"):
            self.up.behaviour = harness.raw(
                b"HTTP/1.1 204 No Content\r\n" + framing + b"\r\nX-Kept: yes\r\n\r\n")
            with self.f.client() as c:
                for _ in range(2):
                    resp = c.request("GET", "/none", [("Host", "svc")])
                    self.assertEqual((resp.status, resp.body), (204, b""), framing)
                    self.assertEqual(resp.header("x-kept"), "yes", framing)
                    self.assertIsNone(resp.header("content-length"), framing)
                    self.assertIsNone(resp.header("transfer-encoding"), framing)

    def test_interim_flood_is_bounded_and_502(self):
        # an upstream streaming 103s forever: ferry stops after a bound
        def behave(conn, req):
            one = response_bytes(103, [("Link", "</x>; rel=preload")], length=False)
            try:
                for _ in range(20000):
                    conn.send(one * 10)
            except OSError:
                pass
            conn.keep_open = False
        self.up.behaviour = behave
        with self.f.client(timeout=5) as c:
            c.send(build_request("GET", "/flood", [("Host", "svc")]))
            resp = c.read_response()
        self.assertEqual(resp.status, 502)
        self.assertIn("interim", resp.json()["error"]["message"])
        self.assertLessEqual(len(resp.interim), 16)
        self.up.behaviour = echo()
        self.assertEqual(self.f.get("/ok", host="svc").status, 200)

    def test_interim_flood_to_non_reading_client_is_bounded(self):
        # clients that never read, upstreams that stream big 103s for two
        # seconds: ferry's memory must not follow the upstreams (it grew
        # by hundreds of MiB)
        hint = response_bytes(103, [("Link", "</" + "y" * 60000 + ">")], length=False)

        def behave(conn, req):
            end = time.monotonic() + 2
            try:
                while time.monotonic() < end:
                    conn.send(hint)
            except OSError:
                pass
            conn.keep_open = False
        self.up.behaviour = behave
        rss0 = harness.anon_kib(self.f.proc.pid)
        socks = []
        for _ in range(4):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(3)
            s.connect(("127.0.0.1", self.f.outbound_port))
            s.sendall(build_request("GET", "/slow", [("Host", "svc")]))
            socks.append(s)
        time.sleep(2.5)
        grown = harness.anon_kib(self.f.proc.pid) - rss0
        for s in socks:
            s.close()
        self.assertLess(grown, 24 << 10, "RSS grew by %d KiB" % grown)

    def test_huge_keep_alive_timeout(self):
        self.up.behaviour = harness.fixed(200, [("Keep-Alive", "timeout=" + "9" * 60)], b"ok")
        for _ in range(3):
            self.assertEqual(self.f.get("/ka", host="svc").status, 200)


if __name__ == "__main__":
    harness.main()
