"""HTTP/2 to a service (SPEC §12 Upstream) against a hostile or broken
HTTP/2 server: a real h2c server (python3-h2) on loopback that resets
streams, sends GOAWAY, garbage or header blocks over ferry's limits, or
closes mid-body. ferry answers each request as SPEC §7 says, re-sends
what the server never processed, keeps serving, and never crashes."""

import copy
import json
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time

import harness
import test_h2

harness.need_python_h2()
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.errors  # noqa: E402
import h2.events  # noqa: E402
import h2.exceptions  # noqa: E402
import h2.settings  # noqa: E402

from harness import FerryTestCase


class H2Upstream(harness.LoopbackServer):
    """A threaded h2c server; how it answers depends on the :path. With
    alpn (a list of protocols), TLS with the test server certificate, the
    server picking from alpn. /health answers as `health` says: "ok"
    (200), "503", or "rst" (the stream is reset). /big-N... answers N MiB,
    and every body goes out as the stream's and the connection's windows
    let it (self.sent: :path -> body bytes sent). /tiny-N... answers N
    KiB of "z" without a length, then waits for tiny_gate: then fills the
    stream's window with "y" in DATA frames of one byte each and ends
    (self.tiny: :path -> the window filled)."""

    def __init__(self, alpn=None):
        self.health = "ok"
        self.gate = threading.Event()   # /hold... is answered once it is set
        self.tiny_gate = threading.Event()
        self.tiny = {}
        self.ctx = None
        if alpn is not None:
            p = harness.pki()
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(p.server.cert, p.server.key)
            self.ctx.set_alpn_protocols(alpn)
        self.paths = []
        self.headers = {}           # :path -> the request's fields
        self.trailers = {}          # :path -> the request's trailer fields
        self.bodies = {}            # :path -> the request's body
        self.resets = {}            # :path -> the error code of ferry's RST_STREAM
        self.calls = {}             # :path -> requests seen
        self.never_indexed = {}     # :path -> names of the fields sent never-indexed
        self.table = []             # names in the HPACK dynamic table, after the last head
        self.sent = {}              # :path -> response body bytes sent
        self.errors = []            # what ended a connection early
        super().__init__()

    def close(self):
        super().close()
        self.gate.set()
        self.tiny_gate.set()

    def serve(self, s, n):
        first = n == 1
        if self.ctx is not None:
            try:
                s.settimeout(5)
                s = self.ctx.wrap_socket(s, server_side=True)
            except (OSError, ssl.SSLError):
                s.close()
                return
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8",
                                        validate_outbound_headers=False)
        conn = h2.connection.H2Connection(config=cfg)
        conn.initiate_connection()
        s.settimeout(0.05)
        held = []           # /hold streams, answered once the gate opens
        late = []           # /latebody streams: (due, sid), their head already out
        refused = set()     # /refuse-late streams reset
        # bodies waiting for flow-control windows: sid -> [rest, trailers]
        pending = {}
        tiny = []           # /tiny streams waiting for tiny_gate
        idle_since = time.monotonic()
        try:
            harness.send_all(s, conn.data_to_send())
            paths = {}
            while not self.stopping.is_set():
                for due, sid in [l for l in late if l[0] <= time.monotonic()]:
                    late.remove((due, sid))
                    conn.send_data(sid, b"late-body", end_stream=True)
                    harness.send_all(s, conn.data_to_send())
                if held and self.gate.is_set():
                    for sid in held:
                        if not self.answer(s, conn, sid, paths.get(sid), pending):
                            return
                    held = []
                    harness.send_all(s, conn.data_to_send())
                if pending and self.pump(conn, pending, paths, tiny):
                    harness.send_all(s, conn.data_to_send())
                if tiny and self.tiny_gate.is_set():
                    for sid in tiny:
                        self.send_tiny(s, conn, sid, paths.get(sid))
                    tiny = []
                try:
                    data = s.recv(65536)
                except socket.timeout:
                    if (not held and not late and not pending and not tiny and
                            time.monotonic() - idle_since > 5):
                        return      # idle for 5 s: close
                    continue
                idle_since = time.monotonic()
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        path = dict(ev.headers)[":path"]
                        paths[ev.stream_id] = path
                        with self.lock:
                            self.paths.append(path)
                            self.headers[path] = dict(ev.headers)
                            self.never_indexed[path] = {h[0] for h in ev.headers
                                                        if not getattr(h, "indexable", True)}
                            self.table = [bytes(n).decode() for n, _ in
                                          conn.decoder.header_table.dynamic_entries]
                            self.calls[path] = self.calls.get(path, 0) + 1
                        if path == "/goaway" and first:
                            # nothing processed: the request may go again
                            conn.close_connection(error_code=0, last_stream_id=0)
                            harness.send_all(s, conn.data_to_send())
                            return
                        if path == "/garbage":
                            harness.send_all(s, b"\x00\x00\x08\x07\x00\x00\x00\x00\x00junkjunk" * 4)
                            return
                        if path == "/rst" or (path == "/health" and self.health == "rst"):
                            conn.reset_stream(ev.stream_id, error_code=2)
                    elif isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                        with self.lock:
                            key = paths.get(ev.stream_id)
                            self.bodies[key] = self.bodies.get(key, b"") + ev.data
                            refuse = (key == "/refuse-late" and self.calls[key] == 1 and
                                      len(self.bodies[key]) >= 100000)
                        if refuse and ev.stream_id not in refused:
                            # "not processed", after 100 kB of its body
                            refused.add(ev.stream_id)
                            conn.reset_stream(ev.stream_id, error_code=7)
                    elif isinstance(ev, h2.events.TrailersReceived):
                        with self.lock:
                            self.trailers[paths.get(ev.stream_id)] = list(ev.headers)
                    elif isinstance(ev, h2.events.StreamReset):
                        pending.pop(ev.stream_id, None)
                        with self.lock:
                            self.resets[paths.get(ev.stream_id)] = ev.error_code
                    elif isinstance(ev, h2.events.StreamEnded):
                        if (paths.get(ev.stream_id) or "").startswith("/hold"):
                            held.append(ev.stream_id)
                        elif (paths.get(ev.stream_id) or "").startswith("/latebody"):
                            # the head now, the body in a later read of ferry's
                            conn.send_headers(ev.stream_id, [(":status", "200"),
                                                             ("x-late", "yes")])
                            late.append((time.monotonic() + 0.4, ev.stream_id))
                        elif not self.answer(s, conn, ev.stream_id, paths.get(ev.stream_id),
                                             pending):
                            return
                harness.send_all(s, conn.data_to_send())
        except (OSError, h2.exceptions.ProtocolError) as e:
            with self.lock:
                self.errors.append(repr(e))
        finally:
            s.close()

    def send_tiny(self, s, conn, sid, path):
        """Fills SID's window with one-byte DATA frames, then ends it with an
        empty one, all as raw frames: python-h2 counts none of it (nor
        would it let this be sent fast)."""
        window = conn.local_flow_control_window(sid)
        harness.send_all(s, conn.data_to_send())
        frame = b"\x00\x00\x01\x00\x00" + struct.pack(">I", sid) + b"y"
        harness.send_all(s, frame * window + b"\x00\x00\x00\x00\x01" + struct.pack(">I", sid))
        with self.lock:
            self.tiny[path] = window

    def pump(self, conn, pending, paths, tiny):
        """Sends what the windows let go of PENDING's bodies, up to 1 MiB a
        call; True when it sent anything. A /tiny body's end waits in TINY."""
        budget, sent = 1 << 20, False
        for sid in list(pending):
            rest, trailers = pending[sid]
            try:
                while rest and budget > 0:
                    n = min(len(rest), conn.local_flow_control_window(sid),
                            conn.max_outbound_frame_size, budget)
                    if n <= 0:
                        break
                    conn.send_data(sid, bytes(rest[:n]))
                    rest = rest[n:]
                    budget -= n
                    sent = True
                    with self.lock:
                        key = paths.get(sid)
                        self.sent[key] = self.sent.get(key, 0) + n
                if rest:
                    pending[sid][0] = rest
                    continue
                del pending[sid]
                sent = True
                if trailers == "tiny":
                    tiny.append(sid)
                elif trailers:
                    conn.send_headers(sid, trailers, end_stream=True)
                else:
                    conn.end_stream(sid)
            except h2.exceptions.StreamClosedError:
                pending.pop(sid, None)
        return sent

    def answer(self, s, conn, sid, path, pending=None):
        """False: the connection is to end now."""
        if path in ("/rst", None) or (path == "/health" and self.health == "rst"):
            return True
        if path == "/health" and self.health == "503":
            conn.send_headers(sid, [(":status", "503")], end_stream=True)
            return True
        if path.startswith("/slow"):
            time.sleep(1.0)     # past the caller's deadline
        if path.startswith("/stall"):
            # a server-streaming call: the head and one message, then
            # nothing until the caller gives up
            conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
            conn.send_data(sid, b"\x00\x00\x00\x00\x02hi")
            return True
        if path.startswith("/unavailable"):
            # the first call of each path: trailers-only UNAVAILABLE
            if self.calls[path] == 1:
                conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc"),
                                        ("grpc-status", "14"), ("grpc-message", "overloaded")],
                                  end_stream=True)
                return True
            conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
            conn.send_data(sid, b"\x00\x00\x00\x00\x02ok")
            conn.send_headers(sid, [("grpc-status", "0")], end_stream=True)
            return True
        if path == "/status299":
            conn.send_headers(sid, [(":status", "299"), ("content-length", "0")], end_stream=True)
            return True
        if path == "/statusonly":
            conn.send_headers(sid, [(":status", "204")], end_stream=True)
            return True
        if path == "/status050":
            conn.send_headers(sid, [(":status", "050"), ("content-length", "0")], end_stream=True)
            return True
        if path == "/headends":
            # a whole answer in the head: no length, no body, no trailers
            conn.send_headers(sid, [(":status", "200"), ("x-head-field", "h1")], end_stream=True)
            return True
        if path.startswith("/nostatus-"):
            # a gRPC call answered without grpc-status: an error page from
            # something in front of the service, or trailers forgotten
            conn.send_headers(sid, [(":status", path[10:]), ("content-type", "text/plain")])
            conn.send_data(sid, b"no status", end_stream=True)
            return True
        if path == "/grpc-twice":
            # a call's status named twice: the first one counts
            conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
            conn.send_data(sid, b"\x00\x00\x00\x00\x00")
            conn.send_headers(sid, [("grpc-status", "5"), ("grpc-status", "0")], end_stream=True)
            return True
        if path == "/headends-gzip":
            # the answer to ferry's accept-encoding, all in the head
            conn.send_headers(sid, [(":status", "200"), ("content-encoding", "gzip"),
                                    ("x-head-field", "h1")], end_stream=True)
            return True
        if path.startswith("/trailers-"):
            # 70 fields in the head, then /trailers-N fields as trailers
            conn.send_headers(sid, [(":status", "200")] +
                              [("x-h%03d" % i, "v" * 10) for i in range(70)])
            conn.send_data(sid, b"body")
            conn.send_headers(sid, [("x-t%03d" % i, "t") for i in range(int(path[10:]))],
                              end_stream=True)
            return True
        if path == "/bigheaders":
            conn.send_headers(sid, [(":status", "200")] +
                              [("x-h%03d" % i, "v" * 40) for i in range(150)], end_stream=True)
        elif path == "/cut":
            conn.send_headers(sid, [(":status", "200"), ("content-length", "1000")])
            conn.send_data(sid, b"x" * 100)
            harness.send_all(s, conn.data_to_send())
            return False
        elif path.startswith("/tiny-"):
            n = int(path[6:].split("/")[0]) << 10
            conn.send_headers(sid, [(":status", "200")])
            pending[sid] = [memoryview(b"z" * n), "tiny"]
        elif path.startswith("/big-"):
            # N MiB, as the windows let it go
            n = int(path[5:].split("/")[0]) << 20
            conn.send_headers(sid, [(":status", "200"), ("content-length", str(n))])
            pending[sid] = [memoryview(bytes(n)), None]
        else:
            conn.send_headers(sid, [(":status", "200"), ("content-type", "text/plain")])
            # within the windows, after whatever waits for them
            pending[sid] = [memoryview(b"fine:" + path.encode()),
                            [("grpc-status", "0")] if path.endswith("grpc") else
                            [("x-trailer", "t1")]]
        return True


class HostileH2UpstreamTest(FerryTestCase):

    def setUp(self):
        super().setUp()
        self.up = H2Upstream()
        self._closers.append(self.up.close)
        self.f = self.ferry({"svc": {"endpoints": [self.up.address], "protocol": "h2",
                                     "retries": {"max": 1},
                                     "circuit_breaker": {"consecutive_failures": 0},
                                     "outlier_detection": {"consecutive_failures": 0}}})

    def get(self, path):
        return self.f.get(path, host="svc", timeout=10)

    def assert_still_serves(self):
        self.assertTrue(self.f.alive(), "ferry died")
        r = self.get("/ok")
        self.assertEqual((r.status, r.body), (200, b"fine:/ok"))

    def test_held_head_is_not_another_clients(self):
        """An HTTP/1.1 client's response head waits for the first body bytes
        in the worker's shared scratch; when the HTTP/2 upstream's DATA comes
        in a later read, the head goes out alone and no other client's
        response, built meanwhile, can take its place."""
        f = self.ferry({"svc": {"endpoints": [self.up.address], "protocol": "h2"}}, workers=1)
        with f.client() as c1, f.client() as c2:
            c1.send(b"GET /latebody-1 HTTP/1.1\r\nHost: svc\r\n\r\n")
            time.sleep(0.1)         # its head is in; its body 0.4 s away
            for i in range(3):
                r = c2.request("GET", "/other%d" % i, [("Host", "svc")])
                self.assertEqual((r.status, r.body), (200, ("fine:/other%d" % i).encode()))
            r = c1.read_response("GET")
        self.assertEqual((r.status, r.header("x-late"), r.body), (200, "yes", b"late-body"))

    def test_polite_h2c_with_trailers_as_last_chunk(self):
        with self.f.client() as c:
            for i in range(5):
                r = c.request("GET", "/ok%d" % i, [("Host", "svc")])
                self.assertEqual((r.status, r.body), (200, ("fine:/ok%d" % i).encode()))
                # no length from the server: chunked for HTTP/1.1
                self.assertEqual(r.header("transfer-encoding"), "chunked")
        self.assertEqual(self.up.connections, 1, "five requests, one HTTP/2 connection")

    def test_service_key_never_indexed_ids_indexed_once(self):
        """HPACK toward the service: the key is sent never-indexed on every
        request and never enters the service's dynamic table (RFC 7541
        §7.1.3); the ids, traceparent and the time left enter it once a
        connection (their values are each request's own), and
        later requests name them by index with never-indexed values."""
        up = H2Upstream()
        self._closers.append(up.close)
        f = self.ferry({"svc": {"endpoints": [up.address], "protocol": "h2",
                                "auth": {"key_env": "SVC_KEY"}}},
                       env={"SVC_KEY": "hpack-secret-key-0123"}, workers=1)
        for i in range(4):
            r = f.get("/hp%d" % i, host="svc", timeout=10)
            self.assertEqual((r.status, r.body), (200, ("fine:/hp%d" % i).encode()))
        self.assertEqual(up.connections, 1)
        ids = ("x-correlation-id", "x-request-id", "traceparent", "x-ferry-deadline-ms")
        for i in range(4):
            self.assertEqual(up.headers["/hp%d" % i]["x-service-auth"], "hpack-secret-key-0123")
            self.assertIn("x-service-auth", up.never_indexed["/hp%d" % i])
            if i > 0:
                self.assertTrue(set(ids) <= up.never_indexed["/hp%d" % i])
        self.assertNotIn("x-service-auth", up.table)
        for name in ids:
            self.assertEqual(up.table.count(name), 1, up.table)

    def test_h2_client_gets_the_trailers(self):
        """HTTP/2 on both sides: the service's trailers reach the app as
        trailers (nghttp shows the frames)."""
        out = subprocess.run(["nghttp", "-v", "-H", ":authority: svc",
                              "http://127.0.0.1:%d/t" % self.f.outbound_port],
                             capture_output=True, text=True, timeout=20).stdout
        self.assertIn("fine:/t", out)
        tail = out[out.index("fine:/t"):]
        # after the DATA: a HEADERS frame holding the trailer, ending the stream
        self.assertRegex(tail, r"recv \(stream_id=\d+\) x-trailer: t1\n[^\n]*recv HEADERS "
                         r"frame[^\n]*\n\s*; END_STREAM", out[-2000:])

    def test_grpc_timeout_is_the_deadline(self):
        """SPEC §12: grpc-timeout bounds the call; the service gets the time
        left; at the deadline the app gets DEADLINE_EXCEEDED (gRPC form)."""
        t0 = time.monotonic()
        with self.f.client() as c:
            r = c.request("POST", "/slowcall", [("Host", "svc"), ("content-type", "application/grpc"),
                                               ("grpc-timeout", "300m")], b"\x00\x00\x00\x00\x00")
        took = time.monotonic() - t0
        self.assertEqual((r.status, r.header("grpc-status"), r.header("x-ferry-error")),
                         (200, "4", "SERVICE_TIMEOUT"))
        self.assertLess(took, 0.9, "the call outlived its grpc-timeout")
        sent = self.up.headers["/slowcall"]["grpc-timeout"]
        self.assertRegex(sent, r"^\d{8}m$")
        self.assertTrue(0 < int(sent[:-1]) <= 300, sent)
        # a gRPC call with no grpc-timeout gets the service's request timeout
        with self.f.client() as c:
            r = c.request("POST", "/okgrpc", [("Host", "svc"), ("content-type", "application/grpc")],
                          b"\x00\x00\x00\x00\x00")
        self.assertEqual(r.status, 200)
        self.assertTrue(0 < int(self.up.headers["/okgrpc"]["grpc-timeout"][:-1]) <= 15000)
        # counted by grpc-status, and in the access log (SPEC §12)
        m = self.f.admin("/metrics").body.decode()
        for status in ("0", "4"):
            self.assertIn('ferry_grpc_responses_total{direction="outbound",service="svc",'
                          'grpc_status="%s"} 1' % status, m)
        self.assert_still_serves()
        lines = harness.wait_until(lambda: [json.loads(l) for l in self.f.stdout_text().splitlines()
                                            if l.strip()] if len(self.f.stdout_text().splitlines()) >= 3
                                   else None, 3)
        self.assertEqual({e["path"]: e["grpc_status"] for e in lines},
                         {"/slowcall": 4, "/okgrpc": 0, "/ok": None})

    def test_http1_client_request_trailers_reach_the_service(self):
        """SPEC §12: a chunked HTTP/1.1 request's trailers leave as HTTP/2
        trailers; names that are framing, hop-by-hop or ferry's own never do."""
        body = harness.chunked_body([b"hello ", b"world"],
                                    [("X-Checksum", "abc123"), ("x-service-auth", "stolen"),
                                     ("Content-Length", "5"), ("x-Other", "two")])
        with self.f.client() as c:
            r = c.request("POST", "/trail1", [("Host", "svc"), ("Transfer-Encoding", "chunked")],
                          body)
        self.assertEqual((r.status, r.body), (200, b"fine:/trail1"))
        self.assertEqual(self.up.bodies.get("/trail1"), b"hello world")
        self.assertEqual(self.up.trailers.get("/trail1"),
                         [("x-checksum", "abc123"), ("x-other", "two")])

    def test_h2_client_request_trailers_reach_the_service(self):
        """HTTP/2 on both sides: the client's trailing HEADERS frame is
        passed on as one, after the body."""
        with test_h2.H2(self.f.outbound_port) as c:
            sid = c.request("/trail2", method="POST", headers=[("content-type", "text/plain")],
                            end_stream=False)
            c.send_body(sid, b"part one,", end_stream=False)
            c.send_body(sid, b"part two", end_stream=False)
            c.send_headers(sid, [("x-checksum", "abc123"), ("x-request-id", "not-a-trailer")],
                           end_stream=True)
            st = c.response(sid)
        self.assertEqual((st.status, bytes(st.body)), (200, b"fine:/trail2"))
        self.assertEqual(st.trailers, [("x-trailer", "t1")])
        self.assertEqual(self.up.bodies.get("/trail2"), b"part one,part two")
        self.assertEqual(self.up.trailers.get("/trail2"), [("x-checksum", "abc123")])
        self.assert_still_serves()

    def test_h2_client_request_trailers_over_the_limits(self):
        """Trailers share the head's limits (SPEC §11/§12): 101 fields are
        refused on that stream alone; the connection serves on."""
        with test_h2.H2(self.f.outbound_port) as c:
            sid = c.request("/trailbig", method="POST", end_stream=False)
            c.send_body(sid, b"x", end_stream=False)
            c.send_headers(sid, [("x-t%03d" % i, "v") for i in range(101)], end_stream=True)
            c.wait(lambda: c.streams[sid].done, 5)
            st = c.streams[sid]
            self.assertTrue(st.reset is not None or st.status == 431, (st.reset, st.headers))
            self.assertNotIn("/trailbig", self.up.trailers)
            st2 = c.get("/after", authority="svc")
            self.assertEqual((st2.status, bytes(st2.body)), (200, b"fine:/after"))
        self.assert_still_serves()

    def grpc_h2(self, c, path, timeout="300m", extra=()):
        return c.request(path, method="POST", headers=[
            ("content-type", "application/grpc"), ("te", "trailers"),
            *((("grpc-timeout", timeout),) if timeout else ()), *extra],
            body=b"\x00\x00\x00\x00\x00", content_length=False)

    def test_grpc_deadline_after_the_head(self):
        """SPEC §12: grpc-timeout bounds the whole call, not only the wait
        for the head: at the deadline the service's stream is cancelled
        (RST_STREAM CANCEL) and the app's call ends with DEADLINE_EXCEEDED in
        trailers, after the message it already got."""
        t0 = time.monotonic()
        with test_h2.H2(self.f.outbound_port) as c:
            st = c.response(self.grpc_h2(c, "/stall-h2"), timeout=5)
        took = time.monotonic() - t0
        self.assertEqual(st.status, 200)
        self.assertEqual(bytes(st.body), b"\x00\x00\x00\x00\x02hi")
        self.assertEqual(dict(st.trailers or ()).get("grpc-status"), "4", st.trailers)
        self.assertIn("deadline", dict(st.trailers).get("grpc-message", ""))
        self.assertGreater(took, 0.25)
        self.assertLess(took, 1.0, "the call outlived its grpc-timeout")
        self.assertEqual(harness.wait_until(lambda: self.up.resets.get("/stall-h2"), 3),
                         test_h2.CANCEL, "the service's stream was not cancelled")
        m = self.f.admin("/metrics").body.decode()
        self.assertIn('ferry_grpc_responses_total{direction="outbound",service="svc",'
                      'grpc_status="4"} 1', m)
        entry = harness.wait_until(lambda: next((e for e in self.f.access_log()
                                                 if e.get("path") == "/stall-h2"), None), 3)
        self.assertEqual((entry["status"], entry["grpc_status"], entry["error"]),
                         (200, 4, "SERVICE_TIMEOUT"), entry)
        self.assert_still_serves()

    def test_grpc_deadline_after_the_head_http1_client(self):
        """The same for a client on HTTP/1.1: the chunked body ends with
        the trailers."""
        t0 = time.monotonic()
        with self.f.client() as c:
            r = c.request("POST", "/stall-h1", [("Host", "svc"), ("content-type", "application/grpc"),
                                               ("grpc-timeout", "300m")], b"\x00\x00\x00\x00\x00")
        self.assertLess(time.monotonic() - t0, 1.0)
        self.assertEqual((r.status, r.framing, r.body), (200, "chunked", b"\x00\x00\x00\x00\x02hi"))
        self.assertEqual(dict(r.trailers).get("grpc-status"), "4", r.trailers)
        self.assertEqual(harness.wait_until(lambda: self.up.resets.get("/stall-h1"), 3),
                         test_h2.CANCEL)
        self.assert_still_serves()

    def test_grpc_without_timeout_is_not_cut_after_the_head(self):
        """No grpc-timeout: after the head only stream_idle applies (§6)."""
        with test_h2.H2(self.f.outbound_port) as c:
            sid = self.grpc_h2(c, "/stall-none", timeout=None)
            c.wait(lambda: len(c.streams[sid].body) > 0, 5)
            time.sleep(0.6)
            c.wait(lambda: c.streams[sid].done, 0.1)
            self.assertFalse(c.streams[sid].done, "a call without a deadline was ended")
            # while the client is still there: its leaving cancels the call
            self.assertNotIn("/stall-none", self.up.resets)

    def test_grpc_trailers_only_unavailable_retried_with_idempotency_key(self):
        """SPEC §12: with idempotency-key metadata a trailers-only
        UNAVAILABLE is retried; without it the app gets it as it was."""
        with test_h2.H2(self.f.outbound_port) as c:
            st = c.response(self.grpc_h2(c, "/unavailable-key", timeout="5S",
                                         extra=[("idempotency-key", "k-1")]))
            self.assertEqual((st.status, dict(st.headers).get("grpc-status"),
                              dict(st.trailers or ()).get("grpc-status")), (200, None, "0"))
            self.assertEqual(self.up.calls["/unavailable-key"], 2)
            st = c.response(self.grpc_h2(c, "/unavailable-nokey", timeout="5S"))
            self.assertEqual((st.status, dict(st.headers).get("grpc-status"),
                              dict(st.headers).get("grpc-message")), (200, "14", "overloaded"))
            self.assertNotIn("x-ferry-error", dict(st.headers))
            self.assertEqual(self.up.calls["/unavailable-nokey"], 1)
        m = self.f.admin("/metrics").body.decode()
        self.assertIn('ferry_retries_total{service="svc"} 1', m)

    def test_body_after_the_head_still_ends_the_stream(self):
        """A sized body that arrives after the attempt started: its last
        byte ends the stream (END_STREAM), which the server waits for."""
        with self.f.client() as c:
            c.send(b"POST /late HTTP/1.1\r\nHost: svc\r\nContent-Length: 10\r\n\r\n")
            time.sleep(0.3)
            c.send(b"01234")
            time.sleep(0.1)
            c.send(b"56789")
            r = c.read_response("POST")
        self.assertEqual((r.status, r.body), (200, b"fine:/late"))

    def test_stream_reset_is_502(self):
        r = self.get("/rst")
        self.assert_ferry_error(r, 502, "SERVICE_ERROR", r"reset the stream")
        self.assert_still_serves()

    def test_goaway_before_processing_is_sent_again(self):
        r = self.get("/goaway")
        self.assertEqual((r.status, r.body), (200, b"fine:/goaway"))
        self.assertEqual(self.up.paths.count("/goaway"), 2)
        m = self.f.admin("/metrics").body.decode()
        self.assertIn('ferry_upstream_resends_total{service="svc"} 1', m)

    def test_refused_after_a_streamed_body_is_not_sent_again(self):
        # REFUSED_STREAM once 100 kB of a 300 kB body went: past
        # retries.buffer (64 KiB), ferry holds no whole copy to send again
        body = harness.payload(300000)
        r = harness.request(self.f.outbound_port, "POST", "/refuse-late",
                            [("Host", "svc")], body, timeout=10)
        self.assertEqual(r.status, 502, r.body[:300])
        self.assertEqual(self.up.calls["/refuse-late"], 1, "sent again without its whole body")
        self.assert_still_serves()

    def test_garbage_is_502(self):
        r = self.get("/garbage")
        self.assert_ferry_error(r, 502, "SERVICE_ERROR")
        self.assert_still_serves()

    def test_header_block_over_the_limits_is_502(self):
        r = self.get("/bigheaders")
        self.assert_ferry_error(r, 502, "SERVICE_ERROR")
        self.assert_still_serves()

    def test_status_below_100_is_502(self):
        # found by tests/fuzz/fuzz_h2_upstream (regressions/h2_upstream/status-050):
        # nghttp2 passes ":status: 050", which went out as "HTTP/1.1 50 "
        r = self.get("/status050")
        self.assert_ferry_error(r, 502, "SERVICE_ERROR")
        self.assert_still_serves()

    def test_head_of_status_alone(self):
        # found by tests/fuzz/fuzz_h2_upstream (regressions/h2_upstream/status-alone):
        # a head without any field but :status reached headers_build_response
        # with a NULL text (UB that clang's UBSan reports; gcc's does not)
        r = self.get("/statusonly")
        self.assertEqual((r.status, r.body), (204, b""))
        self.assert_still_serves()

    def test_status_line_has_the_reason_phrase(self):
        # HTTP/2 carries no reason phrase; an HTTP/1.1 client gets RFC
        # 9110's (h2load's HTTP/1.1 client counted no status without one:
        # tools/pgo-train found it), and none for a code it has none for
        for path, status, reason in (("/ok", 200, "OK"), ("/statusonly", 204, "No Content"),
                                     ("/status299", 299, "")):
            r = self.get(path)
            self.assertEqual((r.status, r.reason), (status, reason), path)

    def test_head_that_ends_the_stream_has_no_trailers(self):
        # found by tests/fuzz/fuzz_h2_upstream (regressions/h2_upstream/head-again-as-trailers):
        # a head with END_STREAM and no length went to an HTTP/1.1 client
        # chunked, with every field of the head again as trailers (so a head
        # of 71 fields came to 142 and ferry's own parser refused it)
        with self.f.client() as c:
            r = c.request("GET", "/headends", [("Host", "svc")])
            self.assertEqual((r.status, r.body, r.framing), (200, b"", "chunked"))
            self.assertEqual(r.trailers, [])
            self.assertEqual(harness.find_all(r.headers, "x-head-field"), ["h1"])
            r = c.request("GET", "/ok", [("Host", "svc")])
            self.assertEqual((r.status, r.body), (200, b"fine:/ok"))

    def test_grpc_status_twice_counts_the_first(self):
        # the metrics and the access log read the same field as the retry
        # check (the first): before, they kept the last
        with self.f.client() as c:
            r = c.request("POST", "/grpc-twice", [("Host", "svc"),
                                                  ("content-type", "application/grpc")],
                          b"\x00\x00\x00\x00\x00")
        self.assertEqual(r.status, 200)
        m = self.f.admin("/metrics").body.decode()
        self.assertIn('ferry_grpc_responses_total{direction="outbound",service="svc",'
                      'grpc_status="5"} 1', m)
        self.assertNotIn('grpc_status="0"}', m)
        entry = harness.wait_until(lambda: next((e for e in self.f.access_log()
                                                 if e.get("path") == "/grpc-twice"), None), 3)
        self.assertEqual(entry["grpc_status"], 5, entry)

    def test_grpc_call_without_status_counts_as_the_client_reads_it(self):
        # SPEC §12 counts gRPC calls by grpc-status; an answer without one
        # is counted with the status gRPC clients make of its HTTP status
        # (404 UNIMPLEMENTED, 503 UNAVAILABLE, 200 UNKNOWN), and passed on
        # unchanged
        with self.f.client() as c:
            for path in ("/nostatus-404", "/nostatus-503", "/nostatus-200"):
                r = c.request("POST", path, [("Host", "svc"), ("content-type", "application/grpc")],
                              b"\x00\x00\x00\x00\x00")
                self.assertEqual((r.status, r.body, r.header("grpc-status")),
                                 (int(path[10:]), b"no status", None))
        self.assertEqual(self.up.calls["/nostatus-503"], 1)
        m = self.f.admin("/metrics").body.decode()
        for status in ("12", "14", "2"):
            self.assertIn('ferry_grpc_responses_total{direction="outbound",service="svc",'
                          'grpc_status="%s"} 1' % status, m)
        def logged():
            got = {e["path"]: e["grpc_status"] for e in self.f.access_log()
                   if e.get("path", "").startswith("/nostatus-")}
            return got if len(got) == 3 else None
        self.assertEqual(harness.wait_until(logged, 3),
                         {"/nostatus-404": 12, "/nostatus-503": 14, "/nostatus-200": 2})

    def test_head_only_coded_answer_reaches_the_app_decoded(self):
        # ferry offered an encoding the app never asked for: a head-only
        # answer that names one is an empty body decoded, without the
        # content-encoding the app would otherwise try to undo
        f = self.ferry({"svc": {"endpoints": [self.up.address], "protocol": "h2",
                                "compression": {"encodings": ["gzip"]}}})
        with f.client() as c:
            for _ in range(2):
                r = c.request("GET", "/headends-gzip", [("Host", "svc")])
                self.assertEqual((r.status, r.body), (200, b""))
                self.assertIsNone(r.header("content-encoding"))
                self.assertEqual(harness.find_all(r.headers, "x-head-field"), ["h1"])
        c = test_h2.H2(f.outbound_port)
        st = c.response(c.request("/headends-gzip", authority="svc"))
        self.assertEqual((st.status, bytes(st.body)), (200, b""))
        self.assertEqual(test_h2.hname(st.headers, "content-encoding"), [])
        c.sock.close()

    def test_trailers_count_with_the_head(self):
        """Trailers share the head's limits (SPEC §11), as for an HTTP/1.1
        service: 70 fields in the head and 30 as trailers pass; 70 and 31
        are 101 of the service's own, so the response is cut before the
        trailers, which the app's HTTP/1.1 parser (ferry's among them) would
        refuse."""
        with self.f.client() as c:
            r = c.request("GET", "/trailers-30", [("Host", "svc")])
        self.assertEqual((r.status, r.body, len(r.trailers)), (200, b"body", 30))
        with self.f.client() as c:
            c.send(b"GET /trailers-31 HTTP/1.1\r\nHost: svc\r\n\r\n")
            data = c.reader.read_to_close()
        self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data[:100])
        self.assertIn(b"4\r\nbody\r\n", data)
        self.assertNotIn(b"\r\n0\r\n", data, "the response was cut, not ended")
        self.assertNotIn(b"x-t000", data)
        self.assert_still_serves()

    def test_close_mid_body_cuts_the_response(self):
        with self.f.client() as c:
            c.send(b"GET /cut HTTP/1.1\r\nHost: svc\r\n\r\n")
            data = b""
            c.sock.settimeout(5)
            try:
                while True:
                    chunk = c.sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
        self.assertTrue(data.startswith(b"HTTP/1.1 200"), data[:100])
        self.assertLess(len(data.split(b"\r\n\r\n", 1)[1]), 1000, "a cut response, not a whole one")
        self.assert_still_serves()


class StallingH2Upstream(harness.LoopbackServer):
    """An h2c server whose first connection takes one request's head,
    grants it every byte of window, and then reads no more: ferry's writes
    to it back up, and the HEADERS of streams submitted after wait in
    ferry's HTTP/2 session. Then `goaway` (set it) sends a GOAWAY with last
    stream 1 on that connection and keeps it open, still unread; `drain`
    reads it again and answers. Every later connection answers each
    request at once: 200, fine:PATH. With sip, the first connection is
    never held but read in sips of 32 KiB, 2 ms apart."""

    def __init__(self, sip=False):
        self.sip = sip
        self.goaway = threading.Event()
        self.read_after_goaway = threading.Event()
        self.after_goaway = []      # (frame type, stream id) read after it
        self.drain = threading.Event()
        self.paths = []             # (connection number, :path)
        super().__init__()

    def serve(self, s, n):
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        conn.increment_flow_control_window(2**31 - 1 - 65535)
        s.settimeout(0.1)
        hold = False        # the first head is in: read no more until told
        try:
            harness.send_all(s, conn.data_to_send())
            while not self.stopping.is_set():
                if hold:
                    while not (self.goaway.is_set() or self.drain.is_set() or
                               self.stopping.is_set()):
                        time.sleep(0.02)
                    if self.goaway.is_set():
                        conn.close_connection(error_code=0, last_stream_id=1)
                        harness.send_all(s, conn.data_to_send())
                        if self.read_after_goaway.is_set():
                            self.frames_after_goaway(s)
                        self.stopping.wait()
                        return
                    hold = False
                try:
                    data = s.recv(32768 if self.sip and n == 1 else 1 << 20)
                except socket.timeout:
                    continue
                if not data:
                    return
                if self.sip:
                    time.sleep(0.002)
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        with self.lock:
                            self.paths.append((n, dict(ev.headers)[":path"]))
                        if n == 1 and ev.stream_id == 1 and not self.sip:
                            hold = True
                    elif isinstance(ev, h2.events.StreamEnded):
                        path = next(p for c, p in reversed(self.paths) if c == n)
                        conn.send_headers(ev.stream_id, [(":status", "200")])
                        conn.send_data(ev.stream_id, b"fine:" + path.encode(), end_stream=True)
                harness.send_all(s, conn.data_to_send())
        except (OSError, h2.exceptions.ProtocolError):
            pass
        finally:
            s.close()


    def frames_after_goaway(self, s):
        """Reads the connection on, frame by frame (the rest of what was
        held included), into after_goaway, without answering."""
        buf = b""
        while not self.stopping.is_set():
            try:
                data = s.recv(1 << 20)
            except socket.timeout:
                continue
            if not data:
                return
            buf += data
            while len(buf) >= 9:
                length = int.from_bytes(buf[:3], "big")
                if len(buf) < 9 + length:
                    break
                with self.lock:
                    self.after_goaway.append((buf[3], int.from_bytes(buf[5:9], "big") & 0x7fffffff))
                buf = buf[9 + length:]


class HeadersQueuedH2Test(FerryTestCase):
    """§7, §12: a stream whose HEADERS ferry still held when the server
    said GOAWAY was never processed: it goes again at once, on a new
    connection, not when the old one ends (a server may keep that open for
    a long stream). A stream given up on before its HEADERS left never
    goes, and is no longer counted (/services streams: the session's
    room)."""

    BODY = 16 << 20

    def setUp(self):
        super().setUp()
        self.up = StallingH2Upstream()
        self._closers.append(self.up.close)
        self.f = self.ferry({"svc": {"endpoints": [self.up.address], "protocol": "h2",
                                     "retries": {"max": 0},
                                     "timeouts": {"request": "20s"},
                                     "circuit_breaker": {"consecutive_failures": 0},
                                     "outlier_detection": {"consecutive_failures": 0}}},
                            workers=1)
        self.sent = 0
        self.big = self.f.client(timeout=30)
        self._closers.append(self.big.close)
        self.big.send(b"POST /big HTTP/1.1\r\nHost: svc\r\nContent-Length: %d\r\n\r\n"
                      % self.BODY)
        threading.Thread(target=self.push_body, daemon=True).start()
        self.assertTrue(harness.wait_until(lambda: (1, "/big") in self.up.paths, 5),
                        "the first request never arrived")
        # ferry stops reading the client once its writes to the server back
        # up: no byte taken for a whole second
        last, still = -1, 0
        while still < 4:
            still = still + 1 if last == self.sent else 0
            last = self.sent
            time.sleep(0.25)
        self.assertLess(self.sent, self.BODY, "the server took the whole body")

    def push_body(self):
        chunk = b"x" * 65536
        try:
            while self.sent < self.BODY:
                self.big.send(chunk)
                self.sent += len(chunk)
        except OSError:
            pass

    def endpoint(self):
        return json.loads(self.f.admin("/services").body)["services"][0]["endpoints"][0]

    def test_heads_held_at_a_goaway_go_again_at_once(self):
        results = {}

        def call():
            results["r"] = self.f.get("/after", host="svc", timeout=15)
        t = threading.Thread(target=call)
        t.start()
        # its stream is on the stalled connection, its HEADERS unsent
        self.assertTrue(harness.wait_until(lambda: self.endpoint()["streams"] == 2, 5),
                        self.endpoint())
        time.sleep(0.3)
        self.assertEqual((results, self.up.connections), ({}, 1))
        self.up.goaway.set()
        t.join(10)
        self.assertIn("r", results, "the request waited for the old connection to end")
        r = results["r"]
        self.assertEqual((r.status, r.body), (200, b"fine:/after"), self.f.stderr_tail())
        self.assertEqual(self.up.paths, [(1, "/big"), (2, "/after")])
        m = self.f.admin("/metrics").body.decode()
        self.assertIn('ferry_upstream_resends_total{service="svc"} 1', m)
        self.assertEqual(self.endpoint()["streams"], 1)     # /big, still going

    def test_stream_given_up_before_its_head_left_never_goes(self):
        # its deadline passes while its HEADERS wait behind /big's body
        r = self.f.get("/abandon", host="svc", headers=[("x-ferry-deadline-ms", "500")])
        self.assertEqual(r.status, 504, r.body)
        self.assertEqual(self.endpoint()["streams"], 2)     # cancelled, not yet dropped
        self.up.drain.set()
        r = self.big.read_response("POST")
        self.assertEqual((r.status, r.body), (200, b"fine:/big"), self.f.stderr_tail())
        self.assertTrue(harness.wait_until(lambda: self.endpoint()["streams"] == 0, 3),
                        "a stream never sent is still counted: %r" % self.endpoint())
        r = self.f.get("/next", host="svc")
        self.assertEqual((r.status, r.body), (200, b"fine:/next"))
        self.assertEqual((self.up.paths, self.up.connections),
                         ([(1, "/big"), (1, "/next")], 1))

    def test_heads_given_up_then_a_goaway_send_no_reset(self):
        # a client leaves while its HEADERS wait: the stream is reset,
        # which cancels them, and no frame goes. Then the GOAWAY: the
        # streams it left unprocessed are failed, and that one must not
        # be reset again, which nghttp2 sends as a frame (RFC 9113 5.1: a
        # frame on a stream the peer never saw is a connection error)
        self.up.read_after_goaway.set()
        c = self.f.client()
        c.send(b"GET /gone HTTP/1.1\r\nHost: svc\r\n\r\n")
        self.assertTrue(harness.wait_until(lambda: self.endpoint()["streams"] == 2, 5),
                        self.endpoint())
        harness.rst_close(c.sock)
        self.assertTrue(harness.wait_until(lambda: harness.counter(
            self.f, "ferry_downstream_connections", listener="outbound") <= 1, 5))
        self.up.goaway.set()
        # the held bytes of /big, then what ferry queued after them
        self.assertTrue(harness.wait_until(
            lambda: any(t == 0 and sid == 1 for t, sid in self.up.after_goaway), 5))
        time.sleep(0.5)
        with self.up.lock:
            others = sorted({(t, sid) for t, sid in self.up.after_goaway if sid not in (0, 1)})
        self.assertEqual(others, [], "frames on streams the server never saw")
        self.assertTrue(self.f.alive(), self.f.stderr_tail())

    def test_clients_gone_before_their_heads_left_leave_nothing_to_send(self):
        # nghttp2 packs a request's HEADERS from the client's own request
        # buffer (h2_up.c, lend_fields): clients that reset while their
        # HEADERS wait take those buffers with them, so the HEADERS must
        # never go (ASan does not see nghttp2's reads: what reaches the
        # server is the check; without the cancel, /gone-* arrive)
        gone = []
        for i in range(3):
            c = self.f.client()
            c.send(b"GET /gone-%d HTTP/1.1\r\nHost: svc\r\nx-app: %s\r\n\r\n"
                   % (i, b"a" * 200))
            gone.append(c)
        self.assertTrue(harness.wait_until(lambda: self.endpoint()["streams"] == 4, 5),
                        self.endpoint())
        for c in gone:
            harness.rst_close(c.sock)
        # their connections are gone (ferry's count of active clients)
        self.assertTrue(harness.wait_until(lambda: harness.counter(
            self.f, "ferry_downstream_connections", listener="outbound") <= 1, 5),
            self.f.admin("/metrics").body.decode())
        self.up.drain.set()
        r = self.big.read_response("POST")
        self.assertEqual((r.status, r.body), (200, b"fine:/big"), self.f.stderr_tail())
        r = self.f.get("/next", host="svc")
        self.assertEqual((r.status, r.body), (200, b"fine:/next"))
        self.assertEqual((self.up.paths, self.up.connections),
                         ([(1, "/big"), (1, "/next")], 1))
        self.assertTrue(self.f.alive(), self.f.stderr_tail())


class ZeroStreamsH2Upstream(harness.LoopbackServer):
    """An h2c server. On its first connection the first request's stream
    is refused, and SETTINGS_MAX_CONCURRENT_STREAMS 0 follows in the same
    write; `raise_after` seconds later that connection allows 100 streams
    again and answers what comes (200, conn1:PATH). Every later connection
    answers at once: 200, connN:PATH."""

    def __init__(self, raise_after):
        self.raise_after = raise_after
        self.paths = []             # (connection number, :path)
        super().__init__()

    def serve(self, s, n):
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        s.settimeout(0.05)
        raise_at = None
        try:
            harness.send_all(s, conn.data_to_send())
            while not self.stopping.is_set():
                if raise_at is not None and time.monotonic() >= raise_at:
                    raise_at = None
                    conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100})
                    harness.send_all(s, conn.data_to_send())
                try:
                    data = s.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if not isinstance(ev, h2.events.RequestReceived):
                        continue
                    path = dict(ev.headers)[":path"]
                    with self.lock:
                        self.paths.append((n, path))
                    if n == 1 and ev.stream_id == 1:
                        conn.reset_stream(ev.stream_id, error_code=h2.errors.ErrorCodes.REFUSED_STREAM)
                        conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 0})
                        raise_at = time.monotonic() + self.raise_after
                        continue
                    conn.send_headers(ev.stream_id, [(":status", "200")])
                    conn.send_data(ev.stream_id, b"conn%d:%s" % (n, path.encode()),
                                   end_stream=True)
                harness.send_all(s, conn.data_to_send())
        except (OSError, h2.exceptions.ProtocolError):
            pass
        finally:
            s.close()


class ZeroStreamsH2Test(FerryTestCase):
    """§12: a connection whose peer allows no streams
    (SETTINGS_MAX_CONCURRENT_STREAMS 0) holds no request: the HEADERS ferry
    had queued on it go on another connection at once, not when the
    request times out, and are never sent on the first one later, when
    the peer allows streams again (the request would reach it twice). The
    stream is no longer counted on the first connection."""

    def test_heads_held_at_zero_streams_go_elsewhere_once(self):
        up = ZeroStreamsH2Upstream(raise_after=1.0)
        self._closers.append(up.close)
        f = self.ferry({"svc": {"endpoints": [up.address], "protocol": "h2",
                                "retries": {"max": 1},
                                "timeouts": {"request": "5s"},
                                "circuit_breaker": {"consecutive_failures": 0},
                                "outlier_detection": {"consecutive_failures": 0}}},
                       workers=1)
        t0 = time.monotonic()
        r = f.get("/a", host="svc", timeout=10)
        self.assertEqual((r.status, r.body), (200, b"conn2:/a"), f.stderr_tail())
        self.assertLess(time.monotonic() - t0, 1.0, "the request waited on the held HEADERS")
        # the refused stream, re-sent at once on the same connection (its
        # HEADERS then held by the 0), then the retry on a new one. The
        # answering stream is counted until nghttp2 closes it, just after
        # ferry wrote the answer: a worker preempted in between (ASan, a
        # busy machine) showed 1 in a CI run, so its count may take a moment
        def endpoint():
            return json.loads(f.admin("/services").body)["services"][0]["endpoints"][0]
        self.assertTrue(harness.wait_until(lambda: endpoint()["streams"] == 0, 1.0), endpoint())
        time.sleep(1.5)     # the first connection allows streams again
        self.assertEqual(up.paths, [(1, "/a"), (2, "/a")], "a request went twice")
        r = f.get("/b", host="svc")
        self.assertEqual(r.status, 200, r.body)
        self.assertNotIn((1, "/a"), up.paths[2:])


class ConnectJoinH2Test(FerryTestCase):
    """§6, §12: a request that joins an HTTP/2 connection still connecting
    has the connect timeout of its own, as if it had opened it; and the
    connection is closed when no attempt waits for it any more, as an
    HTTP/1.1 connect is."""

    def test_joined_connect_times_out_as_a_connect(self):
        bh = self.blackhole()
        f = self.ferry({"svc": {"endpoints": [bh.address], "protocol": "h2",
                                "timeouts": {"connect": "300ms", "request": "3s"},
                                "retries": {"max": 0},
                                "circuit_breaker": {"consecutive_failures": 0},
                                "outlier_detection": {"consecutive_failures": 0}}},
                       workers=1)
        out = {}

        def call(name, path):
            t0 = time.monotonic()
            r = f.get(path, host="svc", timeout=10)
            out[name] = (r.status, time.monotonic() - t0, r.body)
        first = threading.Thread(target=call, args=("first", "/a"))
        first.start()
        time.sleep(0.1)
        call("second", "/b")    # joins the connect under way
        first.join(10)
        for name in ("first", "second"):
            status, took, body = out[name]
            self.assertEqual(status, 504, (name, body))
            self.assertIn(b"connect", body, (name, body))
            self.assertLess(took, 1.0, "%s waited %.2fs: %r" % (name, took, body))
        self.assertTrue(harness.wait_until(lambda: harness.counter(
            f, "ferry_upstream_connections", service="svc", state="active") == 0, 2),
            "the connect nobody waits for is still open")


class ReadsH2UpstreamTest(FerryTestCase):
    """An HTTP/2 service's connection is read while reads fill what they
    ask for, not until the socket says EAGAIN: a server that writes each
    answer as it makes it (nginx does) was chased one answer a read, with
    an EAGAIN read after each. Counted by strace (the worker's recv(2)
    calls), not timed: one request at a time, each answered in one write,
    costs one read of the client's connection and one of the service's."""

    def reads_a_request(self, tls):
        up = H2Upstream(alpn=["h2"] if tls else None)
        self._closers.append(up.close)
        extra = {"tls": harness.tls_client()} if tls else {}
        f = self.ferry({"svc": {"endpoints": [up.address], "protocol": "h2", **extra}},
                       workers=1)
        worker, = harness.worker_task_files(f, "comm")
        n = 300
        with test_h2.H2(f.outbound_port) as c:
            for _ in range(20):     # the handshakes and settings out of the count
                self.assertEqual(c.get("/headends").status, 200)

            def requests():
                for _ in range(n):
                    self.assertEqual(c.get("/headends").status, 200)
            calls = harness.thread_syscalls(worker, ("recvfrom", "read"), requests)
        self.assertEqual(up.paths.count("/headends"), 20 + n)
        per_request = (calls["recvfrom"] + calls["read"]) / n
        # 2.0 here; chasing to EAGAIN made it 3.0
        self.assertLess(per_request, 2.3, "reads a request: %.2f %r" % (per_request, calls))
        self.assertGreaterEqual(per_request, 2.0, "reads a request: %.2f %r" % (per_request, calls))

    def test_an_answer_written_alone_is_read_once_over_tls(self):
        self.reads_a_request(tls=True)

    def test_an_answer_written_alone_is_read_once_h2c(self):
        self.reads_a_request(tls=False)


class SlowH2ReaderTest(FerryTestCase):
    """§12: a request body to an HTTP/2 server that reads slowly pauses the
    client while ferry's writes back up and wakes it when they drain, as
    often as that takes, even when the stream had sent all it had before
    the pause (nghttp2 then asks it for nothing that would wake it)."""

    def start(self):
        up = StallingH2Upstream(sip=True)
        self._closers.append(up.close)
        return self.ferry({"svc": {"endpoints": [up.address], "protocol": "h2",
                                   "retries": {"max": 0}, "timeouts": {"request": "60s"}}},
                          workers=1)

    def test_h2c_upload_to_a_slow_reader_arrives_whole(self):
        f = self.start()
        body = b"u" * (12 << 20)
        with test_h2.H2(f.outbound_port, timeout=60) as c:
            for i in range(2):
                sid = c.new_sid()
                c.send_headers(sid, [(":method", "POST"), (":scheme", "http"),
                                     (":authority", "svc"), (":path", "/h2up%d" % i),
                                     ("content-length", str(len(body)))])
                self.assertTrue(c.send_body(sid, body, deadline=time.monotonic() + 60),
                                "ferry stopped taking the body: %s" % f.stderr_tail())
                st = c.response(sid, timeout=60)
                self.assertEqual((st.status, bytes(st.body)), (200, b"fine:/h2up%d" % i))

    def test_upload_to_a_slow_reader_arrives_whole(self):
        f = self.start()
        for i in range(3):
            with f.client(timeout=60) as c:
                r = c.request("POST", "/up%d" % i, [("Host", "svc")], b"u" * (12 << 20))
            self.assertEqual((r.status, r.body), (200, b"fine:/up%d" % i), f.stderr_tail())


class ReloadKeepsH2UpstreamTest(FerryTestCase):
    """§10, §12: SIGHUP keeps the HTTP/2 connection to an unchanged
    endpoint and the streams in flight on it; the next stream rides the
    same connection with the new config."""

    def test_streams_in_flight_survive_sighup(self):
        up = H2Upstream()
        self._closers.append(up.close)
        f = self.ferry({"svc": {"endpoints": [up.address], "protocol": "h2",
                                "retries": {"max": 0}}}, workers=1)
        self.assertEqual(f.get("/warm", host="svc").status, 200)
        results = {}

        def call(path):
            results[path] = f.get(path, host="svc", timeout=15)
        threads = [threading.Thread(target=call, args=("/hold%d" % i,)) for i in range(2)]
        for t in threads:
            t.start()
        self.assertTrue(harness.wait_until(
            lambda: {"/hold0", "/hold1"} <= set(up.paths), 5), "the streams never arrived %r %s" % (up.paths, f.stderr_tail()))
        cfg = copy.deepcopy(f.config)
        cfg["services"]["svc"]["headers"] = {"request": {"set": {"x-config": "new"}}}
        f.reload(cfg)
        self.assertEqual(results, {}, "a stream ended before the reload was in force")
        svc = json.loads(f.admin("/services").body)["services"][0]
        self.assertEqual((svc["endpoints"][0]["protocol"], svc["endpoints"][0]["streams"]),
                         ("h2", 2))
        up.gate.set()
        for t in threads:
            t.join(15)
        for p in ("/hold0", "/hold1"):
            self.assertEqual((results[p].status, results[p].body), (200, b"fine:" + p.encode()))
            self.assertNotIn("x-config", up.headers[p])
        r = f.get("/after", host="svc")
        self.assertEqual((r.status, r.body), (200, b"fine:/after"))
        self.assertEqual(up.headers["/after"].get("x-config"), "new")
        self.assertEqual(up.connections, 1, "the reload dropped the HTTP/2 connection")


class ReloadStormTest(FerryTestCase):
    """§10: SIGHUPs in quick succession that remove the HTTP/2 service,
    bring it back on another endpoint and change it, while HTTP/1.1 and
    h2c clients stream requests and uploads through it and an HTTP/1.1
    service: every answer is the upstream's (or 404 while the service is
    gone), ferry lives, and the sanitizers stay quiet."""

    def test_reload_storm_under_h1_and_h2c_load(self):
        ups = [H2Upstream(), H2Upstream()]
        for u in ups:
            self._closers.append(u.close)
        plain = self.upstream(tls=False)

        base = harness.ferry_config({})

        def cfg(i):
            svcs = {"plain": harness.service(plain)}
            if i % 4 != 1:
                svcs["svc"] = {"endpoints": [ups[i % 2].address], "protocol": "h2",
                               "retries": {"max": 0},
                               "headers": {"request": {"set": {"x-gen": str(i)}}}}
            return dict(base, services=svcs)
        f = self.ferry(config=cfg(0))
        self.assertEqual(f.get("/warm", host="svc").status, 200)
        stop = threading.Event()
        failures, done = [], []
        body = bytes(range(256)) * 256         # 64 KiB

        def h1_load(host, n):
            k = 0
            c = harness.RawClient(f.outbound_port, timeout=10)
            try:
                while not stop.is_set():
                    target = "/h1/%d/%d" % (n, k)
                    try:
                        r = c.request("POST", target, [("Host", host)], body)
                    except (OSError, harness.IncompleteMessage, ValueError) as e:
                        failures.append("%s %s: %r" % (host, target, e))
                        c.close()
                        c = harness.RawClient(f.outbound_port, timeout=10)
                        continue
                    want = b"fine:" + target.encode() if host == "svc" else None
                    if r.status == 404 and host == "svc":
                        pass
                    elif r.status != 200 or (want and r.body != want):
                        failures.append("%s %s: %d %r" % (host, target, r.status, r.body[:100]))
                    if r.has_token("connection", "close"):    # a 404 left the body unread
                        c.close()
                        c = harness.RawClient(f.outbound_port, timeout=10)
                    k += 1
            finally:
                c.close()
                done.append(k)

        def h2c_load():
            k = 0
            c = test_h2.H2(f.outbound_port, timeout=10)
            try:
                while not stop.is_set() and not c.closed:
                    paths = ["/h2c/%d/%d" % (k, j) for j in range(4)]
                    sids = [c.request(p, method="POST" if j % 2 else "GET",
                                      body=body if j % 2 else None)
                            for j, p in enumerate(paths)]
                    for p, sid in zip(paths, sids):
                        st = c.response(sid, 10)
                        if st.status == 404:
                            continue
                        if st.status != 200 or bytes(st.body) != b"fine:" + p.encode():
                            failures.append("h2c %s: %r %r" % (p, st.status, bytes(st.body)[:100]))
                    k += 1
                if c.closed:
                    failures.append("h2c: ferry closed the connection")
            except AssertionError as e:
                failures.append("h2c: %s" % e)
            finally:
                c.close()
                done.append(k)

        threads = [threading.Thread(target=h1_load, args=("svc", 0), daemon=True),
                   threading.Thread(target=h1_load, args=("plain", 1), daemon=True),
                   threading.Thread(target=h2c_load, daemon=True)]
        for t in threads:
            t.start()
        try:
            for i in range(1, 25):
                tmp = f.config_path + ".tmp"
                with open(tmp, "w") as fh:
                    fh.write(harness.to_yaml(cfg(i)) + "\n")
                os.replace(tmp, f.config_path)
                f.signal(signal.SIGHUP)
                time.sleep(0.08)
        finally:
            time.sleep(0.3)
            stop.set()
            for t in threads:
                t.join(20)
        self.assertEqual(failures[:10], [], "%d requests failed\n%s" % (len(failures),
                                                                        f.stderr_tail(40)))
        self.assertTrue(all(k >= 5 for k in done) and len(done) == 3, "load too thin: %r" % done)
        f.config = cfg(24)
        r = f.get("/last", host="svc")
        self.assertEqual((r.status, r.body), (200, b"fine:/last"))
        self.assertTrue(f.alive())


class DnsChurnH2Test(FerryTestCase):
    """An endpoint DNS drops is retired: its idle HTTP/2 connection closes
    then, as its idle HTTP/1.1 ones do, not at pool.idle_timeout."""

    def test_idle_session_to_a_dropped_endpoint_closes(self):
        import test_discovery
        a, b = H2Upstream(), H2Upstream()
        self._closers += [a.close, b.close]
        dns = test_discovery.ScriptedDns({"a.svc.test": ["127.0.0.1"],
                                          "b.svc.test": ["127.0.0.1"]})
        self._closers.append(dns.close)
        srv = "_http._tcp.svc.test"
        dns.set(srv, [(0, 10, a.port, "a.svc.test")])
        f = self.ferry({"svc": {"srv": srv, "dns_refresh": "1s", "protocol": "h2",
                                "pool": {"idle_timeout": "30s"}}},
                       workers=1, resolver={"nameservers": ["127.0.0.1:%d" % dns.port]})

        def active():
            return harness.counter(f, "ferry_upstream_connections", service="svc",
                                   state="active")

        def endpoints():
            svc = json.loads(f.admin("/services").body)["services"][0]
            return [e["address"] for e in svc["endpoints"]]
        self.assertTrue(harness.wait_until(lambda: endpoints() == [a.address], 3))
        self.assertEqual(f.get("/warm", host="svc").status, 200)
        self.assertEqual(active(), 1)
        # (a closes a connection idle for 5 s itself: all below is quicker)
        dns.set(srv, [(0, 10, b.port, "b.svc.test")])
        self.assertTrue(harness.wait_until(lambda: endpoints() == [b.address], 3))
        self.assertEqual(f.get("/b", host="svc").status, 200)
        self.assertTrue(harness.wait_until(lambda: active() == 1, 1.0),
                        "%d connections: the dropped endpoint's idle one stays open" % active())


# ---------------------------------------------------------------------------
# active health checks over HTTP/2 (SPEC §6, §12)


HC = {"path": "/health", "interval": "200ms", "timeout": "1s", "healthy": 1, "unhealthy": 2}
HC_KEY = "h2-health-check-key-0123456789"


class HealthCheckOverH2Test(FerryTestCase):
    """A service that speaks HTTP/2 is checked over HTTP/2: h2c with
    protocol h2, ALPN h2 with tls; auto speaks what ALPN picked. The
    servers here speak nothing but HTTP/2, so a passing check spoke it."""

    def start(self, endpoints, **extra):
        svc = {"endpoints": [e.address for e in endpoints], "load_balancer": "round_robin",
               "health_check": HC, "retries": {"max": 0},
               "circuit_breaker": {"consecutive_failures": 0},
               "outlier_detection": {"consecutive_failures": 0}}
        self.f = self.ferry({"svc": harness.deep_merge(svc, extra)}, workers=1,
                            env={"HC_KEY": HC_KEY})
        return self.f

    def endpoint(self, address):
        svc = json.loads(self.f.admin("/services").body)["services"][0]
        return next(e for e in svc["endpoints"] if e["address"] == address)

    def healthy_metric(self, address):
        m = re.search(r'^ferry_endpoint_healthy\{service="svc",endpoint="%s"\} (\S+)$'
                      % re.escape(address), self.f.admin("/metrics").body.decode(), re.M)
        return m and float(m.group(1))

    def wait_health(self, address, healthy, timeout=4.0):
        ok = harness.wait_until(lambda: self.endpoint(address)["healthy"] == healthy, timeout)
        self.assertTrue(ok, "%s not %s within %.0fs:\n%s" % (
            address, "healthy" if healthy else "unhealthy", timeout, self.f.stderr_tail()))
        self.assertEqual(self.healthy_metric(address), 1.0 if healthy else 0.0)

    def checks(self, up):
        with up.lock:
            return up.paths.count("/health")

    def traffic(self, n=10):
        for i in range(n):
            r = self.f.get("/t%d" % i, host="svc", timeout=10)
            self.assertEqual(r.status, 200, r.body[:200])

    def sent_to(self, up):
        with up.lock:
            return [p for p in up.paths if p.startswith("/t")]

    def test_h2c_check_503_marks_unhealthy_and_traffic_avoids_it(self):
        good, bad = H2Upstream(), H2Upstream()
        for u in (good, bad):
            self._closers.append(u.close)
        bad.health = "503"
        self.start([good, bad], protocol="h2", auth={"key_env": "HC_KEY"})
        self.wait_health(bad.address, False)
        self.assertTrue(harness.wait_until(lambda: self.checks(good) >= 2, 3), "no checks")
        self.wait_health(good.address, True)
        # the check on the wire: one HTTP/2 GET with the service's Host and key
        seen = good.headers["/health"]
        self.assertEqual((seen[":method"], seen[":scheme"], seen[":authority"]),
                         ("GET", "http", "svc"))
        self.assertEqual((seen["user-agent"], seen["x-service-auth"]),
                         ("ferry-health-check", HC_KEY))
        # each check on a connection of its own, never on the pool's
        self.assertGreaterEqual(good.connections, self.checks(good))
        self.traffic()
        self.assertEqual((len(self.sent_to(good)), self.sent_to(bad)), (10, []))
        self.assertIn("cause=\"status 503\"", self.f.stderr_text())
        # it comes back once it answers 2xx again
        bad.health = "ok"
        self.wait_health(bad.address, True)
        self.traffic()
        self.assertEqual(len(self.sent_to(bad)), 5, "round robin over two healthy endpoints")

    def test_h2c_stream_reset_marks_unhealthy(self):
        good, bad = H2Upstream(), H2Upstream()
        for u in (good, bad):
            self._closers.append(u.close)
        bad.health = "rst"
        self.start([good, bad], protocol="h2")
        self.wait_health(bad.address, False)
        self.wait_health(good.address, True)
        self.assertRegex(self.f.stderr_text(), r"endpoint unhealthy service=svc endpoint=%s "
                         r'cause="the server reset the stream \(INTERNAL_ERROR\)"'
                         % re.escape(bad.address))
        self.traffic()
        self.assertEqual(self.sent_to(bad), [])

    def test_http1_only_endpoint_fails_the_h2_check(self):
        h1 = self.upstream(tls=False)
        good = H2Upstream()
        self._closers.append(good.close)
        self.start([h1, good], protocol="h2")
        self.wait_health(h1.address, False)
        self.wait_health(good.address, True)
        self.assertTrue(self.f.alive(), self.f.exit_description())
        self.assertRegex(self.f.stderr_text(), r"endpoint unhealthy service=svc endpoint=%s "
                         r'cause="[^"]+"' % re.escape(h1.address))
        self.traffic()
        self.assertEqual(len(self.sent_to(good)), 10)

    def test_tls_alpn_h2_and_a_server_that_does_not_pick_it(self):
        h2tls = H2Upstream(alpn=["h2"])
        h1tls = H2Upstream(alpn=["http/1.1"])   # never says h2
        for u in (h2tls, h1tls):
            self._closers.append(u.close)
        self.start([h2tls, h1tls], protocol="h2", tls=harness.tls_client())
        self.wait_health(h1tls.address, False)
        self.assertTrue(harness.wait_until(lambda: self.checks(h2tls) >= 2, 3), "no checks")
        self.wait_health(h2tls.address, True)
        seen = h2tls.headers["/health"]
        self.assertEqual((seen[":scheme"], seen[":authority"]), ("https", "backend"))
        self.assertIn('cause="the server did not select h2 by ALPN"', self.f.stderr_text())
        self.assertEqual(self.checks(h1tls), 0)

    def test_auto_speaks_what_alpn_picked(self):
        h2tls = H2Upstream(alpn=["h2", "http/1.1"])
        self._closers.append(h2tls.close)
        h1tls = self.upstream()     # TLS, HTTP/1.1, no ALPN
        self.start([h2tls, h1tls], protocol="auto", tls=harness.tls_client())
        self.assertTrue(harness.wait_until(
            lambda: self.checks(h2tls) >= 2 and
            len([r for r in h1tls.requests if r.target == "/health"]) >= 2, 4),
            "checks: %d over h2, %r over HTTP/1.1\n%s" % (
                self.checks(h2tls), [r.target for r in h1tls.requests], self.f.stderr_tail()))
        self.wait_health(h2tls.address, True)
        self.wait_health(h1tls.address, True)
        self.assertNotIn("endpoint unhealthy", self.f.stderr_text())


class H2PoolBoundTest(FerryTestCase):

    def test_max_per_endpoint_counts_connections_not_streams(self):
        """pool.max_per_endpoint bounds connections (SPEC §6): on HTTP/2
        every request is a stream, and one connection with room takes
        more. Before, the second request in flight waited for the pool
        and got 503 after the connect timeout."""
        up = H2Upstream()
        self._closers.append(up.close)
        f = self.ferry({"svc": {"endpoints": [up.address], "protocol": "h2",
                                "pool": {"max_per_endpoint": 1}}}, workers=1)
        with f.client(timeout=10) as first:
            first.send(b"GET /hold-1 HTTP/1.1\r\nHost: svc\r\n\r\n")
            self.assertTrue(harness.wait_until(lambda: "/hold-1" in up.calls, 5))
            for i in range(3):
                r = f.get("/more%d" % i, host="svc", timeout=5)
                self.assertEqual((r.status, r.body), (200, b"fine:/more%d" % i), r.body[:300])
            up.gate.set()
            r = first.read_response("GET")
        self.assertEqual(r.status, 200)
        self.assertEqual(up.connections, 1)


def unread_from(port):
    """Bytes waiting in the receive queues of loopback TCP connections to
    PORT (/proc/net/tcp): what the service sent that ferry has not read."""
    total = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if int(fields[2].split(":")[1], 16) == port:
                total += int(fields[4].split(":")[1], 16)
    return total


class SlowClientsShareH2UpstreamTest(FerryTestCase):
    """§12: the streams of an HTTP/2 connection to a service belong to many
    clients. A client that stops reading holds its own stream's window,
    never the connection's: however many such downloads share the
    connection, another client's request on it still gets its answer at
    once. A stream's window starts at 64 KiB and grows to 1 MiB as its
    client reads, so a client that never reads holds little."""

    N = 20
    SIZE_MIB = 4
    READ_FIRST = (1 << 20) + (256 << 10)    # the stream's window is 1 MiB by then

    def setUp(self):
        super().setUp()
        self.up = H2Upstream()
        self._closers.append(self.up.close)
        # one worker: one HTTP/2 connection to the service, while it has room
        self.f = self.ferry({"svc": {"endpoints": [self.up.address], "protocol": "h2",
                                     "retries": {"max": 0},
                                     "timeouts": {"request": "60s"}}}, workers=1)

    def big_sent(self):
        with self.up.lock:
            return {p: n for p, n in self.up.sent.items() if p and p.startswith("/big-")}

    def wait_paused(self, n):
        """Until the N downloads began and what the service sent them stopped
        growing (their windows spent)."""
        def asked():
            with self.up.lock:
                return len([p for p in self.up.calls if p.startswith("/big-")])
        self.assertTrue(harness.wait_until(lambda: asked() == n, 10),
                        "%d of %d downloads asked for\n%s" % (asked(), n,
                                                              self.f.stderr_tail()))
        last, still = -1, 0
        deadline = time.monotonic() + 15
        while still < 4 and time.monotonic() < deadline:
            time.sleep(0.25)
            total = sum(self.big_sent().values())
            still = still + 1 if total == last else 0
            last = total
        return self.big_sent()

    def assert_small_answered(self, path, within=2.0):
        t0 = time.monotonic()
        try:
            r = self.f.get(path, host="svc", timeout=within + 10)
        except socket.timeout:
            self.fail("no answer to %s in %.0f s while other clients' downloads were "
                      "paused" % (path, within + 10))
        took = time.monotonic() - t0
        self.assertEqual((r.status, r.body), (200, ("fine:%s" % path).encode()))
        self.assertLess(took, within, "%s took %.1f s" % (path, took))

    def assert_sent_at_most(self, sent, limit, what):
        for p, n in sent.items():
            self.assertLessEqual(n, limit, "%s: %d bytes sent to a client %s" % (p, n, what))


    def h2_readers_then_stop(self, n, read_first=True):
        """N downloads in one burst on one HTTP/2 connection (the same
        connection to the service takes them all), whose client lets each
        stream bring READ_FIRST bytes (or none) and then opens no window
        again; what the service sent them once they paused."""
        first = self.READ_FIRST if read_first else 0
        c = self.c = test_h2.H2(self.f.outbound_port, timeout=20, auto=False,
                                settings={0x4: first})
        self._closers.append(c.close)
        c.wait(lambda: c.server_settings is not None, 2)
        c.send_frames(test_h2.hf.SettingsFrame(0, flags={"ACK"}),
                      test_h2.hf.WindowUpdateFrame(0, window_increment=1 << 30))
        self.sids = []
        for i in range(n):
            sid = c.new_sid()
            self.sids.append(sid)
            c.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":authority", "svc"),
                                 (":path", "/big-%d/b%d" % (self.SIZE_MIB, i))],
                           end_stream=True)
        if first:
            t0 = time.monotonic()
            if not c.wait(lambda: all(len(c.streams[sid].body) >= first
                                      for sid in self.sids), 30):
                short = {sid: (len(c.streams[sid].body), c.streams[sid].reset)
                         for sid in self.sids if len(c.streams[sid].body) < first}
                self.fail("after %.1f s, %d of %d streams had less than their first %d "
                          "bytes (stream: bytes, reset) %r; the service sent (path: bytes) %r; "
                          "%d connections to it, ended early by %r; client closed=%r goaways=%r\n%s"
                          % (time.monotonic() - t0, len(short), n, first, short,
                             self.big_sent(), self.up.connections, self.up.errors,
                             c.closed, c.goaways,
                             self.f.stderr_tail()))
        return self.wait_paused(n)

    def test_http1_clients_that_do_not_read_stall_no_one_else(self):
        for i in range(self.N):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", self.f.outbound_port))
            self._closers.append(s.close)
            s.sendall(b"GET /big-%d/%d HTTP/1.1\r\nHost: svc\r\n\r\n" % (self.SIZE_MIB, i))
        sent = self.wait_paused(self.N)
        # (the kernel's socket buffers take some of each first)
        self.assertLess(sum(sent.values()), self.N * self.SIZE_MIB << 20,
                        "the downloads did not pause")
        for i in range(3):
            self.assert_small_answered("/small%d" % i)
        self.assertTrue(self.f.alive())

    def pause_on_tiny_frames(self, first=1536):
        """A client reads FIRST KiB of a /tiny download (its stream's window
        is 1 MiB by then) and stops; the service fills the window with
        one-byte frames and ends. Returns the socket, what it read, the
        window filled and ferry's RssAnon growth meanwhile (KiB)."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.settimeout(30)
        s.connect(("127.0.0.1", self.f.outbound_port))
        self._closers.append(s.close)
        path = "/tiny-%d/0" % first
        s.sendall(b"GET %s HTTP/1.1\r\nHost: svc\r\n\r\n" % path.encode())
        raw = bytearray()
        while raw.find(b"\r\n\r\n") < 0 or \
                raw[raw.find(b"\r\n\r\n"):].count(b"z") < first << 10:
            data = s.recv(65536)
            self.assertTrue(data, "the download ended early")
            raw += data
        time.sleep(0.5)     # ferry's window updates reach the service
        pid = self.f.proc.pid
        before = harness.anon_kib(pid)
        self.up.tiny_gate.set()
        self.assertTrue(harness.wait_until(lambda: path in self.up.tiny, 60),
                        "the service sent %r" % self.up.tiny)
        # sent is not read: the frames may wait in ferry's socket buffer
        # (up to tcp_rmem's 32 MiB on some kernels), and while ferry
        # moves them into the client's socket its RSS stays still
        self.assertTrue(harness.wait_until(lambda: unread_from(self.up.port) == 0, 30),
                        "ferry left %d bytes of the service's unread" % unread_from(self.up.port))
        last, still = -1, 0
        deadline = time.monotonic() + 30
        while still < 4 and time.monotonic() < deadline:
            time.sleep(0.25)
            now = harness.anon_kib(pid)
            still, last = (still + 1 if now == last else 0), now
        window = self.up.tiny[path]
        self.assertGreaterEqual(window, 512 << 10)
        return s, raw, window, last - before

    def test_tiny_frames_wait_for_a_slow_http1_client_without_their_framing(self):
        # an HTTP/1.1 client gets an HTTP/2 service's unsized body chunked;
        # when it stops reading, the DATA frames that still come wait in
        # ferry as their data, sent as one chunk once it reads again, not
        # as a chunk each: with one-byte frames that framing was six bytes
        # a byte, about 6 MiB for a stream's 1 MiB window (1.6 MiB more
        # held here before, 0.6 after, beside what the kernel took)
        first = 1536
        s, raw, window, grew = self.pause_on_tiny_frames(first)
        if not harness.sanitized(self.f.proc.pid):
            self.assertLess(grew, 1152, "%d KiB more held for a paused stream of one-byte "
                            "frames (window %d)" % (grew, window))
        # the client reads again: the body whole
        while not raw.endswith(b"\r\n0\r\n\r\n"):
            data = s.recv(1 << 20)
            if not data:
                break
            raw += data
        raw = bytes(raw)
        at = raw.index(b"\r\n\r\n") + 4
        self.assertIn(b"transfer-encoding: chunked", raw[:at].lower())
        body, sizes = [], []
        while True:
            eol = raw.index(b"\r\n", at)
            k = int(raw[at:eol], 16)
            sizes.append(k)
            at = eol + 2
            if k == 0:
                break
            body.append(raw[at:at + k])
            self.assertEqual(raw[at + k:at + k + 2], b"\r\n")
            at += k + 2
        self.assertEqual(raw[at:], b"\r\n", "%d bytes" % len(raw))
        self.assertEqual(b"".join(body), b"z" * (first << 10) + b"y" * window)
        # what waited went as one chunk
        self.assertGreater(max(sizes[-100:]), 64 << 10, sizes[-10:])
        self.assertTrue(self.f.alive())

    def test_a_client_gone_with_frames_staged_costs_nothing(self):
        # the client resets while its body's one-byte frames wait staged:
        # they are let go of, and ferry serves on (ASan: no leak, no use
        # after free)
        s, _, _, _ = self.pause_on_tiny_frames()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        self.assert_small_answered("/small-after-reset")
        self.assertTrue(self.f.alive())

    def test_a_client_that_never_reads_holds_one_small_window_a_stream(self):
        # windows shut from the start: each stream's service sends its
        # first window (64 KiB) and the little ferry queues, no more
        sent = self.h2_readers_then_stop(self.N, read_first=False)
        self.assert_sent_at_most(sent, 128 << 10, "that never read")
        self.assert_small_answered("/small-h2")
        self.assertTrue(self.f.alive())

    def test_paused_streams_leave_the_connection_window_open(self):
        # a stream already on the connection (its answer held back) when
        # 30 downloads on the same connection pause, holding more than the
        # connection's window: its body still comes
        with self.f.client(timeout=15) as victim:
            victim.send(b"GET /hold-victim HTTP/1.1\r\nHost: svc\r\n\r\n")
            self.assertTrue(harness.wait_until(lambda: "/hold-victim" in self.up.calls, 5))
            sent = self.h2_readers_then_stop(30)
            self.assertEqual(self.up.connections, 1, "the downloads went elsewhere")
            t0 = time.monotonic()
            self.up.gate.set()
            try:
                r = victim.read_response("GET")
            except socket.timeout:
                self.fail("the held answer did not come in 15 s (%d bytes held for the "
                          "paused streams)" % sum(sent.values()))
            took = time.monotonic() - t0
        self.assertEqual((r.status, r.body), (200, b"fine:/hold-victim"))
        self.assertLess(took, 2.0, "the held answer took %.1f s" % took)
        # more than the connection's window is held beyond what the client
        # read, and it stays open
        held = sum(sent.values()) - 30 * self.READ_FIRST
        self.assertGreater(held, 16 << 20)

    def test_a_worker_grows_windows_within_a_bound(self):
        # 120 downloads whose client reads the first 1.25 MiB of each, then
        # stops: every stream's window had grown to 1 MiB (79 MB held
        # before); the worker grows its streams' windows by 64 MiB in all,
        # the others keep their first (49 MB held)
        n = 120
        sent = self.h2_readers_then_stop(n)
        got = {"/big-%d/b%d" % (self.SIZE_MIB, i): len(self.c.streams[sid].body)
               for i, sid in enumerate(self.sids)}
        held = sum(sent.values()) - sum(got.values())
        self.assertLess(held, (64 << 20) + n * (64 << 10), "%d bytes held" % held)
        self.assertGreater(held, 16 << 20, "only %d bytes held" % held)

    def test_at_the_pool_bound_a_connection_holding_much_still_takes_streams(self):
        # with pool.max_per_endpoint 1 no second connection may open: the
        # one holding over 8 MiB for paused downloads takes the request
        # (it got 503 "pool is full" after the connect timeout)
        f = self.f = self.ferry({"svc": {"endpoints": [self.up.address], "protocol": "h2",
                                         "retries": {"max": 0},
                                         "pool": {"max_per_endpoint": 1},
                                         "timeouts": {"request": "60s"}}}, workers=1)
        sent = self.h2_readers_then_stop(16)
        got = sum(len(self.c.streams[sid].body) for sid in self.sids)
        self.assertGreater(sum(sent.values()) - got, 8 << 20)
        self.assert_small_answered("/small-at-bound")
        self.assertEqual(self.up.connections, 1)
        self.assertTrue(f.alive())

    def test_a_connection_holding_much_takes_no_new_streams(self):
        # 40 downloads on one connection to the service pause one after
        # another, each past its first MiB (the last ones read while the
        # first hold theirs): each holds at most its window, and a new
        # request goes on another connection
        n = 40
        sent = self.h2_readers_then_stop(n)
        self.assertEqual(self.up.connections, 1)
        got = {"/big-%d/b%d" % (self.SIZE_MIB, i): len(self.c.streams[sid].body)
               for i, sid in enumerate(self.sids)}
        for p, n in sent.items():
            self.assertLessEqual(n - got[p], (1 << 20) + (256 << 10),
                                 "%s: %d bytes held, past its 1 MiB window" % (p, n - got[p]))
        held = sum(sent.values()) - sum(got.values())
        self.assertGreater(held, 16 << 20, "only %d bytes held" % held)
        self.assert_small_answered("/small-after-40")
        self.assertEqual(self.up.connections, 2)
        # the client reads again: every download resumes and ends whole
        self.c.auto = True
        self.c.send_frames(test_h2.hf.WindowUpdateFrame(0, window_increment=1 << 30))
        for sid in self.sids:
            self.c.send_frames(test_h2.hf.WindowUpdateFrame(sid, window_increment=1 << 24))
        for sid in self.sids:
            st = self.c.response(sid, timeout=60)
            self.assertEqual((st.status, len(st.body)), (200, self.SIZE_MIB << 20))
            self.assertEqual(bytes(st.body).count(0), self.SIZE_MIB << 20)


if __name__ == "__main__":
    harness.main()
