"""Half-closed tunnels (SPEC §6 Timeouts, §11): after a 101, a side that
sends its FIN (TLS: close_notify) but keeps reading must still get what
the other side sends, and the other side must learn of the half-close
only after every byte sent before it (the FIN goes after them, as
HAProxy and nginx pass it on). The other way runs on until that side
closes too, or stream_idle passes with no byte.

Raw sockets both sides, so each test says exactly which bytes cross the
wire after the half-close: outbound (plain app -> ferry -> mTLS upstream)
and inbound (mTLS peer -> ferry -> plain local app)."""

import select
import socket
import ssl
import struct
import threading
import time

import harness
from harness import (FerryTestCase, Reader, build_request, payload, service,
                     sha256, wait_until)

KEY = "tunnel-inbound-key-0123456789"
RAW_101 = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-raw\r\n"
           b"Connection: Upgrade\r\n\r\n")
BIG = 4 << 20


def upgrade_request(*extra):
    return build_request("GET", "/raw", [("Host", "svc"), ("Upgrade", "x-raw"),
                                         ("Connection", "Upgrade"), *extra])


def read_101(reader):
    head = reader.read_until(b"\r\n\r\n")
    assert head is not None and head.startswith(b"HTTP/1.1 101 "), head
    return head


def tls_half_close(sock, fin=True):
    """Sends close_notify on SOCK (an SSLSocket), and a FIN when FIN, and
    keeps reading: its next recv() still gets what the peer sends.
    (unwrap's second SSL_shutdown, which waits for the peer's close_notify
    and drops the data before it, finds nothing on the non-blocking
    socket: callers make sure no byte is on its way to SOCK then.)"""
    timeout = sock.gettimeout()
    sock.settimeout(0)
    deadline = time.monotonic() + 5
    while True:
        try:
            sock.unwrap()
        except ssl.SSLWantReadError:
            break       # sent; the peer's own close_notify has not come
        except ssl.SSLWantWriteError:
            # a full socket (bytes just sent): the alert waits its turn
            assert time.monotonic() < deadline, "close_notify never left"
            select.select([], [sock], [], 0.1)
            continue
        break           # the peer's close_notify had come: both are done
    sock.settimeout(timeout)
    if fin:
        socket.socket.shutdown(sock, socket.SHUT_WR)    # not SSLSocket's: it drops TLS


def read_to_eof(sock, limit=64 << 20):
    """(bytes, end) read until the end of SOCK: 'eof' (FIN; on TLS only
    after close_notify), 'ragged' (TLS: a FIN without close_notify) or
    'reset'."""
    if isinstance(sock, ssl.SSLSocket):
        sock.suppress_ragged_eofs = False
    out = bytearray()
    while len(out) <= limit:
        data = recv_or_end(sock, 1 << 16)
        if isinstance(data, str):
            return bytes(out), data
        out += data
    raise AssertionError("more than %d bytes" % limit)


def recv_or_end(sock, n):
    """Up to N bytes of SOCK, or how it ended (as read_to_eof says)."""
    try:
        data = sock.recv(n)
    except ssl.SSLZeroReturnError:
        return "eof"
    except ssl.SSLEOFError:
        return "ragged"
    except ConnectionResetError:
        return "reset"
    return data or "eof"


class Peer:
    """What one side of a tunnel (a behaviour's upstream or local app)
    received, and how its input ended."""

    def __init__(self):
        self.got = b""
        self.end = None
        self.done = threading.Event()
        self.errors = []

    def read_to_eof(self, sock):
        self.got, self.end = read_to_eof(sock)

    def assert_got(self, test, data, timeout=10):
        test.assertTrue(self.done.wait(timeout), "the tunnel's other side never finished")
        test.assertEqual(self.errors, [])
        test.assertEqual(self.end, "eof", "its input did not end with a clean close")
        test.assertEqual(len(self.got), len(data))
        test.assertTrue(self.got == data, "the bytes changed on the way")


def behaviour(body):
    """An upstream behaviour: 101, then BODY(conn, peer); records errors."""
    peer = Peer()

    def behave(conn, req):
        conn.keep_open = False
        conn.sock.settimeout(10)
        conn.send(RAW_101)
        try:
            body(conn, peer)
        except Exception as e:  # noqa: BLE001 - reported by the test
            peer.errors.append(repr(e))
        finally:
            peer.done.set()
    return behave, peer


def upstream_active(f):
    """ferry's upstream connections in use (local app's included)."""
    total = 0.0
    for line in f.admin("/metrics").body.decode().splitlines():
        if line.startswith("ferry_upstream_connections{") and 'state="active"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def last_log(f, timeout=3):
    wait_until(lambda: f.access_log(), timeout)
    lines = f.access_log()
    return lines[-1] if lines else {}


class OutboundHalfCloseTest(FerryTestCase):
    """The app (plain) half-closes, or the upstream (mTLS) does."""

    def setUp(self):
        super().setUp()
        self.up = self.upstream()
        self.f = self.ferry({"svc": service(self.up, retries={"max": 0},
                                            timeouts={"stream_idle": "1500ms"})})

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.f.outbound_port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.addCleanup(s.close)
        s.sendall(upgrade_request())
        r = Reader(s)
        read_101(r)
        return s, r

    def test_client_half_close_still_gets_the_answer(self):
        def body(conn, peer):
            peer.read_to_eof(conn.sock)     # the app's bytes, then its FIN
            conn.send(b"answer to " + peer.got)
            conn.close()
        self.up.behaviour, peer = behaviour(body)
        s, r = self.connect()
        s.sendall(b"last question")
        s.shutdown(socket.SHUT_WR)
        got, end = read_to_eof(s)
        # before: ferry closed both at the app's FIN; the answer was lost
        self.assertEqual((got, end), (b"answer to last question", "eof"))
        # the FIN reached the upstream as close_notify, after the bytes
        peer.assert_got(self, b"last question")
        log = last_log(self.f)
        self.assertEqual((log.get("status"), log.get("error")), (101, None))

    def test_upstream_half_close_still_takes_the_clients_bytes(self):
        def body(conn, peer):
            conn.send(b"goodbye from upstream")
            tls_half_close(conn.sock, fin=False)    # close_notify alone
            peer.read_to_eof(conn.sock)
        self.up.behaviour, peer = behaviour(body)
        s, r = self.connect()
        self.assertEqual(r.read_exact(21), b"goodbye from upstream")
        self.assertFalse(r.fill(), "the upstream's half-close did not reach the app")
        # the app's side is still open: its closing words go up
        s.sendall(b"closing words")
        s.shutdown(socket.SHUT_WR)
        peer.assert_got(self, b"closing words")
        self.assertEqual(read_to_eof(s), (b"", "eof"))

    def test_client_fin_follows_every_queued_byte(self):
        # the upstream reads nothing for a while: ferry holds the app's
        # bytes when its FIN comes, and must send them all before the FIN
        data = payload(BIG, 7)

        def body(conn, peer):
            time.sleep(1.0)
            peer.read_to_eof(conn.sock)
            conn.send(sha256(peer.got).encode())
            conn.close()
        self.up.behaviour, peer = behaviour(body)
        s, r = self.connect()
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(read_to_eof(s), (sha256(data).encode(), "eof"))
        peer.assert_got(self, data)

    def test_upstream_fin_follows_every_queued_byte(self):
        # the app reads nothing for a while: ferry holds the upstream's
        # bytes when its close_notify comes
        data = payload(BIG, 8)

        def body(conn, peer):
            conn.send(data)
            tls_half_close(conn.sock)
            peer.read_to_eof(conn.sock)
        self.up.behaviour, peer = behaviour(body)
        s, r = self.connect()
        time.sleep(1.0)
        got, end = read_to_eof(s)
        self.assertEqual(end, "eof")
        self.assertEqual(len(r.buf) + len(got), BIG)
        self.assertTrue(bytes(r.buf) + got == data, "the bytes changed on the way")
        s.sendall(b"thanks")
        s.shutdown(socket.SHUT_WR)
        peer.assert_got(self, b"thanks")

    def test_half_closed_tunnel_ends_at_stream_idle(self):
        # the upstream answers once after the app's FIN, then neither
        # closes nor sends: stream_idle (1.5 s) after that byte ends it
        quiet = threading.Event()
        self.addCleanup(quiet.set)

        def body(conn, peer):
            peer.read_to_eof(conn.sock)
            time.sleep(0.3)
            conn.send(b"still here")
            quiet.wait(10)      # open, silent
        self.up.behaviour, peer = behaviour(body)
        s, r = self.connect()
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(r.read_exact(10), b"still here")
        last_byte = time.monotonic()
        self.assertEqual(read_to_eof(s)[0], b"")
        idle = time.monotonic() - last_byte
        self.assertGreater(idle, 1.0, "cut before stream_idle")
        self.assertLess(idle, 4.0, "the half-closed tunnel outlived stream_idle")
        self.assertEqual(last_log(self.f).get("error"), "stream_idle_timeout")
        self.assertTrue(wait_until(lambda: upstream_active(self.f) == 0, 3),
                        "the upstream connection was kept open")

    def test_half_closed_client_that_never_reads_is_bounded(self):
        # an attacker: FIN, then reads nothing, while the upstream floods.
        # ferry must stop reading the upstream (bounded memory) and end
        # the tunnel at stream_idle
        state = {"sent": 0}

        def body(conn, peer):
            try:
                while True:
                    conn.send(b"z" * 65536)
                    state["sent"] += 65536
            except OSError:
                pass
        self.up.behaviour, peer = behaviour(body)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10)
        s.connect(("127.0.0.1", self.f.outbound_port))
        s.sendall(upgrade_request())
        s.shutdown(socket.SHUT_WR)
        # ferry stops reading the upstream once its output to the app is
        # over the high mark (256 KiB); what the kernels' buffers hold
        # aside, it takes no more; and stream_idle ends the tunnel
        self.assertTrue(peer.done.wait(8), "the tunnel was never ended")
        self.assertLess(state["sent"], 32 << 20, "ferry read the upstream without bound")
        self.assertEqual(last_log(self.f).get("error"), "stream_idle_timeout")
        s.close()
        self.assertTrue(self.f.alive())

    def test_reset_after_half_close(self):
        # the app half-closes, then resets while the upstream still
        # sends: the failed write ends the tunnel, nothing leaks (ASan)
        def body(conn, peer):
            try:
                while True:
                    conn.send(b"z" * 16384)
                    time.sleep(0.01)
            except OSError:
                pass
        self.up.behaviour, peer = behaviour(body)
        s, r = self.connect()
        s.shutdown(socket.SHUT_WR)
        r.read_exact(16384)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        self.assertTrue(peer.done.wait(5), "the upstream connection was kept open")
        self.assertEqual(last_log(self.f).get("error"), "client_write_failed")
        self.assertTrue(self.f.alive())

    def test_upstream_reset_after_half_close(self):
        # the upstream half-closes, then resets while the app still sends
        def body(conn, peer):
            tls_half_close(conn.sock, fin=False)
            time.sleep(0.3)
            conn.reset()
        self.up.behaviour, peer = behaviour(body)
        s, r = self.connect()
        self.assertEqual(read_to_eof(s), (b"", "eof"))
        s.settimeout(0.5)
        try:
            for _ in range(400):
                s.sendall(b"y" * 16384)
                time.sleep(0.005)
        except OSError:
            pass
        self.assertTrue(wait_until(lambda: upstream_active(self.f) == 0, 3),
                        "the upstream connection was kept open")
        self.assertEqual(last_log(self.f).get("error"), "upstream_closed")
        self.assertTrue(self.f.alive())


    def test_upstream_reset_is_no_half_close(self):
        # a TLS upstream's reset (no close_notify, no FIN) is a failure,
        # not its end: the tunnel is cut at once as upstream_closed
        def body(conn, peer):
            conn.send(b"hello")
            time.sleep(0.3)
            conn.reset()
        self.up.behaviour, peer = behaviour(body)
        s, r = self.connect()
        self.assertEqual(r.read_exact(5), b"hello")
        # before: the reset reached the app as a half-close (a FIN), the
        # tunnel stayed open, and the app's own FIN then ended it as done
        # (status 101, no error)
        self.assertEqual(read_to_eof(s)[0], b"")
        self.assertTrue(wait_until(lambda: upstream_active(self.f) == 0, 1),
                        "the tunnel outlived its upstream's reset")
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(last_log(self.f).get("error"), "upstream_closed")


class InboundHalfCloseTest(FerryTestCase):
    """The peer (mTLS) half-closes with close_notify, or the local app
    (plain) with a FIN."""

    def setUp(self):
        super().setUp()
        self.app = self.upstream(tls=False)
        self.start_inbound(self.app.address, KEY, alpn=["http/1.1"],
                           defaults={"timeouts": {"stream_idle": "1500ms"}})

    def connect(self):
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        s = self.ctx.wrap_socket(raw, server_hostname="backend")
        self.addCleanup(s.close)
        s.sendall(upgrade_request(("x-service-auth", KEY)))
        r = Reader(s)
        read_101(r)
        return s, r

    def test_peer_close_notify_still_gets_the_answer(self):
        def body(conn, peer):
            peer.read_to_eof(conn.sock)
            conn.send(b"answer to " + peer.got)
            conn.close()
        self.app.behaviour, peer = behaviour(body)
        s, r = self.connect()
        s.sendall(b"last question")
        tls_half_close(s)
        self.assertEqual(read_to_eof(s), (b"answer to last question", "eof"))
        peer.assert_got(self, b"last question")

    def test_app_half_close_still_takes_the_peers_bytes(self):
        data = payload(BIG, 9)

        def body(conn, peer):
            conn.send(data)
            conn.sock.shutdown(socket.SHUT_WR)
            peer.read_to_eof(conn.sock)
        self.app.behaviour, peer = behaviour(body)
        s, r = self.connect()
        time.sleep(0.5)     # ferry holds some of it when the FIN comes
        got, end = read_to_eof(s)
        # every byte, then close_notify
        self.assertEqual(end, "eof")
        self.assertTrue(bytes(r.buf) + got == data, "the bytes changed on the way")
        s.sendall(b"closing words")
        tls_half_close(s)
        peer.assert_got(self, b"closing words")
        self.assertEqual(read_to_eof(s)[0], b"")

    def test_half_closed_peer_tunnel_ends_at_stream_idle(self):
        quiet = threading.Event()
        self.addCleanup(quiet.set)

        def body(conn, peer):
            peer.read_to_eof(conn.sock)
            quiet.wait(10)      # open, silent
        self.app.behaviour, peer = behaviour(body)
        s, r = self.connect()
        tls_half_close(s)
        start = time.monotonic()
        self.assertEqual(read_to_eof(s)[0], b"")
        idle = time.monotonic() - start
        self.assertGreater(idle, 1.0, "cut before stream_idle")
        self.assertLess(idle, 4.0, "the half-closed tunnel outlived stream_idle")
        self.assertEqual(last_log(self.f).get("error"), "stream_idle_timeout")
        self.assertTrue(wait_until(lambda: upstream_active(self.f) == 0, 3),
                        "the local app's connection was kept open")


    def test_peer_reset_is_no_half_close(self):
        # the peer's reset is no close_notify: the tunnel is cut, and the
        # app's connection closed at once, not left half-open for its last
        # words to go nowhere
        def body(conn, peer):
            peer.read_to_eof(conn.sock)
        self.app.behaviour, peer = behaviour(body)
        s, r = self.connect()
        s.sendall(b"hello")
        time.sleep(0.3)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        # before: the app saw a FIN, the tunnel stayed open, and ended
        # as done when the app closed too
        self.assertTrue(peer.done.wait(5))
        self.assertEqual(peer.got, b"hello")
        self.assertTrue(wait_until(lambda: self.f.access_log(), 1),
                        "the tunnel outlived its peer's reset")
        self.assertEqual(last_log(self.f).get("error"), "client_read_error")



SLOW = 6 << 20      # more than ferry's queue and the kernels' buffers hold


def read_slowly(sock, chunk=65536, period=0.1, timeout=40):
    """Reads SOCK 64 KiB every 100 ms to its end: (bytes, end) as
    read_to_eof. Never silent for longer: a tunnel cut for stream_idle
    while it reads was cut with bytes moving."""
    if isinstance(sock, ssl.SSLSocket):
        sock.suppress_ragged_eofs = False
    out = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(period)
        took = 0
        # up to CHUNK now (a TLS recv gives one record: 16 KiB)
        while took < chunk:
            data = recv_or_end(sock, chunk - took)
            if isinstance(data, str):
                return bytes(out), data
            out += data
            took += len(data)
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending()) and \
                    not select.select([sock], [], [], 0)[0]:
                break
    raise AssertionError("read_slowly: no end within %ss" % timeout)


class SlowReaderTest(FerryTestCase):
    """stream_idle counts the bytes a side takes: a slow but steady reader
    drains ferry's socket buffers while the other side waits paused and
    nothing comes in; that is no silence (SPEC §6)."""

    def setUp(self):
        super().setUp()
        self.up = self.upstream()
        self.f = self.ferry({"svc": service(self.up, retries={"max": 0},
                                            timeouts={"stream_idle": "1s"})})

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.f.outbound_port), timeout=10)
        self.addCleanup(s.close)
        s.sendall(upgrade_request())
        r = Reader(s)
        read_101(r)
        return s, r

    def test_slow_app_reading_the_upstream(self):
        data = payload(SLOW, seed=7)

        def body(conn, peer):
            conn.send(data)
            conn.close()
        self.up.behaviour, peer = behaviour(body)
        s, r = self.connect()
        got, end = read_slowly(s)
        got = bytes(r.buf) + got
        self.assertEqual(len(got), SLOW, "cut after %d of %d bytes" % (len(got), SLOW))
        self.assertEqual(end, "eof")
        self.assertTrue(got == data, "the bytes changed on the way")
        s.shutdown(socket.SHUT_WR)     # both ways closed: the tunnel is done
        self.assertIsNone(last_log(self.f).get("error"))

    def test_slow_upstream_reading_the_app(self):
        data = payload(SLOW, seed=8)

        def body(conn, peer):
            got, end = read_slowly(conn.sock)
            peer.got, peer.end = got, end
            if end == "eof":
                conn.send(b"all read")
                conn.close()
        self.up.behaviour, peer = behaviour(body)
        s, r = self.connect()
        sender = threading.Thread(target=lambda: (s.sendall(data), s.shutdown(socket.SHUT_WR)),
                                  daemon=True)
        sender.start()
        peer.assert_got(self, data, timeout=45)
        self.assertEqual(r.read_exact(8), b"all read")
        self.assertIsNone(last_log(self.f).get("error"))


if __name__ == "__main__":
    harness.main()
