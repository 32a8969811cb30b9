"""Admin endpoint basics (SPEC §8, §10 /ready while draining)."""

import json
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
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        slow.settimeout(3)
        self.assertTrue(slow.recv(200).startswith(b"HTTP/1.1 408"))
        # two held connections: the third waits in the backlog, unanswered
        a, b = self.admin_socket(f), self.admin_socket(f)
        time.sleep(0.2)
        c = self.admin_socket(f)
        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        c.settimeout(0.5)
        with self.assertRaises(socket.timeout):
            c.recv(100)
        a.close()
        c.settimeout(3)
        self.assertTrue(c.recv(200).startswith(b"HTTP/1.1 200"))

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


if __name__ == "__main__":
    harness.main()
