"""HTTP/2 downstream (SPEC §12, with §4 routing, §5 headers, §7 errors, §9
access log, §11 limits): h2c with prior knowledge on the outbound listener
and on a service's own `listen` port, ALPN h2 on the inbound listener,
each stream proxied to an HTTP/1.1 upstream.

The client is our own, frame by frame (H2 below: hyperframe for frames,
hpack for header blocks), so that a test sees every frame ferry sends,
including what arrives after a GOAWAY, and can send what no polite client
would. H2SelfTest checks H2 against an independent server (python-h2), so a
failure elsewhere is ferry's, not the client's."""

import copy
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import harness

harness.need_python_h2()
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402
import h2.settings  # noqa: E402
import hpack  # noqa: E402
from hpack.huffman import HuffmanEncoder  # noqa: E402
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH  # noqa: E402
import hyperframe.frame as hf  # noqa: E402
from hyperframe.exceptions import HyperframeError  # noqa: E402

from harness import (IO_TIMEOUT, VIA_OUT_RE, UUID4_RE, FerryTestCase, RawClient, Response,
                     chunked, echo, fixed, free_port, large_body, payload, pki, anon_kib, service,
                     sha256, wait_until)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
KEY = "h2-service-key-0123456789"

# error codes (RFC 9113 §7)
NO_ERROR, PROTOCOL_ERROR, STREAM_CLOSED, CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = (
    0x0, 0x1, 0x5, 0x8, 0x9, 0xb)
# settings (RFC 9113 §6.5.2)
S_HEADER_TABLE_SIZE, S_MAX_CONCURRENT_STREAMS, S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE = (
    0x1, 0x3, 0x4, 0x5)

CONNECTION_SPECIFIC = {"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                       "upgrade"}
RSS_SLACK_KIB = 20 * 1024
TRACEPARENT_RE = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


# ---------------------------------------------------------------------------
# the client


class Stream:
    """What arrived on one stream."""

    def __init__(self, sid):
        self.sid = sid
        self.headers = None         # [(name, value)] of the final response, pseudo ones too
        self.informational = []     # 1xx header lists
        self.trailers = None
        self.body = bytearray()
        self.ended = False          # END_STREAM received
        self.reset = None           # RST_STREAM error code received
        self.blocks = []            # header blocks as ferry's HPACK encoder wrote them
        self.never_indexed = set()  # names of fields sent never-indexed

    @property
    def done(self):
        return self.ended or self.reset is not None

    @property
    def status(self):
        for n, v in self.headers or ():
            if n == ":status":
                return int(v)
        return None

    def response(self):
        """A harness Response (pseudo-headers left out), for the harness's
        assertions (assert_ferry_error and friends)."""
        return Response(headers=[(n, v) for n, v in self.headers or () if not n.startswith(":")],
                        body=bytes(self.body), trailers=list(self.trailers or ()),
                        version="HTTP/2", status=self.status or 0)


class H2:
    """A client HTTP/2 connection over a socket (plain: prior knowledge, or
    a TLS socket that negotiated h2).

    Every frame received is parsed and logged in `frames` as (type name,
    flags, stream id, payload length). SETTINGS and PING are acknowledged,
    and received DATA is given back with WINDOW_UPDATEs at once, unless
    auto=False. A closed connection sets `closed`; every GOAWAY is kept in
    `goaways` as (error code, last stream id). Every wait has a deadline."""

    def __init__(self, port=None, *, sock=None, settings=None, timeout=IO_TIMEOUT, auto=True,
                 preface=True, rcvbuf=None):
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(timeout)
            sock.connect((harness.LOOPBACK, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.timeout = timeout
        self.auto = auto
        self.buf = bytearray()
        self.frames = []
        self.goaways = []
        self.closed = False
        self.server_settings = None     # the first SETTINGS frame ferry sent, as a dict
        self.streams = {}
        self.next_sid = 1
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 24
        self.peer_max_frame = 16384
        self.peer_initial_window = 65535
        self.send_window = 65535        # connection-level, toward ferry
        self.stream_windows = {}
        self.data_sent = {}             # stream id -> DATA bytes sent
        self._block = None              # (stream id, header block so far) until END_HEADERS
        if preface:
            self.send(PREFACE + hf.SettingsFrame(0, settings=settings or {}).serialize())

    # sending

    def send(self, data):
        """sendall; False when the connection is gone (a hostile test's
        normal end)."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, socket.timeout, ssl.SSLError, OSError):
            return False

    def send_frames(self, *frames):
        return self.send(b"".join(f.serialize() for f in frames))

    def new_sid(self):
        sid = self.next_sid
        self.next_sid += 2
        return sid

    def header_block(self, headers):
        return self.encoder.encode([(n.encode() if isinstance(n, str) else n,
                                     v.encode("latin-1") if isinstance(v, str) else v)
                                    for n, v in headers])

    def send_headers(self, sid, headers, end_stream=False):
        """HEADERS (+ CONTINUATIONs past the peer's frame size)."""
        return self.send_block(sid, self.header_block(headers), end_stream)

    def send_block(self, sid, block, end_stream=False):
        """An encoded header block as HEADERS (+ CONTINUATIONs)."""
        self.streams.setdefault(sid, Stream(sid))
        self.stream_windows.setdefault(sid, self.peer_initial_window)
        n = self.peer_max_frame
        parts = [block[i:i + n] for i in range(0, len(block), n)] or [b""]
        frames = []
        for i, part in enumerate(parts):
            flags = set()
            if i == len(parts) - 1:
                flags.add("END_HEADERS")
            if i == 0:
                if end_stream:
                    flags.add("END_STREAM")
                frames.append(hf.HeadersFrame(sid, data=part, flags=flags))
            else:
                frames.append(hf.ContinuationFrame(sid, data=part, flags=flags))
        return self.send_frames(*frames)

    def send_body(self, sid, data, end_stream=True, deadline=None):
        """DATA within the flow-control windows, waiting for WINDOW_UPDATEs
        (until deadline); False if they did not come or the link went."""
        deadline = deadline or time.monotonic() + 10
        view = memoryview(data)
        while True:
            room = min(self.send_window, self.stream_windows.get(sid, 0), self.peer_max_frame)
            if room <= 0 and len(view):
                if not self.pump(deadline) or self.streams[sid].reset is not None:
                    return False
                continue
            part = bytes(view[:room])
            view = view[len(part):]
            last = not len(view)
            self.send_window -= len(part)
            self.stream_windows[sid] -= len(part)
            flags = {"END_STREAM"} if last and end_stream else set()
            if not self.send_frames(hf.DataFrame(sid, data=part, flags=flags)):
                return False
            self.data_sent[sid] = self.data_sent.get(sid, 0) + len(part)
            if last:
                return True

    def request(self, path="/", authority="svc", method="GET", headers=(), body=None,
                content_length=True, end_stream=True):
        """Open a stream: HEADERS, then the body if any; its stream id."""
        sid = self.new_sid()
        hdrs = [(":method", method), (":scheme", "http"), (":authority", authority),
                (":path", path), *headers]
        if body is not None and content_length:
            hdrs.append(("content-length", str(len(body))))
        no_body = body is None or not len(body)
        self.send_headers(sid, hdrs, end_stream=end_stream and no_body)
        if not no_body:
            self.send_body(sid, body, end_stream)
        return sid

    def reset_stream(self, sid, code=CANCEL):
        return self.send_frames(hf.RstStreamFrame(sid, error_code=code))

    # receiving

    def pump(self, deadline, chunk=1 << 18):
        """Read once (until deadline, up to CHUNK bytes) and handle every
        complete frame; False when nothing more can come (closed or
        deadline passed)."""
        if self.closed:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            self.sock.settimeout(left)
            data = self.sock.recv(chunk)
        except socket.timeout:
            return False
        except (ConnectionResetError, ssl.SSLError, OSError):
            data = b""
        if not data:
            self.closed = True
            return False
        self.buf += data
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + length:
                break
            head, body = bytes(self.buf[:9]), bytes(self.buf[9:9 + length])
            del self.buf[:9 + length]
            try:
                frame, _ = hf.Frame.parse_frame_header(memoryview(head))
                frame.parse_body(memoryview(body))
            except HyperframeError as e:
                self.frames.append(("INVALID", frozenset(), None, length, repr(e)))
                continue
            self.on_frame(frame, length)
        return True

    def on_frame(self, frame, length):
        kind = type(frame).__name__.replace("Frame", "").upper()
        self.frames.append((kind, frozenset(frame.flags), frame.stream_id, length))
        sid = frame.stream_id
        if isinstance(frame, hf.SettingsFrame):
            if "ACK" in frame.flags:
                return
            if self.server_settings is None:
                self.server_settings = dict(frame.settings)
            if S_HEADER_TABLE_SIZE in frame.settings:
                self.encoder.header_table_size = frame.settings[S_HEADER_TABLE_SIZE]
            if S_MAX_FRAME_SIZE in frame.settings:
                self.peer_max_frame = frame.settings[S_MAX_FRAME_SIZE]
            if S_INITIAL_WINDOW_SIZE in frame.settings:
                delta = frame.settings[S_INITIAL_WINDOW_SIZE] - self.peer_initial_window
                self.peer_initial_window = frame.settings[S_INITIAL_WINDOW_SIZE]
                for k in self.stream_windows:
                    self.stream_windows[k] += delta
            if self.auto:
                self.send_frames(hf.SettingsFrame(0, flags={"ACK"}))
        elif isinstance(frame, hf.PingFrame):
            if "ACK" not in frame.flags and self.auto:
                self.send_frames(hf.PingFrame(0, opaque_data=frame.opaque_data, flags={"ACK"}))
        elif isinstance(frame, hf.GoAwayFrame):
            self.goaways.append((frame.error_code, frame.last_stream_id))
        elif isinstance(frame, hf.WindowUpdateFrame):
            if sid == 0:
                self.send_window += frame.window_increment
            else:
                self.stream_windows[sid] = (self.stream_windows.get(sid, self.peer_initial_window)
                                            + frame.window_increment)
        elif isinstance(frame, hf.RstStreamFrame):
            self.streams.setdefault(sid, Stream(sid)).reset = frame.error_code
        elif isinstance(frame, hf.DataFrame):
            st = self.streams.setdefault(sid, Stream(sid))
            st.body += frame.data
            if "END_STREAM" in frame.flags:
                st.ended = True
            n = frame.flow_controlled_length
            if self.auto and n:
                ups = [hf.WindowUpdateFrame(0, window_increment=n)]
                if not st.ended:
                    ups.append(hf.WindowUpdateFrame(sid, window_increment=n))
                self.send_frames(*ups)
        elif isinstance(frame, (hf.HeadersFrame, hf.ContinuationFrame)):
            if isinstance(frame, hf.HeadersFrame):
                self._block = (sid, bytearray(frame.data), "END_STREAM" in frame.flags)
            else:
                self._block[1].extend(frame.data)
            if "END_HEADERS" in frame.flags:
                bsid, block, end = self._block
                self._block = None
                self.on_headers(bsid, block, end)

    def on_headers(self, sid, block, end):
        decoded = self.decoder.decode(bytes(block), raw=True)
        fields = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in decoded]
        st = self.streams.setdefault(sid, Stream(sid))
        st.blocks.append(bytes(block))
        st.never_indexed |= {f[0].decode("latin-1") for f in decoded if not f.indexable}
        if st.headers is None:
            status = dict(fields).get(":status", "")
            if status.startswith("1"):
                st.informational.append(fields)
            else:
                st.headers = fields
        else:
            st.trailers = fields
        if end:
            st.ended = True

    def wait(self, predicate, timeout=IO_TIMEOUT):
        """Pump until predicate() is true, the connection closes or timeout;
        predicate()'s last value."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if not self.pump(deadline):
                return predicate()
        return predicate()

    def response(self, sid, timeout=IO_TIMEOUT):
        """The stream once it ended (AssertionError, saying why, if it did not)."""
        st = self.streams.setdefault(sid, Stream(sid))
        self.wait(lambda: st.done, timeout)
        if not st.ended:
            raise AssertionError(
                "stream %d did not complete within %.1fs: reset=%r headers=%r body=%d bytes, "
                "closed=%r goaways=%r, unparsed bytes %r"
                % (sid, timeout, st.reset, st.headers, len(st.body), self.closed, self.goaways,
                   bytes(self.buf[:80])))
        return st

    def get(self, path="/", authority="svc", headers=(), timeout=IO_TIMEOUT, **kw):
        return self.response(self.request(path, authority, headers=headers, **kw), timeout)

    def wait_goaway_or_close(self, timeout):
        """Read (and drop) frames until a GOAWAY or the close, within timeout."""
        return self.wait(lambda: self.goaways or self.closed, timeout)

    def wait_closed(self, timeout):
        return self.wait(lambda: self.closed, timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def hname(headers, name):
    return [v for n, v in headers if n == name]


class RssWatch:
    """The peak RssAnon of a process, sampled every 20 ms in a thread."""

    def __init__(self, pid):
        self.pid = pid
        self.start_kib = anon_kib(pid)
        self.peak_kib = self.start_kib
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.02):
            try:
                self.peak_kib = max(self.peak_kib, anon_kib(self.pid))
            except OSError:
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(2)

    def growth_kib(self):
        return self.peak_kib - self.start_kib


def metric(f, name, **labels):
    """The value of the series NAME with exactly LABELS (None if absent)."""
    text = f.admin("/metrics").body.decode()
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if got == labels:
            return float(m.group(3))
    return None


def by_path(routes, default=None):
    """An upstream behaviour chosen by the request target's path prefix."""
    default = default or echo()

    def behave(conn, req):
        for prefix, b in routes.items():
            if req.target.startswith(prefix):
                return b(conn, req)
        return default(conn, req)
    return behave


def slow(seconds):
    """Answer (echo) after SECONDS."""
    def behave(conn, req):
        if conn.sleep(seconds):
            echo()(conn, req)
    return behave


def h2_service(upstream, **extra):
    """service(), pinned to HTTP/1.1 upstream (upstream h2 is not under test here)."""
    return service(upstream, protocol="http1", **extra)


# ---------------------------------------------------------------------------
# a small independent HTTP/2 server (python-h2), to test the client itself


class ToyH2Server:
    """python-h2 server: GET /big/N answers N bytes of payload(); anything
    else gets a JSON echo of its headers, body length and sha256."""

    def __init__(self):
        self.listener = harness.bound_socket(reuseaddr=True)
        self.listener.listen(16)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.authorities = set()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(3)
        self.listener.close()

    def _accept(self):
        for s in harness.accepted(self.listener, self.stopping):
            t = threading.Thread(target=self._serve, args=(s,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, s):
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                     header_encoding="utf-8"))
        conn.local_settings = h2.settings.Settings(
            client=False, initial_values={S_MAX_CONCURRENT_STREAMS: 128})
        conn.initiate_connection()
        harness.send_all(s, conn.data_to_send())
        s.settimeout(0.1)
        reqs, pending = {}, {}      # stream id -> (headers, body) / bytes left to send
        try:
            while not self.stopping.is_set():
                try:
                    data = s.recv(65536)
                except socket.timeout:
                    data = None
                if data == b"":
                    return
                for ev in conn.receive_data(data) if data else ():
                    if isinstance(ev, h2.events.RequestReceived):
                        reqs[ev.stream_id] = (ev.headers, bytearray())
                        self.authorities.add(dict(ev.headers).get(":authority"))
                    elif isinstance(ev, h2.events.DataReceived):
                        reqs[ev.stream_id][1].extend(ev.data)
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        hdrs, body = reqs.pop(ev.stream_id)
                        path = dict(hdrs)[":path"]
                        if path.startswith("/big/"):
                            out = payload(int(path[5:]))
                            ctype = "application/octet-stream"
                        else:
                            out = json.dumps({"headers": hdrs, "body_len": len(body),
                                              "body_sha256": sha256(bytes(body))}).encode()
                            ctype = "application/json"
                        conn.send_headers(ev.stream_id, [(":status", "200"),
                                                         ("content-type", ctype)])
                        pending[ev.stream_id] = memoryview(out)
                for sid in list(pending):
                    left = pending[sid]
                    while True:
                        room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size,
                                   len(left))
                        if room <= 0 and len(left):
                            break
                        conn.send_data(sid, bytes(left[:room]), end_stream=room == len(left))
                        left = left[room:]
                        if not len(left):
                            del pending[sid]
                            break
                    if sid in pending:
                        pending[sid] = left
                harness.send_all(s, conn.data_to_send())
        except OSError:
            pass
        finally:
            s.close()


class H2SelfTest(FerryTestCase):
    """The client above against python-h2 (no ferry): flow control both
    ways, many streams, header blocks. If these fail, the suite's findings
    about ferry mean nothing."""

    def setUp(self):
        super().setUp()
        self.srv = ToyH2Server()
        self._closers.append(self.srv.stop)

    def test_client_against_python_h2(self):
        with H2(self.srv.port) as c:
            st = c.get("/x?y=1", headers=[("x-a", "1")])
            self.assertEqual(st.status, 200)
            self.assertEqual(c.server_settings.get(S_MAX_CONCURRENT_STREAMS), 128)
            got = json.loads(st.body)
            self.assertIn([":authority", "svc"], got["headers"])
            self.assertIn(["x-a", "1"], got["headers"])
            big = payload(1 << 20, seed=3)
            st = c.get("/up", method="POST", body=big, timeout=10)
            self.assertEqual(json.loads(st.body)["body_sha256"], sha256(big))
            st = c.get("/big/%d" % (1 << 20), timeout=10)
            self.assertEqual(sha256(bytes(st.body)), sha256(payload(1 << 20)))
            sids = [c.request("/s%d" % i) for i in range(100)]
            for sid in sids:
                self.assertEqual(c.response(sid, timeout=10).status, 200)
            st = c.get("/h", headers=[("x-big", "v" * 40000)], timeout=5)   # CONTINUATIONs
            self.assertEqual(st.status, 200)
            self.assertIn(["x-big", "v" * 40000], json.loads(st.body)["headers"])

    def test_h2load_output_parsed(self):
        counts = run_h2load(self, self.srv.port, n=200, c=2, m=8)
        self.assertEqual((counts["succeeded"], counts["errored"], counts["failed"]), (200, 0, 0))
        self.assertEqual(self.srv.authorities, {"svc"})


def run_h2load(test, port, n, c, m, authority="svc", timeout=120):
    exe = shutil.which("h2load")
    if not exe:
        test.skipTest("h2load not installed (Debian package nghttp2-client)")
    proc = subprocess.run([exe, "-n", str(n), "-c", str(c), "-m", str(m),
                           "-H", ":authority: %s" % authority,
                           "http://127.0.0.1:%d/load" % port],
                          capture_output=True, text=True, timeout=timeout)
    m_ = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                   r"(\d+) failed, (\d+) errored, (\d+) timeout", proc.stdout)
    test.assertIsNotNone(m_, "h2load output not understood:\n%s\n%s" % (proc.stdout, proc.stderr))
    keys = ("total", "started", "done", "succeeded", "failed", "errored", "timeout")
    counts = dict(zip(keys, map(int, m_.groups())))
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", proc.stdout)
    counts["2xx"] = int(codes.group(1)) if codes else None
    counts["output"] = proc.stdout
    return counts


# ---------------------------------------------------------------------------
# against ferry


class H2Case(FerryTestCase):
    """One TLS upstream (echo unless a path says otherwise) behind service
    `svc` with a key, and `dead` pointing at a closed port."""

    routes = {}
    svc_extra = {}
    ferry_extra = {}
    outbound = {}

    def setUp(self):
        super().setUp()
        self.up = self.upstream(by_path(dict(self.routes)))
        self.listen_port = free_port()
        dead = {"endpoints": ["127.0.0.1:%d" % free_port()], "protocol": "http1",
                "retries": {"max": 1, "backoff": {"base": "1ms", "max": "2ms"}}}
        self.f = self.ferry({
            "svc": h2_service(self.up, auth={"key_env": "H2_KEY"}, **self.svc_extra),
            "other": h2_service(self.up, listen="127.0.0.1:%d" % self.listen_port),
            "dead": dead,
            "tight": h2_service(self.up, timeouts={"request": "300ms"}, retries={"max": 0}),
            "limited": h2_service(self.up, rate_limit={"rps": 1, "burst": 2}),
        }, env={"H2_KEY": KEY}, outbound=dict(self.outbound), **self.ferry_extra)

    def tearDown(self):
        try:
            self.assert_access_log_clean()
        finally:
            super().tearDown()

    def assert_access_log_clean(self):
        """Every complete line of the access log is a JSON object of
        printable ASCII (a corrupt line is a memory error showing)."""
        text = self.f.stdout_text()
        for line in text.split("\n")[:-1]:
            ok = bool(re.match(r"^[\x20-\x7e]*$", line))
            try:
                ok = ok and isinstance(json.loads(line), dict)
            except ValueError:
                ok = False
            self.assertTrue(ok, "corrupt access log line: %r" % line[:400])

    def h2(self, **kw):
        c = H2(self.f.outbound_port, **kw)
        self._closers.append(c.close)
        return c

    def assert_unharmed(self):
        """ferry is alive, and new connections of both kinds are served."""
        self.assertTrue(self.f.alive(), "ferry died: %s" % self.f.exit_description())
        self.up.behaviour = echo()
        resp = self.f.get("/after-h1", host="svc")
        self.assertEqual(resp.status, 200, "a fresh HTTP/1.1 request failed")
        with H2(self.f.outbound_port) as c:
            st = c.get("/after-h2")
            self.assertEqual(st.status, 200, "a fresh h2c request failed: %r" % st.headers)

    def upstream_request(self, path):
        """The upstream's record of the request for PATH (waits for it)."""
        req = wait_until(lambda: next((r for r in self.up.requests if r.target == path), None),
                         IO_TIMEOUT)
        self.assertIsNotNone(req, "the upstream never saw %s" % path)
        return req

    def log_entry(self, path, timeout=3.0):
        """The access log line of the request to PATH (lines reach stdout
        within a second)."""
        def find():
            for e in self.f.access_log():
                if e.get("path") == path:
                    return e
            return None
        entry = wait_until(find, timeout, interval=0.05)
        self.assertIsNotNone(entry, "no access log line for %s in:\n%s"
                             % (path, self.f.stdout_text()[-2000:]))
        return entry


class PoliteTest(H2Case):
    """§12 with §4/§5: what an ordinary h2c client sends and gets."""

    routes = {
        "/chunked": chunked([b"alpha-", b"beta-", b"", b"gamma" * 1000],
                            headers=[("Content-Type", "text/plain")]),
        "/big": large_body(1 << 20, seed=7),
        "/nocontent": harness.no_body(204),
        "/hints": harness.informational(103, [("Link", "</a.css>; rel=preload")]),
    }

    def test_get_routes_by_authority_and_adds_headers(self):
        with self.h2() as c:
            st = c.get("/api/users?id=7", headers=[("accept", "application/json"),
                                                    ("x-service-auth", "app-must-not-choose")])
        self.assertEqual(st.status, 200, st.headers)
        req = self.upstream_request("/api/users?id=7")
        self.assertEqual((req.method, req.version), ("GET", "HTTP/1.1"))
        self.assertEqual(req.header_all("host"), ["backend"])
        self.assertEqual(req.header_all("accept"), ["application/json"])
        self.assertEqual(req.header_all("x-service-auth"), [KEY])
        self.assertRegex(req.header("x-correlation-id") or "", UUID4_RE)
        self.assertRegex(req.header("x-request-id") or "", UUID4_RE)
        self.assertRegex(req.header("traceparent") or "", harness.TRACEPARENT_NEW_RE)
        self.assertEqual(len(req.header_all("via")), 1, req.headers)
        self.assertRegex(req.header("via"), VIA_OUT_RE)
        names = req.names()
        self.assertFalse([n for n in names if n.startswith(":")], "pseudo-headers upstream: %r" % names)
        self.assertNotIn("te", names)
        # the response: upstream's headers and ferry's ids, nothing connection-specific
        rnames = [n for n, _ in st.headers]
        self.assertEqual(rnames[0], ":status", "pseudo-header not first")
        self.assertEqual([n for n in rnames if n.startswith(":")], [":status"])
        self.assertEqual(rnames, [n.lower() for n in rnames], "upper-case names on HTTP/2")
        self.assertFalse(CONNECTION_SPECIFIC & set(rnames), rnames)
        self.assertEqual(hname(st.headers, "content-type"), ["application/json"])
        self.assertEqual(hname(st.headers, "x-correlation-id"), req.header_all("x-correlation-id"))
        self.assertEqual(hname(st.headers, "x-request-id"), req.header_all("x-request-id"))
        echoed = json.loads(st.body)
        self.assertEqual(echoed["target"], "/api/users?id=7")

    def test_id_names_indexed_once_per_connection(self):
        """HPACK toward the app: the first response of a connection puts
        the ids in the client's dynamic table; later ones name them by that
        index and send their values never-indexed. So the names cross the
        wire once a connection, and ids unique to a response do not churn
        the table."""
        names = ("x-correlation-id", "x-request-id")
        with self.h2() as c:
            sts = [c.get("/idx/%d" % i) for i in range(4)]
            table = [bytes(n).decode() for n, _ in c.decoder.header_table.dynamic_entries]
        self.assertEqual([st.status for st in sts], [200] * 4)
        self.assertEqual(len({hname(st.headers, "x-request-id")[0] for st in sts}), 4)
        for name in names:
            self.assertEqual(table.count(name), 1, table)
        forms = {n: (n.encode(), HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
                     .encode(n.encode())) for n in names}
        for name in names:
            self.assertTrue(any(f in sts[0].blocks[0] for f in forms[name]),
                            "the first response did not spell %s out" % name)
            for st in sts[1:]:
                self.assertIn(name, st.never_indexed)
                self.assertFalse(any(f in st.blocks[0] for f in forms[name]),
                                 "a later response spelt %s out again" % name)

    def test_same_headers_upstream_as_for_http1(self):
        common = [("accept", "*/*"), ("x-correlation-id", "corr-h2-1"), ("x-custom", "Mixed Case")]
        self.f.get("/cmp/h1", host="svc", headers=[*common, ("Accept-Encoding", "identity")])
        with self.h2() as c:
            st = c.get("/cmp/h2", headers=[*common, ("accept-encoding", "identity")])
        self.assertEqual(st.status, 200)
        h1, h2_ = self.upstream_request("/cmp/h1"), self.upstream_request("/cmp/h2")
        self.assertEqual(sorted(h2_.names()), sorted(h1.names()),
                         "an h2 client's request reached the upstream with other header "
                         "fields than an HTTP/1.1 client's")
        for name in ("host", "x-service-auth", "x-correlation-id", "x-custom", "accept"):
            self.assertEqual(h2_.header_all(name), h1.header_all(name), name)
        self.assertEqual(h2_.header_all("x-correlation-id"), ["corr-h2-1"])
        self.assertEqual(hname(st.headers, "x-correlation-id"), ["corr-h2-1"])

    def test_cookie_crumbs_joined_for_http1(self):
        # RFC 9113 §8.2.3: split cookie fields are one "; "-joined field on HTTP/1.1
        with self.h2() as c:
            st = c.get("/cookie", headers=[("cookie", "a=1"), ("cookie", "b=2")])
        self.assertEqual(st.status, 200)
        self.assertEqual(self.upstream_request("/cookie").header_all("cookie"), ["a=1; b=2"])

    def test_te_trailers_kept(self):
        # §12: te: trailers is the one connection-specific field HTTP/2 allows
        with self.h2() as c:
            st = c.get("/te", headers=[("te", "trailers")])
        self.assertEqual(st.status, 200)
        self.assertEqual(self.upstream_request("/te").header_all("te"), ["trailers"])

    def test_head_and_204_have_no_body(self):
        with self.h2() as c:
            head = c.get("/", method="HEAD")
            nc = c.get("/nocontent")
            after = c.get("/after-head")
        self.assertEqual((head.status, bytes(head.body)), (200, b""))
        self.assertEqual((nc.status, bytes(nc.body)), (204, b""))
        self.assertEqual(after.status, 200)
        self.assertEqual(self.upstream_request("/").method, "HEAD")
        for path, method, status in (("/", "HEAD", 200), ("/nocontent", "GET", 204)):
            e = self.log_entry(path)
            self.assertEqual((e["method"], e["status"], e["error"]), (method, status, None), e)

    def test_expect_100_continue_answered_by_ferry(self):
        with self.h2() as c:
            sid = c.request("/expect", method="POST", end_stream=False,
                            headers=[("expect", "100-continue"), ("content-length", "5")])
            st = c.streams[sid]
            c.wait(lambda: st.informational or st.done, 3)
            self.assertEqual([dict(h).get(":status") for h in st.informational], ["100"],
                             "no 100 Continue (headers %r)" % (st.headers,))
            c.send_body(sid, b"hello")
            st = c.response(sid)
        self.assertEqual(st.status, 200)
        req = self.upstream_request("/expect")
        self.assertEqual((req.body, req.header_all("expect")), (b"hello", []))

    def test_interim_103_relayed(self):
        with self.h2() as c:
            st = c.get("/hints")
        self.assertEqual(st.status, 200)
        self.assertEqual([(dict(h).get(":status"), hname(h, "link")) for h in st.informational],
                         [("103", ["</a.css>; rel=preload"])])

    def test_host_header_routes_without_authority(self):
        # RFC 9113 §8.3.1: no :authority, then Host names the target
        with self.h2() as c:
            sid = c.new_sid()
            c.send_headers(sid, [(":method", "GET"), (":scheme", "http"), (":path", "/by-host"),
                                 ("host", "svc")], end_stream=True)
            st = c.response(sid)
        self.assertEqual(st.status, 200, st.headers)
        self.assertEqual(self.upstream_request("/by-host").header_all("x-service-auth"), [KEY])

    def test_curl_prior_knowledge(self):
        exe = shutil.which("curl")
        if not exe:
            self.skipTest("curl not installed")
        body = payload(200000, seed=4)
        path = os.path.join(self.f.dir, "body.bin")
        with open(path, "wb") as fh:
            fh.write(body)
        proc = subprocess.run([exe, "-sS", "--http2-prior-knowledge", "-o", "-", "-D", "/dev/stderr",
                               "-H", "Host: svc", "-H", "Content-Type: application/octet-stream",
                               "--data-binary", "@" + path,
                               "http://127.0.0.1:%d/curl" % self.f.outbound_port],
                              capture_output=True, timeout=30)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertRegex(proc.stderr.decode(), r"^HTTP/2 200")
        echoed = json.loads(proc.stdout)
        self.assertEqual((echoed["target"], echoed["body_sha256"]), ("/curl", sha256(body)))

    def test_nghttp_client(self):
        exe = shutil.which("nghttp")
        if not exe:
            self.skipTest("nghttp not installed")
        proc = subprocess.run([exe, "-n", "-s", "-H", ":authority: svc",
                               "http://127.0.0.1:%d/nghttp" % self.f.outbound_port,
                               "http://127.0.0.1:%d/nghttp2" % self.f.outbound_port],
                              capture_output=True, text=True, timeout=30)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.upstream_request("/nghttp")
        self.upstream_request("/nghttp2")

    def test_post_with_content_length(self):
        body = b'{"name":"x","n":1}'
        with self.h2() as c:
            st = c.get("/post/cl", method="POST", body=body,
                       headers=[("content-type", "application/json")])
        self.assertEqual(st.status, 200)
        req = self.upstream_request("/post/cl")
        self.assertEqual((req.method, req.body), ("POST", body))
        self.assertEqual(req.header_all("content-length"), [str(len(body))])
        self.assertEqual(req.header_all("transfer-encoding"), [])

    def test_post_without_content_length(self):
        body = b"no length given " * 100
        with self.h2() as c:
            st = c.get("/post/nocl", method="POST", body=body, content_length=False)
        self.assertEqual(st.status, 200)
        req = self.upstream_request("/post/nocl")
        self.assertEqual(req.body, body)
        self.assertIn(req.framing, ("chunked", "length"), req.headers)

    def test_post_in_several_data_frames_and_empty_end(self):
        with self.h2() as c:
            sid = c.request("/post/parts", method="POST", end_stream=False)
            for part in (b"one,", b"two,", b"three"):
                c.send_body(sid, part, end_stream=False)
            c.send_frames(hf.DataFrame(sid, data=b"", flags={"END_STREAM"}))
            st = c.response(sid)
        self.assertEqual(st.status, 200)
        self.assertEqual(self.upstream_request("/post/parts").body, b"one,two,three")

    def test_1mib_request_body(self):
        body = payload(1 << 20, seed=11)
        with self.h2() as c:
            st = c.get("/upload", method="POST", body=body, timeout=15)
        self.assertEqual(st.status, 200)
        echoed = json.loads(st.body)
        self.assertEqual((echoed["body_len"], echoed["body_sha256"]), (len(body), sha256(body)))

    def test_1mib_response_body(self):
        with self.h2() as c:
            st = c.get("/big", timeout=15)
        self.assertEqual(st.status, 200)
        self.assertEqual(len(st.body), 1 << 20)
        self.assertEqual(sha256(bytes(st.body)), sha256(payload(1 << 20, seed=7)))
        self.assertIn(hname(st.headers, "content-length"), ([], [str(1 << 20)]))

    def test_chunked_upstream_response_arrives_unframed(self):
        with self.h2() as c:
            st = c.get("/chunked")
        self.assertEqual(st.status, 200)
        self.assertEqual(bytes(st.body), b"alpha-beta-" + b"gamma" * 1000)
        self.assertNotIn("transfer-encoding", [n for n, _ in st.headers])
        self.assertEqual(hname(st.headers, "content-type"), ["text/plain"])

    def test_hop_by_hop_response_headers_dropped(self):
        def hop(conn, req):
            conn.send(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\n"
                      b"Keep-Alive: timeout=30\r\nX-Hop: secret\r\nProxy-Connection: x\r\n"
                      b"X-Custom: Value-1\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        self.up.behaviour = hop
        with self.h2() as c:
            st = c.get("/hop")
        self.assertEqual(st.status, 200)
        names = [n for n, _ in st.headers]
        self.assertFalse((CONNECTION_SPECIFIC | {"x-hop"}) & set(names), names)
        self.assertEqual(hname(st.headers, "x-custom"), ["Value-1"])
        self.assertEqual(hname(st.headers, "set-cookie"), ["a=1", "b=2"])
        self.assertEqual(bytes(st.body), b"hello")

    def test_listen_port_routes_to_its_service(self):
        with H2(self.listen_port) as c:
            st = c.get("/via-listen", authority="whatever.example")
        self.assertEqual(st.status, 200, st.headers)
        req = self.upstream_request("/via-listen")
        self.assertEqual(req.header_all("x-service-auth"), [], "svc's key went to `other`")

    def test_max_concurrent_streams_advertised(self):
        with self.h2() as c:
            self.assertTrue(c.wait(lambda: c.server_settings is not None), "no SETTINGS from ferry")
            self.assertEqual(c.frames[0][0], "SETTINGS", "ferry's first frame: %r" % (c.frames[:1],))
            self.assertEqual(c.server_settings.get(S_MAX_CONCURRENT_STREAMS), 128,
                             c.server_settings)


class TrailersTest(H2Case):
    """§12: trailers translated between HTTP/2 clients and an HTTP/1.1
    service, both ways; what is framing, hop-by-hop or ferry's own never
    travels in them, and they share the head's limits (§11)."""

    routes = {
        "/trailers": chunked([b"body-", b"bytes"],
                             trailers=[("X-Sum", "42"), ("x-request-id", "evil"),
                                       ("X-Service-Auth", "leak"), ("x-more", "yes")],
                             headers=[("Content-Type", "text/plain")]),
        "/hugetrailers": chunked([b"x"], trailers=[("x-t%03d" % i, "v") for i in range(120)]),
    }

    def test_service_trailers_reach_h2_client_as_trailing_headers(self):
        with self.h2() as c:
            st = c.get("/trailers")
            self.assertEqual((st.status, bytes(st.body)), (200, b"body-bytes"))
            self.assertEqual(st.trailers, [("x-sum", "42"), ("x-more", "yes")])
            # the trailers are a HEADERS frame after the DATA, ending the stream
            kinds = [(k, "END_STREAM" in fl) for k, fl, sid, _ in c.frames if sid == 1]
            self.assertEqual(kinds[-1], ("HEADERS", True), kinds)
            self.assertIn(("DATA", False), kinds)

    def test_service_trailers_reach_http1_client_filtered(self):
        with self.f.client() as c:
            r = c.request("GET", "/trailers", [("Host", "svc")])
        self.assertEqual((r.status, r.framing, r.body), (200, "chunked", b"body-bytes"))
        self.assertEqual(r.trailers, [("X-Sum", "42"), ("x-more", "yes")])

    def test_h2_request_trailers_reach_http1_service_as_chunked_trailers(self):
        with self.h2() as c:
            sid = c.request("/post/trailers", method="POST", end_stream=False)
            c.send_body(sid, b"first,", end_stream=False)
            c.send_body(sid, b"second", end_stream=False)
            c.send_headers(sid, [("x-checksum", "abc123"), ("x-service-auth", "not-yours"),
                                 ("x-tail", "")], end_stream=True)
            st = c.response(sid)
        self.assertEqual(st.status, 200)
        req = self.upstream_request("/post/trailers")
        self.assertEqual((req.framing, req.body), ("chunked", b"first,second"))
        self.assertEqual(req.trailers, [("x-checksum", "abc123"), ("x-tail", "")])

    def test_h2_request_trailers_with_content_length_are_not_framed(self):
        """A body with a content-length has no place for trailers in
        HTTP/1.1: the body goes as it is, the trailers are left out."""
        with self.h2() as c:
            sid = c.request("/post/cltrailers", method="POST",
                            headers=[("content-length", "5")], end_stream=False)
            c.send_body(sid, b"hello", end_stream=False)
            c.send_headers(sid, [("x-checksum", "abc123")], end_stream=True)
            st = c.response(sid)
        self.assertEqual(st.status, 200)
        req = self.upstream_request("/post/cltrailers")
        self.assertEqual((req.framing, req.body, req.trailers), ("length", b"hello", []))

    def test_service_trailers_over_the_limits_reset_that_stream_only(self):
        with self.h2() as c:
            sid = c.request("/hugetrailers")
            ok = c.request("/fine")
            c.wait(lambda: c.streams[sid].done and c.streams[ok].done)
            self.assertIsNotNone(c.streams[sid].reset, "trailers over 100 fields were relayed")
            self.assertIsNone(c.streams[sid].trailers)
            self.assertEqual(c.streams[ok].status, 200)
            self.assertEqual(c.get("/after").status, 200)
        self.assert_unharmed()


class ManyStreamsTest(H2Case):
    """Up to 128 streams at once mean up to 128 new TLS connections to the
    (Python) upstream at once: on two busy cores its handshakes can take
    longer than the default 1 s connect timeout, which is not under test."""

    svc_extra = {"timeouts": {"connect": "10s"}}

    def test_100_concurrent_streams_on_one_connection(self):
        with self.h2() as c:
            sids = [c.request("/many/%d" % i) for i in range(100)]
            for sid in sids:
                st = c.response(sid, timeout=20)
                self.assertEqual(st.status, 200, (sid, st.headers, st.body))
                self.assertEqual(json.loads(st.body)["target"], "/many/%d" % ((sid - 1) // 2))
        self.assertEqual(len(self.up.requests), 100)

    def test_streams_beyond_128_refused(self):
        # RFC 9113 §5.1.2 asks for a stream error (REFUSED_STREAM or
        # PROTOCOL_ERROR) past the advertised limit; nghttp2 makes it a
        # connection error once the SETTINGS are acknowledged. Either way:
        # the limit holds, the peer is told, nothing else notices.
        self.up.behaviour = slow(1.0)
        with self.h2() as c:
            c.wait(lambda: c.server_settings is not None)
            c.wait(lambda: False, 0.1)      # our SETTINGS ACK is out
            sids = [c.request("/limit/%d" % i) for i in range(132)]
            c.wait(lambda: c.goaways or c.closed or all(c.streams[s].done for s in sids), 20)
            if c.goaways:
                code, last = c.goaways[0]
                self.assertEqual(code, PROTOCOL_ERROR, c.goaways)
                self.assertLess(last, sids[128], "GOAWAY covers a stream past the limit")
                self.assertTrue(c.wait_closed(5))
            else:
                for sid in sids[:128]:
                    self.assertEqual(c.streams[sid].status, 200, c.streams[sid].headers)
                refused = [c.streams[s].reset for s in sids[128:]]
                self.assertEqual(len([r for r in refused if r in (0x7, PROTOCOL_ERROR)]), 4,
                                 "streams past 128: resets %r, statuses %r"
                                 % (refused, [c.streams[s].status for s in sids[128:]]))
                self.up.behaviour = echo()
                self.assertEqual(c.get("/after-limit").status, 200)
        time.sleep(0.5)
        self.assertLessEqual(len([r for r in self.up.requests if r.target.startswith("/limit/")]),
                             128, "more than 128 streams of one connection went upstream")
        self.up.behaviour = echo()
        with self.h2() as c:
            self.assertEqual(c.get("/fresh").status, 200)

    def test_h2load_2000_requests(self):
        counts = run_h2load(self, self.f.outbound_port, n=2000, c=4, m=8)
        self.assertEqual((counts["succeeded"], counts["failed"], counts["errored"],
                          counts["timeout"], counts["2xx"]), (2000, 0, 0, 0, 2000),
                         counts["output"])
        self.assertEqual(len([r for r in self.up.requests if r.target == "/load"]), 2000)


class EndedStreamsMemoryTest(FerryTestCase):
    """A connection keeps nothing of its ended streams (§12): nghttp2 kept
    up to 128 closed streams a connection for RFC 7540's priority tree
    (27 KiB a connection after a burst of 100 here); ferry says
    SETTINGS_NO_RFC7540_PRIORITIES, and they go as they end."""

    N_CONNS = 64
    BURST = 100
    MAX_PER_CONN_KIB = 6

    def test_a_burst_of_streams_leaves_nothing_behind(self):
        up = self.upstream(fixed(body=b"x" * 64), tls=False)
        f = self.ferry({"svc": service(up)}, workers=1)

        def burst(c, n):
            sids = [c.request("/burst") for _ in range(n)]
            for sid in sids:
                self.assertEqual(c.response(sid, timeout=20).status, 200)

        # warm-up: the upstream pool grows to a burst's size, once
        with H2(f.outbound_port) as c:
            burst(c, self.BURST)
        conns = []
        for _ in range(self.N_CONNS):
            c = H2(f.outbound_port)
            self._closers.append(c.close)
            burst(c, 1)
            conns.append(c)
        self.assertEqual(conns[0].server_settings.get(0x9), 1, conns[0].server_settings)
        time.sleep(0.5)
        before = anon_kib(f.proc.pid)
        for c in conns:
            burst(c, self.BURST)
        time.sleep(0.5)
        after = anon_kib(f.proc.pid)
        # each connection still serves
        for c in conns[::8]:
            burst(c, 2)
        if harness.sanitized(f.proc.pid):
            return
        per_conn = (after - before) / self.N_CONNS
        self.assertLess(per_conn, self.MAX_PER_CONN_KIB,
                        "RssAnon %d -> %d KiB: %.1f KiB a connection after %d streams ended"
                        % (before, after, per_conn, self.BURST))


class FlowControlTest(H2Case):
    """Back-pressure through ferry on HTTP/2 (§6 Streaming, §12): a reader
    that stops is not buffered for, and the transfer resumes intact."""

    routes = {"/huge": large_body(32 << 20, seed=13), "/two": large_body(2 << 20, seed=5)}

    def test_response_paused_while_client_does_not_read(self):
        c = self.h2(rcvbuf=16384, timeout=10)
        with RssWatch(self.f.proc.pid) as rss:
            sid = c.request("/huge")
            time.sleep(2.5)             # not reading: windows stay open, the socket fills
        self.assertLess(rss.growth_kib(), RSS_SLACK_KIB,
                        "RSS grew %d KiB while the client did not read a 32 MiB response"
                        % rss.growth_kib())
        st = c.response(sid, timeout=60)
        self.assertEqual(st.status, 200)
        self.assertEqual(len(st.body), 32 << 20)
        self.assertEqual(sha256(bytes(st.body)), sha256(payload(32 << 20, seed=13)))

    def test_a_small_answer_is_not_held_behind_a_download(self):
        # Streams share the connection (RFC 9218 incremental, which ferry
        # sets on each stream): a small answer ready while a download has
        # data queued goes out after one frame of the download at most,
        # not after the download's queue. Windows wide open, so only the
        # scheduling decides. Non-incremental (RFC 9218's default) let
        # 32-48 KiB of the download go first here.
        c = self.h2(settings={S_INITIAL_WINDOW_SIZE: 1 << 30}, rcvbuf=65536, timeout=10)
        c.send_frames(hf.WindowUpdateFrame(0, window_increment=(1 << 30) - 65535))
        big = c.request("/huge")
        c.wait(lambda: c.streams[big].headers is not None)
        time.sleep(1.0)     # not reading: the socket and the download's queue fill
        small = c.request("/small")
        self.upstream_request("/small")
        time.sleep(0.5)     # its answer waits in ferry, behind the full socket
        st = c.response(small, timeout=30)
        self.assertEqual(st.status, 200)
        frames = [f for f in c.frames if f[0] in ("HEADERS", "DATA")]
        head = next(i for i, f in enumerate(frames) if f[2] == small)
        end = next(i for i, f in enumerate(frames) if f[2] == small and "END_STREAM" in f[1])
        between = sum(f[3] for f in frames[head:end] if f[2] == big)
        self.assertLessEqual(between, 16384, "%d bytes of the download went out between "
                             "the small answer's head and its end" % between)
        self.assertFalse(c.streams[big].ended, "the download ended first")
        done = c.response(big, timeout=60)
        self.assertEqual(sha256(bytes(done.body)), sha256(payload(32 << 20, seed=13)))

    def test_streams_with_closed_windows_hold_little(self):
        # 64 downloads on one connection whose windows the client keeps
        # shut (SETTINGS_INITIAL_WINDOW_SIZE 0): each stream may read
        # ahead of its window only a little. Before, each held 256 KiB
        # and one upstream read more (~400 KiB with its buffers' growth).
        n = 64
        c = H2(self.f.outbound_port, settings={0x4: 0}, timeout=10)
        c.wait(lambda: c.server_settings is not None, 2)
        with RssWatch(self.f.proc.pid) as rss:
            sids = [c.request("/two") for _ in range(n)]
            harness.wait_until(lambda: len([r for r in self.up.requests
                                            if r.target == "/two"]) == n, 5)
            time.sleep(1.5)
        per_stream = rss.growth_kib() / n
        if not harness.sanitized(self.f.proc.pid):
            self.assertLess(per_stream, 200, "%.0f KiB a stream with its window shut"
                            % per_stream)
        # the windows open: every download resumes and ends intact
        c.send_frames(hf.SettingsFrame(0, settings={0x4: 1 << 20}))
        want = sha256(payload(2 << 20, seed=5))
        for sid in sids:
            st = c.response(sid, timeout=30)
            self.assertEqual((st.status, len(st.body)), (200, 2 << 20))
            self.assertEqual(sha256(bytes(st.body)), want)

    def test_request_body_not_granted_past_a_stalled_upstream(self):
        # an upstream (plain HTTP) that accepts and never reads
        lsock = harness.bound_socket()
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        lsock.listen(8)
        held = []
        lsock.settimeout(0.2)

        def accept():
            while True:
                try:
                    held.append(lsock.accept()[0])
                except socket.timeout:
                    continue
                except OSError:
                    return
        threading.Thread(target=accept, daemon=True).start()

        def close():
            lsock.close()
            for h in held:
                h.close()
        self._closers.append(close)
        f = self.ferry({"stall": {"endpoints": ["127.0.0.1:%d" % lsock.getsockname()[1]],
                                  "protocol": "http1"},
                        "svc": h2_service(self.up)})
        c = H2(f.outbound_port, timeout=10)
        self._closers.append(c.close)
        body = payload(32 << 20, seed=17)
        with RssWatch(f.proc.pid) as rss:
            sid = c.request("/upload", authority="stall", method="POST", end_stream=False)
            done = c.send_body(sid, body, deadline=time.monotonic() + 4)
        sent = c.data_sent.get(sid, 0)
        self.assertFalse(done, "32 MiB accepted by ferry with the upstream reading nothing")
        self.assertLess(sent, 12 << 20, "ferry granted %d bytes of window past a stalled "
                        "upstream" % sent)
        self.assertLess(rss.growth_kib(), RSS_SLACK_KIB, "RSS grew %d KiB" % rss.growth_kib())
        c.reset_stream(sid)
        self.assertEqual(c.get("/fine", authority="svc").status, 200)


class SlowReaderTest(H2Case):
    """stream_idle counts what the client takes (SPEC §6): a client that
    opens its windows wide and reads its socket slowly but steadily drains
    ferry's socket buffers while the upstream waits paused and nothing
    comes in; that is no silence."""

    routes = {"/big": large_body(6 << 20, seed=21)}
    svc_extra = {"timeouts": {"stream_idle": "1s"}, "retries": {"max": 0}}

    def test_slow_steady_reader_gets_the_whole_body(self):
        c = self.h2(settings={S_INITIAL_WINDOW_SIZE: 1 << 30}, timeout=10)
        c.send_frames(hf.WindowUpdateFrame(0, window_increment=(1 << 30) - 65535))
        sid = c.request("/big")
        deadline = time.monotonic() + 40
        st = c.streams[sid]
        while not st.ended and st.reset is None and time.monotonic() < deadline:
            time.sleep(0.1)
            if not c.pump(deadline, chunk=65536):
                break
        self.assertIsNone(st.reset, "reset after %d bytes" % len(st.body))
        self.assertTrue(st.ended, "not ended after %d bytes" % len(st.body))
        self.assertEqual(sha256(bytes(st.body)), sha256(payload(6 << 20, seed=21)))
        self.assertIsNone(self.log_entry("/big").get("error"))


class ErrorsAndAccountingTest(H2Case):
    """§7 errors and §9/§8 accounting, per stream."""

    routes = {"/slow": slow(1.0)}
    outbound = {"max_request_body": "1KiB"}

    def test_request_timeout_504(self):
        with self.h2() as c:
            st = c.get("/slow/t", authority="tight", timeout=5)
            other = c.get("/still-fine")
        self.assert_ferry_error(st.response(), 504, "SERVICE_TIMEOUT")
        self.assertEqual(other.status, 200)

    def test_rate_limit_429_per_stream(self):
        with self.h2() as c:
            sids = [c.request("/rl/%d" % i, authority="limited") for i in range(4)]
            sts = [c.response(s) for s in sids]
        self.assertEqual(sorted(st.status for st in sts), [200, 200, 429, 429])
        for st in sts:
            if st.status == 429:
                self.assert_ferry_error(st.response(), 429, "RATE_LIMITED")
                self.assertRegex(st.response().header("retry-after") or "", r"^[1-9]\d*$")

    def test_loop_detected_508(self):
        with self.h2() as c:
            self.assertEqual(c.get("/loop-1").status, 200)
            token = self.upstream_request("/loop-1").header("via")
            st = c.get("/loop-2", headers=[("via", token)])
        self.assert_ferry_error(st.response(), 508, "LOOP_DETECTED")
        self.assertFalse([r for r in self.up.requests if r.target == "/loop-2"])

    def test_content_length_read_as_written(self):
        # the value ends where its field ends: a next field whose name
        # starts with digits (or whatever follows in memory) is not part of it
        with self.h2() as c:
            st = c.get("/cl-digits", method="POST", body=b"hello", content_length=False,
                       headers=[("content-length", "5"), ("000-pad", "x")])
        self.assertEqual(st.status, 200, bytes(st.body[:200]))
        self.assertEqual(self.upstream_request("/cl-digits").body, b"hello")

    def test_body_over_max_request_body_413(self):
        with self.h2() as c:
            st = c.get("/too-big", method="POST", body=b"x" * 4096)
            # the whole 413; then, when the body was not all sent yet,
            # RST_STREAM NO_ERROR asks for no more of it (RFC 9113 8.1)
            self.assertTrue(st.ended, "stream reset instead of 413")
            self.assertIn(st.reset, (None, 0), "stream reset instead of 413")
            self.assert_ferry_error(st.response(), 413, "PAYLOAD_TOO_LARGE")
            self.assertEqual(c.get("/small", method="POST", body=b"x" * 100).status, 200)
        self.assertFalse([r for r in self.up.requests if r.target == "/too-big"])

    def test_body_without_length_over_max_request_body_413(self):
        # no content-length to refuse with the head: the DATA frames are
        # counted as they come (the whole 4 KiB went upstream before)
        with self.h2() as c:
            st = c.get("/too-big-nolen", method="POST", body=b"x" * 4096, content_length=False)
            self.assertTrue(st.ended, "stream reset instead of 413")
            self.assert_ferry_error(st.response(), 413, "PAYLOAD_TOO_LARGE")
            self.assertEqual(c.get("/small-nolen", method="POST", body=b"x" * 100,
                                   content_length=False).status, 200)
        self.assertFalse([r for r in self.up.requests if r.target == "/too-big-nolen"])
        self.assertEqual(self.upstream_request("/small-nolen").body, b"x" * 100)

    def test_unknown_authority_404(self):
        with self.h2() as c:
            st = c.get("/x", authority="nosuch-service", headers=[("x-correlation-id", "c-404")])
        self.assert_ferry_error(st.response(), 404, "UNKNOWN_SERVICE", correlation_id="c-404")
        self.assertEqual(self.up.requests, [])

    def test_dead_endpoint_503(self):
        with self.h2() as c:
            st = c.get("/x", authority="dead", timeout=10)
        self.assert_ferry_error(st.response(), 503, "SERVICE_UNAVAILABLE")

    def test_each_stream_logged_and_counted(self):
        with self.h2() as c:
            a = c.request("/acct/ok?q=1")
            b = c.request("/acct/nope", authority="nosuch-service")
            d = c.request("/acct/dead", authority="dead", method="DELETE")
            p = c.request("/acct/post", method="POST", body=b"12345")
            got = {sid: c.response(sid, timeout=10).status for sid in (a, b, d, p)}
        self.assertEqual(got, {a: 200, b: 404, d: 503, p: 200})
        want = {"/acct/ok": ("svc", "GET", 200), "/acct/nope": ("", "GET", 404),
                "/acct/dead": ("dead", "DELETE", 503), "/acct/post": ("svc", "POST", 200)}
        for path, (svc, method, status) in want.items():
            e = self.log_entry(path)
            self.assertEqual((e["direction"], e["service"], e["method"], e["status"]),
                             ("outbound", svc, method, status), e)
        self.assertEqual(self.log_entry("/acct/dead")["error"], "SERVICE_UNAVAILABLE")
        self.assertIsNone(self.log_entry("/acct/ok")["error"])
        self.assertEqual(metric(self.f, "ferry_requests_total", direction="outbound",
                                service="svc", code="200"), 2)
        self.assertEqual(metric(self.f, "ferry_requests_total", direction="outbound",
                                service="", code="404"), 1)
        self.assertEqual(metric(self.f, "ferry_requests_total", direction="outbound",
                                service="dead", code="503"), 1)


class MixedTest(H2Case):

    routes = {"/slow": slow(0.3)}

    def test_http1_and_h2c_on_one_port_at_once(self):
        errors = []

        def h1_loop():
            try:
                with RawClient(self.f.outbound_port) as r:
                    for i in range(30):
                        resp = r.request("GET", "/mix/h1/%d" % i, [("Host", "svc")])
                        if resp.status != 200:
                            errors.append("h1 %d: %d" % (i, resp.status))
            except Exception as e:          # reported below, in the test's thread
                errors.append("h1: %r" % e)

        t = threading.Thread(target=h1_loop)
        with self.h2() as c:
            slow_sid = c.request("/slow/h2")
            t.start()
            sids = [c.request("/mix/h2/%d" % i) for i in range(30)]
            statuses = [c.response(s, timeout=10).status for s in sids + [slow_sid]]
            t.join(15)
        self.assertEqual(errors, [])
        self.assertEqual(statuses, [200] * 31)
        self.assertEqual(len([r for r in self.up.requests if r.target.startswith("/mix/")]), 60)


class DetectionTest(H2Case):
    """h2c is told from HTTP/1.x by the first bytes (§12), whatever the
    segments they come in."""

    def test_preface_in_single_bytes(self):
        with socket.create_connection(("127.0.0.1", self.f.outbound_port), timeout=3) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for b in PREFACE:
                s.sendall(bytes([b]))
                time.sleep(0.01)
            c = H2(sock=s, preface=False)
            c.send_frames(hf.SettingsFrame(0))
            self.assertEqual(c.get("/split-preface").status, 200)

    def test_http1_in_single_bytes(self):
        # "P" could start either a preface or an HTTP/1 method (PUT, POST, PATCH)
        data = harness.build_request("POST", "/split-h1", [("Host", "svc")], b"abc")
        with socket.create_connection(("127.0.0.1", self.f.outbound_port), timeout=3) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for b in data:
                s.sendall(bytes([b]))
                time.sleep(0.005)
            resp = harness.read_response(harness.Reader(s))
        self.assertEqual(resp.status, 200)
        self.assertEqual(self.upstream_request("/split-h1").body, b"abc")

    def test_http1_upgrade_h2c_answered_in_http1(self):
        # only prior knowledge is offered: an Upgrade: h2c request is answered
        # over HTTP/1.1, and no h2c upgrade reaches the upstream (a tunnelled
        # h2c connection would carry requests ferry never sees: "h2c
        # smuggling"; Envoy strips these headers too)
        with RawClient(self.f.outbound_port) as r:
            resp = r.request("GET", "/upgrade", [("Host", "svc"), ("Connection", "Upgrade, HTTP2-Settings"),
                                                 ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")])
            self.assertEqual(resp.version, "HTTP/1.1")
            self.assertNotEqual(resp.status, 101)
        for req in self.up.requests:        # answered without it, or refused
            self.assertFalse(req.has_token("upgrade", "h2c"), req.headers)
            self.assertEqual(req.header_all("http2-settings"), [])


class HostileTest(H2Case):
    """§11/§12 limits. After each: ferry alive, new connections served."""

    routes = {"/slow": slow(1.0), "/huge": large_body(32 << 20, seed=5)}
    svc_extra = {"timeouts": {"stream_idle": "1s"}}

    def setUp(self):
        super().setUp()
        # a bystander: another connection with a stream in flight through it all
        self.bystander = self.h2()
        self.bystander_sid = self.bystander.request("/slow/bystander")
        self.upstream_request("/slow/bystander")

    def tearDown(self):
        try:
            by = self.bystander
            st = by.response(self.bystander_sid, timeout=5)
            self.assertEqual(st.status, 200, "the bystander's stream: %r" % st.headers)
            self.assertEqual((by.goaways, by.closed), ([], False), "the bystander noticed")
            self.assertEqual(by.get("/bystander-again").status, 200)
            self.assert_unharmed()
        finally:
            super().tearDown()

    def assert_calm_goaway_or_closed(self, c, timeout=5.0, what=""):
        """ferry says GOAWAY ENHANCE_YOUR_CALM, or just closes (no other
        GOAWAY code); the connection is closed soon after either way."""
        c.wait_goaway_or_close(timeout)
        self.assertTrue(c.goaways or c.closed, "%s: neither GOAWAY nor close within %.0fs; "
                        "last frames %r" % (what, timeout, c.frames[-5:]))
        codes = {code for code, _ in c.goaways}
        self.assertTrue(codes <= {ENHANCE_YOUR_CALM},
                        "%s: GOAWAY codes %r, expected ENHANCE_YOUR_CALM (0xb)" % (what, codes))
        self.assertTrue(c.wait_closed(5), "%s: connection left open after GOAWAY" % what)

    # a. preface

    def assert_closed_without_success(self, data, what):
        with socket.create_connection(("127.0.0.1", self.f.outbound_port), timeout=3) as s:
            s.sendall(data)
            c = H2(sock=s, preface=False)
            self.assertTrue(c.wait_closed(5), "%s: connection still open" % what)
        self.assertFalse(re.match(rb"^HTTP/1\.[01] 2", bytes(c.buf)), "%s: answered 2xx" % what)
        codes = {code for code, _ in c.goaways}
        self.assertNotIn(NO_ERROR, codes, "%s: GOAWAY NO_ERROR for a bad preface" % what)

    def test_bad_preface(self):
        self.assert_closed_without_success(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", "bad magic")

    def test_garbage_after_preface(self):
        # a PING before any SETTINGS, then a SETTINGS of a length no
        # multiple of 6, then random bytes (RFC 9113 §3.4, §6.5)
        ping = hf.PingFrame(0, opaque_data=b"12345678").serialize()
        self.assert_closed_without_success(PREFACE + ping, "PING before SETTINGS")
        self.assert_closed_without_success(PREFACE + b"\x00\x00\x05\x04\x00\x00\x00\x00\x00abcde",
                                           "SETTINGS of 5 bytes")
        self.assert_closed_without_success(PREFACE + hf.SettingsFrame(0).serialize()
                                           + payload(4096, seed=9), "random frames")

    def test_truncated_preface_then_close(self):
        for n in (3, 16, 23):
            with socket.create_connection(("127.0.0.1", self.f.outbound_port), timeout=3) as s:
                s.sendall(PREFACE[:n])
        time.sleep(0.2)

    # b. rapid reset

    def test_rapid_reset(self):
        with self.h2() as c:
            c.get("/warmup")
            block = []
            for _ in range(1000):
                sid = c.new_sid()
                hdrs = c.header_block([(":method", "GET"), (":scheme", "http"),
                                       (":authority", "svc"), (":path", "/rr")])
                block.append(hf.HeadersFrame(sid, data=hdrs, flags={"END_HEADERS", "END_STREAM"})
                             .serialize())
                block.append(hf.RstStreamFrame(sid, error_code=CANCEL).serialize())
            c.send(b"".join(block))
            c.wait_goaway_or_close(5)
            codes = [code for code, _ in c.goaways]
            self.assertIn(ENHANCE_YOUR_CALM, codes,
                          "no GOAWAY ENHANCE_YOUR_CALM after 1000 streams reset at once "
                          "(GOAWAYs %r, closed=%r)" % (c.goaways, c.closed))
            self.assertTrue(c.wait_closed(5), "connection left open after GOAWAY")

    # c. CONTINUATION flood

    def test_continuation_flood(self):
        c = self.h2()
        c.wait(lambda: c.server_settings is not None)
        with RssWatch(self.f.proc.pid) as rss:
            first = c.header_block([(":method", "GET"), (":scheme", "http"),
                                    (":authority", "svc"), (":path", "/cont")])
            c.send_frames(hf.HeadersFrame(1, data=first, flags={"END_STREAM"}))
            frames = []
            for i in range(20000):
                # literal without indexing, new name: ~16 bytes a frame, a new field each
                field = hpack.Encoder().encode([(b"x-f%05d" % i, b"vvvvvv")], huffman=False)
                frames.append(hf.ContinuationFrame(1, data=field).serialize())
            data = b"".join(frames)
            for i in range(0, len(data), 16384):
                if not c.send(data[i:i + 16384]):
                    break
            self.assert_calm_goaway_or_closed(c, what="CONTINUATION flood")
        self.assertLess(rss.growth_kib(), RSS_SLACK_KIB, "RSS grew %d KiB" % rss.growth_kib())
        self.assertFalse([r for r in self.up.requests if r.target == "/cont"],
                         "the flooded header block went upstream")

    # d. PING and SETTINGS floods, sender not reading

    def flood(self, frame_bytes, what):
        c = self.h2(rcvbuf=4096, timeout=5)
        c.wait(lambda: c.server_settings is not None)
        with RssWatch(self.f.proc.pid) as rss:
            data = frame_bytes * 10000
            for i in range(0, len(data), 32768):
                if not c.send(data[i:i + 32768]):
                    break
            self.assert_calm_goaway_or_closed(c, timeout=10, what=what)
        self.assertLess(rss.growth_kib(), RSS_SLACK_KIB, "RSS grew %d KiB" % rss.growth_kib())

    def test_ping_flood(self):
        self.flood(hf.PingFrame(0, opaque_data=b"floodfld").serialize(), "PING flood")

    def test_settings_flood(self):
        self.flood(hf.SettingsFrame(0, settings={S_INITIAL_WINDOW_SIZE: 65535}).serialize(),
                   "SETTINGS flood")

    # e. oversized header blocks

    def assert_431_or_reset_then_serves(self, extra_headers, what):
        with self.h2() as c:
            sid = c.request("/toolarge", headers=extra_headers)
            st = c.streams[sid]
            c.wait(lambda: st.done, 5)
            self.assertFalse(c.goaways, "%s: the whole connection went (GOAWAY %r)" % (what, c.goaways))
            if st.reset is None:
                self.assertTrue(st.ended, "%s: neither a response nor RST_STREAM" % what)
                self.assert_ferry_error(st.response(), 431, "HEADERS_TOO_LARGE")
            st2 = c.get("/next-stream")
            self.assertEqual(st2.status, 200, "%s: the connection stopped serving" % what)
        self.assertFalse([r for r in self.up.requests if r.target == "/toolarge"],
                         "%s: went upstream" % what)

    def test_200_header_fields(self):
        self.assert_431_or_reset_then_serves([("x-h%03d" % i, "v") for i in range(200)],
                                             "200 header fields")

    def test_70kib_header_value(self):
        value = "".join(chr(0x61 + (i * 7) % 26) for i in range(70 * 1024))
        self.assert_431_or_reset_then_serves([("x-big", value)], "a 70 KiB header value")

    def test_171kib_of_header_values_in_seven_frames(self):
        # Huffman's 5-bit codes: 171 KiB of these in 107 KiB on the wire,
        # HEADERS and 6 CONTINUATIONs. Whatever a block carries without
        # the HPACK table is over the limits, not a flood: 431 (§12)
        value = "".join("aceiost012"[i % 10] for i in range(57 * 1024))
        self.assert_431_or_reset_then_serves([("x-big-%d" % i, value) for i in range(3)],
                                             "171 KiB of header values")

    def test_data_after_end_stream_ends_the_connection(self):
        # DATA on a stream the client already ended (half-closed remote,
        # its answer still on the way) is STREAM_CLOSED (RFC 9113 5.1);
        # libnghttp2 makes it a connection error: GOAWAY, the request
        # given up, no byte of the late body sent on
        self.up.behaviour = slow(0.5)
        with self.h2() as c:
            sid = c.new_sid()
            c.send_headers(sid, [(":method", "POST"), (":scheme", "http"),
                                 (":authority", "svc"), (":path", "/ended")], end_stream=True)
            time.sleep(0.1)
            c.send_frames(hf.DataFrame(sid, data=b"late", flags={"END_STREAM"}))
            c.wait_goaway_or_close(5)
            self.assertEqual([g[0] for g in c.goaways][:1], [STREAM_CLOSED], c.goaways)
        self.assertEqual([r.body for r in self.up.requests if r.target == "/ended"][:1], [b""])
        self.assert_unharmed()

    def test_a_field_over_64kib_on_the_wire_ends_only_its_connection(self):
        # 80 KiB of "X" (7-bit Huffman codes): 70 KiB on the wire, more
        # than libnghttp2 decodes in one string. A block it cannot decode
        # leaves the HPACK state unknown: GOAWAY COMPRESSION_ERROR, not a
        # 431 (README, ferry(8)); the other connections never notice
        with self.h2() as other:
            with self.h2() as c:
                self.assertEqual(c.get("/before").status, 200)
                c.request("/huge", headers=[("x-big", "X" * (80 * 1024))])
                c.wait_goaway_or_close(10)
                self.assertEqual([g[0] for g in c.goaways][:1], [COMPRESSION_ERROR], c.goaways)
            self.assertEqual(other.get("/other").status, 200)
        self.assertFalse([r for r in self.up.requests if r.target == "/huge"])
        self.assert_unharmed()

    def test_a_block_of_indexed_fields_far_over_the_limits_ends_the_connection(self):
        # one byte on the wire (an index into the HPACK table) is a 4 KiB
        # field for ferry, which nghttp2 checks, and parses when it is a
        # priority field, over the limits or not: a block of them took a
        # worker 1.1 s. Past twice the limits decoded: ENHANCE_YOUR_CALM.
        with self.h2() as c:
            self.assertEqual(c.get("/before").status, 200)
            head = c.header_block([(":method", "GET"), (":scheme", "http"),
                                   (":authority", "svc"), (":path", "/amp")])
            value = ("u=1" + ",a" * 1990).encode()
            field = c.header_block([("priority", value)])   # a literal, indexed
            again = c.header_block([("priority", value)])   # the index alone
            self.assertEqual(len(again), 1)
            # HEADERS and 6 CONTINUATIONs: within their own limit
            c.send_block(c.new_sid(), head + field + again * (6 * 16384), end_stream=True)
            c.wait_goaway_or_close(10)
            self.assertEqual([g[0] for g in c.goaways][:1], [ENHANCE_YOUR_CALM], c.goaways)
        self.assertFalse([r for r in self.up.requests if r.target == "/amp"])
        self.assert_unharmed()

    def test_malformed_request_headers_reset_stream_only(self):
        # RFC 9113 §8.2.1, §8.2.2, §8.3: upper-case names, connection-specific
        # fields and missing pseudo-headers make a request malformed (stream error)
        bad = [[("X-Upper", "1")], [("connection", "keep-alive")], [("transfer-encoding", "chunked")],
               [("te", "gzip")]]
        with self.h2() as c:
            for extra in bad:
                sid = c.request("/malformed", headers=extra)
                st = c.streams[sid]
                c.wait(lambda: st.done, 3)
                self.assertTrue(st.reset is not None or st.status == 400,
                                "%r: neither RST_STREAM nor 400 (%r)" % (extra, st.headers))
            sid = c.new_sid()
            c.send_headers(sid, [(":method", "GET"), (":authority", "svc")], end_stream=True)
            c.wait(lambda: c.streams[sid].done, 3)
            self.assertTrue(c.streams[sid].reset is not None or c.streams[sid].status == 400,
                            "no :path or :scheme accepted: %r" % (c.streams[sid].headers,))
            self.assertEqual(c.get("/after-malformed").status, 200)
            self.assertFalse(c.goaways)
        self.assertFalse([r for r in self.up.requests if r.target == "/malformed"])

    def test_path_bytes_no_request_line_may_hold_are_400(self):
        # found by tests/fuzz/fuzz_h2_down (regressions/h2_down/path-obs-text):
        # nghttp2 passes a :path byte over 0x7f, and ferry wrote it into the
        # HTTP/1.1 request line, which llhttp (ferry's own listeners) refuses
        with self.h2() as c:
            for path in (b"/\x8d", b"/caf\xc3\xa9", b"/a\xffb?q=1"):
                sid = c.request(path)
                st = c.streams[sid]
                c.wait(lambda: st.done, 3)
                self.assertTrue(st.reset is not None or st.status == 400,
                                "%r: neither RST_STREAM nor 400 (%r)" % (path, st.headers))
            self.assertEqual(c.get("/after-bad-path").status, 200)
            self.assertFalse(c.goaways)
        seen = [r.target for r in self.up.requests if r.target != "/after-bad-path"
                and "bystander" not in r.target]
        self.assertEqual(seen, [], "forwarded upstream: %r" % seen)

    # f. a window that never opens

    def test_window_never_opened(self):
        c = self.h2(settings={S_INITIAL_WINDOW_SIZE: 0})
        with RssWatch(self.f.proc.pid) as rss:
            sid = c.request("/huge")
            st = c.streams[sid]
            start = time.monotonic()
            c.wait(lambda: st.done or c.goaways or c.closed, 8)
            took = time.monotonic() - start
        self.assertTrue(st.reset is not None or ENHANCE_YOUR_CALM in [g[0] for g in c.goaways],
                        "stream neither reset nor GOAWAY ENHANCE_YOUR_CALM within 8s "
                        "(stream_idle 1s): reset=%r goaways=%r closed=%r headers=%r"
                        % (st.reset, c.goaways, c.closed, st.headers))
        self.assertEqual(len(st.body), 0, "DATA sent into a zero window")
        self.assertLess(took, 6)
        self.assertLess(rss.growth_kib(), RSS_SLACK_KIB, "RSS grew %d KiB" % rss.growth_kib())

    # g. stream ids

    def test_even_stream_id(self):
        with self.h2() as c:
            c.send_headers(2, [(":method", "GET"), (":scheme", "http"), (":authority", "svc"),
                               (":path", "/even")], end_stream=True)
            c.wait_goaway_or_close(5)
            self.assertEqual([g[0] for g in c.goaways][:1], [PROTOCOL_ERROR],
                             "GOAWAYs %r, closed=%r" % (c.goaways, c.closed))
            self.assertTrue(c.wait_closed(5), "connection left open after GOAWAY")
        self.assertFalse([r for r in self.up.requests if r.target == "/even"])

    def test_stream_id_reuse(self):
        with self.h2() as c:
            self.assertEqual(c.get("/first").status, 200)
            self.assertEqual(c.get("/second").status, 200)
            c.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "svc"),
                               (":path", "/reused")], end_stream=True)
            c.wait_goaway_or_close(5)
            # PROTOCOL_ERROR (§5.1.1), or STREAM_CLOSED for a frame on a closed stream (§5.1)
            self.assertTrue(c.goaways and c.goaways[0][0] in (PROTOCOL_ERROR, STREAM_CLOSED),
                            "GOAWAYs %r, closed=%r" % (c.goaways, c.closed))
            self.assertTrue(c.wait_closed(5), "connection left open after GOAWAY")
        self.assertFalse([r for r in self.up.requests if r.target == "/reused"])

    def test_trailers_on_a_stream_ferry_reset_first_are_dropped(self):
        # ferry answered and reset the stream before the client ended it:
        # the client's trailers may cross the RST_STREAM (RFC 9113 5.1), so
        # they are dropped, not a connection error. (A HEADERS on a stream
        # the client had ended is one: test_stream_id_reuse.)
        with self.h2() as c:
            sid = c.request("/x", authority="nosuch-service", method="POST", end_stream=False)
            st = c.response(sid)
            self.assertEqual(st.status, 404)
            self.assertTrue(c.wait(lambda: st.reset is not None, 2), "no RST_STREAM")
            c.send_headers(sid, [("x-late", "trailer")], end_stream=True)
            self.assertEqual(c.get("/after-trailers").status, 200)
            self.assertFalse(c.goaways or c.closed, c.goaways)

    # h. the client gives up on a stream

    def test_client_resets_stream_while_upstream_answers(self):
        with self.h2() as c:
            cut = c.request("/slow/cut")
            self.upstream_request("/slow/cut")
            other = c.request("/slow/other")
            self.upstream_request("/slow/other")
            c.reset_stream(cut, CANCEL)
            quick = c.get("/quick")
            self.assertEqual(quick.status, 200)
            st = c.response(other, timeout=5)
            self.assertEqual(st.status, 200)
            time.sleep(1.2)     # the upstream answers the cut one meanwhile
            self.assertIsNone(c.streams[cut].headers, "answered a reset stream")
            self.assertFalse(c.goaways)
            self.assertEqual(c.get("/after-cut").status, 200)
        entry = self.log_entry("/slow/cut")
        self.assertEqual(entry["error"], "client_closed", entry)
        self.assertEqual(entry["direction"], "outbound")


class DrainTest(H2Case):

    routes = {"/slow": slow(1.0)}
    ferry_extra = {"drain_timeout": "5s"}

    def test_sigterm_goaway_and_in_flight_stream_completes(self):
        with self.h2() as c:
            sid = c.request("/slow/drain")
            self.upstream_request("/slow/drain")
            self.f.signal(signal.SIGTERM)
            # §12: GOAWAY first with 2^31-1 (refusing nothing yet), then, a
            # round trip later and before the stream in flight is done, the
            # real last id
            c.wait(lambda: any(last < 2 ** 31 - 1 for _, last in c.goaways), 3)
            self.assertTrue(c.goaways, "no GOAWAY after SIGTERM (closed=%r)" % c.closed)
            self.assertEqual({code for code, _ in c.goaways}, {NO_ERROR}, c.goaways)
            self.assertEqual([last for _, last in c.goaways], [2 ** 31 - 1, sid],
                             "not the two GOAWAYs (2^31-1, then the real last stream id) "
                             "while the stream ran: %r" % c.goaways)
            self.assertFalse(c.streams[sid].done, "the GOAWAY waited for the stream to end")
            # a stream opened past the last id is not processed
            late = c.request("/slow/late")
            st = c.response(sid, timeout=5)
            self.assertEqual(st.status, 200, st.headers)
            self.assertEqual(json.loads(st.body)["target"], "/slow/drain")
            self.assertIsNone(c.streams[late].headers, "a stream past GOAWAY got an answer")
            self.assertNotIn("connection", [n for n, _ in st.headers])
            self.assertTrue(c.wait_closed(5), "ferry kept the drained connection open")
        try:
            rc = self.f.proc.wait(8)
        except subprocess.TimeoutExpired:
            self.fail("ferry did not exit after the drain")
        self.assertEqual(rc, 0, self.f.stderr_tail())
        self.assertFalse([r for r in self.up.requests if r.target == "/slow/late"],
                         "a stream opened past the GOAWAY's last id reached the upstream")


class ReloadTest(H2Case):
    """§10, §12: SIGHUP drops no HTTP/2 connection: the stream in flight
    finishes on the config it started with, and the next stream on the same
    connection gets the new one."""

    def test_stream_in_flight_survives_sighup_next_stream_new_config(self):
        gate = threading.Event()
        self._closers.append(gate.set)

        def held(conn, req):
            if gate.wait(IO_TIMEOUT):
                echo()(conn, req)
        self.up.behaviour = by_path({"/held": held})
        c = self.h2()
        self.assertEqual(c.get("/warm").status, 200)
        sid = c.request("/held/before")
        self.upstream_request("/held/before")
        cfg = copy.deepcopy(self.f.config)
        cfg["services"]["svc"]["headers"] = {"request": {"set": {"x-config": "new"}}}
        cfg["services"]["added"] = h2_service(self.up)
        self.f.reload(cfg)
        self.assertFalse(c.streams[sid].done, "the stream ended before the reload was in force")
        # new streams on the same connection follow the new config
        st = c.get("/after")
        self.assertEqual(st.status, 200, st.headers)
        self.assertEqual(self.upstream_request("/after").header_all("x-config"), ["new"])
        st = c.get("/in-added", authority="added")
        self.assertEqual(st.status, 200, "a service the reload added: %r" % (st.headers,))
        # the old stream ends as it began
        gate.set()
        st = c.response(sid, timeout=IO_TIMEOUT)
        self.assertEqual(st.status, 200, st.headers)
        self.assertEqual(json.loads(st.body)["target"], "/held/before")
        self.assertEqual(self.upstream_request("/held/before").header_all("x-config"), [])
        self.assertEqual((c.goaways, c.closed), ([], False), "the reload touched the connection")
        self.assertEqual(c.get("/last").status, 200)

    def test_removed_listen_port_routes_nowhere(self):
        """§10: an HTTP/2 connection on a service's own port that a reload
        removed stays open, and its streams route nowhere (404), as on
        HTTP/1.1: never by :authority to another service."""
        c = H2(self.listen_port)
        self._closers.append(c.close)
        self.assertEqual(c.get("/on-other", authority="svc").status, 200)
        cfg = copy.deepcopy(self.f.config)
        del cfg["services"]["other"]
        self.f.reload(cfg)
        st = c.get("/after-removal", authority="svc")
        self.assertEqual((st.status, dict(st.headers).get("x-ferry-error")),
                         (404, "UNKNOWN_SERVICE"), st.headers)
        self.assertFalse([r for r in self.up.requests if r.target == "/after-removal"])
        self.assertEqual(self.h2().get("/still", authority="svc").status, 200)


class IdleTest(H2Case):
    """§12: idle HTTP/2 connections are closed like idle HTTP/1.1 ones
    (`idle_timeout`); a connection with a stream in flight is not idle."""

    routes = {"/slow": slow(2.0)}
    outbound = {"idle_timeout": "1s"}

    def test_idle_connection_closed_busy_one_kept(self):
        idle = self.h2()
        self.assertEqual(idle.get("/once").status, 200)
        busy = self.h2()
        sid = busy.request("/slow/busy")
        start = time.monotonic()
        self.assertTrue(idle.wait_closed(4), "an idle h2 connection outlived idle_timeout 1s")
        self.assertGreater(time.monotonic() - start, 0.5)
        self.assertTrue({code for code, _ in idle.goaways} <= {NO_ERROR}, idle.goaways)
        st = busy.response(sid, timeout=5)
        self.assertEqual(st.status, 200, "the stream in flight was cut: %r" % (st.headers,))
        self.assertEqual(busy.goaways, [])


class InboundAlpnTest(FerryTestCase):
    """§12: the inbound TLS listener offers ALPN h2 and http/1.1."""

    def setUp(self):
        super().setUp()
        p = pki()
        self.app = self.upstream(tls=False)
        self.port = free_port()
        self.f = self.ferry({}, env={"IN_KEY": KEY}, listeners={"inbound": {
            "address": "127.0.0.1:%d" % self.port,
            "tls": {"cert": p.server.cert, "key": p.server.key, "client_ca": p.ca.cert},
            "auth": {"keys_env": ["IN_KEY"]},
            "local_app": self.app.address}})

    def connect(self, alpn):
        p = pki()
        ctx = ssl.create_default_context(cafile=p.ca.cert)
        ctx.check_hostname = False
        ctx.load_cert_chain(p.client.cert, p.client.key)
        ctx.set_alpn_protocols(alpn)
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.port), timeout=3),
                            server_hostname="backend")
        self._closers.append(s.close)
        return s

    def test_h2_selected_and_key_checked(self):
        s = self.connect(["h2", "http/1.1"])
        self.assertEqual(s.selected_alpn_protocol(), "h2")
        c = H2(sock=s)
        st = c.get("/orders/1", authority="order-service",
                   headers=[("x-service-auth", KEY), ("x-correlation-id", "in-h2-1")])
        self.assertEqual(st.status, 200, st.headers)
        req = self.app.last
        self.assertEqual((req.target, req.version), ("/orders/1", "HTTP/1.1"))
        self.assertEqual(req.header_all("x-service-auth"), [], "the key reached the app")
        self.assertEqual(req.header_all("x-ferry-peer"), ["spiffe://test/app"])
        self.assertEqual(req.header_all("x-forwarded-proto"), ["https"])
        self.assertEqual(req.header_all("x-correlation-id"), ["in-h2-1"])
        self.assertRegex(req.header("via") or "", r"1\.1 ferry-[0-9a-f]{8}-in$")
        self.assertFalse([n for n in req.names() if n.startswith(":")], req.names())
        self.assertEqual(hname(st.headers, "x-correlation-id"), ["in-h2-1"])
        # same connection, no key
        st = c.get("/orders/2", authority="order-service")
        self.assert_ferry_error(st.response(), 403, "INVALID_SERVICE_AUTH")
        self.assertFalse([r for r in self.app.requests if r.target == "/orders/2"])
        # and a wrong one
        st = c.get("/orders/3", authority="order-service", headers=[("x-service-auth", KEY + "x")])
        self.assert_ferry_error(st.response(), 403, "INVALID_SERVICE_AUTH")
        self.assertEqual(len(self.app.requests), 1)
        entry = wait_until(lambda: next((e for e in self.f.access_log()
                                         if e.get("path") == "/orders/1"), None), 3)
        self.assertIsNotNone(entry, self.f.stdout_text())
        self.assertEqual((entry["direction"], entry["status"], entry["peer"]),
                         ("inbound", 200, "spiffe://test/app"))

    def test_h2c_upgrade_not_passed_to_local_app(self):
        # a tunnelled h2c connection would carry requests past the key check
        s = self.connect(["http/1.1"])
        s.sendall(harness.build_request("GET", "/up", [
            ("Host", "order-service"), ("x-service-auth", KEY),
            ("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")]))
        resp = harness.read_response(harness.Reader(s))
        self.assertNotEqual(resp.status, 101)
        for req in self.app.requests:       # answered without it, or refused
            self.assertFalse(req.has_token("upgrade", "h2c"), req.headers)
            self.assertEqual(req.header_all("http2-settings"), [])

    def test_http11_only_client_still_served(self):
        s = self.connect(["http/1.1"])
        self.assertEqual(s.selected_alpn_protocol(), "http/1.1")
        s.sendall(harness.build_request("GET", "/h1", [("Host", "order-service"),
                                                      ("x-service-auth", KEY)]))
        resp = harness.read_response(harness.Reader(s))
        self.assertEqual(resp.status, 200)
        self.assertEqual(self.app.last.target, "/h1")


if __name__ == "__main__":
    harness.main()
