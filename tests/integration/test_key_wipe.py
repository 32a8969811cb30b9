"""Service keys do not stay behind in ferry's memory (issue #10: "key-bearing
buffers wiped after use"). Read from outside, as an attacker with a core
file or /proc/PID/mem would: every readable mapping of the running ferry
is scanned for the key's bytes once its requests are done.

Inbound, with the keys in a keys_file, a peer's key has no business in
ferry's memory at all: ferry keeps the configured keys only as HMACs, and
each request's copies (the TLS record, the client's input buffer, the
head) are wiped once the key is checked, as is input it never parses. Outbound, the service's key must
stay in the config to be sent, so its copies are counted: after 100
requests there are no more than before the first one.

Between two ferries the key crosses HTTP/2 by default: nghttp2's copies
of it (the submitted fields, the decoded ones) are wiped too.

The scan reads /proc/PID/mem, so ferry runs with FERRY_DUMPABLE=1 (it
otherwise turns PR_SET_DUMPABLE off, which is the point of it). Mappings
over 1 GiB are skipped: those are a sanitizer's shadow and reservations,
not data.
"""

import json
import os
import re
import secrets
import shutil
import socket
import ssl
import tempfile

import harness
from harness import FerryTestCase, Reader, build_request, fixed, free_port, pki, read_response

N_REQUESTS = 100
PER_CONNECTION = 10
MAX_REGION = 1 << 30
CHUNK = 1 << 20
BODY = b"b" * 3000   # past the head buffer's first 1 KiB: the head moves as it grows


def key_count(pid, key):
    """How many times KEY's bytes occur in the readable memory of PID."""
    needle = key.encode()
    found = 0
    with open("/proc/%d/maps" % pid) as f:
        maps = f.read().splitlines()
    with open("/proc/%d/mem" % pid, "rb", buffering=0) as mem:
        for line in maps:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+)", line)
            start, end, perms = int(m.group(1), 16), int(m.group(2), 16), m.group(3)
            if perms[0] != "r" or end - start > MAX_REGION or line.endswith("[vvar]"):
                continue
            tail = b""
            at = start
            while at < end:
                try:
                    mem.seek(at)
                    data = mem.read(min(CHUNK, end - at))
                except OSError:
                    break
                if not data:
                    break
                window = tail + data
                found += window.count(needle)
                # a key across the chunk boundary is counted once
                tail = window[-(len(needle) - 1):]
                at += len(data)
    return found


class KeyWipeTest(FerryTestCase):

    def setUp(self):
        super().setUp()
        # the same 48 hex characters nowhere else: a hit is this key
        self.key = secrets.token_hex(24)

    def key_file(self, name):
        """A file holding the key, gone after the test."""
        d = tempfile.mkdtemp(prefix="ferry-keys-")
        self._closers.append(lambda: shutil.rmtree(d, ignore_errors=True))
        path = os.path.join(d, name)
        with open(path, "w") as f:
            f.write("%s\n" % self.key)
        return path

    def assert_scan_works(self, pid):
        """The scan finds what is there (a string ferry surely holds)."""
        self.assertGreater(key_count(pid, "x-service-auth"), 0,
                           "the memory scan read nothing of ferry")

    def test_inbound_peer_key_not_kept(self):
        """A peer's valid key, sent in 100 requests (with and without a
        body, on keep-alive connections, one still open) and in heads
        ferry never took, is nowhere in ferry's memory afterwards."""
        p = pki()
        app = self.upstream(fixed(200, body=b"ok"), tls=False)
        port = free_port()
        f = self.ferry({}, env={"FERRY_DUMPABLE": "1"}, listeners={
            "inbound": {
                "address": "127.0.0.1:%d" % port,
                "tls": {"cert": p.server.cert, "key": p.server.key, "client_ca": p.ca.cert},
                "auth": {"keys_file": self.key_file("inbound.keys")},
                "local_app": app.address,
            }})
        ctx = ssl.create_default_context(cafile=p.ca.cert)
        ctx.check_hostname = False
        ctx.load_cert_chain(p.client.cert, p.client.key)
        held = None
        for c in range(N_REQUESTS // PER_CONNECTION):
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=3),
                                server_hostname="backend")
            reader = Reader(s)
            for i in range(PER_CONNECTION):
                body = BODY if i % 3 == 1 else b""
                s.sendall(build_request("POST" if body else "GET", "/r/%d/%d" % (c, i),
                                        [("Host", "app"), ("x-service-auth", self.key)],
                                        body))
                resp = read_response(reader)
                self.assertEqual(resp.status, 200, resp.body[:300])
            if held is None:
                held = s        # idle between requests while the scan runs
            else:
                s.close()
        self.assertEqual(len(app.requests), N_REQUESTS)
        self.assertEqual(app.last.header_all("x-service-auth"), [])
        # heads ferry never takes: one it cannot parse (400), and one cut
        # off by the peer before its end
        auth = b"x-service-auth: " + self.key.encode() + b"\r\n"
        for i in range(5):
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=3),
                                server_hostname="backend")
            s.sendall(b"GET /bad HTTP/1.1\r\nHost: app\r\n" + auth + b"no colon here\r\n\r\n")
            self.assertEqual(read_response(Reader(s)).status, 400)
            s.close()
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=3),
                                server_hostname="backend")
            s.sendall(b"GET /cut HTTP/1.1\r\nHost: app\r\n" + auth)
            s.close()
        harness.wait_until(lambda: harness.counter(f, "ferry_downstream_connections",
                                                   listener="inbound") <= 1, 5)
        self.assertEqual(len(app.requests), N_REQUESTS)
        self.assert_scan_works(f.proc.pid)
        # a closed connection's memory goes on the next loop turn
        harness.wait_until(lambda: key_count(f.proc.pid, self.key) == 0, 3)
        count = key_count(f.proc.pid, self.key)
        held.close()
        self.assertEqual(count, 0, "the peer's key is in ferry's memory %d times" % count)

    def send_outbound(self, f):
        """N_REQUESTS to service svc through F's outbound listener, a third
        of them POSTs with a body, PER_CONNECTION on each connection."""
        for c in range(N_REQUESTS // PER_CONNECTION):
            with f.client() as cl:
                for i in range(PER_CONNECTION):
                    body = BODY if i % 3 == 1 else b""
                    resp = cl.request("POST" if body else "GET", "/r/%d/%d" % (c, i),
                                      [("Host", "svc")], body)
                    self.assertEqual(resp.status, 200, resp.body[:300])

    def outbound(self, upstream):
        f = self.ferry({"svc": harness.service(upstream, protocol="http1", auth={
            "key_file": self.key_file("svc.key")})},
            env={"FERRY_DUMPABLE": "1"})
        before = key_count(f.proc.pid, self.key)
        # the config's own copy, which ferry needs to send it
        self.assertGreaterEqual(before, 1, "the scan did not find the configured key")
        self.send_outbound(f)
        self.assertEqual(len(upstream.requests), N_REQUESTS)
        self.assertEqual(upstream.last.header_all("x-service-auth"), [self.key])
        after = key_count(f.proc.pid, self.key)
        self.assertLessEqual(after, before,
                             "the service key is in ferry's memory %d times after %d requests, "
                             "%d before" % (after, N_REQUESTS, before))

    def test_outbound_key_copies_do_not_grow_tls(self):
        """Outbound over mTLS (ferry to a peer): the key each request head
        carried is wiped once the request is done."""
        self.outbound(self.upstream(fixed(200, body=b"ok")))

    def test_outbound_key_copies_do_not_grow_plain(self):
        self.outbound(self.upstream(fixed(200, body=b"ok"), tls=False))

    def test_outbound_key_copies_do_not_grow_new_connections(self):
        """Every request on a new upstream connection: its head waits in
        the connection's queue until the TLS handshake is done."""
        self.outbound(self.upstream(fixed(200, [("Connection", "close")], body=b"ok")))

    def test_mesh_over_http2(self):
        """Two ferries speak HTTP/2 to each other by default: the key
        crosses in HPACK, and nghttp2's copies of it on both sides are
        wiped. The receiving ferry holds none; the sending one no more than
        its config's."""
        p = pki()
        app = self.upstream(fixed(200, body=b"ok"), tls=False)
        port = free_port()
        b = self.ferry({}, env={"FERRY_DUMPABLE": "1"}, listeners={
            "inbound": {
                "address": "127.0.0.1:%d" % port,
                "tls": {"cert": p.server.cert, "key": p.server.key, "client_ca": p.ca.cert},
                "auth": {"keys_file": self.key_file("inbound.keys")},
                "local_app": app.address,
            }})
        a = self.ferry({"svc": {
            "endpoints": ["127.0.0.1:%d" % port],
            "tls": harness.tls_client("backend"),
            "auth": {"key_file": self.key_file("svc.key")},
        }}, env={"FERRY_DUMPABLE": "1"})
        before = key_count(a.proc.pid, self.key)
        self.assertGreaterEqual(before, 1, "the scan did not find the configured key")
        self.send_outbound(a)
        self.assertEqual(len(app.requests), N_REQUESTS)
        body = json.loads(a.admin("/services").body)
        self.assertEqual(body["services"][0]["endpoints"][0]["protocol"], "h2")
        self.assert_scan_works(b.proc.pid)
        in_b = key_count(b.proc.pid, self.key)
        after = key_count(a.proc.pid, self.key)
        self.assertEqual(in_b, 0, "the peer's key is in the receiving ferry %d times" % in_b)
        self.assertLessEqual(after, before,
                             "the service key is in the sending ferry %d times after %d requests "
                             "over HTTP/2, %d before" % (after, N_REQUESTS, before))


if __name__ == "__main__":
    harness.main()
