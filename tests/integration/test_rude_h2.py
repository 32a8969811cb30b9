"""Rude HTTP/2 clients (SPEC §11, §12): a connection reset at each point
where ferry writes to it — response HEADERS, an interim 103, ferry's own
error, DATA, trailers — with several streams in flight, one of them still
sending its request body upstream. Outbound (h2c prior knowledge) and
inbound (ALPN h2 over mTLS). After each: every stream of the connection is
ended and counted (ferry_requests_cut_total for those cut before their end),
their upstream connections are closed, another client's request on another
connection completes, and ferry lives on (the harness fails a test whose
ferry printed a sanitizer report).

Also the held head of an HTTP/1.1 client (h1_down.c): its response head
waits in the worker's scratch for the body, and goes out alone when
another client needs the scratch in the same turn; that write fails when
the client has reset."""

import queue
import socket
import ssl
import threading
import time

import harness

harness.need_python_h2()
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402
import h2.exceptions  # noqa: E402
import hyperframe.frame as hf  # noqa: E402

import test_h2  # noqa: E402
import test_h2_upstream  # noqa: E402
from harness import (FerryTestCase, build_request, chunked_body, echo, free_port,  # noqa: E402
                     pki, read_response, response_bytes, service, wait_until, Reader)
from test_h2 import H2, S_INITIAL_WINDOW_SIZE, metric  # noqa: E402
from test_rude import FILLER, KEY, Flood, cuts, rst_close  # noqa: E402

CLIENT_CAUSES = {"client_closed", "client_read_error", "client_write_failed"}
MAX_WINDOW = (1 << 31) - 1


def gated(gate, routes):
    """An upstream behaviour: the route for the request's path prefix,
    once GATE is set."""
    def behave(conn, req):
        for prefix, answer in routes.items():
            if req.target.startswith(prefix):
                if gate is None or gate.wait(5):
                    answer(conn, req)
                return
        echo()(conn, req)
    return behave


def hints(conn, req):
    conn.send(response_bytes(103, [("Link", "</a.css>; rel=preload")], length=False))
    conn.respond(200, [], b"after hints")


def with_trailers(conn, req):
    conn.head(200, [("Trailer", "x-sum"), ("Transfer-Encoding", "chunked")])
    conn.send(chunked_body([b"t" * 20000, b"u" * 20000], [("x-sum", "40000")]))


ANSWERS = {
    "/head": lambda conn, req: conn.respond(200, [], b"small"),
    "/hint": hints,
    "/err": lambda conn, req: conn.reset(),         # ferry answers 502
    "/trail": with_trailers,
    "/big": lambda conn, req: conn.respond(200, [], b"b" * (1 << 20)),
}


class RudeH2Cases:
    """A client connection with streams in flight, reset (RST) at once;
    mixed into a FerryTestCase that says how to connect."""

    direction = None

    def connect(self, rcvbuf=None, settings=None):
        raise NotImplementedError

    def parallel_request(self, path):
        """A request on another connection, answered meanwhile."""
        raise NotImplementedError

    def headers(self):
        return []

    def open_upload(self, c, path="/upload"):
        """A POST whose body is still coming: some of it sent, more
        announced (the upstream waits for the rest)."""
        sid = c.new_sid()
        c.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", "svc"),
                             (":path", path), ("content-length", "1000000"), *self.headers()])
        self.assertTrue(c.send_body(sid, b"u" * 60000, end_stream=False))
        return sid

    def assert_cut(self, before, paths, cut):
        """Every request of PATHS ended and logged; those of CUT with a
        client cause; ferry_requests_cut_total grew by the number of them
        logged with one (the others were accounted before their last bytes
        could leave, as SPEC §9 has it)."""
        def logged():
            got = {e.get("path"): e.get("error") for e in self.f.access_log()}
            return got if all(p in got for p in paths) else None
        got = wait_until(logged, 4, interval=0.05)
        self.assertTrue(got, "not every stream ended: %r" % logged())
        for p in cut:
            self.assertIn(got[p], CLIENT_CAUSES, "%s: %r" % (p, got[p]))
        n = sum(1 for p in paths if got[p] in CLIENT_CAUSES)
        wait_until(lambda: cuts(self.f, self.direction) - before >= n, 2)
        self.assertEqual(cuts(self.f, self.direction) - before, n, got)

    def assert_still_serves(self):
        self.assertTrue(self.f.alive(), "ferry died: %s" % self.f.exit_description())
        self.up.behaviour = echo()
        c = self.connect()
        st = c.response(c.request("/after", headers=self.headers()))
        self.assertEqual(st.status, 200, st.headers)
        c.close()

    def test_reset_with_streams_waiting_for_their_answers(self):
        # the upstream answers each kind after the reset: heads, a 103,
        # ferry's own 502, trailers, a large body; one stream is still
        # sending its body; another connection's request goes on
        gate = threading.Event()
        self.up.behaviour = gated(gate, ANSWERS)
        c = self.connect()
        upload = self.open_upload(c)
        for p in ANSWERS:
            c.request(p, headers=self.headers())
        done = []
        other = threading.Thread(target=lambda: done.append(self.parallel_request("/head-other")))
        other.start()
        self.up.wait_requests(len(ANSWERS) + 1)
        before = cuts(self.f, self.direction)
        rst_close(c.sock)
        every = list(ANSWERS) + ["/upload"]
        self.assert_cut(before, every, every)
        gate.set()
        other.join(5)
        self.assertEqual(done, [200], "the other connection's request")
        self.assertTrue(upload)
        self.assert_still_serves()

    def test_reset_with_answers_queued_behind_a_stalled_stream(self):
        # the client reads nothing: a streaming response fills the socket
        # and ferry's queue; the other streams' HEADERS, 103, 502, DATA
        # and trailers wait behind it in ferry (some of their upstreams
        # paused by the same back-pressure); then the reset fails the
        # write of all of them
        flood = Flood(response_bytes(200, [("Content-Length", str(1 << 40))], length=False))
        answers = {p: a for p, a in ANSWERS.items() if p != "/big"}
        self.up.behaviour = gated(None, dict(answers, **{"/flood": flood}))
        c = self.connect(rcvbuf=4096, settings={S_INITIAL_WINDOW_SIZE: MAX_WINDOW})
        c.send_frames(hf.WindowUpdateFrame(0, window_increment=MAX_WINDOW - 65535))
        c.request("/flood", headers=self.headers())
        flood.wait_stalled(self)
        self.open_upload(c)
        for p in answers:
            c.request(p, headers=self.headers())
        self.up.wait_requests(len(answers) + 1)
        time.sleep(0.3)             # their answers reach ferry
        before = cuts(self.f, self.direction)
        rst_close(c.sock)
        self.assert_cut(before, list(answers) + ["/flood", "/upload"], ["/flood", "/upload"])
        self.assertTrue(flood.cut.wait(3), "the stalled stream's upstream connection was kept")
        self.assertEqual(self.parallel_request("/head-other"), 200)
        self.assert_still_serves()

    def test_streams_reset_while_their_heads_wait_get_none(self):
        # the client reads nothing, so the answers' HEADERS wait in
        # ferry's session, packed from each stream's own memory
        # (h2_down.c: h2_send_head lends them to nghttp2); the client then
        # resets those streams, ferry frees them, and the client reads
        # again: none of those HEADERS may go, and the connection's HPACK
        # state stays whole for the next answer
        flood = Flood(response_bytes(200, [("Content-Length", str(1 << 40))], length=False))
        self.up.behaviour = gated(None, {"/flood": flood, "/head": ANSWERS["/head"]})
        c = self.connect(rcvbuf=65536, settings={S_INITIAL_WINDOW_SIZE: MAX_WINDOW})
        c.send_frames(hf.WindowUpdateFrame(0, window_increment=MAX_WINDOW - 65535))
        big = c.request("/flood", headers=self.headers())
        flood.wait_stalled(self)
        heads = [c.request("/head-%d" % i, headers=self.headers()) for i in range(4)]
        self.up.wait_requests(len(heads) + 1)
        time.sleep(0.5)             # their answers reach ferry, and wait
        for sid in heads + [big]:
            c.reset_stream(sid)
        self.assertTrue(flood.cut.wait(3), "the reset stream's upstream connection was kept")
        time.sleep(0.2)             # ferry frees the reset streams
        after = c.request("/after", headers=self.headers())     # echoed
        c.wait(lambda: c.streams[after].ended, 10)
        self.assertEqual(c.streams[after].status, 200, c.frames[-5:])
        heads_sent = {f[2] for f in c.frames if f[0] in ("HEADERS", "CONTINUATION")}
        self.assertEqual(heads_sent & set(heads), set(), "HEADERS went on reset streams")
        self.assertIn(big, heads_sent)
        self.assert_still_serves()

    def test_calm_queued_behind_a_stalled_connection_is_the_clients_doing(self):
        """A PING flood while the client reads nothing: ferry's GOAWAY
        ENHANCE_YOUR_CALM waits behind the full socket and never leaves.
        The streams cut when the connection goes are still the client's
        protocol error, not a close of the client's."""
        flood = Flood(response_bytes(200, [("Content-Length", str(1 << 40))], length=False))
        self.up.behaviour = gated(None, {"/flood": flood, "/wait": waiting})
        c = self.connect(rcvbuf=4096, settings={S_INITIAL_WINDOW_SIZE: MAX_WINDOW})
        c.send_frames(hf.WindowUpdateFrame(0, window_increment=MAX_WINDOW - 65535))
        c.request("/flood", headers=self.headers())
        flood.wait_stalled(self)
        c.request("/wait", headers=self.headers())
        self.up.wait_requests(2)
        c.send_frames(*[hf.PingFrame(0, opaque_data=b"%08d" % i) for i in range(300)])
        time.sleep(0.3)             # read, and answered with a GOAWAY that waits
        rst_close(c.sock)
        def logged():
            d = {e.get("path"): e for e in self.f.access_log()}
            return d if "/flood" in d and "/wait" in d else None
        got = wait_until(logged, 4, interval=0.05)
        self.assertTrue(got, self.f.access_log())
        self.assertEqual({p: (got[p]["error"], got[p]["fate"]) for p in ("/flood", "/wait")},
                         {p: ("client_protocol_error", "rejected") for p in ("/flood", "/wait")})
        self.assert_still_serves()

    def test_interim_heads_wait_behind_a_stalled_connection(self):
        """Back-pressure on interim responses: while the connection's
        output is over the high mark (a stream the client does not read),
        ferry stops reading an upstream that streams 103s, as it does for
        bodies. Without the pause it read the 16 the cap allows and the
        17th (the cap's 502) at once, however far behind the client was.
        The 103 upstream's send buffer is small: what it got out is what
        ferry read. Once the stalled stream is reset and the client reads,
        the 103s flow on and the cap ends the stream with a 502."""
        hint = response_bytes(103, [("Link", "</" + "y" * 60000 + ">")], length=False)
        sent = []

        def hint_flood(conn, req):
            conn.keep_open = False
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
            conn.sock.settimeout(30)
            try:
                for _ in range(20):
                    conn.send(hint)
                    sent.append(1)
            except OSError:
                pass

        flood = Flood(response_bytes(200, [("Content-Length", str(1 << 40))], length=False))
        self.up.behaviour = gated(None, {"/flood": flood, "/hints": hint_flood})
        c = self.connect(rcvbuf=4096, settings={S_INITIAL_WINDOW_SIZE: MAX_WINDOW})
        c.send_frames(hf.WindowUpdateFrame(0, window_increment=MAX_WINDOW - 65535))
        stalled = c.request("/flood", headers=self.headers())
        flood.wait_stalled(self)
        sid = c.request("/hints", headers=self.headers())
        self.up.wait_requests(2)
        time.sleep(1.5)             # what ferry would read, it has read
        self.assertLess(len(sent), 12, "ferry read on the 103s of a stalled connection")
        c.reset_stream(stalled)
        st = c.response(sid, timeout=20)
        self.assertEqual(dict(st.headers)[":status"], "502")
        self.assertEqual(len(st.informational), 16)
        self.assert_still_serves()


class OutboundH2cResetTest(RudeH2Cases, FerryTestCase):
    """h2c with prior knowledge on the outbound listener."""

    direction = "outbound"

    def setUp(self):
        super().setUp()
        self.up = self.upstream()
        self.f = self.ferry({"svc": service(self.up, protocol="http1", retries={"max": 0})})

    def connect(self, rcvbuf=None, settings=None):
        c = H2(self.f.outbound_port, rcvbuf=rcvbuf, settings=settings)
        self._closers.append(c.close)
        return c

    def parallel_request(self, path):
        return self.f.get(path, host="svc", timeout=5).status


class InboundH2ResetTest(RudeH2Cases, FerryTestCase):
    """ALPN h2 from an allowed peer with a valid key, over mTLS."""

    direction = "inbound"

    def setUp(self):
        super().setUp()
        self.up = self.upstream(tls=False)
        self.start_inbound(self.up.address, KEY)

    def headers(self):
        return [("x-service-auth", KEY)]

    def tls_socket(self, alpn, rcvbuf=None):
        s = socket.socket()
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(3)
        s.connect(("127.0.0.1", self.port))
        self.ctx.set_alpn_protocols(alpn)
        s = self.ctx.wrap_socket(s, server_hostname="backend")
        self._closers.append(s.close)
        return s

    def connect(self, rcvbuf=None, settings=None):
        s = self.tls_socket(["h2"], rcvbuf)
        self.assertEqual(s.selected_alpn_protocol(), "h2")
        return H2(sock=s, settings=settings)

    def parallel_request(self, path):
        s = self.tls_socket(["http/1.1"])
        s.sendall(build_request("GET", path, [("Host", "app"), ("x-service-auth", KEY)]))
        return read_response(Reader(s)).status


class H2UpstreamResetTest(FerryTestCase):
    """The client's streams are streams of one HTTP/2 upstream connection:
    the teardown resets each there, and the connection serves on."""

    def test_reset_with_streams_held_upstream(self):
        up = test_h2_upstream.H2Upstream()
        self._closers.append(up.close)
        f = self.ferry({"svc": {"endpoints": [up.address], "protocol": "h2",
                                "retries": {"max": 0}}}, workers=1)
        c = H2(f.outbound_port)
        self._closers.append(c.close)
        for i in range(4):
            c.request("/hold-%d" % i)
        self.assertTrue(wait_until(lambda: len(up.paths) >= 4, 3))
        before = cuts(f, "outbound")
        rst_close(c.sock)
        self.assertTrue(wait_until(lambda: cuts(f, "outbound") - before >= 4, 3))
        self.assertTrue(wait_until(lambda: len(up.resets) >= 4, 3),
                        "ferry reset %r upstream" % up.resets)
        up.gate.set()
        time.sleep(0.2)
        self.assertTrue(f.alive(), "ferry died")
        r = f.get("/ok", host="svc", timeout=5)
        self.assertEqual((r.status, r.body), (200, b"fine:/ok"))


class ScriptedH2Upstream:
    """An h2c server for one connection that answers only when told:
    heads(paths) sends those streams' response HEADERS in one write, in
    that order; bodies(paths) their DATA, ending them."""

    def __init__(self):
        self.sock = harness.bound_socket(reuseaddr=True)
        self.sock.listen(4)
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.sids = {}              # :path -> stream id
        self.commands = queue.Queue()
        self.stopping = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self):
        self.stopping.set()
        self.sock.close()

    def heads(self, paths):
        self.commands.put(("heads", paths))

    def bodies(self, paths):
        self.commands.put(("bodies", paths))

    def _serve(self):
        try:
            s, _ = self.sock.accept()
        except OSError:
            return
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        s.settimeout(0.02)
        try:
            harness.send_all(s, conn.data_to_send())
            while not self.stopping.is_set():
                try:
                    data = s.recv(65536)
                    if not data:
                        return
                    for ev in conn.receive_data(data):
                        if isinstance(ev, h2.events.RequestReceived):
                            self.sids[dict(ev.headers)[":path"]] = ev.stream_id
                except socket.timeout:
                    pass
                while not self.commands.empty():
                    what, paths = self.commands.get()
                    for p in paths:
                        sid = self.sids[p]
                        try:
                            if what == "heads":
                                conn.send_headers(sid, [(":status", "200"), ("x-for", p)])
                            else:
                                conn.send_data(sid, ("body of " + p).encode(), end_stream=True)
                        except h2.exceptions.ProtocolError:
                            pass    # ferry reset it meanwhile
                harness.send_all(s, conn.data_to_send())
        except (OSError, h2.exceptions.ProtocolError):
            pass
        finally:
            s.close()


class HeldHeadResetTest(FerryTestCase):
    """An HTTP/1.1 client's response head waits in the worker's scratch for
    its body (h1_down.c): when another client's head needs the scratch in
    the same turn, the held one is written alone first, and that write
    fails, the holder having reset. The other client gets its own
    response; nothing of the holder's exchange is touched after."""

    def setUp(self):
        super().setUp()
        self.up = ScriptedH2Upstream()
        self._closers.append(self.up.close)
        # one worker: both clients share its scratch and its one HTTP/2
        # connection to the service
        self.f = self.ferry({"svc": {"endpoints": [self.up.address], "protocol": "h2",
                                     "retries": {"max": 0}}}, workers=1)

    def holder(self, path):
        """A client whose request for PATH reached the service, which
        ferry no longer reads (a pipelined tail filled its buffer), reset."""
        s = socket.create_connection(("127.0.0.1", self.f.outbound_port), timeout=3)
        s.sendall(build_request("GET", path, [("Host", "svc")]) + FILLER)
        self.assertTrue(wait_until(lambda: path in self.up.sids, 3))
        time.sleep(0.1)
        rst_close(s)
        time.sleep(0.05)

    def holder_logged(self, path):
        e = wait_until(lambda: next((e for e in self.f.access_log() if e.get("path") == path),
                                    None), 3, interval=0.05)
        self.assertIsNotNone(e, "no access log line for %s" % path)
        self.assertEqual((e["status"], e["error"]), (200, "client_write_failed"), e)

    def test_held_head_written_alone_for_another_client_fails(self):
        self.holder("/holder")
        with self.f.client() as c2:
            c2.send(build_request("GET", "/other", [("Host", "svc")]))
            self.assertTrue(wait_until(lambda: "/other" in self.up.sids, 3))
            # both heads in one read of ferry's: the holder's first
            self.up.heads(["/holder", "/other"])
            time.sleep(0.3)
            self.up.bodies(["/holder", "/other"])
            r = c2.read_response("GET")
        self.assertEqual((r.status, r.header("x-for"), r.body), (200, "/other", b"body of /other"))
        self.holder_logged("/holder")
        self.assertTrue(self.f.alive(), "ferry died")

    def test_held_head_written_alone_at_the_end_of_the_turn_fails(self):
        self.holder("/alone")
        self.up.heads(["/alone"])
        time.sleep(0.3)
        self.up.bodies(["/alone"])
        self.holder_logged("/alone")
        self.assertTrue(self.f.alive(), "ferry died")
        with self.f.client() as c2:
            c2.send(build_request("GET", "/next", [("Host", "svc")]))
            self.assertTrue(wait_until(lambda: "/next" in self.up.sids, 3))
            self.up.heads(["/next"])
            self.up.bodies(["/next"])
            r = c2.read_response("GET")
        self.assertEqual((r.status, r.header("x-for"), r.body), (200, "/next", b"body of /next"))


def closed_by_header_timeout(test, c):
    """C, its client just sent a header block it will not finish, is
    closed after header_read_timeout (1s in these tests), not before."""
    start = time.monotonic()
    c.wait(lambda: c.closed, 4)
    test.assertTrue(c.closed, "a header block begun 4s ago, with header_read_timeout 1s, "
                    "still holds its connection")
    test.assertGreater(time.monotonic() - start, 0.8, "closed before header_read_timeout")


def assert_header_timeout_seen(test, c, direction, service):
    """The peer of C, whose header block never ended, was told GOAWAY
    before the close, and the operator sees it as HTTP/1's 408: one access
    log line (status 408, error REQUEST_TIMEOUT, fate rejected; no method
    or path, as the head never completed) and ferry_errors_total and
    ferry_requests_total counting it under the labels HTTP/1 uses."""
    test.assertTrue(c.goaways, "closed without a GOAWAY: frames %r" % c.frames[-5:])

    def lines():
        return [e for e in test.f.access_log() if e.get("status") == 408]
    test.assertTrue(wait_until(lines, 3, interval=0.05),
                    "no access log line for the timed-out header block:\n%s"
                    % test.f.stdout_text()[-2000:])
    time.sleep(0.2)
    got = lines()
    test.assertEqual(len(got), 1, got)
    e = got[0]
    test.assertEqual((e["direction"], e["service"], e["method"], e["path"], e["error"],
                      e["fate"], e["attempts"], e["upstream"]),
                     (direction, service, "", "", "REQUEST_TIMEOUT", "rejected", 0, None), e)
    test.assertRegex(e["correlation_id"], harness.UUID4_RE)
    test.assertEqual(metric(test.f, "ferry_errors_total", direction=direction, service=service,
                            code="REQUEST_TIMEOUT"), 1.0)
    test.assertEqual(metric(test.f, "ferry_requests_total", direction=direction,
                            service=service, code="408"), 1.0)
    test.assertEqual(metric(test.f, "ferry_request_fate_total", direction=direction,
                            service=service, fate="rejected"), 1.0)


class HeldOpenH2cTest(FerryTestCase):
    """The outbound listener's h2c (prior knowledge): a header block the
    app's client never finishes ends as on the inbound listener."""

    def test_header_block_never_finished_is_closed_and_logged(self):
        up = self.upstream()
        self.f = self.ferry({"svc": service(up)}, outbound={
            "header_read_timeout": "1s", "idle_timeout": "30s"})
        c = H2(self.f.outbound_port, auto=False)
        self._closers.append(c.close)
        self.assertTrue(c.wait(lambda: c.server_settings is not None, 3))
        c.send_frames(hf.SettingsFrame(0, flags={"ACK"}))
        sid = c.new_sid()
        block = c.header_block([(":method", "GET"), (":scheme", "http"),
                                (":authority", "svc"), (":path", "/held")])
        c.send_frames(hf.HeadersFrame(sid, data=block[:6], flags=set()))
        closed_by_header_timeout(self, c)
        assert_header_timeout_seen(self, c, "outbound", "")
        self.assertEqual(up.requests, [], "an unfinished head reached the service")
        self.assertEqual(self.f.get("/other", host="svc").status, 200)


class HeldOpenH2Test(FerryTestCase):
    """A peer with a valid certificate and key that opens a stream and
    then keeps it from ending, on the inbound listener: a header block it
    never finishes (HEADERS without END_HEADERS), or a request it never
    ends after ferry answered it. Either held its connection past
    header_read_timeout and idle_timeout, for ever: an HTTP/2 connection
    with a stream on it had no timer, however long nothing moved."""

    tls_socket = InboundH2ResetTest.tls_socket
    parallel_request = InboundH2ResetTest.parallel_request

    def start(self, **listener):
        self.up = self.upstream(tls=False)
        p = pki()
        self.port = free_port()
        self.ctx = ssl.create_default_context(cafile=p.ca.cert)
        self.ctx.check_hostname = False
        self.ctx.load_cert_chain(p.client.cert, p.client.key)
        self.f = self.ferry({}, env={"K": KEY}, listeners={"inbound": {
            "address": "127.0.0.1:%d" % self.port,
            "tls": {"cert": p.server.cert, "key": p.server.key, "client_ca": p.ca.cert},
            "auth": {"keys_env": ["K"]},
            "local_app": self.up.address, **listener}})

    def quiet_client(self):
        """An HTTP/2 client that sends nothing of its own accord: a
        SETTINGS ACK between HEADERS and its CONTINUATION would be a
        protocol error."""
        c = H2(sock=self.tls_socket(["h2"]), auto=False)
        self.assertTrue(c.wait(lambda: c.server_settings is not None, 3))
        c.send_frames(hf.SettingsFrame(0, flags={"ACK"}))
        return c

    def head(self, c, path, key=KEY, **extra):
        return c.header_block([(":method", "GET"), (":scheme", "https"), (":authority", "app"),
                               (":path", path), ("x-service-auth", key), *extra.items()])

    def test_header_block_never_finished_is_closed_after_header_read_timeout(self):
        self.start(header_read_timeout="1s", idle_timeout="30s")
        c = self.quiet_client()
        sid = c.new_sid()
        block = self.head(c, "/held")
        c.send_frames(hf.HeadersFrame(sid, data=block[:8], flags=set()))
        closed_by_header_timeout(self, c)
        assert_header_timeout_seen(self, c, "inbound", "local_app")
        self.assertEqual(self.up.requests, [], "an unfinished head reached the app")
        self.assertEqual(self.parallel_request("/other"), 200)
        self.assertTrue(self.f.alive())

    def test_header_block_finished_in_time_and_slow_answers_are_not_cut(self):
        # header_read_timeout bounds the head only: a CONTINUATION that
        # comes in time, and an app slower than it, are served
        self.start(header_read_timeout="1s", idle_timeout="30s")
        self.up.behaviour = harness.delay(1.6)
        c = self.quiet_client()
        sid = c.new_sid()
        block = self.head(c, "/slow-head")
        c.send_frames(hf.HeadersFrame(sid, data=block[:8], flags=set()))
        time.sleep(0.6)
        c.send_frames(hf.ContinuationFrame(sid, data=block[8:], flags={"END_HEADERS"}))
        c.send_frames(hf.DataFrame(sid, data=b"", flags={"END_STREAM"}))
        st = c.response(sid, timeout=5)
        self.assertEqual(st.status, 200, st.headers)
        self.assertIsNone(st.reset)
        self.assertFalse(c.closed)

    def test_streams_answered_before_the_peer_ended_them_are_reset_no_error(self):
        # RFC 9113 8.1: the complete response, then RST_STREAM NO_ERROR, so
        # the stream (and at last the idle connection) can close
        self.start(idle_timeout="1s")
        c = H2(sock=self.tls_socket(["h2"]))
        refused, answered = c.new_sid(), c.new_sid()
        c.send_frames(hf.HeadersFrame(refused, data=self.head(c, "/refused", key="wrong"),
                                      flags={"END_HEADERS"}))
        # a request the app can answer at once: no body, yet not ended
        c.send_frames(hf.HeadersFrame(answered, data=self.head(
            c, "/answered", **{"content-length": "0"}), flags={"END_HEADERS"}))
        for sid, status in ((refused, 403), (answered, 200)):
            st = c.response(sid)
            self.assertEqual(st.status, status, st.headers)
            self.assertTrue(st.ended, "the whole response first")
            self.assertTrue(c.wait(lambda: st.reset is not None, 2),
                            "no RST_STREAM after a response to a stream the peer keeps open")
            self.assertEqual(st.reset, 0, "RST_STREAM NO_ERROR")
        # nothing open any more: the idle connection goes after idle_timeout
        c.wait(lambda: c.closed, 3)
        self.assertTrue(c.closed, "streams the peer keeps open held the connection past "
                        "idle_timeout")
        self.assertEqual(self.parallel_request("/other"), 200)
        self.assertTrue(self.f.alive())



def waiting(conn, req):
    """No answer: the upstream waits (until it stops)."""
    conn.keep_open = False
    conn.sleep(30)


def half_answered(conn, req):
    """A head and the first 1000 bytes of a long body; the rest never comes."""
    conn.keep_open = False
    conn.head(200, [("Content-Length", "100000")])
    conn.send(b"m" * 1000)
    conn.sleep(30)


STALL_ROUTES = {"/wait": waiting, "/part": half_answered}


def fates(f, direction, fate):
    """ferry_request_fate_total for FATE, over every service."""
    total = 0.0
    for line in f.admin("/metrics").body.decode().splitlines():
        if line.startswith("ferry_request_fate_total{") and \
                'direction="%s"' % direction in line and 'fate="%s"' % fate in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


class StalledBlockCases:
    """A header block (a request head, or a request's trailers) that the
    client never finishes ends its connection after header_read_timeout
    (GOAWAY, then the close): ferry, not the client, ends the other streams
    in flight on it. They are logged and counted as cut for the client's
    stall (error and cause client_timeout, fate rejected, as the stalled
    block's own 408), not client_closed. The block's own stream is the
    408 REQUEST_TIMEOUT while no response head of its left (a trailers
    block keeps its request's method, path and IDs), else it is cut the
    same way. Mixed into a FerryTestCase that says how to connect."""

    direction = None
    svc = None                      # the service label of routed requests

    def connect(self):
        raise NotImplementedError

    def headers(self):
        return []

    def head_block(self, c, path):
        return c.header_block([(":method", "GET"), (":scheme", "http"), (":authority", "svc"),
                               (":path", path), *self.headers()])

    def post(self, c, path, body=b"hello"):
        """A POST whose body (with its length) is all sent, but not its end."""
        return c.request(path, method="POST", headers=self.headers(), body=body,
                         end_stream=False)

    def wait_answer_begun(self, c, sid):
        st = c.streams.setdefault(sid, test_h2.Stream(sid))
        self.assertTrue(c.wait(lambda: st.headers is not None and len(st.body) >= 1000, 3),
                        "no response head and first bytes: %r" % c.frames[-5:])
        self.assertEqual(dict(st.headers)[":status"], "200")

    def stall(self, c, frame):
        """The client stops answering anything (a frame between HEADERS and
        its CONTINUATION would be a protocol error), sends FRAME, a block
        without END_HEADERS, and sends nothing more: the connection is
        closed after header_read_timeout, with a GOAWAY first."""
        c.auto = False
        c.send_frames(frame)
        closed_by_header_timeout(self, c)
        self.assertTrue(c.goaways, "closed without a GOAWAY: frames %r" % c.frames[-5:])

    def logged(self, paths):
        """The access log line of each of PATHS, once all are there."""
        def got():
            d = {e.get("path"): e for e in self.f.access_log()}
            return d if all(p in d for p in paths) else None
        d = wait_until(got, 4, interval=0.05)
        self.assertTrue(d, "not every stream was logged: %r" % self.f.access_log())
        time.sleep(0.2)             # nothing more comes
        return {e.get("path"): e for e in self.f.access_log()}

    def assert_cut_for_the_stall(self, e, status):
        self.assertEqual((e["direction"], e["service"], e["status"], e["error"], e["fate"]),
                         (self.direction, self.svc, status, "client_timeout", "rejected"), e)

    def assert_counts(self, cut, rejected, timeouts):
        d = self.direction
        self.assertEqual(cuts(self.f, d, "client_timeout"), cut)
        self.assertEqual(cuts(self.f, d), cut, "cut for another cause too")
        self.assertEqual(fates(self.f, d, "rejected"), rejected)
        self.assertEqual(fates(self.f, d, "client_gone"), 0.0)
        self.assertEqual(self.errors("REQUEST_TIMEOUT"), timeouts)

    def errors(self, code):
        total = 0.0
        for line in self.f.admin("/metrics").body.decode().splitlines():
            if line.startswith("ferry_errors_total{") and \
                    'direction="%s"' % self.direction in line and 'code="%s"' % code in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    assert_still_serves = RudeH2Cases.assert_still_serves

    def test_streams_in_flight_when_another_head_stalls(self):
        # one stream waits for its answer, one is still sending its body
        # (the service waits for the rest), one is half answered; then a
        # fourth stream's head never finishes
        c = self.connect()
        waits = c.request("/wait", headers=self.headers())
        part = c.request("/part", headers=self.headers())
        c.send_headers(c.new_sid(), [(":method", "POST"), (":scheme", "http"),
                                     (":authority", "svc"), (":path", "/wait-upload"),
                                     ("content-length", "1000000"), *self.headers()])
        self.assertTrue(c.send_body(c.next_sid - 2, b"u" * 30000, end_stream=False))
        self.up.wait_requests(2)
        self.wait_answer_begun(c, part)
        self.assertIsNone(c.streams.get(waits, test_h2.Stream(waits)).headers)
        held = c.new_sid()
        self.stall(c, hf.HeadersFrame(held, data=self.head_block(c, "/held")[:6], flags=set()))
        got = self.logged(["/wait", "/part", "/wait-upload", ""])
        self.assert_cut_for_the_stall(got["/wait"], 0)
        self.assert_cut_for_the_stall(got["/wait-upload"], 0)
        self.assert_cut_for_the_stall(got["/part"], 200)
        self.assertEqual(got["/part"]["bytes_out"], 1000, got["/part"])  # the body it got
        # the stalled head itself: as before, HTTP/1's 408
        self.assertEqual((got[""]["status"], got[""]["error"], got[""]["fate"]),
                         (408, "REQUEST_TIMEOUT", "rejected"), got[""])
        self.assertEqual(len(self.f.access_log()), 4, self.f.access_log())
        self.assert_counts(cut=3.0, rejected=4.0, timeouts=1.0)
        self.assert_still_serves()

    def test_trailers_stalled_before_the_answer(self):
        # the request's body is whole (its length), the service has it and
        # has not answered; its trailers' block never finishes, and
        # another stream waits meanwhile
        c = self.connect()
        sid = self.post(c, "/wait-trailers")
        c.request("/wait-other", headers=self.headers())
        req = self.up.wait_requests(2)
        block = c.header_block([("x-sum", "5")])
        self.stall(c, hf.HeadersFrame(sid, data=block[:1], flags={"END_STREAM"}))
        got = self.logged(["/wait-trailers", "/wait-other"])
        e = got["/wait-trailers"]
        self.assertEqual((e["direction"], e["service"], e["method"], e["status"], e["error"],
                          e["fate"], e["bytes_out"]),
                         (self.direction, self.svc, "POST", 408, "REQUEST_TIMEOUT", "rejected", 0),
                         e)
        # the request's own IDs, those the service got
        sent = {r.target: r.header("x-correlation-id") for r in req}
        self.assertEqual(e["correlation_id"], sent["/wait-trailers"], e)
        self.assert_cut_for_the_stall(got["/wait-other"], 0)
        self.assertEqual(len(self.f.access_log()), 2, self.f.access_log())
        self.assert_counts(cut=1.0, rejected=2.0, timeouts=1.0)
        self.assertEqual(test_h2.metric(self.f, "ferry_requests_total", direction=self.direction,
                                        service=self.svc, code="408"), 1.0)
        self.assertIsNone(c.streams.get(sid, test_h2.Stream(sid)).headers,
                          "an answer went out for a 408 ferry said it could not send")
        self.assert_still_serves()

    def test_trailers_stalled_after_the_answer_head(self):
        # the service answered before the request ended: the response is
        # under way, so the stalled stream is cut with the others
        c = self.connect()
        sid = self.post(c, "/part-trailers")
        self.up.wait_requests(1)
        self.wait_answer_begun(c, sid)
        block = c.header_block([("x-sum", "5")])
        self.stall(c, hf.HeadersFrame(sid, data=block[:1], flags={"END_STREAM"}))
        got = self.logged(["/part-trailers"])
        self.assert_cut_for_the_stall(got["/part-trailers"], 200)
        self.assertEqual(got["/part-trailers"]["method"], "POST")
        self.assertEqual(len(self.f.access_log()), 1, self.f.access_log())
        self.assert_counts(cut=1.0, rejected=1.0, timeouts=0.0)
        self.assert_still_serves()

    def test_streams_in_flight_when_the_client_breaks_the_protocol(self):
        """A connection error (here DATA on stream 0): nghttp2 answers with
        GOAWAY PROTOCOL_ERROR and ferry closes; the streams it cut are the
        client's doing (client_protocol_error, fate rejected), not a close
        of the client's."""
        c = self.connect()
        c.request("/wait", headers=self.headers())
        part = c.request("/part", headers=self.headers())
        self.up.wait_requests(2)
        self.wait_answer_begun(c, part)
        c.auto = False
        c.send(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")   # DATA, stream 0
        c.wait(lambda: c.closed, 4)
        self.assertTrue(c.closed and c.goaways, (c.closed, c.goaways))
        self.assertEqual(c.goaways[0][0], 1, c.goaways)          # PROTOCOL_ERROR
        got = self.logged(["/wait", "/part"])
        for path, status in (("/wait", 0), ("/part", 200)):
            e = got[path]
            self.assertEqual((e["status"], e["error"], e["fate"]),
                             (status, "client_protocol_error", "rejected"), e)
        d = self.direction
        self.assertEqual(cuts(self.f, d, "client_protocol_error"), 2.0)
        self.assertEqual(cuts(self.f, d), 2.0, "cut for another cause too")
        self.assertEqual(fates(self.f, d, "client_gone"), 0.0)
        self.assert_still_serves()


class StalledBlockH2cTest(StalledBlockCases, FerryTestCase):
    """h2c with prior knowledge on the outbound listener."""

    direction = "outbound"
    svc = "svc"

    def setUp(self):
        super().setUp()
        self.up = self.upstream(gated(None, STALL_ROUTES))
        self.f = self.ferry({"svc": service(self.up, protocol="http1", retries={"max": 0})},
                            outbound={"header_read_timeout": "1s", "idle_timeout": "30s"})

    def connect(self):
        c = H2(self.f.outbound_port)
        self._closers.append(c.close)
        self.assertTrue(c.wait(lambda: c.server_settings is not None, 3))
        return c


class StalledBlockH2Test(StalledBlockCases, FerryTestCase):
    """ALPN h2 over mTLS on the inbound listener."""

    direction = "inbound"
    svc = "local_app"
    tls_socket = InboundH2ResetTest.tls_socket

    def setUp(self):
        super().setUp()
        self.up = self.upstream(gated(None, STALL_ROUTES), tls=False)
        self.start_inbound(self.up.address, KEY,
                           listener={"header_read_timeout": "1s", "idle_timeout": "30s"})

    def headers(self):
        return [("x-service-auth", KEY)]

    def connect(self):
        s = self.tls_socket(["h2"])
        self.assertEqual(s.selected_alpn_protocol(), "h2")
        c = H2(sock=s)
        self.assertTrue(c.wait(lambda: c.server_settings is not None, 3))
        return c


if __name__ == "__main__":
    harness.main()
