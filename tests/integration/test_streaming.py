"""Bodies, framing, 1xx, upgrades (SPEC §6 Streaming, Expect: 100-continue)."""

import base64
import os
import hashlib
import socket
import threading
import time

import harness
from harness import (FerryTestCase, build_request, chunked, chunked_body, close_delimited,
                     informational, large_body, no_body, payload, service, sha256, ws_frame,
                     ws_read_frame, websocket_echo)

BIG = 32 << 20


class StreamingTest(FerryTestCase):

    def setUp(self):
        super().setUp()
        self.up = self.upstream()
        self.f = self.ferry({"svc": service(self.up)})

    def client(self, timeout=harness.IO_TIMEOUT):
        return self.f.client(timeout=timeout)

    # big bodies

    def test_download_32mib_content_length(self):
        self.up.behaviour = large_body(BIG)
        with self.client(timeout=30) as c:
            resp = c.request("GET", "/big", [("Host", "svc")])
        self.assertEqual(resp.status, 200)
        self.assertEqual(len(resp.body), BIG)
        self.assertEqual(sha256(resp.body), sha256(payload(BIG)))

    def test_download_32mib_chunked(self):
        self.up.behaviour = large_body(BIG, chunked=True, seed=3)
        with self.client(timeout=30) as c:
            resp = c.request("GET", "/big", [("Host", "svc")])
            self.assertEqual(resp.status, 200)
            self.assertEqual(sha256(resp.body), sha256(payload(BIG, 3)))
            # the connection is still usable: the body ended where it should
            self.assertEqual(c.request("GET", "/after", [("Host", "svc")]).status, 200)

    def test_upload_32mib(self):
        data = payload(BIG, 5)
        with self.client(timeout=30) as c:
            resp = c.request("PUT", "/up", [("Host", "svc"), ("Content-Type",
                                            "application/octet-stream")], data)
        self.assertEqual(resp.status, 200)
        echoed = resp.json()
        self.assertEqual(echoed["body_len"], BIG)
        self.assertEqual(echoed["body_sha256"], sha256(data))

    def test_upload_32mib_chunked(self):
        data = payload(BIG, 6)
        parts = [data[i:i + (1 << 20)] for i in range(0, BIG, 1 << 20)]
        with self.client(timeout=30) as c:
            c.send(build_request("POST", "/up", [("Host", "svc"), ("Transfer-Encoding", "chunked")]))
            for part in parts:
                c.send(b"%x\r\n" % len(part) + part + b"\r\n")
            c.send(b"0\r\n\r\n")
            resp = c.read_response()
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.json()["body_sha256"], sha256(data))

    def test_slow_reader_memory_bounded(self):
        """Back-pressure: a client that does not read must not make ferry
        buffer the whole 64 MiB response."""
        size = 64 << 20
        self.up.behaviour = large_body(size, seed=9)
        rss_before = harness.anon_kib(self.f.proc.pid)
        with self.client(timeout=30) as c:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            c.send(build_request("GET", "/big", [("Host", "svc")]))
            time.sleep(2.0)             # the upstream pushes as fast as it can meanwhile
            grown = harness.anon_kib(self.f.proc.pid) - rss_before
            resp = c.read_response()
        self.assertEqual(sha256(resp.body), sha256(payload(size, 9)))
        self.assertLess(grown, 24 * 1024, "ferry grew by %d KiB while the client stalled" % grown)

    def test_1gib_download_bounded_rss(self):
        """Issue 3: a 1 GiB download through ferry (mTLS upstream) does not
        grow its RSS by more than a few MiB."""
        block = payload(1 << 20, 21)
        total = 1 << 30

        def gigabyte(conn, req):
            conn.head(200, [("Content-Type", "application/octet-stream"),
                            ("Content-Length", str(total))])
            for _ in range(total // len(block)):
                conn.send(block)
        self.up.behaviour = gigabyte
        pid = self.f.proc.pid
        rss_before = harness.anon_kib(pid)
        peak = [rss_before]
        done = threading.Event()

        def sample():
            while not done.wait(0.1):
                peak[0] = max(peak[0], harness.anon_kib(pid))
        sampler = threading.Thread(target=sample)
        sampler.start()
        got, digest = 0, hashlib.sha256()
        try:
            with self.client(timeout=60) as c:
                c.send(build_request("GET", "/gig", [("Host", "svc")]))
                head = c.reader.read_until(b"\r\n\r\n")
                self.assertTrue(head.startswith(b"HTTP/1.1 200"), head[:100])
                got = len(c.reader.buf)
                digest.update(c.reader.buf)
                while got < total:
                    data = c.sock.recv(1 << 20)
                    if not data:
                        break
                    got += len(data)
                    digest.update(data)
        finally:
            done.set()
            sampler.join()
        expect = hashlib.sha256()
        for _ in range(total // len(block)):
            expect.update(block)
        self.assertEqual(got, total)
        self.assertEqual(digest.hexdigest(), expect.hexdigest())
        grown = peak[0] - rss_before
        self.assertLess(grown, 8 * 1024, "ferry grew by %d KiB during 1 GiB" % grown)

    # chunked and trailers

    def test_chunked_request_with_trailers(self):
        body = chunked_body([b"hello ", b"chunked ", b"world"], [("X-Checksum", "abc123")])
        with self.client() as c:
            c.send(build_request("POST", "/t", [("Host", "svc"), ("Transfer-Encoding", "chunked"),
                                                ("Trailer", "X-Checksum")]) + body)
            resp = c.read_response()
        self.assertEqual(resp.status, 200)
        req = self.up.last
        self.assertEqual(req.body, b"hello chunked world")
        self.assertIn(("X-Checksum", "abc123"), req.trailers)

    def test_chunked_response_with_trailers(self):
        self.up.behaviour = chunked([b"one ", b"two ", b"three"], [("X-Trailer", "done")],
                                    headers=[("Content-Type", "text/plain")])
        with self.client() as c:
            resp = c.request("GET", "/", [("Host", "svc"), ("TE", "trailers")])
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.framing, "chunked")
        self.assertEqual(resp.body, b"one two three")
        self.assertEqual(resp.trailers, [("X-Trailer", "done")])

    def test_response_delimited_by_close(self):
        body = payload(300 * 1024, 11)
        self.up.behaviour = close_delimited(body, [("Content-Type", "application/octet-stream")])
        with self.client() as c:
            resp = c.request("GET", "/", [("Host", "svc")])
            self.assertEqual(resp.status, 200)
            self.assertEqual(sha256(resp.body), sha256(body))
        # the pooled connection died with that response; the next request must not fail
        self.up.behaviour = harness.echo()
        self.assertEqual(self.f.get("/", host="svc").status, 200)

    # 1xx

    def test_expect_100_continue(self):
        with self.client() as c:
            c.send(build_request("POST", "/e", [("Host", "svc"), ("Expect", "100-continue"),
                                                ("Content-Length", "11")]))
            interim = c.reader.read_until(b"\r\n\r\n")
            self.assertIsNotNone(interim)
            self.assertRegex(interim, rb"^HTTP/1\.1 100 ")
            c.send(b"hello world")
            resp = c.read_response("POST")
        self.assertEqual(resp.status, 200)
        req = self.up.last
        self.assertEqual(req.body, b"hello world")
        self.assertEqual(req.header_all("expect"), [])

    def test_informational_response_forwarded(self):
        self.up.behaviour = informational(103, [("Link", "</style.css>; rel=preload")])
        with self.client() as c:
            resp = c.request("GET", "/", [("Host", "svc")])
            self.assertEqual(resp.status, 200)
            self.assertEqual([r.status for r in resp.interim], [103])
            self.assertEqual(resp.interim[0].header("link"), "</style.css>; rel=preload")
            self.assertEqual(c.request("GET", "/", [("Host", "svc")]).status, 200)

    # responses without a body

    def test_head_has_no_body(self):
        self.up.behaviour = no_body(200, [("Content-Length", "1234"), ("Content-Type", "text/plain")])
        with self.client() as c:
            resp = c.request("HEAD", "/", [("Host", "svc")])
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.header("content-length"), "1234")
            self.up.behaviour = harness.echo()
            after = c.request("GET", "/after", [("Host", "svc")])
        self.assertEqual(after.status, 200)
        self.assertEqual(after.json()["target"], "/after")

    def test_204_and_304_have_no_body(self):
        for status, headers in ((204, []), (304, [("ETag", '"v1"')])):
            with self.subTest(status=status):
                self.up.behaviour = no_body(status, headers)
                with self.client() as c:
                    resp = c.request("GET", "/", [("Host", "svc")])
                    self.assertEqual(resp.status, status)
                    self.assertIsNone(resp.header("transfer-encoding"))
                    self.up.behaviour = harness.echo()
                    after = c.request("GET", "/after", [("Host", "svc")])
                self.assertEqual(after.status, 200)
                self.assertEqual(after.json()["target"], "/after")

    # upgrade tunnel

    def test_websocket_echo_through_tunnel(self):
        self.up.behaviour = websocket_echo()
        key = base64.b64encode(os.urandom(16)).decode()
        with self.client() as c:
            resp = c.request("GET", "/ws", [("Host", "svc"), ("Upgrade", "websocket"),
                                            ("Connection", "Upgrade"),
                                            ("Sec-WebSocket-Key", key),
                                            ("Sec-WebSocket-Version", "13")])
            self.assertEqual(resp.status, 101, resp.body[:200])
            self.assertEqual(resp.header("sec-websocket-accept"), harness.ws_accept(key))
            self.assertTrue(resp.has_token("upgrade", "websocket"))
            self.assertTrue(resp.has_token("connection", "upgrade"))
            c.send(ws_frame(0x1, b"hello ferry", mask=True))
            self.assertEqual(ws_read_frame(c.reader)[1:3], (0x1, b"hello ferry"))
            big = payload(200 * 1024, 13)
            c.send(ws_frame(0x2, big, mask=True))
            self.assertEqual(ws_read_frame(c.reader)[1:3], (0x2, big))
            c.send(ws_frame(0x8, b"\x03\xe8", mask=True))
            self.assertEqual(ws_read_frame(c.reader)[1], 0x8)
        req = self.up.last
        self.assertTrue(req.has_token("upgrade", "websocket"))
        self.assertTrue(req.has_token("connection", "upgrade"))
        self.assertEqual([f[:2] for f in self.up.ws_frames],
                         [(0x1, b"hello ferry"), (0x2, big), (0x8, b"\x03\xe8")])

    def test_websocket_tunnel_outlives_request_timeout(self):
        self.up.behaviour = websocket_echo()
        f = self.ferry({"svc": service(self.up, timeouts={"request": "500ms",
                                                          "stream_idle": "3s"})})
        with f.client() as c:
            resp = c.request("GET", "/ws", [("Host", "svc"), ("Upgrade", "websocket"),
                                            ("Connection", "Upgrade"),
                                            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                                            ("Sec-WebSocket-Version", "13")])
            self.assertEqual(resp.status, 101)
            for i in range(3):
                time.sleep(0.6)
                c.send(ws_frame(0x1, b"tick %d" % i, mask=True))
                self.assertEqual(ws_read_frame(c.reader)[2], b"tick %d" % i)


class EarlyAnswer(harness.LoopbackServer):
    """Answers SIZE bytes as soon as a request head is in, and takes the
    request body meanwhile (a streaming server: the answer does not wait
    for the request's end)."""

    def __init__(self, size):
        self.size = size
        self.body_bytes = 0
        super().__init__()

    def serve(self, sock, n):
        sock.settimeout(10)
        r = harness.Reader(sock)

        def take_body():
            try:
                while r.fill():
                    self.body_bytes += len(r.buf)
                    r.buf.clear()
            except OSError:
                pass

        try:
            head = r.read_until(b"\r\n\r\n")
            if head is None:
                return
            self.body_bytes = len(r.buf)
            r.buf.clear()
            threading.Thread(target=take_body, daemon=True).start()
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % self.size)
            sock.sendall(payload(self.size, 21))
        except OSError:
            pass


class ResponseBeforeRequestEnd(FerryTestCase):

    def test_response_streams_on_while_the_request_body_comes(self):
        """A response that streams while the client still uploads: once
        the client stopped reading a moment, its drain must resume the
        upstream (it stalled until stream_idle cut it)."""
        size = 16 << 20
        up = EarlyAnswer(size)
        self._closers.append(up.close)
        f = self.ferry({"svc": service(up.port, timeouts={"stream_idle": "2s"})}, workers=1)
        with f.client(timeout=10) as c:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            c.send(build_request("POST", "/duplex", [("Host", "svc"),
                                                     ("Content-Length", str(1 << 20))]))
            c.send(bytes(100000))
            # not reading: ferry's output to the client passes its high mark
            time.sleep(1.0)
            head = c.reader.read_until(b"\r\n\r\n")
            self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
            start = time.monotonic()
            try:
                body = c.reader.read_exact(size)
            except harness.IncompleteMessage as e:
                harness.wait_until(lambda: f.access_log(), 3)
                self.fail("cut after %.1fs, %d of %d bytes; access log %r" % (
                    time.monotonic() - start, len(e.partial), size,
                    [(l.get("status"), l.get("error")) for l in f.access_log()]))
            self.assertTrue(body == payload(size, 21), "body changed on the way")
            # the rest of the request still goes up
            c.send(bytes((1 << 20) - 100000))
        self.assertTrue(f.alive())


if __name__ == "__main__":
    harness.main()
