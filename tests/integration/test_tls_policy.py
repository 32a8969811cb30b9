"""The inbound listener's TLS policy seen by testssl.sh: TLS 1.2 and 1.3
only, ECDHE with AEAD suites, nothing reported VULNERABLE (LUCKY13 among
them) and nothing of severity MEDIUM or above. Slow (minutes of
handshakes): suite 'heavy', normal build only. Skipped when testssl is not
installed (tools/install-deps installs it)."""

import json
import os
import shutil
import subprocess
import tempfile

import harness
from harness import FerryTestCase, free_port, pki

TESTSSL = shutil.which("testssl") or shutil.which("testssl.sh")
# testssl's own findings about itself or the scan, not about the server
NOT_FINDINGS = ("scanProblem", "engine_problem", "optimal_proto", "pre_128cipher",
                "scanTime", "service", "clientAuth")


class TestsslTest(FerryTestCase):

    def test_inbound_listener_passes_testssl(self):
        if TESTSSL is None:
            self.skipTest("testssl.sh is not installed (Debian package testssl.sh)")
        p = pki()
        app = self.upstream(tls=False)
        port = free_port()
        self.ferry({}, env={"TK": "tls-policy-key-0123456789"}, listeners={"inbound": {
            "address": "127.0.0.1:%d" % port,
            "tls": {"cert": p.server.cert, "key": p.server.key, "client_ca": p.ca.cert},
            "auth": {"keys_env": ["TK"]},
            "local_app": app.address,
        }})
        out = tempfile.mkdtemp(prefix="ferry-testssl-")
        self.addCleanup(shutil.rmtree, out, True)
        report = os.path.join(out, "report.json")
        # -p protocols, -s cipher categories, -U vulnerabilities (LUCKY13,
        # SWEET32, BEAST, POODLE, ROBOT, renegotiation, CRIME, ...);
        # client auth is required, and testssl still negotiates ciphers
        cmd = [TESTSSL, "--quiet", "--color", "0", "--warnings", "off", "-p", "-s", "-U",
               "--openssl", shutil.which("openssl") or "/usr/bin/openssl",
               "--connect-timeout", "5", "--openssl-timeout", "5",
               "--jsonfile", report, "127.0.0.1:%d" % port]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=840)
        self.assertTrue(os.path.exists(report), "testssl wrote no report (exit %d):\n%s%s"
                        % (proc.returncode, proc.stdout[-3000:], proc.stderr[-2000:]))
        with open(report) as fh:
            findings = json.load(fh)
        ids = {f.get("id"): f for f in findings}
        for f in findings:
            if f.get("severity") not in ("OK", "INFO"):
                print("testssl: %s %s: %s" % (f.get("id"), f.get("severity"), f.get("finding")))
        bad = ["%s %s: %s" % (f.get("id"), f.get("severity"), f.get("finding"))
               for f in findings
               if f.get("id") not in NOT_FINDINGS and (
                   "VULNERABLE" in str(f.get("finding", "")).upper().replace(
                       "NOT VULNERABLE", "")
                   or f.get("severity") in ("MEDIUM", "HIGH", "CRITICAL"))]
        self.assertEqual(bad, [], "testssl findings:\n" + "\n".join(bad))
        # it did test what this is about
        for must in ("LUCKY13", "TLS1_2", "TLS1_3", "TLS1", "SSLv3"):
            self.assertIn(must, ids, "testssl did not report %s:\n%s" % (must, proc.stdout[-3000:]))
        self.assertIn("not offered", ids["TLS1"]["finding"])
        self.assertIn("offered", ids["TLS1_3"]["finding"])
        self.assertIn("not vulnerable", ids["LUCKY13"]["finding"].lower())


if __name__ == "__main__":
    harness.main()
