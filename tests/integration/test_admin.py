"""Admin endpoint basics (SPEC §8, §10 /ready while draining), its
listener's limits (§3, §11: slow heads, descriptors running out), the
Host check against DNS rebinding (listeners.admin.hosts) and /history,
the status page's charts as JSON (§16)."""

import http.client
import json
import os
import re
import resource
import secrets
import signal
import socket
import time

import harness
from harness import FerryTestCase, service


class AdminTest(FerryTestCase):

    def setUp(self):
        super().setUp()
        self.up = self.upstream()
        self.secret = "admin-secret-" + secrets.token_hex(8)

    def start(self, **kw):
        return self.ferry({"svc": service(self.up, auth={"key_env": "FERRY_TEST_KEY"})},
                          env={"FERRY_TEST_KEY": self.secret}, **kw)

    def test_healthz(self):
        f = self.start()
        resp = f.admin("/healthz")
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.body.strip(), b"ok")

    def admin_socket(self, f):
        s = socket.create_connection(("127.0.0.1", f.admin_port), timeout=3)
        self.addCleanup(s.close)
        return s

    def test_admin_listener_limits(self):
        """listeners.admin takes the per-listener keys (SPEC 3): an idle
        connection is closed after idle_timeout, a head not finished in
        header_read_timeout gets 408, and max_connections caps them."""
        f = self.start(admin={"idle_timeout": "1s", "header_read_timeout": "1s",
                              "max_connections": 2})
        idle = self.admin_socket(f)
        idle.settimeout(3)
        t0 = time.monotonic()
        self.assertEqual(idle.recv(100), b"", "idle admin connection not closed")
        self.assertLess(time.monotonic() - t0, 2.5)
        slow = self.admin_socket(f)
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        slow.settimeout(3)
        self.assertTrue(slow.recv(200).startswith(b"HTTP/1.1 408"))
        # two held connections: the third waits in the backlog, unanswered
        a, b = self.admin_socket(f), self.admin_socket(f)
        time.sleep(0.2)
        c = self.admin_socket(f)
        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        c.settimeout(0.5)
        with self.assertRaises(socket.timeout):
            c.recv(100)
        a.close()
        c.settimeout(3)
        self.assertTrue(c.recv(200).startswith(b"HTTP/1.1 200"))

    def test_slow_head_408_from_its_first_byte(self):
        """header_read_timeout runs from the first byte of a head: a byte
        every 200 ms does not keep it open (SPEC 3)."""
        f = self.start(admin={"idle_timeout": "10s", "header_read_timeout": "1s"})
        s = self.admin_socket(f)
        s.settimeout(0.2)
        t0 = time.monotonic()
        s.sendall(b"GET /config HTTP/1.1\r\n")
        got = b""
        while time.monotonic() - t0 < 4 and not got:
            try:
                s.sendall(b"x")
            except OSError:
                break
            try:
                got = s.recv(300)
            except socket.timeout:
                pass
            except OSError:
                break
        elapsed = time.monotonic() - t0
        self.assertTrue(got.startswith(b"HTTP/1.1 408"), "after %.1fs: %r" % (elapsed, got))
        self.assertGreater(elapsed, 0.8)
        self.assertLess(elapsed, 2.5, "408 came %.1fs after the first byte" % elapsed)
        self.assertEqual(f.admin("/healthz").status, 200)

    def test_admin_heads_over_16k_get_431(self):
        """An admin request is a GET of a few hundred bytes: heads are
        held to 16 KiB, not the 64 KiB of proxied ones. Each admin
        connection could hold 74 KiB of unfinished head until
        header_read_timeout: 10,000 of them (max_connections) 740 MB."""
        f = self.start(admin={"header_read_timeout": "10s"})
        # a browser's cookies fit
        s = self.admin_socket(f)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: " + b"c" * 12000 +
                  b"\r\n\r\n")
        self.assertTrue(s.recv(200).startswith(b"HTTP/1.1 200"))
        base = harness.anon_kib(f.proc.pid)
        held = []
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", f.admin_port), timeout=3)
            self.addCleanup(s.close)
            try:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " +
                          b"x" * 60000)
            except OSError:
                pass            # closed already, while the rest was on its way
            held.append(s)
        time.sleep(0.3)
        growth = harness.anon_kib(f.proc.pid) - base
        if not harness.sanitized(f.proc.pid):
            self.assertLess(growth, 4096, "RssAnon grew %d KiB with 200 long heads" % growth)
        for s in held:
            got = b""
            try:
                got = s.recv(200)
            except OSError:
                pass        # reset: the 431 was sent, the unread rest reset it
            self.assertTrue(got == b"" or got.startswith(b"HTTP/1.1 431"), got)
        self.assertEqual(f.admin("/healthz").status, 200)

    def test_pipelining_peer_that_never_reads_holds_one_answer(self):
        """SPEC 11: a peer that pipelines requests and never reads its
        answers costs ferry one answer at a time, not one per request it
        sends (each /metrics is KiBs for a 40-byte request); the main
        thread goes on answering others; a peer that does read gets every
        pipelined answer, in order."""
        f = self.start(admin={"idle_timeout": "30s"})
        pid = f.proc.pid
        s = self.admin_socket(f)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        many = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 1000
        first = harness.anon_kib(pid)
        s.settimeout(0.2)
        sent, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < 3:
            try:
                sent += s.send(many)
            except socket.timeout:
                pass
        grown = harness.anon_kib(pid) - first
        t1 = time.monotonic()
        self.assertEqual(f.admin("/healthz", timeout=3).status, 200)
        self.assertLess(time.monotonic() - t1, 1.0)
        # the answers held grew 54 MiB in these 3 s before (RSS means
        # nothing under a sanitizer: shadow memory, quarantine)
        if not harness.sanitized(pid):
            self.assertLess(grown, 16384, "%d KiB more after %d KiB of pipelined /metrics "
                            "requests nobody read" % (grown, sent // 1024))
        self.assertTrue(f.alive(), f.stderr_tail())
        # a reading peer gets all it asked for
        r = self.admin_socket(f)
        r.settimeout(5)
        paths = [b"/metrics", b"/healthz", b"/services", b"/config"] * 50
        r.sendall(b"".join(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % p for p in paths))
        reader = harness.Reader(r)
        for p in paths:
            resp = harness.read_response(reader)
            self.assertEqual(resp.status, 200, p)
            if p == b"/healthz":
                self.assertEqual(resp.body, b"ok\n")

    def test_peer_sending_on_while_its_last_answer_waits_costs_no_cpu(self):
        """SPEC 11: once ferry has answered a peer's last request
        (HTTP/1.0) and waits for the peer to take the answer, bytes the
        peer sends on are not read: they filled the connection's input
        buffer, and the main thread then woke for the readable socket
        without end until idle_timeout."""
        # /services: ~150 bytes an endpoint, 450 KB
        n = 3000
        f = self.ferry({"svc": {"endpoints": ["127.0.0.1:%d" % (20000 + i) for i in range(n)]}},
                       admin={"idle_timeout": "20s"}, workers=1)
        pid = f.proc.pid
        s = socket.socket()
        self.addCleanup(s.close)
        # a small MSS keeps the socket's send buffer small (Linux sizes
        # it by MSS): the answer waits in ferry
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", f.admin_port))
        s.sendall(b"GET /services HTTP/1.0\r\n\r\n")
        time.sleep(0.5)
        s.settimeout(0.5)
        try:
            s.sendall(b"x" * 400000)
        except socket.timeout:
            pass
        time.sleep(0.3)

        def cpu_seconds():
            with open("/proc/%d/stat" % pid) as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        t0, c0 = time.monotonic(), cpu_seconds()
        time.sleep(2)
        share = (cpu_seconds() - c0) / (time.monotonic() - t0)
        # 89-100% of a core before
        self.assertLess(share, 0.2, "ferry used %.0f%% of a core" % (share * 100))
        self.assertEqual(f.admin("/healthz").status, 200)
        # the answer was going out (a peer that sent on after its last
        # request may see it cut: ferry closes with those bytes unread)
        s.settimeout(10)
        self.assertTrue(harness.Reader(s).read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 200"))
        self.assertTrue(f.alive(), f.stderr_tail())

    def admin_raw(self, f, head):
        """One raw request on a new connection; (status, body)."""
        s = self.admin_socket(f)
        s.sendall(head)
        reader = harness.Reader(s)
        resp = harness.read_response(reader)
        return resp.status, resp.body

    def test_host_check(self):
        """DNS rebinding: only a Host the admin endpoint answers for gets
        an answer; an IP literal, localhost or a name of admin.hosts does,
        other names get 421 and no page."""
        f = self.start(admin={"hosts": ["ferry.internal", "ops.example:8443"]})
        port = f.admin_port
        served = ["127.0.0.1:%d" % port, "127.0.0.1", "localhost", "localhost:%d" % port,
                  "LOCALHOST", "10.20.30.40:15000", "[::1]:%d" % port, "[::1]",
                  "ferry.internal", "Ferry.Internal:%d" % port, "ops.example:8443"]
        for host in served:
            with self.subTest(host=host):
                status, body = self.admin_raw(
                    f, b"GET /config HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                    % host.encode())
                self.assertEqual(status, 200, body[:200])
                self.assertIn(b'"listeners"', body)
        refused = ["evil.example", "evil.example:%d" % port, "127.0.0.1.evil.example",
                   "localhost.evil.example", "ops.example", "ops.example:%d" % port,
                   "ferry.internal.evil.example"]
        for host in refused:
            for path in (b"/config", b"/metrics", b"/services", b"/"):
                with self.subTest(host=host, path=path):
                    status, body = self.admin_raw(
                        f, b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
                        % (path, host.encode()))
                    self.assertEqual(status, 421, body[:200])
                    err = json.loads(body)["error"]
                    self.assertEqual(err["code"], "MISDIRECTED_REQUEST")
                    self.assertNotIn(b"\"listeners\"", body)
                    self.assertNotIn(b"ferry_", body)
        # the authority of an absolute-form target counts as well
        status, _ = self.admin_raw(f, b"GET http://evil.example/config HTTP/1.1\r\n"
                                   b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")
        self.assertEqual(status, 421)
        # two Host headers are malformed
        status, _ = self.admin_raw(f, b"GET /config HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                   b"Host: evil.example\r\n\r\n")
        self.assertEqual(status, 400)
        # no Host at all (HTTP/1.0): not a browser, served
        status, body = self.admin_raw(f, b"GET /config HTTP/1.0\r\n\r\n")
        self.assertEqual(status, 200, body[:200])
        # a refused request leaves a keep-alive connection usable
        s = self.admin_socket(f)
        reader = harness.Reader(s)
        s.sendall(b"GET /config HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        self.assertEqual(harness.read_response(reader).status, 421)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        self.assertEqual(harness.read_response(reader).status, 200)

    def test_out_of_descriptors_pauses_instead_of_spinning(self):
        """SPEC 11: with no descriptor left, accepting on the admin port (and
        on the outbound one, which shares listener.c) pauses briefly instead
        of spinning; each answers again once connections close."""
        f = self.start()
        pid = f.proc.pid
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)

        def cpu_ticks():
            with open("/proc/%d/stat" % pid) as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])     # utime + stime

        def answers(port):
            try:
                if port == f.admin_port:
                    return f.admin("/healthz", timeout=1).status == 200
                return f.get("/", host="svc", timeout=1).status == 200
            except (OSError, http.client.HTTPException):
                return False

        for name, port in (("admin", f.admin_port), ("outbound", f.outbound_port)):
            with self.subTest(listener=name):
                n_open = len(os.listdir("/proc/%d/fd" % pid))
                resource.prlimit(pid, resource.RLIMIT_NOFILE, (n_open + 4, hard))
                held = []
                try:
                    for _ in range(24):
                        held.append(socket.create_connection(("127.0.0.1", port), timeout=3))
                    time.sleep(0.3)     # ferry has taken what it can and hit EMFILE
                    hz = os.sysconf("SC_CLK_TCK")
                    t0, c0 = time.monotonic(), cpu_ticks()
                    time.sleep(2)
                    share = (cpu_ticks() - c0) / hz / (time.monotonic() - t0)
                    # pausing costs ~0%; spinning took 30-100% even on a loaded box
                    self.assertLess(share, 0.1, "ferry used %.0f%% of a core while out "
                                    "of descriptors" % (share * 100))
                    self.assertIn("Too many open files", f.stderr_text())
                    for s in held:
                        s.close()
                    held = []
                    # still at the low limit: closed connections free enough
                    self.assertTrue(harness.wait_until(lambda: answers(port), 5),
                                    "%s did not answer once connections closed" % name)
                finally:
                    for s in held:
                        s.close()
                    resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))

    def test_ready_once_up(self):
        f = self.start()
        self.assertTrue(harness.wait_until(lambda: f.admin("/ready").status == 200, 5),
                        "/ready never answered 200")

    def test_ready_503_while_draining_admin_still_answers(self):
        f = self.start(drain_delay="3s", drain_timeout="5s")
        self.assertTrue(harness.wait_until(lambda: f.admin("/ready").status == 200, 5))
        f.signal(signal.SIGTERM)
        time.sleep(0.3)
        self.assertEqual(f.admin("/ready").status, 503)
        self.assertEqual(f.admin("/healthz").status, 200)
        resp = f.get("/", host="svc")           # outbound keeps serving while draining
        self.assertEqual(resp.status, 200)
        self.assertTrue(resp.has_token("connection", "close"))
        f.proc.wait(8)
        self.assertEqual(f.proc.returncode, 0, f.stderr_tail())

    def test_unknown_admin_path_404(self):
        f = self.start()
        self.assertEqual(f.admin("/no-such-page").status, 404)

    def test_metrics_text_format(self):
        f = self.start()
        self.assertEqual(f.get("/", host="svc").status, 200)
        resp = f.admin("/metrics")
        self.assertEqual(resp.status, 200)
        self.assertTrue(resp.header("content-type", "").startswith("text/plain"))
        self.assertIn("version=0.0.4", resp.header("content-type", ""))
        text = resp.body.decode()
        self.assertRegex(text, r'(?m)^ferry_build_info\{version="\d+\.\d+\.\d+"\} 1$')
        self.assertRegex(text, r'(?m)^ferry_requests_total\{[^}]*service="svc"[^}]*\} 1$')

    def test_config_redacts_secrets(self):
        f = self.start()
        resp = f.admin("/config")
        self.assertEqual(resp.status, 200)
        self.assertNotIn(self.secret.encode(), resp.body)
        auth = json.loads(resp.body)["services"]
        auth = auth["svc"]["auth"] if isinstance(auth, dict) else \
            [s for s in auth if s.get("name") == "svc"][0]["auth"]
        self.assertEqual(auth.get("key_env"), "FERRY_TEST_KEY")
        self.assertEqual(auth.get("key"), "<redacted>")

    def test_services_json(self):
        f = self.start()
        self.assertEqual(f.get("/", host="svc").status, 200)
        resp = f.admin("/services")
        self.assertEqual(resp.status, 200)
        services = resp.json()["services"]
        svc = [s for s in services if s["name"] == "svc"][0]
        self.assertEqual(svc["circuit"], "closed")
        self.assertEqual([e["address"] for e in svc["endpoints"]], [self.up.address])


    # /history (SPEC §16)

    def history(self, f):
        resp = f.admin("/history")
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.header("content-type"), "application/json")
        doc = resp.json()
        self.assertEqual((doc["step_s"], doc["points"]), (5, 180))
        starts = doc["start_ms"]
        self.assertEqual(len(starts), 180)
        self.assertEqual([b - a for a, b in zip(starts, starts[1:])], [5000] * 179)
        self.assertEqual(starts[-1] % 5000, 0)
        self.assertTrue(starts[-1] <= doc["now_ms"] < starts[-1] + 5000, doc["now_ms"])
        self.assertLess(abs(doc["now_ms"] - time.time() * 1000), 60000, "now_ms is not wall clock")
        for s in doc["services"]:
            for key in ("requests", "errors", "p50_ms", "p99_ms"):
                self.assertEqual(len(s[key]), 180, (s["name"], key))
                self.assertTrue(all(isinstance(v, (int, float)) and v >= 0 for v in s[key]),
                                (s["name"], key, s[key]))
        return doc

    def series(self, doc, name):
        found = [s for s in doc["services"] if s["name"] == name]
        self.assertEqual(len(found), 1, "/history: %r" % [s["name"] for s in doc["services"]])
        self.assertEqual(found[0]["direction"], "outbound")
        return found[0]

    def test_history_counts_requests_errors_and_latency_per_service(self):
        bad = self.upstream(harness.fixed(503))
        slow = self.upstream(harness.delay(0.03))
        f = self.ferry({"svc": service(self.up), "bad": service(bad, retries={"max": 0}),
                        "slow": service(slow)})
        doc = self.history(f)
        self.assertEqual(sorted(s["name"] for s in doc["services"]), ["bad", "slow", "svc"])
        for name in ("svc", "bad", "slow"):
            s = self.series(doc, name)
            self.assertEqual(sum(s["requests"]) + sum(s["errors"]), 0, s)

        for _ in range(20):
            self.assertEqual(f.get("/", host="svc").status, 200)
        doc = self.history(f)
        svc, other = self.series(doc, "svc"), self.series(doc, "bad")
        self.assertEqual(sum(svc["requests"]), 20, svc["requests"][-3:])
        # the traffic of the last seconds is in the newest buckets; the
        # 15 minutes before ferry started are there as zeros
        self.assertEqual(sum(svc["requests"][-3:]), 20)
        self.assertEqual(svc["requests"][:-3], [0] * 177)
        self.assertEqual(sum(svc["errors"]), 0)
        self.assertEqual(sum(other["requests"]), 0, "svc's traffic counted for bad")
        busy = [i for i, n in enumerate(svc["requests"]) if n]
        for i in range(180):
            if i not in busy:
                self.assertEqual((svc["p50_ms"][i], svc["p99_ms"][i]), (0, 0))
        for i in busy:
            # (p99 of 20 is the slowest: the first, with its TLS handshake)
            self.assertTrue(0 < svc["p50_ms"][i] <= svc["p99_ms"][i], (svc["p50_ms"][i], svc["p99_ms"][i]))
            self.assertLess(svc["p50_ms"][i], 25)

        # upstream 5xx, and then ferry's own 503 once the circuit opens:
        # errors, all of them, of bad only
        for _ in range(8):
            self.assertEqual(f.get("/", host="bad").status, 503)
        for _ in range(4):
            self.assertEqual(f.get("/", host="slow").status, 200)
        doc = self.history(f)
        other, svc = self.series(doc, "bad"), self.series(doc, "svc")
        self.assertEqual((sum(other["requests"]), sum(other["errors"])), (8, 8))
        self.assertEqual(sum(other["errors"][-3:]), 8)
        self.assertEqual((sum(svc["requests"]), sum(svc["errors"])), (20, 0))
        slow_s = self.series(doc, "slow")
        self.assertEqual((sum(slow_s["requests"]), sum(slow_s["errors"])), (4, 0))
        for i, n in enumerate(slow_s["requests"]):
            if n:
                # 30 ms to the head: the 25-50 ms bucket of the histogram
                self.assertTrue(25 <= slow_s["p50_ms"][i] <= slow_s["p99_ms"][i] <= 250,
                                (slow_s["p50_ms"][i], slow_s["p99_ms"][i]))

    def test_history_keeps_services_across_reload(self):
        gone = self.upstream()
        f = self.start()
        f.config["services"]["gone"] = service(gone)
        self.reload(f)
        for _ in range(6):
            self.assertEqual(f.get("/", host="svc").status, 200)
        self.assertEqual(f.get("/", host="gone").status, 200)
        self.assertEqual(sum(self.series(self.history(f), "gone")["requests"]), 1)

        del f.config["services"]["gone"]
        f.config["services"]["fresh"] = service(gone)
        self.reload(f)
        doc = self.history(f)
        self.assertEqual(sorted(s["name"] for s in doc["services"]), ["fresh", "svc"])
        self.assertEqual(sum(self.series(doc, "svc")["requests"]), 6)
        self.assertEqual(sum(self.series(doc, "fresh")["requests"]), 0)
        self.assertEqual(f.get("/", host="fresh").status, 200)
        self.assertEqual(sum(self.series(self.history(f), "fresh")["requests"]), 1)

        # a service back under its old name starts a new history
        f.config["services"]["gone"] = service(gone)
        self.reload(f)
        self.assertEqual(sum(self.series(self.history(f), "gone")["requests"]), 0)

    def reload(self, f):
        """Rewrite f's config, SIGHUP, and wait until the reload counted."""
        def reloads():
            m = re.search(r'(?m)^ferry_config_reloads_total\{result="success"\} (\d+)',
                          f.admin("/metrics").body.decode())
            return int(m.group(1)) if m else 0

        before = reloads()
        path = f.config_path + ".new"
        with open(path, "w") as out:
            out.write(harness.to_yaml(f.config) + "\n")
        os.replace(path, f.config_path)
        f.signal(signal.SIGHUP)
        self.assertTrue(harness.wait_until(lambda: reloads() > before, 5),
                        "reload not counted\n" + f.stderr_tail())


if __name__ == "__main__":
    harness.main()
