"""Where the TLS records of an HTTP/2 connection end (SPEC §12): ferry
reads HTTP/2 over TLS through a buffer of its own, not OpenSSL's
read-ahead (conn_batch_reads), on both sides. Upstream: a TLS service on
loopback that cuts its answers into records of a size it picks - one byte
each, or records larger than ferry's read buffer - and sends each answer
in one write, then keeps the connection open and says nothing more: every
byte must reach the client all the same, with nothing waiting for a read
the socket will never announce. Inbound: a peer that sends its requests
the same way."""

import socket
import ssl
import struct
import threading
import time

import harness

harness.need_python_h2()
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402
import h2.exceptions  # noqa: E402

from harness import FerryTestCase, free_port, pki

KEY = "records-inbound-key-0123456789"


class TlsPipe:
    """TLS over socket S through an SSLObject (CTX.wrap_bio), so that this
    side decides where each record ends."""

    def __init__(self, s, ctx, **wrap):
        self.s = s
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inc, self.out, **wrap)

    def flush(self):
        if self.out.pending:
            harness.send_all(self.s, self.out.read())

    def handshake(self, timeout=5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.tls.do_handshake()
                self.flush()
                return True
            except ssl.SSLWantReadError:
                self.flush()
                try:
                    data = self.s.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    return False
                self.inc.write(data)
        return False

    def recv(self):
        """The plaintext of what one recv brought (maybe b""), None at the
        end; socket.timeout as recv raises it."""
        data = self.s.recv(65536)
        if not data:
            return None
        self.inc.write(data)
        plain = b""
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                return plain
            if not chunk:
                return None if not plain else plain
            plain += chunk

    def chunks(self, stopping):
        """The plaintext as it comes: first what came along with the
        handshake, then what each recv brings, until the end or until
        STOPPING is set."""
        plain = b""
        try:
            while True:
                plain += self.tls.read(65536)
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass
        if plain:
            yield plain
        while not stopping.is_set():
            try:
                plain = self.recv()
            except socket.timeout:
                continue
            if plain is None:
                return
            yield plain

    def send(self, data, record):
        """DATA in records of RECORD bytes, one sendall for all of them."""
        for i in range(0, len(data), record):
            self.tls.write(data[i:i + record])
        self.flush()


class PipeServer(harness.LoopbackServer):
    """A TLS server on loopback that speaks through a TlsPipe: each
    connection's handshake, then session(pipe) (a subclass's); ALPN
    offers ALPN when given."""

    ALPN = None

    def __init__(self):
        p = harness.pki()
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(p.server.cert, p.server.key)
        if self.ALPN:
            self.ctx.set_alpn_protocols([self.ALPN])
        super().__init__()

    def serve(self, s, n):
        pipe = TlsPipe(s, self.ctx, server_side=True)
        s.settimeout(0.1)
        try:
            if pipe.handshake():
                self.session(pipe)
        except (OSError, ssl.SSLError):
            pass
        finally:
            s.close()


class RecordServer(PipeServer):
    """TLS (ALPN h2) + HTTP/2 through an SSLObject, so this side decides
    where each record ends. /N/R answers N body bytes (harness.payload)
    with everything the stream carries (head, body, trailers) cut into
    records of R bytes, as much as ferry's windows let go in one sendall
    (the rest as they open)."""

    ALPN = "h2"

    def __init__(self):
        self.records = 0            # records sent in answers, all connections
        super().__init__()

    def session(self, pipe):
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        pipe.send(conn.data_to_send(), 1 << 14)
        paths, pending = {}, {}     # pending: sid -> [body left, record size]
        for plain in pipe.chunks(self.stopping):
            try:
                events = conn.receive_data(plain)
            except h2.exceptions.ProtocolError:
                return
            for ev in events:
                if isinstance(ev, h2.events.RequestReceived):
                    paths[ev.stream_id] = dict(ev.headers)[":path"]
                elif isinstance(ev, h2.events.StreamEnded):
                    size, record = (int(x) for x in paths[ev.stream_id].strip("/").split("/"))
                    conn.send_headers(ev.stream_id, [
                        (":status", "200"), ("content-type", "application/octet-stream"),
                        ("x-record", str(record))])
                    pending[ev.stream_id] = [harness.payload(size, seed=size), record]
            for sid in list(pending):
                self.answer(pipe, conn, sid, pending)
            # window updates, settings acks: in ordinary records
            pipe.send(conn.data_to_send(), 1 << 14)

    def answer(self, pipe, conn, sid, pending):
        """What the windows let go of SID's body (then its trailers), cut
        into records of its size, in one send."""
        body, record = pending[sid]
        step = conn.max_outbound_frame_size
        while body:
            n = min(len(body), step, conn.local_flow_control_window(sid))
            if n <= 0:
                break
            conn.send_data(sid, body[:n])
            body = body[n:]
        pending[sid][0] = body
        if not body:
            conn.send_headers(sid, [("x-trailer", "t1")], end_stream=True)
            del pending[sid]
        data = conn.data_to_send()
        if not data:
            return
        # counted first: the client may have them all before send returns
        with self.lock:
            self.records += (len(data) + record - 1) // record
        pipe.send(data, record)


class TlsRecordLayoutTest(FerryTestCase):

    def setUp(self):
        super().setUp()
        self.up = RecordServer()
        self._closers.append(self.up.close)
        # one worker: every request below shares one HTTP/2 connection
        self.f = self.ferry({"svc": {"endpoints": [self.up.address], "protocol": "h2",
                                     "tls": harness.tls_client(),
                                     "retries": {"max": 0}}}, workers=1)

    def fetch(self, size, record):
        r = self.f.get("/%d/%d" % (size, record), host="svc", timeout=10)
        self.assertEqual(r.status, 200, r.body[:300])
        self.assertEqual(len(r.body), size)
        self.assertEqual(harness.sha256(r.body), harness.sha256(harness.payload(size, seed=size)))
        return r

    def test_one_byte_records_in_one_write(self):
        # ~3,100 records of one byte: ~70 KB of TLS in one write, more
        # than ferry's read buffer (16 KiB) and a read (64 KiB) take
        before = self.up.records
        self.fetch(3000, 1)
        self.assertGreater(self.up.records - before, 3000)
        # and a second answer on the same connection, after the first
        # one's last records were the last bytes the socket had
        self.fetch(1000, 1)
        self.assertEqual(self.up.connections, 1)

    def test_small_records_end_where_the_buffer_does_not(self):
        # record sizes that leave a partial record at the end of each of
        # ferry's buffer fills
        for record in (7, 100, 1000, 4093):
            self.fetch(50000, record)
        self.assertEqual(self.up.connections, 1)

    def test_records_larger_than_the_read_buffer(self):
        # full 16 KiB records (plus TLS overhead: more than ferry's
        # buffer) back to back, 600 KiB in one write
        self.fetch(600 * 1024, 1 << 14)
        self.fetch(10, 1 << 14)
        self.assertEqual(self.up.connections, 1)

    def test_concurrent_streams_cut_into_tiny_records(self):
        results, errors = {}, []

        def call(i):
            try:
                size = 2000 + i * 37
                r = self.f.get("/%d/%d" % (size, 3 + i % 5), host="svc", timeout=15)
                results[i] = (r.status, r.body == harness.payload(size, seed=size))
            except Exception as e:      # noqa: BLE001 - reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(results, {i: (200, True) for i in range(12)})
        # ferry is still whole and still on one connection
        self.fetch(100, 1)
        self.assertEqual(self.up.connections, 1)


class TrickleServer(PipeServer):
    """TLS (HTTP/1.1) through an SSLObject: each answer, 64 KiB in 16 KiB
    records, goes out in pieces of PIECE bytes a few milliseconds apart,
    so that most reads find the end of a record still on its way."""

    PIECE = 1000
    BODY = 64 * 1024

    def session(self, pipe):
        got = b""
        for plain in pipe.chunks(self.stopping):
            got += plain
            while b"\r\n\r\n" in got:
                got = got.split(b"\r\n\r\n", 1)[1]
                self.answer(pipe)

    def answer(self, pipe):
        body = harness.payload(self.BODY, seed=7)
        data = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body
        for i in range(0, len(data), 1 << 14):
            pipe.tls.write(data[i:i + (1 << 14)])
        wire = pipe.out.read()
        for i in range(0, len(wire), self.PIECE):
            pipe.s.sendall(wire[i:i + self.PIECE])
            time.sleep(0.003)


class TrickledRecordsTest(FerryTestCase):
    """HTTP/1.1 over TLS (OpenSSL's read-ahead): a record whose end is
    still on its way is no post-handshake message. Read ahead in part, it
    counted as one for every read that found the socket empty, and the
    33rd ended the connection (conn.c; seen first on loaded machines)."""

    def test_records_arriving_in_pieces(self):
        up = TrickleServer()
        self._closers.append(up.close)
        f = self.ferry({"svc": {"endpoints": [up.address], "tls": harness.tls_client()}},
                       workers=1)
        for i in range(3):      # a new connection, then a pooled one
            resp = f.get("/t%d" % i, host="svc", timeout=20)
            self.assertEqual(resp.status, 200, resp.body[:300])
            self.assertEqual(resp.body, harness.payload(TrickleServer.BODY, seed=7))


class InboundPeer:
    """For a test with an inbound listener on self.port."""

    def connect(self):
        """An HTTP/2 connection over TLS to the inbound listener, once
        ferry's first frames are in (its handshake is then over: what is
        sent next reaches the HTTP/2 connection, not the handshake)."""
        p = pki()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(p.ca.cert)
        ctx.load_cert_chain(p.client.cert, p.client.key)
        ctx.check_hostname = False
        ctx.set_alpn_protocols(["h2"])
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self._closers.append(s.close)
        pipe = TlsPipe(s, ctx, server_hostname="backend")
        self.assertTrue(pipe.handshake(), "no handshake")
        self.assertEqual(pipe.tls.selected_alpn_protocol(), "h2")
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        # its SETTINGS and its connection window (1 MiB)
        while conn.outbound_flow_control_window < 1 << 20:
            got = pipe.recv()
            self.assertIsNotNone(got, "ferry closed the connection")
            conn.receive_data(got)  # the acks go out with the burst
        return pipe, conn


class InboundRecordLayoutTest(InboundPeer, FerryTestCase):
    """A peer speaking HTTP/2 over mutual TLS to the inbound listener that
    sends all it has to say in one write, cut into records of one byte or
    1000, and then waits for the answers without a word more."""

    def setUp(self):
        super().setUp()
        p = pki()
        self.app = self.upstream(harness.fixed(200, body=b"app-body"), tls=False)
        self.port = free_port()
        self.f = self.ferry({}, env={"K1": KEY}, workers=1, listeners={
            "inbound": {
                "address": "127.0.0.1:%d" % self.port,
                "tls": {"cert": p.server.cert, "key": p.server.key, "client_ca": p.ca.cert},
                "auth": {"keys_env": ["K1"]},
                "local_app": self.app.address,
            }})

    def answers(self, pipe, conn, sids):
        """Reads until every stream of SIDS ended, sending nothing back
        (not even a SETTINGS ack): after its one burst the peer is quiet,
        and ferry must find the records it already read by itself."""
        done, bodies, statuses = set(), {}, {}
        deadline = time.monotonic() + 10
        while len(done) < len(sids) and time.monotonic() < deadline:
            try:
                plain = pipe.recv()
            except socket.timeout:
                break
            if plain is None:
                break
            for ev in conn.receive_data(plain):
                if isinstance(ev, h2.events.ResponseReceived):
                    statuses[ev.stream_id] = dict(ev.headers)[":status"]
                elif isinstance(ev, h2.events.DataReceived):
                    bodies[ev.stream_id] = bodies.get(ev.stream_id, b"") + ev.data
                elif isinstance(ev, h2.events.StreamEnded):
                    done.add(ev.stream_id)
        self.assertEqual(done, set(sids), self.f.stderr_tail())
        self.assertEqual(statuses, {sid: "200" for sid in sids})
        self.assertEqual(bodies, {sid: b"app-body" for sid in sids})

    def test_requests_in_one_byte_records(self):
        pipe, conn = self.connect()
        sids = []
        for i in range(10):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, [(":method", "GET"), (":path", "/r%d" % i),
                                    (":scheme", "https"), (":authority", "order-service"),
                                    ("x-service-auth", KEY)], end_stream=True)
            sids.append(sid)
        pipe.send(conn.data_to_send(), 1)
        self.answers(pipe, conn, sids)
        self.assertEqual(sorted(r.target for r in self.app.requests),
                         sorted("/r%d" % i for i in range(10)))

    def test_burst_past_one_read(self):
        # a request body in 1000-byte records, in one write, a little more
        # than one read of ferry's takes (64 KiB): that read stops with
        # records still in OpenSSL or the batching buffer, the socket
        # already empty; then the peer waits, quiet. Sizes around the
        # mark, each on a connection of its own.
        for size in range(62000, 82000, 2000):
            pipe, conn = self.connect()
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, [(":method", "POST"), (":path", "/b%d" % size),
                                    (":scheme", "https"), (":authority", "order-service"),
                                    ("x-service-auth", KEY)])
            body = harness.payload(size, seed=size)
            step = conn.max_outbound_frame_size
            for at in range(0, len(body), step):
                conn.send_data(sid, body[at:at + step], end_stream=at + step >= len(body))
            pipe.send(conn.data_to_send(), 1000)
            self.answers(pipe, conn, [sid])
            got = [r.body for r in self.app.requests if r.target == "/b%d" % size]
            self.assertEqual(got, [body], size)

class BadRecordTest(InboundPeer, FerryTestCase):
    """A peer with a valid certificate sends, in one write, a good record
    and then one that does not decrypt (or a close_notify, and keeps its
    socket open). ferry takes the good one, closes
    that peer's connection at once, and the worker's other connections
    (its HTTP/2 session to a service) never notice: the decrypt error must
    not stay on the worker's OpenSSL error queue, where the next
    SSL_get_error of any connection would take it for its own."""

    def setUp(self):
        super().setUp()
        p = pki()
        self.up = RecordServer()
        self._closers.append(self.up.close)
        self.port = free_port()
        self.f = self.ferry({"svc": {"endpoints": [self.up.address], "protocol": "h2",
                                     "tls": harness.tls_client(), "retries": {"max": 0}}},
                            env={"K1": KEY}, workers=1, listeners={
            "inbound": {
                "address": "127.0.0.1:%d" % self.port,
                "tls": {"cert": p.server.cert, "key": p.server.key, "client_ca": p.ca.cert},
                "auth": {"keys_env": ["K1"]},
                "local_app": self.upstream(tls=False).address,
            }})

    def good_record_then(self, tail):
        """A settled HTTP/2 connection whose peer then sends, in one write,
        a PRIORITY frame (nothing for ferry to answer or write) in a good
        record and then what TAIL(pipe) puts after it. Its socket."""
        pipe, conn = self.connect()
        pipe.send(conn.data_to_send(), 1 << 14)   # the preface and acks
        acked = False
        while not acked:
            got = pipe.recv()
            self.assertIsNotNone(got, "ferry closed the connection")
            acked = any(isinstance(ev, h2.events.SettingsAcknowledged)
                        for ev in conn.receive_data(got))
        priority = (struct.pack(">I", 5)[1:] + bytes([2, 0]) + struct.pack(">I", 3) +
                    struct.pack(">IB", 0, 15))
        pipe.tls.write(priority)
        pipe.s.sendall(pipe.out.read() + tail(pipe))
        return pipe.s

    def assert_ends_now(self, s, what):
        """S is closed by ferry within 3 s, not at its idle timeout."""
        deadline, ended = time.monotonic() + 3, False
        s.settimeout(0.5)
        while not ended and time.monotonic() < deadline:
            try:
                ended = s.recv(65536) == b""
            except socket.timeout:
                pass
            except OSError:
                ended = True
        self.assertTrue(ended, "the connection of %s was left open" % what)

    def test_good_record_then_bad_one(self):
        self.assertEqual(self.f.get("/100/50", host="svc", timeout=10).status, 200)
        # a record with a valid header and a body that does not decrypt
        s = self.good_record_then(lambda pipe: bytes([23, 3, 3, 0, 40]) + b"\x55" * 40)
        self.assert_ends_now(s, "the bad record")
        # the worker's HTTP/2 session to the service is the same one
        for _ in range(2):
            self.assertEqual(self.f.get("/100/50", host="svc", timeout=10).status, 200)
        self.assertEqual(self.up.connections, 1, self.f.stderr_tail())

    def test_good_record_then_close_notify(self):
        def close_notify(pipe):
            try:
                pipe.tls.unwrap()   # writes the alert, then waits for ferry's
            except ssl.SSLWantReadError:
                pass
            return pipe.out.read()

        # the peer says it is done but keeps its socket open, quiet
        s = self.good_record_then(close_notify)
        self.assert_ends_now(s, "the close_notify")

if __name__ == "__main__":
    harness.main()
