"""Compression between sidecars (SPEC §14): app A -> ferry A (outbound,
offers and decodes) -> mTLS -> ferry B (inbound, compresses) -> app B.
What crosses each hop is checked: the bytes app A gets, the headers app B
got, and ferry_compression_bytes_total on both ferries (the body bytes
between the ferries are A's decoder input)."""

import gzip
import json
import random
import re
import subprocess
import threading
import time

import socket
import ssl

import harness
from harness import FerryTestCase, IncompleteMessage, free_port, pki, read_response

harness.need_python_h2()
from test_h2 import H2, hname  # noqa: E402  (the frame-level HTTP/2 client)
from test_inbound_h2c import H2cApp  # noqa: E402  (an h2c app: /grpc/... answers gRPC)

KEY = "compression-mesh-key-0123456789"
ON = {"encodings": ["zstd", "gzip"], "min_size": "1KiB"}


def zstd(data, *args):
    return subprocess.run(["zstd", "-q", "-c", *args], input=data, stdout=subprocess.PIPE,
                          check=True).stdout


def unzstd(data):
    return subprocess.run(["zstd", "-d", "-q", "-c"], input=data, stdout=subprocess.PIPE,
                          check=True).stdout


def big_json(n):
    rows, size, i = [], 0, 0
    while size < n:
        row = {"id": i, "name": "item-%d" % i, "price": (i * 7919) % 10007 / 100,
               "tags": ["t%d" % (i % 13), "k%d" % (i % 7)], "ok": i % 3 == 0}
        rows.append(row)
        size += len(json.dumps(row)) + 2
        i += 1
    return json.dumps(rows).encode()


def metric(f, direction, service, stage):
    m = f.admin("/metrics").body.decode()
    r = re.search(r'ferry_compression_bytes_total\{direction="%s",service="%s",stage="%s"\} '
                  r'(\d+)' % (direction, service, stage), m)
    return int(r.group(1)) if r else 0


class CompressionMesh(FerryTestCase):

    def mesh(self, behaviour, protocol=None, a_comp=ON, b_comp=ON, b_workers=None):
        p = pki()
        app_b = self.upstream(behaviour, tls=False)
        port = free_port()
        inbound = {"address": "127.0.0.1:%d" % port,
                   "tls": {"cert": p.server.cert, "key": p.server.key, "client_ca": p.ca.cert},
                   "auth": {"keys_env": ["MESH_KEY"]}, "local_app": app_b.address}
        if b_comp is not None:
            inbound["compression"] = b_comp
        b = self.ferry({}, env={"MESH_KEY": KEY}, listeners={"inbound": inbound},
                       **({"workers": b_workers} if b_workers else {}))
        svc = {"endpoints": ["127.0.0.1:%d" % port], "tls": harness.tls_client("backend"),
               "auth": {"key_env": "MESH_KEY"}}
        if protocol:
            svc["protocol"] = protocol
        # A takes it from defaults: every service inherits it
        a = self.ferry({"order-service": svc}, env={"MESH_KEY": KEY},
                       defaults={"compression": a_comp} if a_comp else None)
        return a, b, app_b

    def get(self, a, path, headers=(), method="GET"):
        with a.client() as c:
            return c.request(method, path, [("Host", "order-service"), *headers])

    # -- the big picture --

    def test_large_json_arrives_identical_and_small_on_the_wire(self):
        big = big_json(1 << 20)
        for protocol in ("auto", "http1"):
            with self.subTest(protocol=protocol):
                a, b, app_b = self.mesh(harness.fixed(200, [("Content-Type", "application/json"),
                                                            ("ETag", '"v1"')], big),
                                        protocol=protocol)
                resp = self.get(a, "/items")
                self.assertEqual(resp.status, 200, resp.body[:200])
                self.assertEqual(len(resp.body), len(big))
                self.assertTrue(resp.body == big, "body changed on the way")
                self.assertIsNone(resp.header("content-encoding"), "the app must not notice")
                self.assertIsNone(resp.header("content-length"))
                self.assertEqual(resp.header("transfer-encoding"), "chunked")
                self.assertEqual(resp.header("etag"), 'W/"v1"')
                self.assertEqual(app_b.last.header_all("accept-encoding"), ["zstd, gzip"])
                # B compressed all of it; A decoded what crossed the wire
                b_in, b_out = (metric(b, "inbound", "local_app", s) for s in ("in", "out"))
                a_in, a_out = (metric(a, "outbound", "order-service", s) for s in ("in", "out"))
                self.assertEqual(b_in, len(big))
                self.assertEqual(a_out, len(big))
                self.assertEqual(a_in, b_out)
                self.assertLess(b_out, len(big) // 4, "zstd should shrink JSON far more")
                # and again on the same connections, with gzip only
                resp = self.get(a, "/again")
                self.assertEqual(resp.body, big)

    def test_gzip_when_the_peer_prefers_it(self):
        big = big_json(64 * 1024)
        a, b, app_b = self.mesh(harness.fixed(200, [("Content-Type", "application/json")], big),
                                a_comp={"encodings": ["gzip"]})
        resp = self.get(a, "/g")
        self.assertEqual((resp.status, resp.body), (200, big))
        self.assertEqual(app_b.last.header_all("accept-encoding"), ["gzip"])
        self.assertLess(metric(a, "outbound", "order-service", "in"), len(big) // 3)

    def test_http10_app_gets_a_close_delimited_body(self):
        big = big_json(100 * 1024)
        a, b, app_b = self.mesh(harness.fixed(200, [("Content-Type", "application/json")], big))
        with a.client() as c:
            resp = c.request("GET", "/old", [("Host", "order-service")], version="HTTP/1.0")
        self.assertEqual((resp.status, resp.framing), (200, "close"))
        self.assertEqual(resp.body, big)

    def test_streaming_response_arrives_incrementally(self):
        first = b'{"event":"first","pad":"' + b"x" * 4000 + b'"}\n'
        last = b'{"event":"last"}\n'
        seen_first = threading.Event()
        result = {}

        def behave(conn, req):
            conn.head(200, [("Content-Type", "application/json"),
                            ("Transfer-Encoding", "chunked")])
            conn.send(b"%x\r\n%s\r\n" % (len(first), first))
            # the last part waits until app A has the first one
            result["first_arrived"] = seen_first.wait(10)
            conn.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(last), last))

        for protocol in ("auto", "http1"):
            with self.subTest(protocol=protocol):
                seen_first.clear()
                result.clear()
                a, b, _ = self.mesh(behave, protocol=protocol)
                with a.client() as c:
                    c.send(harness.build_request("GET", "/stream", [("Host", "order-service")]))
                    head = c.reader.read_until(b"\r\n\r\n")
                    self.assertIn(b" 200 ", head.split(b"\r\n")[0])
                    got = b""
                    while len(got) < len(first):
                        size = int(c.reader.read_line().split(b";")[0], 16)
                        self.assertNotEqual(size, 0, "ended before the last part")
                        got += c.reader.read_exact(size)
                        c.reader.read_exact(2)
                    self.assertEqual(got, first)
                    seen_first.set()
                    body, _ = harness.read_chunked(c.reader)
                    self.assertEqual(got + body, first + last)
                self.assertTrue(result.get("first_arrived"),
                                "the first part was held until the response ended")
                self.assertGreater(metric(b, "inbound", "local_app", "out"), 0)

    def test_h2_app_and_trailers(self):
        """An HTTP/2 app (h2c to ferry A) gets the decoded body framed by
        HTTP/2; trailers reach HTTP/1.1 apps in the last chunk, and HTTP/2
        ones as trailers."""
        part = big_json(20 * 1024)
        behave = harness.chunked([part, part, part], trailers=[("x-sum", "s123")],
                                 headers=[("Content-Type", "application/json")])
        for protocol in ("auto", "http1"):
            with self.subTest(protocol=protocol):
                a, b, _ = self.mesh(behave, protocol=protocol)
                c = H2(a.outbound_port)
                st = c.response(c.request("/t", authority="order-service"))
                self.assertEqual(st.status, 200)
                self.assertTrue(bytes(st.body) == part * 3)
                self.assertEqual(hname(st.headers, "content-encoding"), [])
                self.assertEqual(hname(st.headers, "content-length"), [])
                self.assertIn(("x-sum", "s123"), st.trailers or [])
                c.sock.close()
                resp = self.get(a, "/t")
                self.assertEqual((resp.status, resp.framing), (200, "chunked"))
                self.assertTrue(resp.body == part * 3)
                self.assertIn(("x-sum", "s123"), resp.trailers)
                self.assertGreater(metric(a, "outbound", "order-service", "in"), 0)

    # -- an app that asks for an encoding itself --

    def test_app_accept_encoding_passes_and_nothing_is_decoded(self):
        big = big_json(200 * 1024)
        a, b, app_b = self.mesh(harness.fixed(200, [("Content-Type", "application/json")], big))
        resp = self.get(a, "/mine", [("Accept-Encoding", "gzip")])
        self.assertEqual(app_b.last.header_all("accept-encoding"), ["gzip"])
        self.assertEqual(resp.header("content-encoding"), "gzip")
        self.assertEqual(resp.header("vary"), "accept-encoding")
        self.assertEqual(gzip.decompress(resp.body), big)
        self.assertEqual(metric(a, "outbound", "order-service", "in"), 0, "A decoded")
        self.assertEqual(metric(b, "inbound", "local_app", "in"), len(big))
        # a list over several lines counts whole; ferry's preference wins
        resp = self.get(a, "/lines", [("Accept-Encoding", "br"), ("Accept-Encoding", "gzip"),
                                      ("Accept-Encoding", "zstd;q=0.1")])
        self.assertEqual(resp.header("content-encoding"), "zstd")
        self.assertEqual(unzstd(resp.body), big)
        resp = self.get(a, "/refused", [("Accept-Encoding", "zstd;q=0, br")])
        self.assertEqual((resp.header("content-encoding"), resp.body), (None, big))

    def test_accept_encoding_lines_are_one_list(self):
        # "zstd, gzip" and then "zstd;q=0": one list (RFC 9110 5.3), which
        # refuses zstd; each line judged alone picked zstd from the first
        big = big_json(50 * 1024)
        a, b, app_b = self.mesh(harness.fixed(200, [("Content-Type", "application/json")], big))
        resp = self.get(a, "/two", [("Accept-Encoding", "zstd, gzip"),
                                    ("Accept-Encoding", "zstd;q=0")])
        self.assertEqual(app_b.last.header_all("accept-encoding"), ["zstd, gzip", "zstd;q=0"])
        self.assertEqual(resp.header("content-encoding"), "gzip")
        self.assertEqual(gzip.decompress(resp.body), big)

    def test_encoding_of_the_app_b_passes_untouched(self):
        big = big_json(100 * 1024)
        coded = zstd(big, "-19")
        a, b, _ = self.mesh(harness.fixed(200, [("Content-Type", "application/json"),
                                                ("Content-Encoding", "zstd")], coded))
        resp = self.get(a, "/coded", [("Accept-Encoding", "zstd")])
        self.assertEqual(resp.header("content-encoding"), "zstd")
        self.assertEqual(resp.header("content-length"), str(len(coded)))
        self.assertTrue(resp.body == coded, "the app's own encoding was changed")
        self.assertEqual(metric(b, "inbound", "local_app", "in"), 0)
        # without its own accept-encoding app A gets it decoded by ferry A
        resp = self.get(a, "/coded")
        self.assertIsNone(resp.header("content-encoding"))
        self.assertTrue(resp.body == big)

    # -- what is never compressed --

    def test_never_compressed(self):
        big = big_json(50 * 1024)
        js = ("Content-Type", "application/json")

        def behave(conn, req):
            path = req.target
            if path == "/head":
                conn.head(200, [js, ("Content-Length", str(len(big)))])
            elif path == "/204":
                conn.head(204, [js])
            elif path == "/304":
                conn.head(304, [js, ("ETag", '"e"')])
            elif path == "/range":
                conn.respond(206, [js, ("Content-Range", "bytes 0-99/%d" % len(big))], big[:100])
            elif path == "/range-ignored":
                conn.respond(200, [js], big)
            elif path == "/no-transform":
                conn.respond(200, [js, ("Cache-Control", "public, no-transform")], big)
            elif path == "/no-transform-2":
                # two lines are one list: the second one's word counts too
                conn.respond(200, [js, ("Cache-Control", "public"),
                                   ("Cache-Control", "no-transform")], big)
            elif path == "/vary-other":
                conn.respond(200, [js, ("Vary", "X-Accept-Encoding-Hint")], big)
            elif path == "/small":
                conn.respond(200, [js], b'{"small":true}')
            elif path == "/binary":
                conn.respond(200, [("Content-Type", "image/png")], big)
            else:
                conn.respond(200, [js, ("ETag", '"strong"')], big)

        a, b, _ = self.mesh(behave)
        ae = ("Accept-Encoding", "zstd, gzip")
        with a.client() as c:
            # the control: the same setup compresses this one
            resp = c.request("GET", "/yes", [("Host", "order-service"), ae])
            self.assertEqual(resp.header("content-encoding"), "zstd")
            self.assertEqual(resp.header("etag"), 'W/"strong"')
            self.assertEqual(unzstd(resp.body), big)
            # a vary naming another field that merely contains the word
            resp = c.request("GET", "/vary-other", [("Host", "order-service"), ae])
            self.assertEqual(resp.header("content-encoding"), "zstd")
            self.assertEqual(resp.header_all("vary"),
                             ["X-Accept-Encoding-Hint", "accept-encoding"])
            self.assertEqual(unzstd(resp.body), big)
            resp = c.request("HEAD", "/head", [("Host", "order-service"), ae])
            self.assertEqual((resp.status, resp.header("content-encoding"),
                              resp.header("content-length")), (200, None, str(len(big))))
            for path, status in (("/204", 204), ("/304", 304)):
                resp = c.request("GET", path, [("Host", "order-service"), ae])
                self.assertEqual((resp.status, resp.header("content-encoding")), (status, None))
            resp = c.request("GET", "/range", [("Host", "order-service"), ae,
                                               ("Range", "bytes=0-99")])
            self.assertEqual((resp.status, resp.header("content-encoding"), resp.body),
                             (206, None, big[:100]))
            for path, hdrs in (("/range-ignored", [("Range", "bytes=0-99")]),
                               ("/no-transform", []), ("/no-transform-2", []), ("/small", []),
                               ("/binary", [])):
                resp = c.request("GET", path, [("Host", "order-service"), ae, *hdrs])
                self.assertEqual((resp.status, resp.header("content-encoding")), (200, None),
                                 path)
                self.assertEqual(resp.header("vary"), None, path)
                self.assertIsNotNone(resp.header("content-length"), path)
        self.assertEqual(metric(b, "inbound", "local_app", "in"), 2 * len(big),
                         "only /yes and /vary-other")

    def test_no_accept_encoding_no_compression(self):
        big = big_json(50 * 1024)
        a, b, app_b = self.mesh(harness.fixed(200, [("Content-Type", "application/json")], big),
                                a_comp=None)
        resp = self.get(a, "/plain")
        self.assertEqual(app_b.last.header_all("accept-encoding"), [])
        self.assertEqual((resp.body, resp.header("content-encoding")), (big, None))
        self.assertEqual(resp.header("content-length"), str(len(big)))
        self.assertEqual(metric(b, "inbound", "local_app", "in"), 0)

    # -- bombs --

    def test_bombs_are_cut_and_others_unaffected(self):
        zeros = bytes(100 << 20)
        zbomb = zstd(zeros, "-19")
        gbomb = gzip.compress(bytes(160 << 20), 9)
        small = big_json(8 * 1024)

        def behave(conn, req):
            if req.target == "/zbomb":
                conn.respond(200, [("Content-Type", "application/json"),
                                   ("Content-Encoding", "zstd")], zbomb)
            elif req.target == "/gbomb":
                conn.respond(200, [("Content-Type", "application/json"),
                                   ("Content-Encoding", "gzip")], gbomb)
            else:
                conn.respond(200, [("Content-Type", "application/json")], small)

        a, b, _ = self.mesh(behave)
        stop = threading.Event()
        failures, done = [], [0]

        def others():
            while not stop.is_set():
                try:
                    r = self.get(a, "/ok")
                    if r.status != 200 or r.body != small:
                        failures.append((r.status, r.body[:100]))
                    done[0] += 1
                except Exception as e:       # noqa: BLE001 (reported below)
                    failures.append(repr(e))

        t = threading.Thread(target=others)
        t.start()
        try:
            for path in ("/zbomb", "/gbomb"):
                with a.client() as c:
                    c.send(harness.build_request("GET", path, [("Host", "order-service")]))
                    with self.assertRaises(IncompleteMessage, msg=path):
                        read_response(c.reader)
        finally:
            time.sleep(0.2)
            stop.set()
            t.join()
        self.assertEqual(failures, [])
        self.assertGreater(done[0], 0)
        def cut(path):
            return [e.get("error") for e in a.access_log() if e.get("path") == path]

        for path in ("/zbomb", "/gbomb"):
            # the access log reaches stdout within a second
            harness.wait_until(lambda: cut(path), 3)
            lines = cut(path)
            self.assertEqual(lines, ["decompression_bomb"], path)
        # cut early: far less than the 1000x or 1 GiB was ever let out
        self.assertLess(metric(a, "outbound", "order-service", "out"), 400 << 20)
        self.assertTrue(a.alive())


    # -- memory --

    def test_encoders_past_the_budget_leave_bodies_as_they_are(self):
        """A zstd encoder at level 19 holds 3.6 MiB: peers asking for many
        compressed responses at once, each streamed slowly, made ferry
        hold that many (32: 115 MiB). Past the worker's budget (64 MiB,
        compress.h) a body now goes as it is, which is always allowed."""
        held, budget_kib = 32, 64 << 10
        first = big_json(256 * 1024)
        release = threading.Event()

        def behave(conn, req):
            conn.head(200, [("Content-Type", "application/json"),
                            ("Transfer-Encoding", "chunked")])
            # a first part, coded and flushed at once; the rest held
            conn.send(b"%x\r\n%s\r\n" % (len(first), first))
            release.wait(30)
            conn.send(b"0\r\n\r\n")

        a, b, _ = self.mesh(behave, a_comp=None, b_workers=1,
                            b_comp={"encodings": ["zstd"], "level": {"zstd": 19}})
        base = harness.anon_kib(b.proc.pid)
        coded, ends = [0] * held, [None] * held

        def fetch(i):
            with a.client() as c:
                c.send(harness.build_request("GET", "/e%d" % i, [
                    ("Host", "order-service"), ("Accept-Encoding", "zstd")]))
                raw = c.reader.read_until(b"\r\n\r\n")
                coded[i] = 1 if re.search(rb"\r\ncontent-encoding: *zstd", raw, re.I) else -1
                body = harness.read_chunked(c.reader)[0]
                ends[i] = (unzstd(body) if coded[i] == 1 else body)[:len(first)] == first

        threads = [threading.Thread(target=fetch, args=(i,)) for i in range(held)]
        for t in threads:
            t.start()
        try:
            self.assertTrue(harness.wait_until(lambda: all(coded), 30), coded)
            time.sleep(0.3)         # the coded ones' first parts through their encoders
            growth = harness.anon_kib(b.proc.pid) - base
        finally:
            release.set()
            for t in threads:
                t.join(30)
        if not harness.sanitized(b.proc.pid):
            self.assertLess(growth, budget_kib + (16 << 10),
                            "RssAnon grew %d KiB, %d encoders held" % (growth, coded.count(1)))
        self.assertEqual(ends, [True] * held)
        self.assertGreater(coded.count(1), 0, coded)
        self.assertGreater(coded.count(-1), 0, coded)


class GrpcNotCompressed(FerryTestCase):
    """gRPC has its own message compression (SPEC §14): never ferry's, even
    when its type is listed and the peer accepts an encoding."""

    def test_grpc_untouched_other_responses_compressed(self):
        app = H2cApp()
        self._closers.append(app.close)
        p = pki()
        port = free_port()
        self.ferry({}, env={"IN_KEY": KEY}, workers=1, listeners={"inbound": {
            "address": "127.0.0.1:%d" % port,
            "tls": {"cert": p.server.cert, "key": p.server.key, "client_ca": p.ca.cert},
            "auth": {"keys_env": ["IN_KEY"]}, "local_app": app.address,
            "local_app_protocol": "h2c",
            "compression": {"encodings": ["zstd"], "min_size": 0,
                            "types": ["application/grpc", "text/*"]}}})
        ctx = ssl.create_default_context(cafile=p.ca.cert)
        ctx.check_hostname = False
        ctx.load_cert_chain(p.client.cert, p.client.key)
        ctx.set_alpn_protocols(["h2"])
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                            server_hostname="backend")
        self._closers.append(s.close)
        c = H2(sock=s)
        common = [("x-service-auth", KEY), ("accept-encoding", "zstd")]
        msg = b"\x00\x00\x00\x00\x05hello"
        st = c.response(c.request("/grpc/ok", authority="order-service", method="POST",
                                  headers=[*common, ("content-type", "application/grpc"),
                                           ("te", "trailers")], body=msg))
        self.assertEqual(st.status, 200)
        self.assertEqual(hname(st.headers, "content-encoding"), [])
        self.assertEqual(bytes(st.body), msg)
        self.assertEqual(st.trailers, [("grpc-status", "0"), ("x-app-trailer", "t-grpc")])
        # the control: a text/plain answer on the same connection is compressed
        st = c.response(c.request("/plain", authority="order-service", method="POST",
                                  headers=common, body=b"abc"))
        self.assertEqual(hname(st.headers, "content-encoding"), ["zstd"])
        self.assertEqual(unzstd(bytes(st.body)), b"got:/plain:abc")
        self.assertEqual(st.trailers, [("x-app-trailer", "t1")])


def compressible(n, seed=1):
    """N bytes that zstd -19 takes about 450:1 (under the 1000x bomb
    ratio): a random 4 KiB block repeated, two bytes of each copy
    changed."""
    r = random.Random(seed)
    blk = bytes(r.getrandbits(8) for _ in range(4096))
    out = bytearray()
    while len(out) < n:
        b = bytearray(blk)
        for k in range(0, 4096, 2048):
            b[k] = r.getrandbits(8)
        out += b
    return bytes(out[:n])


class _Spent:
    """A socket at its end: a Reader over bytes read already."""

    def recv(self, n):
        return b""


class DecodingForASlowClient(FerryTestCase):
    """What a decoder holds of a response waits for the client: while the
    client takes it, bytes flow, and stream_idle must not cut them."""

    def test_decoded_body_flowing_to_a_slow_reader_is_not_idle(self):
        data = compressible(20 << 20)
        coded = zstd(data, "-19")
        # all of it comes in one or two upstream reads: the decoder
        # then feeds the client for seconds with nothing more upstream
        self.assertLess(len(coded), 64 * 1024)
        up = self.upstream(harness.fixed(200, [("Content-Type", "application/json"),
                                               ("Content-Encoding", "zstd")], coded), tls=False)
        a = self.ferry({"order-service": harness.service(
            up, timeouts={"stream_idle": "1s"})}, defaults={"compression": ON}, workers=1)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.settimeout(5)
        s.connect(("127.0.0.1", a.outbound_port))
        self._closers.append(s.close)
        s.sendall(harness.build_request("GET", "/slow", [("Host", "order-service")]))
        got, start = bytearray(), time.monotonic()
        # about 5 MB/s: 20 MiB take 4 s, four times stream_idle, and the
        # client never waits 1 s for a byte
        while True:
            try:
                d = s.recv(256 * 1024)
            except OSError:
                break
            if not d:
                break
            got += d
            if got.endswith(b"\r\n0\r\n\r\n"):
                break
            time.sleep(0.05 * len(d) / (256 * 1024))
        elapsed = time.monotonic() - start
        head = bytes(got[:got.index(b"\r\n\r\n") + 4])
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
        r = harness.Reader(_Spent())
        r.buf = bytearray(got[len(head):])
        try:
            dec = harness.read_chunked(r)[0]
        except Exception as e:      # noqa: BLE001
            self.fail("cut after %.1fs, %d bytes: %r; log: %r" % (
                elapsed, len(got), e, [l.get("error") for l in a.access_log()]))
        self.assertTrue(dec == data, "body changed on the way")
        self.assertGreater(elapsed, 2.5, "the client was not slow enough to tell")


class DecoderMemoryBudget(FerryTestCase):
    """zstd lets a frame ask for an 8 MiB window (RFC 9659's most), and
    the decoder then holds it to the frame's end: an upstream that sends
    such frames slowly to many requests at once made ferry hold 8 MiB
    each, without end (16 of them: 140 MiB). A worker's coders now share
    a budget (compress.h): near it, ferry stops offering accept-encoding
    (the upstream then answers plainly), and a decoder that grows past it
    is cut."""

    HELD = 16
    BUDGET_KIB = 64 << 10       # compress.h, CZ_WORKER_MEMORY

    def test_many_big_windows_at_once_stay_within_the_budget(self):
        data = compressible(9 << 20)
        coded = zstd(data, "-3", "--zstd=wlog=23")
        self.assertLess(len(data), len(coded) * 1000)
        release = threading.Event()
        plain = b"plain, not offered"
        offered = []

        def behave(conn, req):
            ae = req.header("accept-encoding")
            offered.append((req.target, ae))
            if not ae:
                conn.respond(200, [("Content-Type", "text/plain")], plain)
                return
            hdrs = [("Content-Type", "application/json"), ("Content-Encoding", "zstd")]
            if not req.target.startswith("/held"):
                conn.respond(200, hdrs, coded)
                return
            conn.head(200, hdrs + [("Content-Length", str(len(coded)))])
            # all but the frame's end: the decoder holds its window meanwhile
            conn.send(coded[:-64])
            release.wait(30)
            conn.send(coded[-64:])

        up = self.upstream(behave, tls=False)
        a = self.ferry({"order-service": harness.service(up)},
                       defaults={"compression": ON}, workers=1)
        self.assertEqual(self.get_plain(a, "/warm"), (200, data))
        base = harness.anon_kib(a.proc.pid)
        got = [0] * self.HELD
        ends = [None] * self.HELD

        def fetch(i):
            s = socket.create_connection(("127.0.0.1", a.outbound_port), timeout=40)
            raw, length = bytearray(), None
            try:
                s.sendall(harness.build_request("GET", "/held%d" % i,
                                                [("Host", "order-service")]))
                while not raw.endswith(b"\r\n0\r\n\r\n"):
                    d = s.recv(1 << 20)
                    if not d:
                        break
                    raw += d
                    got[i] = len(raw)
                    if length is None and b"\r\n\r\n" in raw:
                        m = re.search(rb"\r\ncontent-length: *(\d+)", raw, re.I)
                        length = raw.index(b"\r\n\r\n") + 4 + int(m.group(1)) if m else 0
                    if length and len(raw) >= length:
                        break
            except OSError:
                pass
            finally:
                s.close()
            head, _, body = bytes(raw).partition(b"\r\n\r\n")
            if length:
                ends[i] = "plain" if body == plain else "changed"
                return
            r = harness.Reader(_Spent())
            r.buf = bytearray(body)
            try:
                ends[i] = "whole" if harness.read_chunked(r)[0] == data else "changed"
            except Exception:       # noqa: BLE001 (cut on the way)
                ends[i] = "cut"

        threads = [threading.Thread(target=fetch, args=(i,)) for i in range(self.HELD)]
        for t in threads:
            t.start()
        try:
            # each response either decoded up to its held end, or ended
            self.assertTrue(harness.wait_until(
                lambda: all(ends[i] is not None or got[i] >= len(data) - (1 << 20)
                            for i in range(self.HELD)), 30),
                "stuck: %r %r" % (got, ends))
            growth = harness.anon_kib(a.proc.pid) - base
            # near the budget, a new request is not offered compression
            late = self.get_plain(a, "/late")
        finally:
            release.set()
            for t in threads:
                t.join(30)
        if not harness.sanitized(a.proc.pid):
            self.assertLess(growth, self.BUDGET_KIB + (24 << 10),
                            "RssAnon grew %d KiB with %d big windows held" % (growth, self.HELD))
        self.assertEqual(late, (200, plain))
        # offered and decoded, offered and cut, or not offered (asked when
        # the budget was near)
        self.assertEqual(ends.count("whole") + ends.count("cut") + ends.count("plain"),
                         self.HELD, ends)
        self.assertGreater(ends.count("whole"), 0, ends)
        self.assertGreater(ends.count("cut") + ends.count("plain"), 0, ends)
        def cut():
            return [e.get("error") for e in a.access_log()
                    if e.get("path", "").startswith("/held") and e.get("error")]

        # the access log reaches stdout within a second
        harness.wait_until(lambda: len(cut()) == ends.count("cut"), 3)
        self.assertEqual(cut(), ["out_of_memory"] * ends.count("cut"), ends)
        # all gone: offered again, and decoded whole
        with a.client() as c:
            r = c.request("GET", "/after", [("Host", "order-service")])
        self.assertEqual((r.status, r.body == data), (200, True))

    def get_plain(self, a, path):
        with a.client() as c:
            r = c.request("GET", path, [("Host", "order-service")])
        return r.status, r.body


if __name__ == "__main__":
    harness.main()
