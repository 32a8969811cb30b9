#!/usr/bin/python3
"""Writes the seed corpora of fuzz_h2_down and fuzz_h2_upstream
(tests/fuzz/corpus/h2_down/, tests/fuzz/corpus/h2_upstream/).

Each seed is what fuzz_h2_down.c reads: byte 0 seeds the piece sizes,
byte 1 holds its options (bit 0: no empty SETTINGS after the preface,
bit 1: connect to the echo service's own port), then the frames the client
sends after the preface. For fuzz_h2_upstream, byte 1 picks the clients
(bits 0-2: GET /a, POST /b, POST /c on streams 1, 3, 5; bit 3: an HTTP/2
client too) and the rest is what the upstream says, server preface first. Header blocks are HPACK without Huffman coding,
so that the names and values stay visible to the fuzzer's mutations.

Run from anywhere with Debian's python3-hpack and python3-hyperframe:
    /usr/bin/python3 tests/fuzz/gen_h2_seeds.py
"""

import os
import struct

import hpack
from hyperframe.frame import (ContinuationFrame, DataFrame, GoAwayFrame, HeadersFrame,
                              PingFrame, PriorityFrame, RstStreamFrame, SettingsFrame,
                              WindowUpdateFrame)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "h2_down")
OUT_UP = os.path.join(HERE, "corpus", "h2_upstream")

# settings ids (RFC 9113 6.5.2)
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT, INITIAL_WINDOW, MAX_FRAME, MAX_HEADER_LIST = (
    1, 2, 3, 4, 5, 6)


class Client:
    """Frames of one connection, one HPACK context."""

    def __init__(self):
        self.enc = hpack.Encoder()
        self.out = b""

    def block(self, headers):
        return self.enc.encode(headers, huffman=False)

    def request(self, sid, method="GET", path="/", authority="echo", extra=(), end=True,
                **kw):
        h = [(":method", method), (":scheme", "http"), (":path", path),
             (":authority", authority)] + list(extra)
        self.headers(sid, h, end=end, **kw)

    def headers(self, sid, headers, end=True, padding=0, priority=False):
        f = HeadersFrame(sid, self.block(headers))
        f.flags.add("END_HEADERS")
        if end:
            f.flags.add("END_STREAM")
        if padding:
            f.flags.add("PADDED")
            f.pad_length = padding
        if priority:
            f.flags.add("PRIORITY")
            f.depends_on, f.stream_weight, f.exclusive = 0, 200, False
        self.out += f.serialize()

    def data(self, sid, payload, end=True, padding=0):
        f = DataFrame(sid, payload)
        if end:
            f.flags.add("END_STREAM")
        if padding:
            f.flags.add("PADDED")
            f.pad_length = padding
        self.out += f.serialize()

    def frame(self, f):
        self.out += f.serialize()


def seed(name, c, pieces=0, options=0, out=None):
    with open(os.path.join(out or OUT, name), "wb") as f:
        f.write(bytes([pieces, options]) + c.out)


def upstream_seeds():
    """What an upstream says: a server preface, then answers."""
    os.makedirs(OUT_UP, exist_ok=True)

    def server(settings=None):
        c = Client()
        c.frame(SettingsFrame(0, settings=settings or {MAX_CONCURRENT: 100}))
        c.frame(SettingsFrame(0, flags=["ACK"]))
        return c

    def seed_up(name, c, pieces=0, options=1):
        seed(name, c, pieces, options, OUT_UP)

    c = server()
    c.headers(1, [(":status", "200"), ("content-length", "2"), ("content-type", "text/plain")],
              end=False)
    c.data(1, b"ok")
    seed_up("ok", c)

    c = server()
    c.headers(1, [(":status", "200")], end=False)
    c.data(1, b"first", end=False)
    c.headers(3, [(":status", "201"), ("content-length", "0")])
    c.headers(5, [(":status", "200"), ("trailer", "x-sum")], end=False)
    c.data(5, b"chunk one ", end=False)
    c.data(1, b" second")
    c.data(5, b"chunk two", end=False)
    c.headers(5, [("x-sum", "42"), ("grpc-status", "0")])
    seed_up("three-streams", c, pieces=11, options=7)

    c = server()
    c.headers(1, [(":status", "100")], end=False)
    c.headers(1, [(":status", "103"), ("link", "</a.css>; rel=preload")], end=False)
    c.headers(1, [(":status", "204")])
    seed_up("informational", c, options=2)

    c = server()
    c.frame(RstStreamFrame(1, error_code=7))
    c.frame(RstStreamFrame(3, error_code=2))
    seed_up("refused-and-reset", c, options=3)

    c = server()
    c.frame(GoAwayFrame(0, last_stream_id=1, error_code=0))
    c.headers(1, [(":status", "200"), ("content-length", "3")], end=False)
    c.data(1, b"bye")
    seed_up("goaway", c, options=7)

    c = server()
    c.headers(1, [(":status", "200"), ("content-type", "application/grpc"),
                  ("grpc-status", "14"), ("grpc-message", "unavailable")])
    seed_up("trailers-only", c, options=4)

    c = server({INITIAL_WINDOW: 1 << 20, MAX_FRAME: 1 << 16})
    c.headers(1, [(":status", "200"), ("content-length", "21000")], end=False)
    for i in range(7):
        c.data(1, bytes([0x61 + i]) * 3000, end=i == 6)
    c.frame(WindowUpdateFrame(0, window_increment=100000))
    c.frame(WindowUpdateFrame(1, window_increment=100000))
    c.frame(PingFrame(0, opaque_data=b"pingpong"))
    seed_up("big-body", c, pieces=0x3f, options=2)

    c = server()
    c.headers(1, [("content-length", "0")])
    c.headers(3, [(":status", "200"), ("connection", "close")])
    c.headers(5, [(":status", "200"), ("X-Upper", "1")])
    seed_up("malformed-heads", c, options=7)

    c = server()
    c.headers(1, [(":status", "200"), ("content-length", "10")], end=False)
    c.data(1, b"short")
    c.headers(3, [(":status", "200"), ("content-length", "1")], end=False)
    c.data(3, b"too long")
    seed_up("length-mismatch", c, options=3)

    c = server({MAX_CONCURRENT: 1})
    c.headers(1, [(":status", "200"), ("content-length", "1")], end=False)
    c.data(1, b"1")
    c.headers(3, [(":status", "200"), ("content-length", "1")], end=False)
    c.data(3, b"3")
    seed_up("one-stream-at-a-time", c, options=3)

    c = server()
    c.headers(1, [(":status", "200"), ("content-length", "2")], end=False)
    c.data(1, b"h1")
    c.headers(3, [(":status", "200"), ("content-length", "2")], end=False)
    c.data(3, b"h2")
    seed_up("with-h2-client", c, options=9)

    c = server()
    c.frame(ContinuationFrame(1, b"\x88"))
    seed_up("stray-continuation", c)

    c = server()
    # HEADERS without END_HEADERS, the rest of the block in a CONTINUATION
    block = c.block([(":status", "200"), ("content-length", "0"), ("x-long", "v" * 200)])
    f = HeadersFrame(3, block[:3])
    f.flags.add("END_STREAM")
    c.frame(f)
    g = ContinuationFrame(3, block[3:])
    g.flags.add("END_HEADERS")
    c.frame(g)
    seed_up("continuation", c, options=3)


def main():
    os.makedirs(OUT, exist_ok=True)

    c = Client()
    c.request(1)
    seed("get", c)

    c = Client()
    c.request(1, "POST", "/x", extra=[("content-length", "11")], end=False)
    c.data(1, b"hello world")
    seed("post-data", c, pieces=9)

    c = Client()
    c.request(1, "POST", "/upload", end=False)
    c.data(1, b"first part ", end=False)
    c.data(1, b"second part")
    seed("post-unsized", c)

    c = Client()
    c.request(1, "POST", "/t", extra=[("te", "trailers")], end=False)
    c.data(1, b"body", end=False)
    c.headers(1, [("x-checksum", "abc"), ("grpc-status", "0")])
    seed("trailers", c, pieces=3)

    c = Client()
    block = c.block([(":method", "GET"), (":scheme", "http"), (":path", "/continued"),
                     (":authority", "echo"), ("x-long", "v" * 300)])
    f = HeadersFrame(1, block[:20])
    f.flags.add("END_STREAM")
    c.frame(f)
    g = ContinuationFrame(1, block[20:100])
    c.frame(g)
    g = ContinuationFrame(1, block[100:])
    g.flags.add("END_HEADERS")
    c.frame(g)
    seed("continuation", c)

    c = Client()
    p = PriorityFrame(3)
    p.depends_on, p.stream_weight = 1, 16
    c.frame(p)
    c.request(1, priority=True)
    c.request(3, path="/k", priority=True)
    seed("priority", c)

    c = Client()
    c.request(1, "POST", "/slow", end=False)
    c.data(1, b"partial", end=False)
    c.frame(RstStreamFrame(1, error_code=8))
    c.request(3, path="/after-reset")
    seed("rst-stream", c, pieces=17)

    c = Client()
    c.frame(SettingsFrame(0, settings={HEADER_TABLE_SIZE: 0, ENABLE_PUSH: 0,
                                       MAX_CONCURRENT: 10, INITIAL_WINDOW: 1 << 20,
                                       MAX_FRAME: 1 << 16, MAX_HEADER_LIST: 8192}))
    c.frame(SettingsFrame(0, flags=["ACK"]))
    c.request(1, path="/b")
    seed("settings", c, options=0)

    c = Client()
    c.frame(SettingsFrame(0, settings={INITIAL_WINDOW: 0}))
    c.frame(SettingsFrame(0, flags=["ACK"]))
    c.request(1, path="/b")
    c.frame(WindowUpdateFrame(0, window_increment=1000))
    c.frame(WindowUpdateFrame(1, window_increment=70000))
    c.frame(WindowUpdateFrame(0, window_increment=200000))
    seed("window-update", c, pieces=40)

    c = Client()
    c.frame(PingFrame(0, opaque_data=b"12345678"))
    c.frame(PingFrame(0, opaque_data=b"abcdefgh", flags=["ACK"]))
    c.request(1)
    c.frame(PingFrame(0, opaque_data=b"87654321"))
    seed("ping", c)

    c = Client()
    c.request(1, path="/e")
    c.request(3, path="/n")
    c.frame(GoAwayFrame(0, last_stream_id=0, error_code=0, additional_data=b"bye"))
    seed("goaway", c)

    # an HTTP/2 upstream: bodies, trailers, the stub's resets and GOAWAY
    c = Client()
    c.request(1, "POST", "/k", authority="h2", extra=[("te", "trailers")], end=False)
    c.data(1, b"to an h2 upstream")
    c.request(3, "GET", "/e", authority="h2")
    c.request(5, "GET", "/r", authority="h2")
    c.request(7, "GET", "/g", authority="h2")
    c.request(9, "GET", "/h", authority="h2")
    c.request(11, "GET", "/l", authority="h2")
    seed("h2-upstream", c)

    c = Client()
    c.request(1, "POST", "/echo", authority="h2",
              extra=[("content-type", "application/grpc"), ("te", "trailers"),
                     ("grpc-timeout", "1S")], end=False)
    c.data(1, b"\x00\x00\x00\x00\x05hello", end=False)
    c.headers(1, [("grpc-status", "0")])
    seed("grpc", c)

    c = Client()
    c.request(1, authority="down")
    c.request(3, "POST", "/", authority="retry", extra=[("content-length", "4")], end=False)
    c.data(3, b"body")
    c.request(5, authority="nowhere")
    seed("refused-retried-unknown", c)

    c = Client()
    c.request(1, authority="guard", extra=[("x-debug", "1"), ("x-service-auth", "forged"),
                                            ("cookie", "a=1"), ("cookie", "b=2"),
                                            ("x-request-id", "req-1"),
                                            ("traceparent",
                                             "00-0af7651916cd43dd8448eb211c80319c-"
                                             "b7ad6b7169203331-01")])
    seed("guard-headers", c)

    c = Client()
    c.request(1, "HEAD", "/b")
    c.request(3, "HEAD", "/")
    c.request(5, "OPTIONS", "*")
    c.request(7, "CONNECT", "/")
    seed("methods", c)

    c = Client()
    c.request(1, "POST", "/h", extra=[("expect", "100-continue"), ("content-length", "3")],
              end=False)
    c.data(1, b"abc")
    seed("expect-continue", c)

    c = Client()
    c.request(1, "POST", "/padded", end=False, padding=10)
    c.data(1, b"padded body", padding=30)
    seed("padded", c, pieces=5)

    c = Client()
    c.request(1, extra=[("x-h%d" % i, "v") for i in range(120)])
    c.request(3, extra=[("x-big", "b" * 16000)] * 5)
    seed("header-limits", c)

    c = Client()
    for i in range(8):
        c.request(1 + 2 * i, path="/ekbnhslcgr"[i:i + 1] and "/" + "ekbnhslcgr"[i],
                  authority=["echo", "h2"][i % 2])
    seed("many-streams", c, pieces=0x41)

    c = Client()
    c.request(1, path="/x")
    seed("service-port", c, options=2)

    c = Client()
    c.frame(SettingsFrame(0, settings={MAX_CONCURRENT: 100}))
    c.request(1)
    seed("own-settings", c, options=1)

    # trailers past the head's limits (100 fields with the head's): 431
    c = Client()
    c.request(1, "POST", "/t", end=False)
    c.data(1, b"body", end=False)
    c.headers(1, [("x-t%d" % i, "v") for i in range(100)])
    seed("trailers-over-limits", c)

    # the flood limits of h2_down.c: GOAWAY ENHANCE_YOUR_CALM
    c = Client()
    c.request(1)
    for i in range(210):
        c.frame(PingFrame(0, opaque_data=struct.pack(">Q", i)))
    seed("ping-flood", c)

    c = Client()
    for i in range(205):
        c.frame(SettingsFrame(0, settings={INITIAL_WINDOW: 65535 + i}))
    seed("settings-flood", c)

    c = Client()
    for i in range(210):
        c.request(1 + 2 * i, "POST", "/e", end=False)
        c.frame(RstStreamFrame(1 + 2 * i, error_code=8))
    seed("rapid-reset", c)

    c = Client()
    block = c.block([(":method", "GET"), (":scheme", "http"), (":path", "/"),
                     (":authority", "echo")] + [("x-c%d" % i, "v" * 20) for i in range(10)])
    f = HeadersFrame(1, block[:10])
    f.flags.add("END_STREAM")
    c.frame(f)
    parts = [block[i:i + 20] for i in range(10, len(block), 20)]
    for i, part in enumerate(parts):
        g = ContinuationFrame(1, part)
        if i == len(parts) - 1:
            g.flags.add("END_HEADERS")
        c.frame(g)
    seed("continuation-flood", c)


if __name__ == "__main__":
    main()
    upstream_seeds()
