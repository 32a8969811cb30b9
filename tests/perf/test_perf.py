#!/usr/bin/env python3
"""Instructions per proxied request, counted by callgrind: a performance
regression guard that does not depend on timing (tests/perf/README.md).

ferry (workers: 1) runs under `valgrind --tool=callgrind` in front of real
TLS upstreams on loopback; h2load sends each scenario's requests one at a
time on one keep-alive connection. Per scenario, after a warm-up, the
counters are zeroed, N1 requests are sent and the counts dumped, then N2
requests and dumped again: Ir/request = (Ir(N2) - Ir(N1)) / (N2 - N1), so
what a batch costs once (the client's connection, the dump) cancels out.
Every thread of ferry is counted (callgrind sums them).

The result is compared with tests/perf/budget.json: more than 10 % over a
scenario's budget fails; more than 10 % under it is reported (lower the
budget) but passes. `--update` rewrites the budget with what was measured.
Exit 77 (meson: skipped) when valgrind or h2load is missing, or when the
build is not the one the budget is for (debugoptimized, no sanitizers, no
profile: tools/build makes profile-guided builds).
"""

import argparse
import json
import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import harness  # noqa: E402
from harness import LOOPBACK  # noqa: E402

BUDGET = os.path.join(HERE, "budget.json")
TOLERANCE = 0.10
N1, N2 = 200, 1200
WARMUP = 20
BODY_64 = b"x" * 64
POST_SIZE = 16 * 1024
SKIP = 77

# name -> (service, path, request body size, h2load flags, protocol h2load must report)
SCENARIOS = {
    "h1_get_64": ("h1svc", "/small", 0, ["--h1"], "http/1.1"),
    "h1_post_16k": ("h1svc", "/upload", POST_SIZE, ["--h1"], "http/1.1"),
    "h2c_get_64_h2_upstream": ("h2svc", "/small", 0, [], "h2c"),
}


class H2TLSUpstream:
    """An HTTP/2 server over TLS (ALPN h2, client certificate required) on
    loopback: every request gets 200 with a 64-byte body, head and body in
    one write, so that what ferry reads does not depend on timing."""

    def __init__(self):
        harness.need_python_h2()
        import h2.config
        import h2.connection
        import h2.events
        self.h2 = (h2.config, h2.connection, h2.events)
        p = harness.pki()
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(p.server.cert, p.server.key)
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx.load_verify_locations(p.ca.cert)
        self.ctx.set_alpn_protocols(["h2"])
        self.requests = 0
        self.errors = []
        self.stopping = threading.Event()
        self.socks = []
        self.sock = harness.bound_socket(reuseaddr=True)
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.address = "%s:%d" % (LOOPBACK, self.sock.getsockname()[1])
        self.tls = True
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def stop(self):
        self.stopping.set()
        self.sock.close()
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def accept_loop(self):
        while not self.stopping.is_set():
            try:
                s, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.socks.append(s)
            threading.Thread(target=self.serve, args=(s,), daemon=True).start()

    def serve(self, s):
        config, connection, events = self.h2
        try:
            s.settimeout(harness.IO_TIMEOUT * 20)    # ferry is slow under callgrind
            s = self.ctx.wrap_socket(s, server_side=True)
            self.socks.append(s)
            s.settimeout(None)
            conn = connection.H2Connection(config=config.H2Configuration(client_side=False))
            conn.initiate_connection()
            s.sendall(conn.data_to_send())
            while not self.stopping.is_set():
                data = s.recv(65536)
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, events.DataReceived):
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, events.StreamEnded):
                        self.requests += 1
                        conn.send_headers(ev.stream_id, [(":status", "200"),
                                                         ("content-type", "text/plain"),
                                                         ("content-length", str(len(BODY_64)))])
                        conn.send_data(ev.stream_id, BODY_64, end_stream=True)
                out = conn.data_to_send()
                if out:
                    s.sendall(out)
        except Exception as e:      # reported by the test, not fatal to the thread
            if not self.stopping.is_set():
                self.errors.append(repr(e))
        finally:
            s.close()


class Callgrind:
    """ferry under callgrind: a wrapper script as FERRY_BIN, and the
    counters read by zeroing and dumping through callgrind_control."""

    def __init__(self, directory, real_bin):
        self.dir = directory
        self.out = os.path.join(directory, "callgrind.out")
        self.prefix = os.path.join(directory, "vgdb")
        self.wrapper = os.path.join(directory, "ferry-callgrind")
        with open(self.wrapper, "w") as f:
            f.write("#!/bin/sh\nexec valgrind --tool=callgrind --vgdb=yes --vgdb-prefix=%s "
                    "--callgrind-out-file=%s --compress-strings=no --compress-pos=no %s \"$@\"\n"
                    % (self.prefix, self.out, real_bin))
        os.chmod(self.wrapper, 0o755)
        self.pid = None

    def control(self, *args):
        r = subprocess.run(["callgrind_control", "--vgdb-prefix=" + self.prefix, *args,
                            str(self.pid)], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise AssertionError("callgrind_control %s: %s%s" % (" ".join(args), r.stdout, r.stderr))
        return r.stdout

    def zero(self):
        self.control("--zero")

    def dump(self):
        """Ir counted since the last zero or dump (which zeroes too)."""
        before = set(os.listdir(self.dir))
        self.control("--dump")
        new = [n for n in os.listdir(self.dir) if n not in before and n.startswith("callgrind.out")]
        if len(new) != 1:
            raise AssertionError("callgrind dump: expected one new file, got %r" % new)
        with open(os.path.join(self.dir, new[0])) as f:
            for line in f:
                if line.startswith("summary:") or line.startswith("totals:"):
                    return int(line.split()[1])
        raise AssertionError("callgrind dump %s has no summary line" % new[0])


def h2load(port, scenario, n, body_file):
    """n requests of a scenario, one at a time on one connection; all must
    get a 2xx over the expected protocol."""
    service, path, size, flags, proto = SCENARIOS[scenario]
    args = ["h2load", "-n", str(n), "-c", "1", "-m", "1", *flags,
            "-H", ":authority: " + service]
    if size:
        args += ["-d", body_file]
    args.append("http://%s:%d%s" % (LOOPBACK, port, path))
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    done = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", r.stdout)
    codes = re.search(r"status codes: (\d+) 2xx", r.stdout)
    if (r.returncode != 0 or "Application protocol: %s\n" % proto not in r.stdout
            or not done or int(done.group(3)) != n or not codes or int(codes.group(1)) != n):
        raise AssertionError("h2load %s: not %d requests answered 2xx over %s:\n%s%s"
                             % (scenario, n, proto, r.stdout, r.stderr))


def measure(scenarios, keep=None):
    """{scenario: Ir per request} from one ferry under callgrind; with keep,
    the dumps stay in that directory."""
    work = tempfile.mkdtemp(prefix="ferry-perf-", dir=keep)
    real_bin = harness.ferry_bin()
    cg = Callgrind(work, real_bin)
    body_file = os.path.join(work, "body")
    with open(body_file, "wb") as f:
        f.write(harness.payload(POST_SIZE))
    h1 = harness.Upstream(harness.fixed(200, [("Content-Type", "text/plain")], BODY_64),
                          idle_close_after=600).start()
    h2 = H2TLSUpstream()
    services = {
        "h1svc": harness.service(h1, protocol="http1"),
        "h2svc": harness.service(h2, protocol="h2"),
    }
    # one worker: a request's whole cost lands in one event loop; long
    # timeouts: ferry runs some 50 times slower than usual
    config = harness.ferry_config(services, workers=1, drain_timeout="1s",
                                  defaults={"pool": {"idle_timeout": "300s"},
                                            "timeouts": {"connect": "30s", "request": "60s"}})
    os.environ["FERRY_BIN"] = cg.wrapper
    # meson test sets MALLOC_PERTURB_: glibc then fills every block malloc
    # hands out or takes back, which would be counted (it doubles some
    # scenarios); the budget is for plain malloc
    ferry = harness.Ferry(config, env={k: None for k in ("MALLOC_PERTURB_", "MALLOC_CHECK_",
                                                          "GLIBC_TUNABLES")})
    results = {}
    problems = []
    sent = {"h1svc": 0, "h2svc": 0}
    try:
        ferry.start(timeout=180)
        cg.pid = ferry.proc.pid
        for name in scenarios:
            h2load(ferry.outbound_port, name, WARMUP, body_file)
            cg.zero()
            h2load(ferry.outbound_port, name, N1, body_file)
            ir1 = cg.dump()
            h2load(ferry.outbound_port, name, N2, body_file)
            ir2 = cg.dump()
            sent[SCENARIOS[name][0]] += WARMUP + N1 + N2
            results[name] = (ir2 - ir1) / (N2 - N1)
            print("  %-24s Ir(%d) = %d, Ir(%d) = %d: %.0f Ir/request"
                  % (name, N1, ir1, N2, ir2, results[name]), flush=True)
        # what crossed the wire: every request reached its upstream once
        if len(h1.requests) != sent["h1svc"] or h2.requests != sent["h2svc"]:
            problems.append("upstreams got %d (HTTP/1.1) and %d (HTTP/2) requests, expected %d and %d"
                            % (len(h1.requests), h2.requests, sent["h1svc"], sent["h2svc"]))
        big = [r for r in h1.requests if r.target == "/upload" and len(r.body) != POST_SIZE]
        if big:
            problems.append("%d uploads reached the upstream without their %d bytes"
                            % (len(big), POST_SIZE))
    finally:
        os.environ["FERRY_BIN"] = real_bin
        problems += ferry.stop(timeout=120)
        h1.stop()
        h2.stop()
        problems += h1.errors + h2.errors
        if problems:
            problems.append("ferry stderr:\n" + ferry.stderr_tail())
        ferry.cleanup()
        if keep:
            print("  callgrind dumps (two per scenario, in its order): %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if problems:
        raise AssertionError("\n".join(problems))
    return results


# ---------------------------------------------------------------------------
# the build measured, and the budget


def build_facts(binary):
    """What the counts depend on besides ferry's code, from the meson build
    directory of the binary: build type, sanitizers, compiler, libraries."""
    info = os.path.join(os.path.dirname(os.path.abspath(binary)), "meson-info")
    facts = {}
    try:
        with open(os.path.join(info, "intro-buildoptions.json")) as f:
            opts = {o["name"]: o["value"] for o in json.load(f)}
        facts["buildtype"] = opts.get("buildtype")
        facts["b_sanitize"] = opts.get("b_sanitize")
        facts["b_pgo"] = opts.get("b_pgo")
        with open(os.path.join(info, "intro-dependencies.json")) as f:
            for dep in json.load(f):
                if dep["name"] in ("openssl", "libevent_core", "libnghttp2"):
                    facts[dep["name"]] = dep.get("version")
        with open(os.path.join(os.path.dirname(info), "meson-logs", "meson-log.txt")) as f:
            m = re.search(r"^C compiler for the host machine: \S+ \((\S+ [\d.]+)", f.read(), re.M)
            if m:
                facts["compiler"] = m.group(1)
    except (OSError, ValueError, KeyError):
        pass
    r = subprocess.run(["valgrind", "--version"], capture_output=True, text=True)
    facts["valgrind"] = r.stdout.strip()
    try:
        with open("/proc/cpuinfo") as f:
            flags = re.search(r"^flags\s*:(.*)$", f.read(), re.M).group(1).split()
        # what changes OpenSSL's and glibc's code paths under valgrind
        facts["cpu"] = " ".join(x for x in ("aes", "pclmulqdq", "avx", "avx2", "bmi2") if x in flags)
    except (OSError, AttributeError):
        pass
    return facts


def load_budget():
    try:
        with open(BUDGET) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def write_budget(measured, facts):
    budget = load_budget()
    scenarios = dict(budget.get("scenarios", {}))
    scenarios.update({s: round(v) for s, v in measured.items()})
    # the code measured: the last commit that changed ferry's sources
    code = ["--", "src", "meson.build", "meson_options.txt"]
    r = subprocess.run(["git", "-C", harness.REPO, "log", "-1", "--format=%h %cs", *code],
                       capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", harness.REPO, "status", "--porcelain", *code],
                           capture_output=True, text=True).stdout.strip()
    out = {
        "about": "Ir (instructions executed, all threads of ferry) per proxied request, "
                 "counted by callgrind; tests/perf/README.md. A scenario more than "
                 "tolerance over its budget fails. Rewrite: tests/perf/test_perf.py --update",
        "tolerance": TOLERANCE,
        "measured_on": (r.stdout.strip() or "unknown commit") + (" + uncommitted changes" if dirty else ""),
        "measured_with": facts,
        "scenarios": scenarios,
    }
    with open(BUDGET + ".tmp", "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    os.replace(BUDGET + ".tmp", BUDGET)
    print("wrote %s" % BUDGET)


def judge(measured, facts):
    """0 when every scenario is within budget; prints the table."""
    budget = load_budget()
    limits = budget.get("scenarios", {})
    tolerance = budget.get("tolerance", TOLERANCE)
    failed = []
    print("%-24s %10s %10s %8s" % ("scenario", "budget", "measured", "ratio"))
    for s, value in measured.items():
        if s not in limits:
            print("%-24s %10s %10.0f" % (s, "none", value))
            failed.append("%s has no budget (tests/perf/test_perf.py --update)" % s)
            continue
        ratio = value / limits[s]
        print("%-24s %10d %10.0f %8.3f" % (s, limits[s], value, ratio))
        if ratio > 1 + tolerance:
            failed.append("%s: %.0f Ir/request, over its budget %d by %.1f %% (limit +%.0f %%)"
                          % (s, value, limits[s], 100 * (ratio - 1), 100 * tolerance))
        elif ratio < 1 - tolerance:
            print("NOTE: %s costs %.1f %% less than its budget: lower the budget "
                  "(tests/perf/test_perf.py --update) so that it guards this level"
                  % (s, 100 * (1 - ratio)))
    if failed:
        differs = {k: (v, facts.get(k)) for k, v in budget.get("measured_with", {}).items()
                   if facts.get(k) != v}
        for k, (then, now) in differs.items():
            print("NOTE: the budget was measured with %s %r, this run has %r" % (k, then, now))
        print("FAIL:\n  " + "\n  ".join(failed))
        return 1
    print("OK: every scenario within +%.0f %% of its budget" % (100 * tolerance))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--update", action="store_true",
                    help="rewrite budget.json with the counts measured (the median of --runs)")
    ap.add_argument("--runs", type=int, help="measure this many times (default 1, with --update 3)")
    ap.add_argument("--only", default=",".join(SCENARIOS),
                    help="scenarios, comma-separated (default all: %(default)s)")
    ap.add_argument("--keep", metavar="DIR",
                    help="keep the callgrind dumps under DIR (for callgrind_annotate)")
    args = ap.parse_args()
    runs_wanted = args.runs or (3 if args.update else 1)
    scenarios = args.only.split(",")
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        ap.error("unknown scenario %s" % ", ".join(unknown))
    for tool in ("valgrind", "callgrind_control", "h2load"):
        if not shutil.which(tool):
            print("SKIP: %s not found (tools/install-deps installs valgrind and nghttp2-client)" % tool)
            return SKIP
    facts = build_facts(harness.ferry_bin())
    if (facts.get("buildtype") != "debugoptimized" or facts.get("b_sanitize") != "none"
            or facts.get("b_pgo") not in ("off", None)):
        print("SKIP: the budget is for a debugoptimized build without sanitizers or profile (as "
              "tools/test builds build-test); %s is buildtype %s, b_sanitize %s, b_pgo %s"
              % (harness.ferry_bin(), facts.get("buildtype"), facts.get("b_sanitize"),
                 facts.get("b_pgo")))
        return SKIP
    runs = []
    for i in range(runs_wanted):
        print("run %d/%d: ferry under callgrind, N1=%d N2=%d" % (i + 1, runs_wanted, N1, N2), flush=True)
        t0 = time.monotonic()
        runs.append(measure(scenarios, args.keep))
        print("  (%.0f s)" % (time.monotonic() - t0), flush=True)
    measured = {s: statistics.median(r[s] for r in runs) for s in scenarios}
    if runs_wanted > 1:
        for s in scenarios:
            values = [r[s] for r in runs]
            print("  %-24s min %.0f, max %.0f: spread %.2f %% of the median"
                  % (s, min(values), max(values), 100.0 * (max(values) - min(values)) / measured[s]))
    if args.update:
        write_budget(measured, facts)
        return 0
    return judge(measured, facts)


if __name__ == "__main__":
    sys.exit(main())
