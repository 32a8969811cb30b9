"""Where an HTTP/2 service's TLS records end (SPEC §12 Upstream): ferry
reads an HTTP/2 connection's records through a buffer of its own, not
OpenSSL's read-ahead (conn_batch_reads). A TLS service on loopback that
cuts its answers into records of a size it picks - one byte each, or
records larger than ferry's read buffer - and sends each answer in one
write, then keeps the connection open and says nothing more: every byte
must reach the client all the same, with nothing waiting for a read the
socket will never announce."""

import socket
import ssl
import threading
import time

import harness

harness.need_python_h2()
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402
import h2.exceptions  # noqa: E402

from harness import FerryTestCase, LOOPBACK


class RecordServer:
    """TLS (ALPN h2) + HTTP/2 through an SSLObject, so this side decides
    where each record ends. /N/R answers N body bytes (harness.payload)
    with everything the stream carries (head, body, trailers) cut into
    records of R bytes, all of it in one sendall."""

    def __init__(self):
        p = harness.pki()
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(p.server.cert, p.server.key)
        self.ctx.set_alpn_protocols(["h2"])
        self.connections = 0
        self.records = 0            # records sent in answers, all connections
        self.lock = threading.Lock()
        self.sock = harness.bound_socket(reuseaddr=True)
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.address = "%s:%d" % (LOOPBACK, self.sock.getsockname()[1])
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
            threading.Thread(target=self.serve, args=(s,), daemon=True).start()

    def serve(self, s):
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.ctx.wrap_bio(inc, out, server_side=True)
        s.settimeout(0.1)
        try:
            if not self.handshake(s, tls, inc, out):
                return
            conn = h2.connection.H2Connection(config=h2.config.H2Configuration(
                client_side=False, header_encoding="utf-8"))
            conn.initiate_connection()
            self.send(s, tls, out, conn.data_to_send(), 1 << 14)
            paths = {}
            while not self.stopping.is_set():
                try:
                    data = s.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    return
                inc.write(data)
                plain = b""
                while True:
                    try:
                        chunk = tls.read(65536)
                    except ssl.SSLWantReadError:
                        break
                    if not chunk:
                        return
                    plain += chunk
                for ev in conn.receive_data(plain):
                    if isinstance(ev, h2.events.RequestReceived):
                        paths[ev.stream_id] = dict(ev.headers)[":path"]
                    elif isinstance(ev, h2.events.StreamEnded):
                        self.answer(s, tls, out, conn, ev.stream_id, paths[ev.stream_id])
                # window updates, settings acks: in ordinary records
                self.send(s, tls, out, conn.data_to_send(), 1 << 14)
        except (OSError, ssl.SSLError, h2.exceptions.ProtocolError):
            pass
        finally:
            s.close()

    def handshake(self, s, tls, inc, out):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                tls.do_handshake()
                if out.pending:
                    s.sendall(out.read())
                return True
            except ssl.SSLWantReadError:
                if out.pending:
                    s.sendall(out.read())
                try:
                    data = s.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    return False
                inc.write(data)
        return False

    def send(self, s, tls, out, data, record):
        """DATA in records of RECORD bytes, one sendall for all of them."""
        n = 0
        for i in range(0, len(data), record):
            tls.write(data[i:i + record])
            n += 1
        if out.pending:
            s.sendall(out.read())
        return n

    def answer(self, s, tls, out, conn, sid, path):
        size, record = (int(x) for x in path.strip("/").split("/"))
        body = harness.payload(size, seed=size)
        conn.send_headers(sid, [(":status", "200"), ("content-type", "application/octet-stream"),
                                ("x-record", str(record))])
        step = conn.max_outbound_frame_size
        for i in range(0, len(body), step):
            conn.send_data(sid, body[i:i + step])
        conn.send_headers(sid, [("x-trailer", "t1")], end_stream=True)
        n = self.send(s, tls, out, conn.data_to_send(), record)
        with self.lock:
            self.records += n


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


if __name__ == "__main__":
    harness.main()
