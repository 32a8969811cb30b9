"""Inbound to an h2c local app (SPEC §12 `local_app_protocol: h2c`, §3):
peers reach ferry's TLS listener over HTTP/1.1 or HTTP/2 (ALPN), and ferry
speaks HTTP/2 with prior knowledge to the local app, a real python3-h2
server on loopback that records every field, body byte and trailer it
gets. The §5 inbound headers, §7 errors (JSON and gRPC form), §8/§6
timeouts and limits hold as on the http1 path; streams share a connection."""

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time

import harness

harness.need_python_h2()
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402
import h2.exceptions  # noqa: E402

from harness import FerryTestCase, Reader, build_request, free_port, pki, read_response, wait_until
from test_h2 import H2, hname  # noqa: E402  (the frame-level HTTP/2 client)

KEY = "h2c-inbound-key-0123456789"
CONNECTION_SPECIFIC = {"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                       "upgrade", "host"}


class Seen:
    """One request as the local app got it."""

    def __init__(self, conn_id, headers):
        self.conn_id = conn_id
        self.headers = headers          # [(name, value)], pseudo-headers first
        self.body = bytearray()
        self.trailers = []
        self.ended = False
        self.reset = None               # RST_STREAM error code ferry sent

    def header(self, name):
        return [v for n, v in self.headers if n == name]

    @property
    def path(self):
        return self.header(":path")[0]


class H2cApp(harness.LoopbackServer):
    """A threaded h2c server (prior knowledge). How it answers depends on
    the :path: /slow never answers, /late answers a second later, /grpc/... answers as gRPC (status from
    the path: /grpc/status/N), /len answers with a content-length, the rest
    echo the body with a trailer."""

    def __init__(self, port=None):
        self.seen = []
        self.closed = 0                 # connections that ended
        self.conns = []
        super().__init__(port)

    def close(self):
        """Stop listening and end every connection (a dead app)."""
        super().close()
        with self.lock:
            conns = list(self.conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def by_path(self, path):
        with self.lock:
            return [r for r in self.seen if r.path == path]

    def accepted(self, s, n):
        self.conns.append(s)

    def serve(self, s, conn_id):
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        conn = h2.connection.H2Connection(config=cfg)
        conn.initiate_connection()
        streams = {}
        conn.later = []                 # (when, stream id, Seen): /late answers
        s.settimeout(0.1)
        try:
            harness.send_all(s, conn.data_to_send())
            while not self.stopping.is_set():
                try:
                    data = s.recv(65536)
                except socket.timeout:
                    data = None
                if data == b"":
                    return
                for ev in conn.receive_data(data) if data else ():
                    if isinstance(ev, h2.events.RequestReceived):
                        r = streams[ev.stream_id] = Seen(conn_id, list(ev.headers))
                        with self.lock:
                            self.seen.append(r)
                    elif isinstance(ev, h2.events.DataReceived):
                        streams[ev.stream_id].body += ev.data
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.TrailersReceived):
                        streams[ev.stream_id].trailers = list(ev.headers)
                    elif isinstance(ev, h2.events.StreamReset):
                        if ev.stream_id in streams:
                            streams[ev.stream_id].reset = ev.error_code
                    elif isinstance(ev, h2.events.StreamEnded):
                        r = streams[ev.stream_id]
                        r.ended = True
                        self.answer(conn, ev.stream_id, r)
                due = [a for a in conn.later if a[0] <= time.monotonic()]
                for a in due:
                    conn.later.remove(a)
                    self.answer(conn, a[1], a[2], late=False)
                harness.send_all(s, conn.data_to_send())
        except (OSError, h2.exceptions.ProtocolError):
            pass
        finally:
            s.close()
            with self.lock:
                self.closed += 1

    def answer(self, conn, sid, r, late=True):
        path = r.path
        if path.startswith("/slow"):
            return
        if path.startswith("/late") and late:
            conn.later.append((time.monotonic() + 1.0, sid, r))
            return
        m = re.match(r"^/grpc/status/(\d+)$", path)
        if m and m.group(1) != "0":
            # trailers-only, the server's own error with details
            conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc"),
                                    ("grpc-status", m.group(1)),
                                    ("grpc-message", "no such order"),
                                    ("grpc-status-details-bin", "AAEC")], end_stream=True)
        elif path.startswith("/grpc/"):
            conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc"),
                                    ("x-app-meta", "from-app")])
            conn.send_data(sid, bytes(r.body))      # echo the message(s)
            conn.send_headers(sid, [("grpc-status", "0"), ("x-app-trailer", "t-grpc")],
                              end_stream=True)
        elif path == "/len":
            body = b"with a length"
            conn.send_headers(sid, [(":status", "201"), ("content-length", str(len(body)))])
            conn.send_data(sid, body, end_stream=True)
        else:
            conn.send_headers(sid, [(":status", "200"), ("content-type", "text/plain"),
                                    ("x-app", "h2c")])
            conn.send_data(sid, b"got:" + path.encode() + b":" + bytes(r.body))
            conn.send_headers(sid, [("x-app-trailer", "t1")], end_stream=True)


class InboundH2cTest(FerryTestCase):

    def start(self, app_address=None, inbound_extra=None, workers=1):
        p = pki()
        self.port = free_port()
        inbound = {
            "address": "127.0.0.1:%d" % self.port,
            "tls": {"cert": p.server.cert, "key": p.server.key, "client_ca": p.ca.cert},
            "auth": {"keys_env": ["IN_KEY"]},
            "local_app": app_address or self.app.address,
            "local_app_protocol": "h2c",
        }
        inbound.update(inbound_extra or {})
        self.f = self.ferry({}, env={"IN_KEY": KEY}, workers=workers,
                            listeners={"inbound": inbound})
        return self.f

    def setUp(self):
        super().setUp()
        self.app = H2cApp()
        self._closers.append(self.app.close)

    def connect(self, alpn):
        p = pki()
        ctx = ssl.create_default_context(cafile=p.ca.cert)
        ctx.check_hostname = False
        ctx.load_cert_chain(p.client.cert, p.client.key)
        ctx.set_alpn_protocols(alpn)
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.port), timeout=5),
                            server_hostname="backend")
        self._closers.append(s.close)
        self.assertEqual(s.selected_alpn_protocol(), alpn[0])
        return s

    def h1(self, method, target, headers=(), body=b"", raw=None):
        s = self.connect(["http/1.1"])
        try:
            s.sendall(raw if raw is not None else
                      build_request(method, target, [("Host", "order-service"),
                                                     ("x-service-auth", KEY), *headers], body))
            return read_response(Reader(s), method)
        finally:
            s.close()

    def h2(self):
        return H2(sock=self.connect(["h2"]))

    def assert_inbound_fields(self, seen, path, method="GET"):
        """SPEC §5 inbound, as HTTP/2 fields the local app got."""
        self.assertEqual(seen.header(":method"), [method])
        self.assertEqual(seen.header(":path"), [path])
        self.assertEqual(seen.header(":scheme"), ["http"], "h2c to the local app")
        self.assertEqual(seen.header(":authority"), ["order-service"])
        self.assertEqual(seen.header("x-ferry-peer"), ["spiffe://test/app"])
        self.assertEqual(seen.header("x-forwarded-proto"), ["https"])
        self.assertEqual(seen.header("x-forwarded-for"), ["127.0.0.1"])
        self.assertEqual(seen.header("x-service-auth"), [], "the key reached the app")
        self.assertRegex(", ".join(seen.header("via")), r"1\.1 ferry-[0-9a-f]{8}-in$")
        self.assertEqual(len(seen.header("x-request-id")), 1)
        self.assertEqual(len(seen.header("traceparent")), 1)
        names = [n for n, _ in seen.headers]
        self.assertFalse(CONNECTION_SPECIFIC & set(names), names)
        self.assertEqual(names, [n.lower() for n in names])

    # -- the two ways in --

    def test_http11_peer_reaches_h2c_app(self):
        self.start()
        body = b'{"item":42}'
        resp = self.h1("POST", "/orders?x=1", [("x-correlation-id", "h2c-1"),
                                               ("X-Ferry-Peer", "spiffe://evil/admin"),
                                               ("Content-Type", "application/json"),
                                               ("Connection", "keep-alive, x-hop"),
                                               ("x-hop", "dropped")], body)
        self.assertEqual(resp.status, 200, resp.body[:300])
        seen = self.app.by_path("/orders?x=1")
        self.assertEqual(len(seen), 1)
        seen = seen[0]
        self.assert_inbound_fields(seen, "/orders?x=1", "POST")
        self.assertEqual(seen.header("x-correlation-id"), ["h2c-1"])
        self.assertEqual(seen.header("content-type"), ["application/json"])
        self.assertEqual(seen.header("x-hop"), [], "a header Connection named passed")
        self.assertEqual(bytes(seen.body), body)
        # what the peer got: the app's answer, its trailer in the last chunk
        self.assertEqual(resp.body, b"got:/orders?x=1:" + body)
        self.assertEqual(resp.header("x-app"), "h2c")
        self.assertEqual(resp.header("x-correlation-id"), "h2c-1")
        self.assertEqual(resp.header("transfer-encoding"), "chunked")
        self.assertIn(("x-app-trailer", "t1"), resp.trailers)
        # a response with a length keeps it
        resp = self.h1("GET", "/len")
        self.assertEqual((resp.status, resp.body, resp.header("content-length")),
                         (201, b"with a length", "13"))

    def test_http11_chunked_request_with_trailers_translated(self):
        """HTTP/1.1 chunks become DATA frames; the request's trailers a
        trailing HEADERS frame (RFC 9113 §8.1)."""
        self.start()
        raw = (b"POST /up HTTP/1.1\r\nHost: order-service\r\nx-service-auth: " + KEY.encode() +
               b"\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc123\r\n\r\n")
        resp = self.h1("POST", "/up", raw=raw)
        self.assertEqual(resp.status, 200, resp.body[:300])
        seen = self.app.by_path("/up")[0]
        self.assertEqual(bytes(seen.body), b"hello world")
        self.assertEqual(seen.trailers, [("x-checksum", "abc123")])
        self.assertEqual(seen.header("te"), ["trailers"])
        self.assertEqual(resp.body, b"got:/up:hello world")
        # without trailers the stream simply ends with the last DATA
        raw = (b"POST /up2 HTTP/1.1\r\nHost: order-service\r\nx-service-auth: " + KEY.encode() +
               b"\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        self.assertEqual(self.h1("POST", "/up2", raw=raw).status, 200)
        seen = self.app.by_path("/up2")[0]
        self.assertEqual((bytes(seen.body), seen.trailers, seen.ended), (b"abc", [], True))

    def test_h2_peer_reaches_h2c_app_streams_share_a_connection(self):
        self.start()
        c = self.h2()
        sids = [c.request("/s/%d" % i, authority="order-service", method="POST",
                          headers=[("x-service-auth", KEY), ("x-correlation-id", "h2-%d" % i)],
                          body=b"b%d" % i) for i in range(8)]
        for i, sid in enumerate(sids):
            st = c.response(sid)
            self.assertEqual(st.status, 200, st.headers)
            self.assertEqual(bytes(st.body), b"got:/s/%d:b%d" % (i, i))
            self.assertEqual(st.trailers, [("x-app-trailer", "t1")])
            self.assertEqual(hname(st.headers, "x-correlation-id"), ["h2-%d" % i])
            seen = self.app.by_path("/s/%d" % i)[0]
            self.assert_inbound_fields(seen, "/s/%d" % i, "POST")
        # and HTTP/1.1 peers, many connections at once
        threads = [threading.Thread(target=lambda i=i: self.h1("GET", "/p/%d" % i))
                   for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(self.app.seen), 16)
        self.assertEqual(self.app.connections, 1, "one worker, one h2c connection")
        self.assertEqual({r.conn_id for r in self.app.seen}, {1})
        m = self.f.admin("/metrics").body.decode()
        self.assertRegex(m, r'ferry_requests_total\{direction="inbound",service="local_app",'
                            r'code="200"\} 16\b')
        self.assertRegex(m, r'ferry_upstream_connections_opened_total\{service="local_app"\} 1\b')

    def test_key_still_checked_before_the_app(self):
        self.start()
        resp = self.h1("GET", "/nokey", raw=build_request("GET", "/nokey",
                                                          [("Host", "order-service")]))
        self.assert_ferry_error(resp, 403, "INVALID_SERVICE_AUTH")
        self.assertEqual(self.app.seen, [])

    # -- gRPC --

    def grpc(self, c, path, headers=(), body=b"\x00\x00\x00\x00\x03abc"):
        sid = c.request(path, authority="order-service", method="POST",
                        headers=[("x-service-auth", KEY), ("content-type", "application/grpc"),
                                 ("te", "trailers"), *headers], body=body)
        return c.response(sid)

    def test_grpc_status_and_trailers_pass_unchanged(self):
        self.start()
        c = self.h2()
        st = self.grpc(c, "/grpc/ok", [("x-client-meta", "from-client")])
        self.assertEqual(st.status, 200)
        self.assertEqual(bytes(st.body), b"\x00\x00\x00\x00\x03abc")
        self.assertEqual(hname(st.headers, "x-app-meta"), ["from-app"])
        self.assertEqual(st.trailers, [("grpc-status", "0"), ("x-app-trailer", "t-grpc")])
        seen = self.app.by_path("/grpc/ok")[0]
        self.assertEqual(seen.header("x-client-meta"), ["from-client"])
        self.assertEqual(seen.header("te"), ["trailers"])
        self.assertEqual(seen.header("content-type"), ["application/grpc"])
        # the server's own error, trailers-only, details and all
        st = self.grpc(c, "/grpc/status/5")
        self.assertEqual(st.status, 200)
        self.assertEqual(hname(st.headers, "grpc-status"), ["5"])
        self.assertEqual(hname(st.headers, "grpc-message"), ["no such order"])
        self.assertEqual(hname(st.headers, "grpc-status-details-bin"), ["AAEC"])
        self.assertEqual(hname(st.headers, "x-ferry-error"), [])
        self.assertTrue(st.ended and not st.body)
        m = self.f.admin("/metrics").body.decode()
        for status in ("0", "5"):
            self.assertIn('ferry_grpc_responses_total{direction="inbound",service="local_app",'
                          'grpc_status="%s"} 1' % status, m)

    def test_grpc_deadline_resets_the_app_stream(self):
        """SPEC §12: grpc-timeout bounds the call to the local app; at the
        deadline its stream is reset (CANCEL) and the peer gets
        DEADLINE_EXCEEDED in the gRPC form."""
        self.start()
        c = self.h2()
        t0 = time.monotonic()
        st = self.grpc(c, "/slow/grpc", [("grpc-timeout", "300m")])
        took = time.monotonic() - t0
        self.assertEqual((st.status, hname(st.headers, "grpc-status"),
                          hname(st.headers, "x-ferry-error")), (200, ["4"], ["SERVICE_TIMEOUT"]))
        self.assertLess(took, 1.5)
        seen = self.app.by_path("/slow/grpc")[0]
        sent = seen.header("grpc-timeout")[0]
        self.assertRegex(sent, r"^\d{8}m$")
        self.assertTrue(0 < int(sent[:-1]) <= 300, sent)
        self.assertTrue(wait_until(lambda: seen.reset is not None, 3), "stream never reset")
        self.assertEqual(seen.reset, 8, "RST_STREAM CANCEL")
        # the connection to the app survives the reset
        st = self.grpc(c, "/grpc/after")
        self.assertEqual(st.trailers[0], ("grpc-status", "0"))
        self.assertEqual(self.app.connections, 1)

    # -- timeouts and errors (SPEC §7, §8 inbound) --

    def test_request_timeout_is_504(self):
        self.start(inbound_extra={"timeouts": {"request": "400ms"}})
        t0 = time.monotonic()
        resp = self.h1("GET", "/slow")
        self.assert_ferry_error(resp, 504, "SERVICE_TIMEOUT", r"local app")
        self.assertLess(time.monotonic() - t0, 2)
        # over h2 and in the gRPC form too
        c = self.h2()
        st = self.grpc(c, "/slow/g")
        self.assertEqual(hname(st.headers, "grpc-status"), ["4"])

    def test_local_app_dead_is_503_and_grpc_unavailable(self):
        dead = harness.bound_socket()      # bound, never listening: refused
        self._closers.append(dead.close)
        addr = "127.0.0.1:%d" % dead.getsockname()[1]
        self.start(app_address=addr)
        resp = self.h1("GET", "/x", [("x-correlation-id", "dead-1")])
        self.assert_ferry_error(resp, 503, "SERVICE_UNAVAILABLE", r"local app.*refused",
                                correlation_id="dead-1")
        c = self.h2()
        st = self.grpc(c, "/pkg.Svc/Call")
        self.assertEqual(st.status, 200)
        self.assertEqual(hname(st.headers, "grpc-status"), ["14"])
        self.assertEqual(hname(st.headers, "x-ferry-error"), ["SERVICE_UNAVAILABLE"])
        self.assertTrue(hname(st.headers, "grpc-message"))
        self.assertTrue(self.f.alive())

    def test_app_dies_mid_call_then_comes_back(self):
        self.start()
        self.assertEqual(self.h1("GET", "/first").status, 200)
        self.app.close()
        self.assertTrue(wait_until(lambda: self.app.closed == self.app.connections, 3))
        port = int(self.app.address.rsplit(":", 1)[1])
        resp = self.h1("GET", "/gone")
        self.assertIn(resp.status, (502, 503), resp.body[:200])
        self.assertEqual(resp.header("content-type"), "application/json")
        # a new app on the same port: ferry opens a new connection
        self.app = H2cApp(port)
        self._closers.append(self.app.close)
        resp = self.h1("GET", "/back")
        self.assertEqual((resp.status, resp.body), (200, b"got:/back:"))

    def test_max_request_body_and_concurrency_limits(self):
        self.start(inbound_extra={"max_request_body": 16, "max_concurrent": 1})
        resp = self.h1("POST", "/big", body=b"x" * 100)
        self.assert_ferry_error(resp, 413, "PAYLOAD_TOO_LARGE")
        self.assertEqual(self.app.by_path("/big"), [])
        # one call in flight; the next is over max_concurrent
        c = self.h2()
        slow = c.request("/slow/1", authority="order-service",
                         headers=[("x-service-auth", KEY)])
        self.assertTrue(wait_until(lambda: self.app.by_path("/slow/1"), 3))
        resp = self.h1("GET", "/second")
        self.assert_ferry_error(resp, 503, "SERVICE_UNAVAILABLE")
        c.reset_stream(slow)

    def test_config_and_reload(self):
        """/config shows it; a reload to another app drops the old h2c
        connection with the old generation, and the new app is reached."""
        f = self.start()
        cfg = json.loads(f.admin("/config").body)
        self.assertEqual(cfg["listeners"]["inbound"]["local_app_protocol"], "h2c")
        self.assertEqual(self.h1("GET", "/before").status, 200)
        app2 = H2cApp()
        self._closers.append(app2.close)
        f.config["listeners"]["inbound"]["local_app"] = app2.address
        with open(f.config_path, "w") as fh:
            fh.write(harness.to_yaml(f.config) + "\n")
        f.signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: self.h1("GET", "/after").body == b"got:/after:"
                                   and app2.by_path("/after"), 5), f.stderr_tail())
        # every peer connection on the old snapshot is gone: so is its
        # connection to the old app
        self.assertTrue(wait_until(lambda: self.app.closed == 1, 5),
                        "the old h2c connection stayed open")
        self.assertEqual(self.h1("GET", "/again").status, 200)
        self.assertTrue(f.alive())


    def test_pipelined_request_after_a_reload_frees_the_old_generation(self):
        """A peer pipelines two requests on one HTTP/1.1 connection; a
        reload comes while the first is at the app. Its answer ends it
        inside the h2c session's callback, and the second then begins on
        the new config, letting go of the old one, the last user of the
        old h2c session: that session must not be torn down under the
        callback still running in it. Both answers arrive, ferry lives."""
        f = self.start()
        s = self.connect(["http/1.1"])
        hdrs = [("Host", "order-service"), ("x-service-auth", KEY)]
        s.sendall(build_request("GET", "/late/1", hdrs) + build_request("GET", "/after", hdrs))
        self.assertTrue(wait_until(lambda: self.app.by_path("/late/1"), 3))
        f.reload(f.config)      # the same file: a new generation all the same
        reader = Reader(s)
        first, second = read_response(reader), read_response(reader)
        self.assertEqual((first.status, first.body), (200, b"got:/late/1:"))
        self.assertEqual((second.status, second.body), (200, b"got:/after:"))
        self.assertTrue(wait_until(lambda: self.app.closed == 1, 5),
                        "the old h2c connection stayed open")
        self.assertEqual(self.h1("GET", "/again").status, 200)
        self.assertTrue(f.alive())


class LocalAppProtocolConfigTest(FerryTestCase):

    def check(self, value):
        p = pki()
        text = ("listeners:\n"
                "  outbound:\n"
                "    address: 127.0.0.1:%d\n"
                "  inbound:\n"
                "    address: 127.0.0.1:%d\n"
                "    tls: { cert: %s, key: %s, client_ca: %s }\n"
                "    local_app: 127.0.0.1:8080\n"
                "    local_app_protocol: %s\n"
                "services: {}\n" % (free_port(), free_port(), p.server.cert, p.server.key,
                                   p.ca.cert, value))
        fd, path = tempfile.mkstemp(prefix="ferry-h2c-", suffix=".yaml")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        self._closers.append(lambda: os.unlink(path))
        return path, subprocess.run([harness.ferry_bin(), "-t", "-c", path], capture_output=True,
                                    text=True, timeout=10, stdin=subprocess.DEVNULL)

    def test_bogus_value_is_an_error_with_position(self):
        path, proc = self.check("bogus")
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertRegex(proc.stderr, r"^%s:8:25: .*\"bogus\".*http1.*h2c" % re.escape(path))
        self.assertEqual(len(proc.stderr.splitlines()), 1, proc.stderr)

    def test_h2c_and_http1_accepted(self):
        for value in ("h2c", "http1"):
            path, proc = self.check(value)
            self.assertEqual(proc.returncode, 0, proc.stderr)


if __name__ == "__main__":
    harness.main()
