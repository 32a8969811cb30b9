"""Command line and `-t` config checking (SPEC §2, §3)."""

import os
import shutil
import re
import secrets
import subprocess
import tempfile
import unittest

import harness
from harness import pki

POS_RE = r"^%s:(\d+):(\d+): \S.*$"


def run_ferry(*args, env=None, timeout=10):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_TEST_")}
    full_env.update(env or {})
    return subprocess.run([harness.ferry_bin(), *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, stdin=subprocess.DEVNULL)


class CliTest(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="ferry-cli-")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def write(self, text, name="ferry.yaml"):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def valid_config(self, auth='key_env: FERRY_TEST_SECRET', extra=""):
        p = pki()
        return ("listeners:\n"
                "  outbound:\n"
                "    address: 127.0.0.1:%d\n"
                "  admin:\n"
                "    address: 127.0.0.1:%d\n"
                "services:\n"
                "  user-service:\n"
                "    endpoints: [\"127.0.0.1:5000\"]\n"
                "    tls:\n"
                "      ca: %s\n"
                "      cert: %s\n"
                "      key: %s\n"
                "      server_name: user-service\n"
                "    auth:\n"
                "      %s\n" % (harness.free_port(), harness.free_port(), p.ca.cert,
                                p.client.cert, p.client.key, auth)) + extra

    def assert_one_line(self, text):
        self.assertTrue(text.endswith("\n"), repr(text))
        self.assertEqual(len(text.splitlines()), 1, repr(text))

    def error_lines(self, proc, path):
        """stderr lines, each checked to be FILE:LINE:COL: message."""
        lines = proc.stderr.splitlines()
        for line in lines:
            self.assertRegex(line, POS_RE % re.escape(path))
        return [tuple(int(x) for x in re.match(POS_RE % re.escape(path), line).groups()) + (line,)
                for line in lines]

    # -V, -h, bad options

    def test_version(self):
        for flag in ("-V", "--version"):
            proc = run_ferry(flag)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            self.assertRegex(proc.stdout, r"^ferry \d+\.\d+\.\d+\n$")
            self.assertEqual(proc.stderr, "")

    def test_help(self):
        for flag in ("-h", "--help"):
            proc = run_ferry(flag)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            self.assertIn("usage", proc.stdout.lower())
            for opt in ("-c", "-t", "-l", "-V", "-h"):
                self.assertIn(opt, proc.stdout)
            self.assertEqual(proc.stderr, "")

    def test_unknown_option_exits_2_with_one_line(self):
        for flag in ("-x", "--bogus"):
            proc = run_ferry(flag)
            self.assertEqual(proc.returncode, 2, proc.stderr)
            self.assert_one_line(proc.stderr)
            self.assertIn(flag.lstrip("-"), proc.stderr)
            self.assertEqual(proc.stdout, "")

    def test_missing_config_file_exits_2_with_one_line(self):
        path = os.path.join(self.dir, "nope", "ferry.yaml")
        for args in (("-c", path, "-t"), ("-c", path)):
            proc = run_ferry(*args)
            self.assertEqual(proc.returncode, 2, proc.stderr)
            self.assert_one_line(proc.stderr)
            self.assertIn(path, proc.stderr)
            self.assertEqual(proc.stdout, "")

    def test_bad_log_level_exits_2(self):
        path = self.write(self.valid_config())
        proc = run_ferry("-l", "bogus", "-c", path, "-t", env={"FERRY_TEST_SECRET": "k"})
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assert_one_line(proc.stderr)
        self.assertIn("bogus", proc.stderr)

    def test_option_missing_argument_exits_2(self):
        proc = run_ferry("-c")
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assert_one_line(proc.stderr)

    # -t

    def test_check_valid_config_prints_ok(self):
        path = self.write(self.valid_config())
        proc = run_ferry("-t", "-c", path, env={"FERRY_TEST_SECRET": "k"})
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout, "%s: ok\n" % path)

    def test_check_long_option(self):
        path = self.write(self.valid_config())
        proc = run_ferry("--check", "--config", path, env={"FERRY_TEST_SECRET": "k"})
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout, "%s: ok\n" % path)

    def test_check_reports_every_error_with_position(self):
        path = self.write("listeners:\n"                        # 1
                          "  outbound:\n"                       # 2
                          "    address: 127.0.0.1:15001\n"      # 3
                          "services:\n"                         # 4
                          "  user-service:\n"                   # 5
                          "    endpoints: [\"127.0.0.1:5000\"]\n"  # 6
                          "    timeoutz: { request: 2s }\n"     # 7: unknown key
                          "    timeouts:\n"                     # 8
                          "      connect: soon\n")              # 9: not a duration
        proc = run_ferry("-t", "-c", path)
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertNotIn("ok", proc.stdout)
        errors = self.error_lines(proc, path)
        self.assertEqual(len(errors), 2, proc.stderr)
        self.assertEqual(sorted(e[0] for e in errors), [7, 9], proc.stderr)
        by_line = {e[0]: e for e in errors}
        self.assertIn(by_line[7][1], range(5, 16), "column of the unknown key or its value")
        self.assertIn(by_line[9][1], range(7, 21), "column of `connect` or its value")
        self.assertIn("timeoutz", by_line[7][2])

    def test_check_unset_variable_is_an_error(self):
        path = self.write("listeners:\n"
                          "  outbound:\n"
                          "    address: 127.0.0.1:${FERRY_TEST_UNSET_PORT}\n"
                          "services:\n"
                          "  a:\n"
                          "    endpoints: [\"127.0.0.1:5000\"]\n")
        proc = run_ferry("-t", "-c", path)
        self.assertEqual(proc.returncode, 1, proc.stderr)
        errors = self.error_lines(proc, path)
        self.assertEqual([e[0] for e in errors], [3], proc.stderr)
        self.assertIn("FERRY_TEST_UNSET_PORT", errors[0][2])

    def test_check_variable_default_and_expansion(self):
        port = harness.free_port()
        path = self.write("listeners:\n"
                          "  outbound:\n"
                          "    address: ${FERRY_TEST_UNSET_HOST:-127.0.0.1}:${FERRY_TEST_PORT}\n"
                          "services:\n"
                          "  a:\n"
                          "    endpoints: [\"127.0.0.1:5000\"]\n")
        proc = run_ferry("-t", "-c", path, env={"FERRY_TEST_PORT": str(port)})
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout, "%s: ok\n" % path)

    def test_secret_from_key_env_never_printed(self):
        secret = "s3cret-" + secrets.token_hex(12)
        env = {"FERRY_TEST_SECRET": secret}
        ok = self.write(self.valid_config(), "ok.yaml")
        broken = self.write(self.valid_config(extra="bogus_top_level_key: 1\n"), "broken.yaml")
        both_auth = self.write(self.valid_config(
            auth="key_env: FERRY_TEST_SECRET\n      key_file: /nonexistent/key"), "both.yaml")
        for path, rc in ((ok, 0), (broken, 1), (both_auth, 1)):
            for args in (("-t", "-c", path), ("-l", "debug", "-t", "-c", path)):
                with self.subTest(path=os.path.basename(path), args=args[0]):
                    proc = run_ferry(*args, env=env)
                    self.assertEqual(proc.returncode, rc, proc.stderr)
                    self.assertNotIn(secret, proc.stdout + proc.stderr)
        proc = run_ferry("-t", "-c", broken, env=env)
        self.assertIn("bogus_top_level_key", proc.stderr)

    def test_secret_from_key_file_never_printed(self):
        secret = "filesecret-" + secrets.token_hex(12)
        key_file = self.write(secret + "\n", "service.key")
        path = self.write(self.valid_config(auth="key_file: " + key_file,
                                            extra="bogus_top_level_key: 1\n"))
        proc = run_ferry("-l", "debug", "-t", "-c", path)
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertNotIn(secret, proc.stdout + proc.stderr)

    def test_unset_key_env_is_an_error(self):
        path = self.write(self.valid_config())
        proc = run_ferry("-t", "-c", path)        # FERRY_TEST_SECRET not set
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertTrue(proc.stderr.strip())
        self.assertIn("FERRY_TEST_SECRET", proc.stderr)

    def test_check_loads_certificates(self):
        p = pki()
        cfg = self.valid_config().replace(p.client.key, p.server.key)   # key of another cert
        path = self.write(cfg)
        proc = run_ferry("-t", "-c", path, env={"FERRY_TEST_SECRET": "k"})
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertTrue(proc.stderr.strip())
        self.assertTrue(all(line.startswith(path + ":") for line in proc.stderr.splitlines()),
                        proc.stderr)
        missing = self.write(self.valid_config().replace(p.ca.cert, "/nonexistent/ca.pem"))
        proc = run_ferry("-t", "-c", missing, env={"FERRY_TEST_SECRET": "k"})
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertIn("/nonexistent/ca.pem", proc.stderr)

    def inbound_config(self, keys_file, more_inbound="", services="services: {}\n"):
        """A config with an inbound listener taking KEYS_FILE's keys (line
        7), MORE_INBOUND's lines after it, then SERVICES."""
        p = pki()
        return self.write("listeners:\n"
                          "  outbound:\n"
                          "    address: 127.0.0.1:%d\n"
                          "  inbound:\n"
                          "    address: 127.0.0.1:%d\n"
                          "    tls: {cert: %s, key: %s, client_ca: %s}\n"
                          "    auth: {keys_file: %s}\n"
                          "%s"
                          "    local_app: 127.0.0.1:8080\n"
                          "%s"
                          % (harness.free_port(), harness.free_port(), p.server.cert,
                             p.server.key, p.ca.cert, keys_file, more_inbound, services))

    def test_check_fifo_as_secret_or_certificate_file(self):
        """A FIFO opened for reading blocks until a writer comes: -t, the
        start and a reload (on the main thread: admin, signals) hung.
        Only a regular file is a key or certificate file."""
        fifo = os.path.join(self.dir, "fifo")
        os.mkfifo(fifo)
        p = pki()
        for what, cfg in (("key_file", self.valid_config(auth="key_file: " + fifo)),
                          ("keys_file", None),
                          ("ca", self.valid_config().replace(p.ca.cert, fifo))):
            with self.subTest(what=what):
                path = self.inbound_config(fifo) if cfg is None else self.write(cfg)
                proc = run_ferry("-t", "-c", path, env={"FERRY_TEST_SECRET": "k"}, timeout=10)
                self.assertEqual(proc.returncode, 1, proc.stderr)
                self.assertIn(fifo, proc.stderr)
                self.error_lines(proc, path)

    def test_check_nul_in_keys_file(self):
        """A NUL byte in a keys file is an error: read as a C string, the
        key was cut at it (its prefix accepted) and the keys after it were
        dropped, without a word."""
        keys = os.path.join(self.dir, "inbound.keys")
        with open(keys, "wb") as f:
            f.write(b"abc\x00-rest-of-a-binary-key\nsecond-valid-key-0123456789\n")
        path = self.inbound_config(keys)
        proc = run_ferry("-t", "-c", path)
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertIn("line 1", proc.stderr)
        self.error_lines(proc, path)

    def test_check_alias_bomb_is_refused(self):
        """Aliases multiply what the loader walks (each use is the anchored
        node again): 1500 uses of an anchor of 1500 keys took 3.5 s and
        218 MB, and a larger file would exhaust memory. Refused at the
        alias that goes over the bound, with its position."""
        keys = "".join("    k%d: 1\n" % i for i in range(1500))
        uses = "".join("  s%d: *a\n" % i for i in range(1, 1500))
        path = self.write("bomb:\n  s0: &a\n" + keys + uses)
        proc = run_ferry("-t", "-c", path, timeout=10)
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertIn("aliases expand to too many nodes", proc.stderr)
        self.error_lines(proc, path)

    def test_check_duplicate_service(self):
        path = self.write("listeners:\n"
                          "  outbound:\n"
                          "    address: 127.0.0.1:15001\n"
                          "services:\n"
                          "  a:\n"
                          "    endpoints: [\"127.0.0.1:5000\"]\n"
                          "  a:\n"                              # 7
                          "    endpoints: [\"127.0.0.1:5001\"]\n")
        proc = run_ferry("-t", "-c", path)
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertIn(7, [e[0] for e in self.error_lines(proc, path)])

    def test_check_duplicate_key_reported_not_crashing(self):
        """A key twice is reported and nothing more is loaded: a duplicate
        inbound auth used to crash `ferry -t` (NULL node)."""
        keys = self.write("k1\n", "inbound.keys")
        path = self.inbound_config(keys,
                                   "    auth: {keys_env: [FERRY_TEST_SECRET]}\n",   # 8
                                   "services:\n"
                                   "  a:\n"
                                   "    endpoints: [\"127.0.0.1:5000\"]\n"
                                   "    timeouts: {request: 1s}\n"
                                   "    timeouts: {per_try: 5s}\n")                  # 14
        proc = run_ferry("-t", "-c", path, env={"FERRY_TEST_SECRET": "k"})
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertEqual(proc.stdout, "")
        self.assertEqual(proc.stderr,
                         "%s:8:5: listeners.inbound: duplicate key \"auth\"\n"
                         "%s:14:5: services.a: duplicate key \"timeouts\"\n" % (path, path))

    def test_check_empty_allowed_peers_is_an_error(self):
        """Only an absent allowed_peers admits any identity."""
        p = pki()
        base = ("listeners:\n"
                "  outbound:\n"
                "    address: 127.0.0.1:%d\n"
                "  inbound:\n"
                "    address: 127.0.0.1:%d\n"
                "    tls:\n"
                "      cert: %s\n"
                "      key: %s\n"
                "      client_ca: %s\n"
                "%s"
                "    local_app: 127.0.0.1:8080\n"
                % (harness.free_port(), harness.free_port(), p.server.cert, p.server.key,
                   p.ca.cert, "%s"))
        for value, col in (("[]", 22), ("~", 22), ("", 21), ("null", 22)):
            with self.subTest(value=value):
                path = self.write(base % ("      allowed_peers: %s\n" % value).replace(": \n", ":\n"))
                proc = run_ferry("-t", "-c", path)
                self.assertEqual(proc.returncode, 1, proc.stderr)
                self.assertEqual([e[:2] for e in self.error_lines(proc, path)], [(10, col)],
                                 proc.stderr)
                self.assertIn("allowed_peers", proc.stderr)
        path = self.write(base % "")
        proc = run_ferry("-t", "-c", path)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        path = self.write(base % "      allowed_peers: [spiffe://t/a]\n")
        proc = run_ferry("-t", "-c", path)
        self.assertEqual(proc.returncode, 0, proc.stderr)

    def test_check_listeners_must_be_loopback(self):
        base = ("listeners:\n"
                "  outbound:\n"
                "    address: 0.0.0.0:15001\n"                 # 3
                "%s"
                "services:\n"
                "  a:\n"
                "    endpoints: [\"127.0.0.1:5000\"]\n")
        path = self.write(base % "")
        proc = run_ferry("-t", "-c", path)
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.assertEqual([e[0] for e in self.error_lines(proc, path)], [3], proc.stderr)
        path = self.write(base % "    allow_remote: true\n", "remote.yaml")
        proc = run_ferry("-t", "-c", path)
        self.assertEqual(proc.returncode, 0, proc.stderr)

    def test_check_auth_without_tls_only_to_loopback(self):
        base = ("listeners:\n"
                "  outbound:\n"
                "    address: 127.0.0.1:15001\n"
                "services:\n"
                "  a:\n"                                       # 5
                "    endpoints: [\"%s\"]\n"
                "    auth:\n"
                "      key_env: FERRY_TEST_SECRET\n")
        env = {"FERRY_TEST_SECRET": "k"}
        proc = run_ferry("-t", "-c", self.write(base % "127.0.0.1:5000"), env=env)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        path = self.write(base % "10.1.2.3:5000", "remote.yaml")
        proc = run_ferry("-t", "-c", path, env=env)
        self.assertEqual(proc.returncode, 1, proc.stderr)
        self.error_lines(proc, path)


if __name__ == "__main__":
    harness.main()
