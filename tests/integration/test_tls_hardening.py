"""TLS hardening of the inbound listener and the outbound client
(SPEC §3, §5, §10, §11): session resumption stays within the trust it was
verified under, the handshake deadline, the TLS 1.2 cipher policy, peer
identity from the SANs, what remote peers learn of the local app, and a
non-dumpable process."""

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

import harness
from harness import (FerryTestCase, IncompleteMessage, Reader, build_request, free_port, pki,
                     read_response, to_yaml, wait_until)

KEY = "tls-hardening-key-0123456789"
REFUSED = (ssl.SSLError, ConnectionError, IncompleteMessage, socket.timeout, OSError)


def make_cert(name, cn, sans, not_after=None):
    """A leaf of the test CA; with not_after (epoch seconds) it expires
    then (`openssl ca` takes exact dates, `openssl x509` only days)."""
    p = pki()
    if not_after is None:
        return p._make_leaf(name, cn, sans, p.ca)
    fmt = "%Y%m%d%H%M%SZ"
    return p.make_dated(name, cn, sans, p.ca, time.strftime(fmt, time.gmtime(time.time() - 60)),
                        time.strftime(fmt, time.gmtime(not_after)))

def reloads(f, result="success"):
    m = re.search(r'^ferry_config_reloads_total\{result="%s"\} (\S+)' % result,
                  f.admin("/metrics").body.decode(), re.M)
    return float(m.group(1)) if m else 0.0


def client_ctx(cert, max_version=None, ciphers=None):
    p = pki()
    ctx = ssl.create_default_context(cafile=p.ca.cert)
    ctx.check_hostname = False
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    if max_version is not None:
        ctx.maximum_version = max_version
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    return ctx


class InboundCase(FerryTestCase):

    def setUp(self):
        super().setUp()
        self.app = self.upstream(tls=False)
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="ferry-tlsh-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def start(self, tls=None, **inbound):
        p = pki()
        block = {"address": "127.0.0.1:%d" % self.port,
                 "tls": {"cert": p.server.cert, "key": p.server.key, "client_ca": p.ca.cert,
                         **(tls or {})},
                 "auth": {"keys_env": ["HK"]},
                 "local_app": self.app.address, **inbound}
        self.f = self.ferry({}, env={"HK": KEY}, listeners={"inbound": block})
        return self.f

    def reload(self, **inbound_tls):
        """Rewrite the inbound tls block, SIGHUP, wait for the reload."""
        cfg = self.f.config
        cfg["listeners"]["inbound"]["tls"].update(inbound_tls)
        self.reload_config(cfg)

    def reload_config(self, cfg):
        with open(self.f.config_path, "w") as fh:
            fh.write(to_yaml(cfg) + "\n")
        before = reloads(self.f)
        self.f.signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: reloads(self.f) > before, 5.0),
                        "reload not counted:\n" + self.f.stderr_tail())
        time.sleep(0.1)     # the workers take the new snapshot by message

    def call(self, ctx, session=None, target="/r"):
        """(status or None when refused, session_reused, session)."""
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=3)
        s = None
        try:
            s = ctx.wrap_socket(raw, server_hostname="backend", session=session)
            s.sendall(build_request("GET", target, [("Host", "x"), ("x-service-auth", KEY)]))
            resp = read_response(Reader(s))
            return resp.status, s.session_reused, s.session, resp
        except REFUSED:
            return None, bool(s and s.session_reused), None, None
        finally:
            (s or raw).close()


# ---------------------------------------------------------------------------
# 1: resumption and trust


class ResumptionTrustTest(InboundCase):

    def resumes(self, ctx):
        """A full handshake, then a resumption; returns the session."""
        status, reused, session, _ = self.call(ctx)
        self.assertEqual((status, reused), (200, False))
        status, reused, session2, _ = self.call(ctx, session)
        self.assertEqual((status, reused), (200, True), "the session did not resume")
        return session2

    def test_resumption_survives_reload_that_keeps_trust(self):
        self.start()
        for version in (None, ssl.TLSVersion.TLSv1_2):
            ctx = client_ctx(pki().client, version)
            session = self.resumes(ctx)
            self.reload_config(harness.deep_merge(self.f.config, {"log": {"level": "debug"}}))
            status, reused, _, _ = self.call(ctx, session)
            self.assertEqual((status, reused), (200, True),
                             "an unrelated reload lost resumption (%s)" % version)

    def test_reload_removing_peer_ca_refuses_resumption(self):
        p = pki()
        bundle = os.path.join(self.dir, "client-ca.pem")
        with open(bundle, "w") as out:
            for path in (p.ca.cert, p.other_ca.cert):
                with open(path) as fh:
                    out.write(fh.read())
        self.start(tls={"client_ca": bundle})
        ctxs = [client_ctx(p.client), client_ctx(p.client, ssl.TLSVersion.TLSv1_2)]
        sessions = [self.resumes(ctx) for ctx in ctxs]
        # the same path, other bytes: the peer's CA is no longer trusted
        shutil.copyfile(p.other_ca.cert, bundle)
        self.reload()
        before = len(self.app.requests)
        for ctx, session in zip(ctxs, sessions):
            status, reused, _, _ = self.call(ctx, session)
            self.assertIsNone(status, "a peer whose CA was removed got %s by resuming "
                              "(resumed: %s)" % (status, reused))
        self.assertEqual(len(self.app.requests), before, "a refused peer reached the app")

    def test_reload_excluding_peer_refuses_resumption(self):
        self.start(tls={"allowed_peers": ["spiffe://test/app"]})
        ctx = client_ctx(pki().client)
        session = self.resumes(ctx)
        self.reload(allowed_peers=["spiffe://test/someone-else"])
        before = len(self.app.requests)
        status, reused, _, resp = self.call(ctx, session)
        self.assertEqual(status, 403)
        self.assertFalse(reused, "a session from before allowed_peers changed was resumed")
        self.assertEqual(len(self.app.requests), before)

    def test_session_of_expired_peer_cert_refused(self):
        self.start()
        not_after = int(time.time()) + 8
        sessions = []
        for version in (None, ssl.TLSVersion.TLSv1_2):
            cert = make_cert("short-%s-%d" % (version and "12" or "13", not_after), "short",
                             "URI:spiffe://test/short", not_after)
            ctx = client_ctx(cert, version)
            status, _, session, _ = self.call(ctx)
            self.assertEqual(status, 200)
            status, reused, session, _ = self.call(ctx, session)
            self.assertEqual((status, reused), (200, True))
            sessions.append((version, ctx, session))
        self.assertLess(time.time(), not_after, "too slow: the cert expired during the set-up")
        time.sleep(max(0.0, not_after + 1.5 - time.time()))
        before = len(self.app.requests)
        for version, ctx, session in sessions:
            status, reused, _, _ = self.call(ctx, session)
            self.assertIsNone(status, "a session of an expired cert got %s (resumed: %s, %s)"
                              % (status, reused, version))
        self.assertEqual(len(self.app.requests), before)


# ---------------------------------------------------------------------------
# 2: handshake deadline


class HandshakeTimeoutTest(InboundCase):

    def closed_within(self, sock, seconds):
        """Seconds until the peer closed sock (None: still open at `seconds`)."""
        t0 = time.monotonic()
        sock.settimeout(seconds)
        try:
            while True:
                if not sock.recv(4096):
                    break
        except (ConnectionResetError, BrokenPipeError):
            pass
        except socket.timeout:
            return None
        return time.monotonic() - t0

    def test_silent_and_half_hello_closed(self):
        self.start(handshake_timeout="1s")
        for first in (b"", bytes.fromhex("16030100c8010000c40303") + b"\x00" * 10):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=3)
            self.addCleanup(sock.close)
            if first:
                sock.sendall(first)
            took = self.closed_within(sock, 4.0)
            self.assertIsNotNone(took, "still open 4s after connect (sent %d bytes)" % len(first))
            self.assertGreater(took, 0.7)
            self.assertLess(took, 2.5)
        self.assertIn("not done within 1000ms", self.f.stderr_text())

    def test_done_handshake_is_not_cut(self):
        self.start(handshake_timeout="1s")
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=3)
        s = client_ctx(pki().client).wrap_socket(raw, server_hostname="backend")
        self.addCleanup(s.close)
        time.sleep(1.6)
        s.sendall(build_request("GET", "/late", [("Host", "x"), ("x-service-auth", KEY)]))
        self.assertEqual(read_response(Reader(s)).status, 200)

    def test_config_json_and_default(self):
        self.start()
        cfg = json.loads(self.f.admin("/config").body)
        self.assertEqual(cfg["listeners"]["inbound"]["handshake_timeout"], "5s")


# ---------------------------------------------------------------------------
# 3: cipher policy (the full testssl.sh scan is test_tls_policy.py)


class CipherPolicyTest(InboundCase):

    def test_tls12_cbc_only_client_refused(self):
        self.start()
        for ciphers in ("AES128-SHA", "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:"
                        "ECDHE-RSA-AES128-SHA256:AES256-SHA256"):
            ctx = client_ctx(pki().client, ssl.TLSVersion.TLSv1_2, ciphers)
            status, _, _, _ = self.call(ctx)
            self.assertIsNone(status, "a CBC-only TLS 1.2 client got %s" % status)
        self.assertEqual(self.app.requests, [])

    def test_tls12_aead_clients_accepted(self):
        self.start()
        for ciphers in ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                        "ECDHE-ECDSA-CHACHA20-POLY1305"):
            ctx = client_ctx(pki().client, ssl.TLSVersion.TLSv1_2, ciphers)
            status, _, _, _ = self.call(ctx)
            self.assertEqual(status, 200, ciphers)

    def test_outbound_refuses_cbc_only_upstream(self):
        up = self.upstream(tls_max_version=ssl.TLSVersion.TLSv1_2)
        up._ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:AES128-SHA")
        f = self.ferry({"svc": harness.service(up, retries={"max": 0})})
        resp = f.get("/x", host="svc")
        self.assert_ferry_error(resp, 502, "SERVICE_ERROR", "TLS")
        self.assertEqual(up.requests, [])
        good = self.upstream(tls_max_version=ssl.TLSVersion.TLSv1_2)
        good._ctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
        f2 = self.ferry({"svc": harness.service(good)})
        self.assertEqual(f2.get("/x", host="svc").status, 200)


    def test_tls13_prefers_aes128_gcm(self):
        """Both ways ferry's TLS 1.3 order puts AES-128-GCM first: inbound
        it chooses (a Python client offers AES-256 first), outbound an
        upstream that follows the client's order gets it."""
        self.start()
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=3)
        with client_ctx(pki().client).wrap_socket(raw, server_hostname="backend") as s:
            self.assertEqual(s.version(), "TLSv1.3")
            self.assertEqual(s.cipher()[0], "TLS_AES_128_GCM_SHA256")
        up = self.upstream()
        up._ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
        f = self.ferry({"svc": harness.service(up)})
        self.assertEqual(f.get("/x", host="svc").status, 200)
        self.assertEqual((up.requests[0].tls_version, up.requests[0].tls_cipher),
                         ("TLSv1.3", "TLS_AES_128_GCM_SHA256"))


# ---------------------------------------------------------------------------
# 4: identity = first URI SAN, else first DNS SAN


class IdentityTest(InboundCase):

    CASES = [
        ("dns-then-uri", "DNS:dns-first,URI:spiffe://test/uri-second", "spiffe://test/uri-second"),
        ("two-uris", "URI:spiffe://test/one,DNS:d,URI:spiffe://test/two", "spiffe://test/one"),
        ("not-spiffe", "URI:https://example.test/svc,URI:spiffe://test/b", "https://example.test/svc"),
        ("two-dns", "IP:127.0.0.1,DNS:first-dns,DNS:second-dns", "first-dns"),
        ("email-ip", "email:a@example.test,IP:127.0.0.1", None),
        # an unusable first URI is not replaced by the DNS SAN
        ("long-uri", "URI:spiffe://test/" + "a" * 300 + ",DNS:app", None),
    ]

    def test_identity_from_sans(self):
        self.start()
        for name, sans, want in self.CASES:
            cert = make_cert("id-" + name, "cn-" + name, sans)
            status, _, _, resp = self.call(client_ctx(cert), target="/" + name)
            if want is None:
                self.assert_ferry_error(resp, 403, "INVALID_SERVICE_AUTH", "URI or DNS name")
                continue
            self.assertEqual(status, 200, name)
            self.assertEqual(self.app.last.target, "/" + name)
            self.assertEqual(self.app.last.header_all("x-ferry-peer"), [want], name)

    def test_cn_is_never_the_identity(self):
        self.start(tls={"allowed_peers": ["cn-only"]})
        cert = make_cert("id-cn-only", "cn-only", "IP:127.0.0.1")
        status, _, _, resp = self.call(client_ctx(cert))
        self.assertEqual(status, 403)
        self.assertEqual(self.app.requests, [])


# ---------------------------------------------------------------------------
# 5: remote peers do not learn the local app's address


class LocalAppMessageTest(InboundCase):

    def check_hidden(self, resp, status, code):
        body = self.assert_ferry_error(resp, status, code, "local app")
        text = resp.body.decode("utf-8", "replace")
        for leak in ("127.0.0.1", ":%d" % self.app_port, "Connection refused"):
            self.assertNotIn(leak, text, "the error tells the peer %r" % leak)
        return body

    def test_dead_local_app(self):
        self.app_port = free_port()
        self.app = type("Dead", (), {"address": "127.0.0.1:%d" % self.app_port,
                                     "requests": []})()
        self.start()
        _, _, _, resp = self.call(client_ctx(pki().client))
        body = self.check_hidden(resp, 503, "SERVICE_UNAVAILABLE")
        self.assertIn("local app unavailable: connection refused", resp.body.decode())
        # SPEC §16's error.attempts, with the address left out
        self.assertEqual([(a["endpoint"], a["result"]) for a in body["error"]["attempts"]],
                         [("local_app", "refused")], body)
        # the operator still reads where it went
        self.assertTrue(wait_until(lambda: re.search(
            r"WARN upstream failed .*127\.0\.0\.1:%d" % self.app_port, self.f.stderr_text()),
            2.0), self.f.stderr_tail())

    def test_local_app_reset_and_timeout(self):
        self.app = self.upstream(harness.close_without_answer(), tls=False)
        self.app_port = self.app.port
        self.start()
        _, _, _, resp = self.call(client_ctx(pki().client))
        self.check_hidden(resp, 502, "SERVICE_ERROR")

    def test_local_app_timeout(self):
        self.app = self.upstream(harness.delay(3.0), tls=False)
        self.app_port = self.app.port
        self.start(timeouts={"request": "500ms"})
        _, _, _, resp = self.call(client_ctx(pki().client))
        self.check_hidden(resp, 504, "SERVICE_TIMEOUT")


# ---------------------------------------------------------------------------
# 6: not dumpable


class DumpableTest(FerryTestCase):
    """A non-dumpable process's /proc/PID/environ (like its memory) is
    readable only with CAP_SYS_PTRACE. As root, both ferry and the reader
    run without capabilities, so only the dumpable flag decides."""

    def setUp(self):
        super().setUp()
        self.prefix = []
        if os.geteuid() == 0:
            if shutil.which("setpriv") is None:
                self.skipTest("running as root without setpriv (util-linux)")
            self.prefix = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]
            if subprocess.run(self.prefix + ["true"], capture_output=True).returncode != 0:
                self.skipTest("root, and setpriv cannot drop capabilities here")
            wrapper_dir = tempfile.mkdtemp(prefix="ferry-nocaps-")
            self.addCleanup(shutil.rmtree, wrapper_dir, True)
            wrapper = os.path.join(wrapper_dir, "ferry")
            with open(wrapper, "w") as fh:
                fh.write("#!/bin/sh\nexec %s %s \"$@\"\n" % (" ".join(self.prefix),
                                                           os.path.abspath(harness.ferry_bin())))
            os.chmod(wrapper, 0o755)
            old = os.environ.get("FERRY_BIN")
            os.environ["FERRY_BIN"] = wrapper
            self.addCleanup(lambda: os.environ.__setitem__("FERRY_BIN", old) if old
                            else os.environ.pop("FERRY_BIN", None))

    def environ_readable(self, f):
        r = subprocess.run(self.prefix + ["cat", "/proc/%d/environ" % f.proc.pid],
                           capture_output=True, timeout=10)
        return r.returncode == 0

    def test_not_dumpable_by_default(self):
        f = self.ferry({}, env={"FERRY_DUMPABLE": None})
        self.assertFalse(self.environ_readable(f), "ferry is dumpable")

    def test_dumpable_when_asked(self):
        f = self.ferry({}, env={"FERRY_DUMPABLE": "1"})
        self.assertTrue(self.environ_readable(f),
                        "FERRY_DUMPABLE=1 ferry unreadable: the check proves nothing")


if __name__ == "__main__":
    harness.main()
