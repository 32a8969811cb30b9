"""HTTP/2 to a service (SPEC §12 Upstream) against a hostile or broken
HTTP/2 server: a real h2c server (python3-h2) on loopback that resets
streams, sends GOAWAY, garbage or header blocks over ferry's limits, or
closes mid-body. ferry answers each request as SPEC §7 says, re-sends
what the server never processed, keeps serving, and never crashes."""

import json
import socket
import subprocess
import sys
import threading
import time

import harness

harness.need_python_h2()
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402
import h2.exceptions  # noqa: E402

from harness import FerryTestCase, LOOPBACK


class H2Upstream:
    """A threaded h2c server; how it answers depends on the :path."""

    def __init__(self):
        self.paths = []
        self.headers = {}           # :path -> the request's fields
        self.connections = 0
        self.lock = threading.Lock()
        self.sock = harness.bound_socket(reuseaddr=True)
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.address = "%s:%d" % (LOOPBACK, self.port)
        self.stopping = threading.Event()
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def close(self):
        self.stopping.set()
        self.sock.close()

    def accept_loop(self):
        while not self.stopping.is_set():
            try:
                s, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.connections += 1
                first = self.connections == 1
            threading.Thread(target=self.serve, args=(s, first), daemon=True).start()

    def serve(self, s, first):
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8",
                                        validate_outbound_headers=False)
        conn = h2.connection.H2Connection(config=cfg)
        conn.initiate_connection()
        s.settimeout(5)
        try:
            s.sendall(conn.data_to_send())
            paths = {}
            while not self.stopping.is_set():
                data = s.recv(65536)
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        path = dict(ev.headers)[":path"]
                        paths[ev.stream_id] = path
                        with self.lock:
                            self.paths.append(path)
                            self.headers[path] = dict(ev.headers)
                        if path == "/goaway" and first:
                            # nothing processed: the request may go again
                            conn.close_connection(error_code=0, last_stream_id=0)
                            s.sendall(conn.data_to_send())
                            return
                        if path == "/garbage":
                            s.sendall(b"\x00\x00\x08\x07\x00\x00\x00\x00\x00junkjunk" * 4)
                            return
                        if path == "/rst":
                            conn.reset_stream(ev.stream_id, error_code=2)
                    elif isinstance(ev, h2.events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        if not self.answer(s, conn, ev.stream_id, paths.get(ev.stream_id)):
                            return
                s.sendall(conn.data_to_send())
        except (OSError, h2.exceptions.ProtocolError):
            pass
        finally:
            s.close()

    def answer(self, s, conn, sid, path):
        """False: the connection is to end now."""
        if path in ("/rst", None):
            return True
        if path.startswith("/slow"):
            time.sleep(1.0)     # past the caller's deadline
        if path == "/bigheaders":
            conn.send_headers(sid, [(":status", "200")] +
                              [("x-h%03d" % i, "v" * 40) for i in range(150)], end_stream=True)
        elif path == "/cut":
            conn.send_headers(sid, [(":status", "200"), ("content-length", "1000")])
            conn.send_data(sid, b"x" * 100)
            s.sendall(conn.data_to_send())
            return False
        else:
            conn.send_headers(sid, [(":status", "200"), ("content-type", "text/plain")])
            conn.send_data(sid, b"fine:" + path.encode())
            conn.send_headers(sid, [("grpc-status", "0")] if path.endswith("grpc") else
                              [("x-trailer", "t1")], end_stream=True)
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

    def test_polite_h2c_with_trailers_as_last_chunk(self):
        with self.f.client() as c:
            for i in range(5):
                r = c.request("GET", "/ok%d" % i, [("Host", "svc")])
                self.assertEqual((r.status, r.body), (200, ("fine:/ok%d" % i).encode()))
                # no length from the server: chunked for HTTP/1.1
                self.assertEqual(r.header("transfer-encoding"), "chunked")
        self.assertEqual(self.up.connections, 1, "five requests, one HTTP/2 connection")

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

    def test_garbage_is_502(self):
        r = self.get("/garbage")
        self.assert_ferry_error(r, 502, "SERVICE_ERROR")
        self.assert_still_serves()

    def test_header_block_over_the_limits_is_502(self):
        r = self.get("/bigheaders")
        self.assert_ferry_error(r, 502, "SERVICE_ERROR")
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


if __name__ == "__main__":
    harness.main()
