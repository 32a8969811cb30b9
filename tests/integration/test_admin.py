"""Admin endpoint basics (SPEC §8, §10 /ready while draining)."""

import json
import secrets
import signal
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
