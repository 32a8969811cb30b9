"""Limits and hostile input (SPEC §11). After each case ferry must still
serve another client (crash canary)."""

import random
import socket
import struct
import time

import harness
from harness import FerryTestCase, IncompleteMessage, build_request, delay, raw, service

GOOD = b"GET /canary HTTP/1.1\r\nHost: svc\r\n\r\n"


class HostileTest(FerryTestCase):

    def setUp(self):
        super().setUp()
        self.up = self.upstream()
        # many hostile answers in a row must each get their 502: the
        # breaker would (rightly) open after a few, and retries would
        # triple every case
        self.f = self.ferry({"svc": service(self.up, circuit_breaker={"consecutive_failures": 0},
                                            outlier_detection={"consecutive_failures": 0},
                                            retries={"max": 0})},
                            outbound={"max_request_body": "1KiB"})

    def tearDown(self):
        try:
            self.assert_still_serving()
        finally:
            super().tearDown()

    def assert_still_serving(self):
        self.assertTrue(self.f.alive(), "ferry died: %s" % (self.f.proc.poll(),))
        before = len(self.up.requests)
        with self.f.client() as c:
            c.send(GOOD)
            resp = c.read_response()
        self.assertEqual(resp.status, 200, resp.body[:200])
        self.assertEqual(len(self.up.requests), before + 1)

    def assert_alive(self):
        self.assertTrue(self.f.alive(), "ferry died: %s" % (self.f.proc.poll(),))

    def rejected(self, data, status, code, closes=True, message_re=None):
        """Send data; expect ferry's own error and (by default) a close;
        nothing may reach the upstream. (tearDown then checks that another
        client is still served.)"""
        before = len(self.up.requests)
        with self.f.client() as c:
            c.send(data)
            resp = c.read_response()
            self.assert_ferry_error(resp, status, code, message_re)
            if closes:
                self.assertTrue(c.peer_closed(2), "connection left open after %d" % status)
        self.assertEqual(len(self.up.requests), before, "rejected request reached the upstream")
        self.assert_alive()

    # framing ambiguities

    def test_content_length_and_transfer_encoding(self):
        self.rejected(b"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "BAD_REQUEST")

    def test_transfer_encoding_then_content_length(self):
        self.rejected(b"POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n"
                      b"Content-Length: 5\r\n\r\n0\r\n\r\n", 400, "BAD_REQUEST")

    def test_differing_content_lengths(self):
        self.rejected(b"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\n"
                      b"Content-Length: 6\r\n\r\nhello!", 400, "BAD_REQUEST")

    def test_content_length_list(self):
        self.rejected(b"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 5, 6\r\n\r\nhello!",
                      400, "BAD_REQUEST")

    def test_bad_content_length(self):
        for value in (b"abc", b"-1", b"0x10", b"1 2"):
            with self.subTest(value=value):
                self.rejected(b"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: " + value +
                              b"\r\n\r\n", 400, "BAD_REQUEST")

    def test_transfer_encoding_not_ending_in_chunked(self):
        self.rejected(b"POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: gzip\r\n\r\nxxxx",
                      400, "BAD_REQUEST")

    def test_transfer_coding_under_chunked(self):
        # chunked, but gzip-coded under it: an HTTP/2 upstream would get
        # the gzip bytes as the body, with nothing to say what they are
        for te in ([b"gzip, chunked"], [b"gzip", b"chunked"], [b"identity, chunked"]):
            with self.subTest(te=te):
                self.rejected(b"POST / HTTP/1.1\r\nHost: svc\r\n" +
                              b"".join(b"Transfer-Encoding: " + t + b"\r\n" for t in te) +
                              b"\r\n5\r\nhello\r\n0\r\n\r\n", 400, "BAD_REQUEST",
                              message_re="chunked alone, named once")

    def test_chunked_twice(self):
        # llhttp reads "chunked<TAB>" as another coding and the last header
        # as chunked; forwarded without the tab, it is chunked twice, which
        # the next hop refuses (tests/fuzz/regressions/head_rewrite/
        # te-chunked-tab-then-chunked)
        # (llhttp itself refuses "Chunked " then "chunked")
        for te, why in (([b"chunked\t", b"chunked"], "chunked alone, named once"),
                        ([b"Chunked ", b"chunked"], "Transfer-Encoding"),
                        ([b"chunked\t, chunked"], "chunked alone, named once")):
            with self.subTest(te=te):
                self.rejected(b"POST / HTTP/1.1\r\nHost: svc\r\n" +
                              b"".join(b"Transfer-Encoding: " + t + b"\r\n" for t in te) +
                              b"\r\n5\r\nhello\r\n0\r\n\r\n", 400, "BAD_REQUEST",
                              message_re=why)

    # syntax

    def test_obs_fold(self):
        self.rejected(b"GET / HTTP/1.1\r\nHost: svc\r\nX-Folded: a\r\n  b\r\n\r\n",
                      400, "BAD_REQUEST")

    def test_invalid_header_characters(self):
        cases = {
            "space in name": b"Bad Name: x\r\n",
            "space before colon": b"X-A : x\r\n",
            "NUL in value": b"X-A: a\x00b\r\n",
            "CR in value": b"X-A: a\rb\r\n",
            "CTL in value": b"X-A: a\x01b\r\n",
            "no colon": b"JustAName\r\n",
            "non-token name": b"X(A): x\r\n",
        }
        for name, line in cases.items():
            with self.subTest(case=name):
                self.rejected(b"GET / HTTP/1.1\r\nHost: svc\r\n" + line + b"\r\n",
                              400, "BAD_REQUEST")

    def test_invalid_request_line(self):
        for line in (b"G(T / HTTP/1.1", b"GET /a b HTTP/1.1", b"GET / HTTP/1.1 extra",
                     b"GET\t/ HTTP/1.1"):
            with self.subTest(line=line):
                self.rejected(line + b"\r\nHost: svc\r\n\r\n", 400, "BAD_REQUEST")

    # sizes

    def test_head_over_64kib(self):
        self.rejected(build_request("GET", "/", [("Host", "svc"), ("X-Big", "a" * (70 * 1024))]),
                      431, "HEADERS_TOO_LARGE", closes=False)

    def test_many_headers_over_64kib(self):
        headers = [("Host", "svc")] + [("X-H%d" % i, "v" * 1000) for i in range(70)]
        self.rejected(build_request("GET", "/", headers), 431, "HEADERS_TOO_LARGE", closes=False)

    def test_long_request_line(self):
        self.rejected(build_request("GET", "/" + "a" * (70 * 1024), [("Host", "svc")]),
                      431, "HEADERS_TOO_LARGE", closes=False)

    def test_head_under_64kib_passes(self):
        with self.f.client() as c:
            resp = c.request("GET", "/", [("Host", "svc"), ("X-Big", "a" * (60 * 1024))])
        self.assertEqual(resp.status, 200)
        self.assertEqual(self.up.last.header("x-big"), "a" * (60 * 1024))

    def test_101_headers(self):
        # Host counts: 101 headers with it
        headers = [("Host", "svc")] + [("X-H%d" % i, "v") for i in range(100)]
        self.rejected(build_request("GET", "/", headers), 431, "HEADERS_TOO_LARGE", closes=False)

    def test_100_headers_pass(self):
        headers = [("Host", "svc")] + [("X-H%d" % i, "v") for i in range(99)]
        with self.f.client() as c:
            resp = c.request("GET", "/", headers)
        self.assertEqual(resp.status, 200)
        self.assertEqual(self.up.last.header("x-h98"), "v")

    def test_ferrys_own_kinds_up_to_the_hard_cap(self):
        """100 headers of the app's own (Host and 99), and headers of the
        kinds ferry writes (here x-forwarded-for, which it appends to):
        they do not count, but the whole head has a hard cap of 128 fields
        and 72 KiB, room for what ferry adds on a hop."""
        mine = [("X-H%d" % i, "v") for i in range(99)]
        xff = [("X-Forwarded-For", "10.0.0.%d" % i) for i in range(27)]
        with self.f.client() as c:
            resp = c.request("GET", "/", [("Host", "svc")] + xff[:20] + mine)
        self.assertEqual(resp.status, 200, resp.body[:300])
        self.assertEqual(len(self.up.last.header_all("x-forwarded-for")), 20)
        # 129 fields: the parser's cap
        self.rejected(build_request("GET", "/", [("Host", "svc"), ("Via", "1.1 x"),
                                                 ("Via", "1.1 y")] + xff + mine),
                      431, "HEADERS_TOO_LARGE", closes=False)
        # 128 pass the parser, but not once ferry added its ids, via and
        # deadline: the next hop would refuse the head, so ferry does
        before = len(self.up.requests)
        with self.f.client() as c:
            resp = c.request("GET", "/", [("Host", "svc"), ("Via", "1.1 x")] + xff + mine)
        self.assert_ferry_error(resp, 431, "HEADERS_TOO_LARGE", "once ferry's headers")
        self.assertEqual(len(self.up.requests), before)
        # bytes: 60 KiB of the app's own and 10 KiB of ferry's kinds pass,
        # 66 KiB of the app's own do not, whatever the rest
        big_own = [("Host", "svc"), ("X-Forwarded-For", "1" * (10 * 1024))]
        with self.f.client() as c:
            resp = c.request("GET", "/", big_own + [("X-Big", "a" * (60 * 1024))])
        self.assertEqual(resp.status, 200, resp.body[:300])
        self.rejected(build_request("GET", "/", [("Host", "svc"), ("X-Big", "a" * (66 * 1024))]),
                      431, "HEADERS_TOO_LARGE", closes=False)

    def test_body_over_max_request_body(self):
        self.rejected(build_request("POST", "/", [("Host", "svc")], b"x" * 1025),
                      413, "PAYLOAD_TOO_LARGE", closes=False)

    def test_chunked_body_over_max_request_body(self):
        with self.f.client() as c:
            c.send(build_request("POST", "/", [("Host", "svc"), ("Transfer-Encoding", "chunked")]))
            try:
                for _ in range(4):
                    c.send(b"200\r\n" + b"y" * 512 + b"\r\n")
                c.send(b"0\r\n\r\n")
            except OSError:
                pass            # ferry may close as soon as it has answered
            resp = c.read_response()
        self.assert_ferry_error(resp, 413, "PAYLOAD_TOO_LARGE")
        self.assertFalse(any(len(r.body) > 1024 for r in self.up.requests))

    def test_body_at_max_request_body_passes(self):
        with self.f.client() as c:
            resp = c.request("POST", "/", [("Host", "svc")], b"x" * 1024)
        self.assertEqual(resp.status, 200)
        self.assertEqual(len(self.up.last.body), 1024)

    # garbage, aborted clients, pipelining

    def test_tls_client_hello_on_plain_port(self):
        hello = bytes.fromhex("16030100a5010000a10303") + bytes(range(32)) + b"\x00" * 100
        self.ends_without_crash(hello)

    def test_random_garbage(self):
        rng = random.Random(1234)
        valid = build_request("POST", "/x?y=1", [("Host", "svc"), ("Content-Length", "5")], b"hello")
        for i in range(25):
            data = bytearray(valid)
            for _ in range(rng.randint(1, 8)):
                op = rng.randrange(3)
                pos = rng.randrange(len(data))
                if op == 0:
                    data[pos] = rng.randrange(256)
                elif op == 1:
                    data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
                else:
                    del data[pos:pos + rng.randint(1, 10)]
            with self.subTest(i=i):
                self.ends_without_crash(bytes(data))

    def ends_without_crash(self, data):
        """Send data, half-close, and wait for ferry to answer and/or close."""
        with self.f.client() as c:
            c.send(data)
            c.sock.shutdown(socket.SHUT_WR)
            self.assertTrue(c.peer_closed(3), "ferry neither answered nor closed")
        self.assert_alive()

    def test_client_aborts_mid_body(self):
        for _ in range(5):
            with self.f.client() as c:
                c.send(build_request("POST", "/", [("Host", "svc"), ("Content-Length", "1000")],
                                     b"z" * 300))
        time.sleep(0.2)
        self.assert_still_serving()

    def test_client_resets_while_waiting(self):
        self.up.behaviour = delay(0.5)
        for _ in range(3):
            c = self.f.client()
            c.send(GOOD)
            time.sleep(0.1)
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
        time.sleep(0.7)
        self.up.behaviour = harness.echo()
        self.assert_still_serving()

    def test_pipelined_requests_answered_in_order(self):
        with self.f.client() as c:
            c.send(b"".join(build_request("GET", "/p%d" % i, [("Host", "svc")]) for i in range(5)))
            targets = [c.read_response().json()["target"] for _ in range(5)]
        self.assertEqual(targets, ["/p%d" % i for i in range(5)])

    def test_pipelined_requests_then_half_close_all_answered(self):
        """A client that pipelines and then half-closes (printf ... | nc -N)
        gets every whole request answered, then the close."""
        self.up.behaviour = delay(0.2)
        with self.f.client() as c:
            c.send(b"".join(build_request("GET", "/h%d" % i, [("Host", "svc")])
                            for i in range(3)))
            c.sock.shutdown(socket.SHUT_WR)
            targets = [c.read_response().json()["target"] for _ in range(3)]
            self.assertTrue(c.peer_closed(2), "connection left open after the last answer")
        self.assertEqual(targets, ["/h0", "/h1", "/h2"])
        self.up.behaviour = harness.echo()

    # hostile upstream responses: 502, never a crash

    def test_malformed_upstream_responses(self):
        cases = {
            "bad content-length": b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
            "differing content-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                                         b"Content-Length: 6\r\n\r\nhello!",
            "bad status": b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
            "no colon": b"HTTP/1.1 200 OK\r\nBad Header\r\nContent-Length: 0\r\n\r\n",
            "NUL in value": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
            "binary": b"\x00\x01\x02\x03garbage\r\n\r\n",
            "huge head": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n",
            "cut head": b"HTTP/1.1 200 OK\r\nContent-Le",
        }
        for name, data in cases.items():
            with self.subTest(case=name):
                self.up.behaviour = raw(data)
                with self.f.client() as c:
                    resp = c.request("GET", "/", [("Host", "svc")])
                self.assert_ferry_error(resp, 502, "SERVICE_ERROR")
                self.assertNotIn(b"\x00", resp.raw_head)
                self.assert_alive()
        self.up.behaviour = harness.echo()

    def test_bad_chunk_after_head(self):
        self.up.behaviour = raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                b"5\r\nhello\r\nzz\r\n")
        with self.f.client() as c:
            c.send(GOOD)
            try:
                resp = c.read_response()
            except IncompleteMessage:
                resp = None         # head already passed on: the body is cut
            if resp is not None:
                self.assert_ferry_error(resp, 502, "SERVICE_ERROR")
        self.up.behaviour = harness.echo()


if __name__ == "__main__":
    harness.main()
