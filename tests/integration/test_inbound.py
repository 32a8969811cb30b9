"""Inbound: mTLS termination, peer identity, service key (SPEC §1, §3, §5, §7),
and two sidecars as a mesh: app A -> ferry A -> mTLS -> ferry B -> app B."""

import copy
import os
import shutil
import signal
import socket
import json
import re
import ssl
import tempfile
import time

import harness
from harness import FerryTestCase, Reader, build_request, free_port, pki, read_response

KEY1 = "inbound-key-one-0123456789"
KEY2 = "inbound-key-two-9876543210"
FILE_KEY = "inbound-key-from-file-abc"


class InboundTest(FerryTestCase):

    def setUp(self):
        super().setUp()
        p = pki()
        self.app = self.upstream(tls=False)
        self.inbound_port = free_port()
        keys_dir = tempfile.mkdtemp(prefix="ferry-keys-")
        self.keys_file = os.path.join(keys_dir, "inbound.keys")
        with open(self.keys_file, "w") as f:
            f.write("# rotation: the new key first\n\n%s\n" % FILE_KEY)
        self.b = self.ferry({}, env={"K1": KEY1, "K2": KEY2}, listeners={
            "inbound": {
                "address": "127.0.0.1:%d" % self.inbound_port,
                "tls": {"cert": p.server.cert, "key": p.server.key, "client_ca": p.ca.cert,
                        "allowed_peers": ["spiffe://test/app", "some-other-peer"]},
                "auth": {"keys_env": ["K1", "K2"], "keys_file": self.keys_file},
                "local_app": self.app.address,
            }})

    def tls_connect(self, cert=None, ca=None):
        p = pki()
        ctx = ssl.create_default_context(cafile=(ca or p.ca).cert)
        ctx.check_hostname = False
        if cert is not None:
            ctx.load_cert_chain(cert.cert, cert.key)
        raw = socket.create_connection(("127.0.0.1", self.inbound_port), timeout=3)
        return ctx.wrap_socket(raw, server_hostname="backend")

    def call(self, headers, cert="client", target="/orders/1"):
        s = self.tls_connect(getattr(pki(), cert))
        try:
            s.sendall(build_request("GET", target, [("Host", "order-service")] + headers))
            return read_response(Reader(s))
        finally:
            s.close()

    def assert_handshake_refused(self, cert):
        with self.assertRaises((ssl.SSLError, ConnectionError, harness.IncompleteMessage,
                                socket.timeout)):
            s = self.tls_connect(cert)
            # TLS 1.3: the server's verdict on the client cert arrives after
            # the client's handshake completes, with the first read
            s.sendall(build_request("GET", "/", [("Host", "x"), ("x-service-auth", KEY1)]))
            read_response(Reader(s))
        self.assertEqual(self.app.requests, [], "a refused peer reached the app")

    def test_allowed_peer_with_key_reaches_app(self):
        resp = self.call([("x-service-auth", KEY1), ("x-correlation-id", "corr-in-1")])
        self.assertEqual(resp.status, 200, resp.body[:300])
        req = self.app.last
        self.assertEqual(req.target, "/orders/1")
        self.assertEqual(req.header_all("host"), ["order-service"])
        self.assertEqual(req.header_all("x-ferry-peer"), ["spiffe://test/app"])
        self.assertEqual(req.header_all("x-forwarded-proto"), ["https"])
        self.assertEqual(req.header_all("x-forwarded-for"), ["127.0.0.1"])
        self.assertEqual(req.header_all("x-service-auth"), [], "the key reached the app")
        self.assertEqual(req.header_all("x-correlation-id"), ["corr-in-1"])
        self.assertRegex(req.header("via") or "", r"1\.1 ferry-[0-9a-f]{8}-in$")
        self.assertEqual(resp.header("x-correlation-id"), "corr-in-1")

    def test_loop_is_checked_after_the_peer_and_its_key(self):
        # this listener's own via token: 508 for a peer that proved itself,
        # 403 for one without a key (it learns nothing of the routing)
        resp = self.call([("x-service-auth", KEY1)])
        self.assertEqual(resp.status, 200)
        token = re.search(r"1\.1 ferry-[0-9a-f]{8}-in$", self.app.last.header("via")).group(0)
        count = len(self.app.requests)
        resp = self.call([("x-service-auth", KEY1), ("Via", token)])
        self.assert_ferry_error(resp, 508, "LOOP_DETECTED")
        resp = self.call([("Via", token)])
        self.assert_ferry_error(resp, 403, "INVALID_SERVICE_AUTH")
        resp = self.call([("x-service-auth", "wrong"), ("Via", token)])
        self.assert_ferry_error(resp, 403, "INVALID_SERVICE_AUTH")
        self.assertEqual(len(self.app.requests), count)

    def test_http10_without_host_gets_the_apps_address(self):
        """HTTP/1.0 needs no Host; the app is spoken to in HTTP/1.1, which
        does (RFC 9112 3.2): a request without one reached the app without
        one, and a strict app answered 400. It now names the app."""
        s = self.tls_connect(pki().client)
        try:
            s.sendall(build_request("GET", "/old", [("x-service-auth", KEY1)],
                                    version="HTTP/1.0"))
            resp = read_response(Reader(s))
        finally:
            s.close()
        self.assertEqual(resp.status, 200, resp.body[:300])
        self.assertEqual(self.app.last.header_all("host"), [self.app.address])

    def test_second_rotation_key_accepted(self):
        self.assertEqual(self.call([("x-service-auth", KEY2)]).status, 200)

    def test_keys_file_key_accepted(self):
        self.assertEqual(self.call([("x-service-auth", FILE_KEY)]).status, 200)

    def test_wrong_key_403(self):
        resp = self.call([("x-service-auth", KEY1 + "x")])
        self.assert_ferry_error(resp, 403, "INVALID_SERVICE_AUTH", "invalid")
        self.assertEqual(self.app.requests, [])

    def test_missing_key_403(self):
        resp = self.call([])
        self.assert_ferry_error(resp, 403, "INVALID_SERVICE_AUTH", "missing")
        self.assertEqual(self.app.requests, [])

    def test_key_prefix_and_empty_rejected(self):
        for key in (KEY1[:-1], "", KEY1 + KEY2):
            resp = self.call([("x-service-auth", key)])
            self.assertEqual(resp.status, 403, key)
        self.assertEqual(self.app.requests, [])

    def test_disallowed_peer_403(self):
        resp = self.call([("x-service-auth", KEY1)], cert="client_dns")
        self.assert_ferry_error(resp, 403, "INVALID_SERVICE_AUTH", "app-dns")
        self.assertEqual(self.app.requests, [])

    def test_spoofed_peer_header_replaced(self):
        resp = self.call([("x-service-auth", KEY1), ("X-Ferry-Peer", "spiffe://evil/admin")])
        self.assertEqual(resp.status, 200)
        self.assertEqual(self.app.last.header_all("x-ferry-peer"), ["spiffe://test/app"])

    def test_forwarded_for_appended(self):
        resp = self.call([("x-service-auth", KEY1), ("X-Forwarded-For", "10.1.2.3")])
        self.assertEqual(resp.status, 200)
        self.assertEqual(self.app.last.header_all("x-forwarded-for"), ["10.1.2.3, 127.0.0.1"])

    def test_no_client_cert_rejected(self):
        self.assert_handshake_refused(None)

    def test_unknown_ca_cert_rejected(self):
        self.assert_handshake_refused(pki().other)

    def test_expired_cert_rejected(self):
        self.assert_handshake_refused(pki().expired)

    def test_still_serves_after_refusals(self):
        self.assert_handshake_refused(None)
        self.call([("x-service-auth", "nope")])
        self.assertEqual(self.call([("x-service-auth", KEY1)]).status, 200)

    def test_session_resumption_counted(self):
        """Peers resume with session tickets; handshakes are counted by
        `resumed` in the metrics (issue 5, SPEC 8)."""
        p = pki()
        ctx = ssl.create_default_context(cafile=p.ca.cert)
        ctx.check_hostname = False
        ctx.load_cert_chain(p.client.cert, p.client.key)
        session = None
        reused = []
        for _ in range(3):
            raw = socket.create_connection(("127.0.0.1", self.inbound_port), timeout=3)
            with ctx.wrap_socket(raw, server_hostname="backend", session=session) as s:
                s.sendall(build_request("GET", "/r", [("Host", "x"), ("x-service-auth", KEY1)]))
                self.assertEqual(read_response(Reader(s)).status, 200)
                reused.append(s.session_reused)
                session = s.session     # TLS 1.3: the ticket came after the handshake
        self.assertEqual(reused, [False, True, True])
        metrics = self.b.admin("/metrics").body.decode()
        self.assertRegex(metrics, r'ferry_tls_handshakes_total\{direction="inbound",'
                                  r'resumed="true"\} [2-9]')

    def test_local_app_attempts_counted(self):
        for _ in range(3):
            self.assertEqual(self.call([("x-service-auth", KEY1)]).status, 200)
        metrics = self.b.admin("/metrics").body.decode()
        self.assertRegex(metrics, r'ferry_upstream_attempts_total\{service="local_app",'
                                  r'result="ok"\} 3\b')
        self.assertRegex(metrics, r'ferry_requests_total\{direction="inbound",'
                                  r'service="local_app",code="200"\} 3\b')

    def test_alpn_h2_first_then_http11(self):
        """SPEC §12: the inbound listener offers h2 and http/1.1, h2 first."""
        p = pki()
        for offered, chosen in ((["h2", "http/1.1"], "h2"), (["http/1.1", "h2"], "h2"),
                                (["http/1.1"], "http/1.1")):
            ctx = ssl.create_default_context(cafile=p.ca.cert)
            ctx.check_hostname = False
            ctx.load_cert_chain(p.client.cert, p.client.key)
            ctx.set_alpn_protocols(offered)
            raw = socket.create_connection(("127.0.0.1", self.inbound_port), timeout=3)
            with ctx.wrap_socket(raw, server_hostname="backend") as s:
                self.assertEqual(s.selected_alpn_protocol(), chosen, offered)


class TrustReloadCase(FerryTestCase):
    """An inbound listener whose client_ca bundle a test rewrites and
    reloads (reload_with_ca), and an mTLS client of it (connect)."""

    def setUp(self):
        super().setUp()
        p = pki()
        self.app = self.upstream(tls=False)
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="ferry-trust-")
        self.bundle = os.path.join(self.dir, "client-ca.pem")
        shutil.copyfile(p.ca.cert, self.bundle)
        self.f = self.ferry({}, env={"K1": KEY1, "K2": KEY2}, listeners={"inbound": {
            "address": "127.0.0.1:%d" % self.port,
            "tls": {"cert": p.server.cert, "key": p.server.key, "client_ca": self.bundle},
            "auth": {"keys_env": ["K1"]},
            "local_app": self.app.address}})

    def connect(self, alpn=None):
        p = pki()
        ctx = ssl.create_default_context(cafile=p.ca.cert)
        ctx.check_hostname = False
        ctx.load_cert_chain(p.client.cert, p.client.key)
        if alpn:
            ctx.set_alpn_protocols(alpn)
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", self.port), timeout=3),
                            server_hostname="backend")
        self.addCleanup(s.close)
        return s

    def get(self, reader, sock, target):
        sock.sendall(build_request("GET", target, [("Host", "x"), ("x-service-auth", KEY1)]))
        return read_response(reader)

    def reload_with_ca(self, *cas):
        with open(self.bundle, "w") as out:
            for ca in cas:
                with open(ca.cert) as fh:
                    out.write(fh.read())
        before = harness.counter(self.f, "ferry_config_reloads_total", result="success")
        self.f.signal(signal.SIGHUP)
        self.assertTrue(harness.wait_until(lambda: harness.counter(
            self.f, "ferry_config_reloads_total", result="success") > before, 5.0),
            self.f.stderr_tail())
        time.sleep(0.2)     # the workers take the new snapshot by message

    def after_reload(self, sock, reader, target):
        """What a request on a kept connection gets: its status, or None when
        the connection was closed (before or instead of an answer)."""
        try:
            return self.get(reader, sock, target).status
        except (ssl.SSLError, OSError, harness.IncompleteMessage):
            return None


class KeptConnectionTrustTest(TrustReloadCase):
    """A reload that changes client_ca: a connection verified under the old
    one carries no request of the peer's to the app any more (a new one
    must pass the new client_ca, as a resumed session must). Peers still
    trusted lose nothing: the connection closes between requests, and the
    next one verifies the peer again."""

    def test_reload_removing_peer_ca_ends_kept_connections(self):
        p = pki()
        idle = self.connect()
        r_idle = Reader(idle)
        self.assertEqual(self.get(r_idle, idle, "/before").status, 200)
        # one with a request in flight at the reload, and one pipelined
        self.app.behaviour = harness.delay(2.5)
        busy = self.connect()
        busy.sendall(build_request("GET", "/in-flight", [("Host", "x"), ("x-service-auth", KEY1)])
                     + build_request("GET", "/pipelined", [("Host", "x"),
                                                           ("x-service-auth", KEY1)]))
        self.app.wait_requests(2)
        self.reload_with_ca(p.other_ca)
        r_busy = Reader(busy)
        busy.settimeout(5)
        resp = read_response(r_busy)
        self.assertEqual(resp.status, 200, "the request in flight at the reload was cut")
        self.assertEqual(resp.header("connection"), "close")
        self.assertIn(self.after_reload(idle, r_idle, "/after"), (None, 403))
        self.assertIsNone(self.after_reload(busy, r_busy, "/after-busy"))
        self.assertEqual([r.target for r in self.app.requests], ["/before", "/in-flight"],
                         "a peer whose CA was removed reached the app on a kept connection")

    def test_reload_removing_peer_ca_ends_kept_h2_connections(self):
        try:
            harness.need_python_h2()
            from test_h2 import H2
        except SystemExit:
            self.skipTest("python3-h2 is not installed")
        p = pki()
        c = H2(sock=self.connect(["h2"]))
        self.assertEqual(c.get("/h2-before", authority="x",
                               headers=[("x-service-auth", KEY1)]).status, 200)
        self.reload_with_ca(p.other_ca)
        sid = c.request("/h2-after", authority="x", headers=[("x-service-auth", KEY1)])
        st = c.streams[sid]
        c.wait(lambda: st.done or c.closed, 3.0)
        self.assertIn(st.status, (None, 403), st.headers)
        self.assertEqual([r.target for r in self.app.requests], ["/h2-before"],
                         "a peer whose CA was removed reached the app on a kept connection")

    def test_reload_keeping_peer_ca_refuses_nothing(self):
        """CA rotation: the new CA is added, the peer's stays."""
        p = pki()
        s = self.connect()
        r = Reader(s)
        self.assertEqual(self.get(r, s, "/one").status, 200)
        self.reload_with_ca(p.ca, p.other_ca)
        status = self.after_reload(s, r, "/two")
        self.assertIn(status, (None, 200), "a peer still trusted was refused")
        s = self.connect()
        self.assertEqual(self.get(Reader(s), s, "/three").status, 200)


class TunnelTrustTest(TrustReloadCase):
    """A WebSocket tunnel on the inbound listener, open at a reload that
    changes client_ca: it cannot move to a new connection, so it ends at
    once (close_notify and FIN to the peer, the app's connection closed,
    an access log line saying why) when the new client_ca does not trust
    the peer, and runs on when it does (the same bundle, or a CA added
    beside the peer's)."""

    def open_tunnel(self):
        self.app.behaviour = harness.websocket_echo()
        s = self.connect()
        r = Reader(s)
        s.sendall(build_request("GET", "/ws", [
            ("Host", "x"), ("x-service-auth", KEY1), ("Upgrade", "websocket"),
            ("Connection", "Upgrade"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13")]))
        resp = read_response(r)
        self.assertEqual(resp.status, 101, resp.body[:200])
        self.echo(s, r, b"before")
        return s, r

    def echo(self, s, r, data):
        s.sendall(harness.ws_frame(0x1, data, mask=True))
        self.assertEqual(harness.ws_read_frame(r)[1:3], (0x1, data))

    def closed_cleanly(self, s, r, timeout):
        """True when the peer's side ends within TIMEOUT with close_notify
        (an EOF, not a reset or a TLS EOF without it)."""
        s.settimeout(timeout)
        try:
            return not r.fill()
        except (socket.timeout, ssl.SSLError, OSError):
            return False

    def log_line(self, path):
        def find():
            return [e for e in self.f.access_log() if e.get("path") == path]
        self.assertTrue(harness.wait_until(find, 3, interval=0.05), self.f.stdout_text()[-2000:])
        return find()

    def test_reload_removing_peer_ca_ends_open_tunnel(self):
        p = pki()
        s, r = self.open_tunnel()
        self.reload_with_ca(p.other_ca)
        self.assertTrue(self.closed_cleanly(s, r, 1.5),
                        "a tunnel whose peer the new client_ca does not trust still runs "
                        "(or was not closed with close_notify)")
        try:
            s.sendall(harness.ws_frame(0x1, b"after", mask=True))
        except (ssl.SSLError, OSError):
            pass
        time.sleep(0.3)
        self.assertEqual([f[:2] for f in self.app.ws_frames], [(0x1, b"before")],
                         "bytes of an untrusted peer reached the app after the reload")
        lines = self.log_line("/ws")
        self.assertEqual(len(lines), 1, lines)
        self.assertEqual((lines[0]["status"], lines[0]["error"], lines[0]["fate"],
                          lines[0]["service"]), (101, "peer_untrusted", "rejected", "local_app"),
                         lines[0])
        self.assertEqual(harness.counter(self.f, "ferry_requests_cut_total", direction="inbound",
                                         service="local_app", cause="peer_untrusted"), 1.0)
        # the identity comes from the certificate: quoted and escaped in
        # the log line, it cannot forge a key=value of it
        self.assertRegex(self.f.stderr_text(),
                         r'inbound tunnel ended peer=\S+ identity="[^"\\]*" cause="')

    def test_reload_keeping_the_bundle_keeps_the_tunnel(self):
        p = pki()
        s, r = self.open_tunnel()
        self.reload_with_ca(p.ca)       # the same bytes written again
        time.sleep(0.3)
        self.echo(s, r, b"after the same bundle")
        self.assertEqual([e for e in self.f.access_log() if e.get("path") == "/ws"], [])

    def test_reload_adding_a_ca_keeps_the_tunnel(self):
        """CA rotation: the peer's CA stays in the new bundle."""
        p = pki()
        s, r = self.open_tunnel()
        self.reload_with_ca(p.other_ca, p.ca)
        time.sleep(0.3)
        self.echo(s, r, b"after the rotation")
        self.assertEqual([e for e in self.f.access_log() if e.get("path") == "/ws"], [])

    def reload_allowing(self, peers):
        config = copy.deepcopy(self.f.config)
        config["listeners"]["inbound"]["tls"]["allowed_peers"] = peers
        self.f.reload(config)
        time.sleep(0.2)     # the workers take the new snapshot by message

    def test_reload_dropping_the_peer_from_allowed_peers_ends_its_tunnel(self):
        """allowed_peers is checked per request, and a tunnel makes none:
        a reload that no longer names its peer ends it, as one whose
        client_ca no longer trusts it; one that still names it keeps it."""
        s, r = self.open_tunnel()
        self.reload_allowing(["spiffe://test/app", "spiffe://test/other"])
        self.echo(s, r, b"still named")
        self.reload_allowing(["spiffe://test/other"])
        self.assertTrue(self.closed_cleanly(s, r, 1.5),
                        "a tunnel of a peer allowed_peers no longer names still runs")
        self.assertEqual([f[:2] for f in self.app.ws_frames],
                         [(0x1, b"before"), (0x1, b"still named")])
        lines = self.log_line("/ws")
        self.assertEqual((lines[0]["error"], lines[0]["fate"]), ("peer_untrusted", "rejected"),
                         lines[0])

    def late_upgrade(self, reload):
        """An upgrade whose 101 the app sends after RELOAD ran: the
        peer's answer (the reload came while the upgrade waited)."""
        self.app.behaviour = harness.delay(1.5, harness.websocket_echo())
        s = self.connect()
        r = Reader(s)
        s.sendall(build_request("GET", "/ws-late", [
            ("Host", "x"), ("x-service-auth", KEY1), ("Upgrade", "websocket"),
            ("Connection", "Upgrade"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13")]))
        self.app.wait_requests(1)
        reload()
        s.settimeout(5)
        resp = read_response(r)
        self.assertEqual((resp.status, resp.header("x-ferry-error")),
                         (403, "INVALID_SERVICE_AUTH"), resp.body[:300])
        self.assertTrue(self.closed_cleanly(s, r, 2))
        self.assertEqual(self.app.ws_frames, [])
        return resp

    def test_upgrade_answered_after_allowed_peers_dropped_the_peer_is_refused(self):
        resp = self.late_upgrade(lambda: self.reload_allowing(["spiffe://test/other"]))
        self.assertIn(b"allowed_peers", resp.body)

    def test_upgrade_answered_after_the_reload_is_refused(self):
        self.late_upgrade(lambda: self.reload_with_ca(pki().other_ca))

    def reload_keys(self, auth):
        config = copy.deepcopy(self.f.config)
        if auth is None:
            del config["listeners"]["inbound"]["auth"]
        else:
            config["listeners"]["inbound"]["auth"] = auth
        self.f.reload(config)
        time.sleep(0.2)     # the workers take the new snapshot by message

    def test_reload_removing_the_tunnels_key_ends_it(self):
        """Key revocation: the key is checked per request, and a tunnel
        makes none. A reload whose keys still hold the tunnel's key (a
        rotation adding one) or that drops auth keeps it; one whose keys
        no longer hold it ends it."""
        s, r = self.open_tunnel()
        self.reload_keys({"keys_env": ["K2", "K1"]})
        self.echo(s, r, b"rotating")
        self.reload_keys(None)
        self.echo(s, r, b"no auth")
        self.reload_keys({"keys_env": ["K1"]})
        self.echo(s, r, b"back")
        self.assertEqual(harness.counter(self.f, "ferry_auth_failures_total",
                                         reason="invalid"), 0.0)
        self.reload_keys({"keys_env": ["K2"]})
        self.assertTrue(self.closed_cleanly(s, r, 1.5),
                        "a tunnel whose key the reloaded keys no longer hold still runs")
        self.assertEqual([f[:2] for f in self.app.ws_frames],
                         [(0x1, b"before"), (0x1, b"rotating"), (0x1, b"no auth"),
                          (0x1, b"back")])
        lines = self.log_line("/ws")
        self.assertEqual((lines[0]["error"], lines[0]["fate"]), ("peer_untrusted", "rejected"),
                         lines[0])
        # the peer's next request, with the new key, goes through
        self.app.behaviour = harness.echo()
        s2 = self.connect()
        s2.sendall(build_request("GET", "/new-key", [("Host", "x"), ("x-service-auth", KEY2)]))
        self.assertEqual(read_response(Reader(s2)).status, 200)

    def test_reload_adding_auth_ends_a_tunnel_opened_without_a_key(self):
        self.reload_keys(None)
        self.app.behaviour = harness.websocket_echo()
        s = self.connect()
        r = Reader(s)
        s.sendall(build_request("GET", "/ws", [
            ("Host", "x"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]))
        self.assertEqual(read_response(r).status, 101)
        self.echo(s, r, b"keyless")
        self.reload_keys({"keys_env": ["K1"]})
        self.assertTrue(self.closed_cleanly(s, r, 1.5),
                        "a keyless tunnel runs on after a reload that asks for a key")

    def test_upgrade_answered_after_its_key_was_removed_is_refused(self):
        resp = self.late_upgrade(lambda: self.reload_keys({"keys_env": ["K2"]}))
        self.assertIn(b"x-service-auth", resp.body)
        self.assertEqual(harness.counter(self.f, "ferry_auth_failures_total",
                                         reason="invalid"), 1.0)


class MeshTest(FerryTestCase):
    """app A -> ferry A outbound -> mTLS -> ferry B inbound -> app B."""

    def test_two_sidecars(self):
        p = pki()
        app_b = self.upstream(tls=False)
        inbound_port = free_port()
        self.ferry({}, env={"MESH_KEY": KEY1}, listeners={
            "inbound": {
                "address": "127.0.0.1:%d" % inbound_port,
                "tls": {"cert": p.server.cert, "key": p.server.key, "client_ca": p.ca.cert,
                        "allowed_peers": ["spiffe://test/app"]},
                "auth": {"keys_env": ["MESH_KEY"]},
                "local_app": app_b.address,
            }})
        a = self.ferry({"order-service": {
            "endpoints": ["127.0.0.1:%d" % inbound_port],
            "tls": harness.tls_client("backend"),
            "auth": {"key_env": "MESH_KEY"},
        }}, env={"MESH_KEY": KEY1})
        for i in range(3):
            with a.client() as c:
                resp = c.request("POST", "/orders", [("Host", "order-service"),
                                                      ("x-correlation-id", "mesh-%d" % i),
                                                      ("Content-Type", "application/json")],
                                 b'{"item":42}')
            self.assertEqual(resp.status, 200, resp.body[:300])
            self.assertEqual(resp.header("x-correlation-id"), "mesh-%d" % i)
            req = app_b.last
            self.assertEqual(req.method, "POST")
            self.assertEqual(req.body, b'{"item":42}')
            self.assertEqual(req.header_all("x-correlation-id"), ["mesh-%d" % i])
            self.assertEqual(req.header_all("x-ferry-peer"), ["spiffe://test/app"])
            self.assertEqual(req.header_all("x-service-auth"), [])
            vias = ", ".join(req.header_all("via"))
            self.assertRegex(vias, r"ferry-[0-9a-f]{8}-out, 1\.1 ferry-[0-9a-f]{8}-in$")
            # the request id ferry A made travels on unchanged
            self.assertEqual(req.header_all("x-request-id"), [resp.header("x-request-id")])


class MeshH2Test(FerryTestCase):
    """SPEC §12: two ferries speak HTTP/2 to each other by default
    (protocol auto, ALPN h2 first), and HTTP/1.1 apps on both sides do not
    notice: bodies of any framing, both ways, and many requests on few
    connections."""

    def mesh(self, protocol=None, app_b=None):
        p = pki()
        app_b = app_b or self.upstream(tls=False)
        inbound_port = free_port()
        b = self.ferry({}, env={"MESH_KEY": KEY1}, listeners={
            "inbound": {
                "address": "127.0.0.1:%d" % inbound_port,
                "tls": {"cert": p.server.cert, "key": p.server.key, "client_ca": p.ca.cert},
                "auth": {"keys_env": ["MESH_KEY"]},
                "local_app": app_b.address,
            }})
        svc = {"endpoints": ["127.0.0.1:%d" % inbound_port],
               "tls": harness.tls_client("backend"), "auth": {"key_env": "MESH_KEY"}}
        if protocol:
            svc["protocol"] = protocol
        a = self.ferry({"order-service": svc}, env={"MESH_KEY": KEY1})
        return a, b, app_b

    def endpoint_state(self, f):
        body = json.loads(f.admin("/services").body)
        return body["services"][0]["endpoints"][0]

    def test_auto_speaks_h2_between_ferries(self):
        a, b, app_b = self.mesh()
        big = harness.payload(300 * 1024, seed=7)
        with a.client() as c:
            for i in range(20):
                resp = c.request("POST", "/o/%d" % i, [("Host", "order-service"),
                                                        ("Content-Type", "application/octet-stream")],
                                 big if i % 5 == 0 else b"small")
                self.assertEqual(resp.status, 200, resp.body[:300])
                seen = app_b.last
                self.assertEqual(seen.body, big if i % 5 == 0 else b"small")
                self.assertEqual(seen.header_all("x-ferry-peer"), ["spiffe://test/app"])
            # chunked from the app, of unknown length across HTTP/2
            c.send(b"POST /chunked HTTP/1.1\r\nHost: order-service\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            resp = c.read_response()
            self.assertEqual(resp.status, 200)
            self.assertEqual(app_b.last.body, b"hello world")
        ep = self.endpoint_state(a)
        self.assertEqual(ep["protocol"], "h2", ep)
        # HTTP/2 multiplexes: far fewer connections than requests
        self.assertLessEqual(app_b.connections_accepted, 21)
        m = a.admin("/metrics").body.decode()
        opened = sum(float(l.rsplit(" ", 1)[1]) for l in m.splitlines()
                     if l.startswith("ferry_upstream_connections_opened_total{"))
        self.assertLessEqual(opened, 2, "HTTP/2 upstream connections opened: %s" % opened)

    def test_chunked_response_through_h2(self):
        def behave(conn, req):
            conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n")
        a, b, app_b = self.mesh(app_b=self.upstream(behave, tls=False))
        with a.client() as c:
            resp = c.request("GET", "/c", [("Host", "order-service")])
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.body, b"abcdefg")
            # the app's connection stays usable after a body framed anew
            resp = c.request("GET", "/c2", [("Host", "order-service")])
            self.assertEqual(resp.body, b"abcdefg")

    def test_http1_forced(self):
        a, b, app_b = self.mesh(protocol="http1")
        with a.client() as c:
            resp = c.request("GET", "/h1", [("Host", "order-service")])
        self.assertEqual(resp.status, 200)
        self.assertEqual(self.endpoint_state(a)["protocol"], "http1")

    def test_grpc_through_two_ferries_gets_the_grpc_form(self):
        """gRPC crosses the HTTP/2 hop; the local app behind ferry B speaks
        HTTP/1.1 (local_app_protocol http1), so B answers in the gRPC form
        and A passes it on unchanged (trailers-only)."""
        a, b, app_b = self.mesh()
        with a.client() as c:
            resp = c.request("POST", "/pkg.Svc/Call", [("Host", "order-service"),
                                                      ("content-type", "application/grpc")],
                             b"\x00\x00\x00\x00\x00")
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.header("grpc-status"), "13")
        self.assertEqual(resp.header("x-ferry-error"), "SERVICE_ERROR")
        self.assertEqual(app_b.requests, [])


if __name__ == "__main__":
    harness.main()
