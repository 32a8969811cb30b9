"""cpu_affinity: auto lets a bound worker loose while its long turns wait
long for its CPU, and binds it again when its turns are short
(src/affinity.h). It loads every CPU for seconds, so meson runs it alone
(is_parallel: false): tests beside it would see their timing move."""

import os
import shutil
import subprocess
import sys
import threading
import unittest

import harness
from harness import FerryTestCase, thread_cpus, wait_until


def worker_schedstats(f):
    """{tid: (ns run, ns waited, times run)} of ferry's workers."""
    return {tid: tuple(int(v) for v in text.split()[:3])
            for tid, text in harness.worker_task_files(f, "schedstat").items()}


def turns_since(before, after):
    """What the watch judges (src/affinity.h), per worker: its runs, and
    their mean time run and waited, in us."""
    out = []
    for tid, (run, wait, runs) in sorted(after.items()):
        r0, w0, n0 = before.get(tid, (0, 0, 0))
        n = max(runs - n0, 1)
        out.append((runs - n0, (run - r0) / n / 1000, (wait - w0) / n / 1000))
    return out


@unittest.skipUnless(len(os.sched_getaffinity(0)) >= 2, "needs two CPUs")
class PlacementTest(FerryTestCase):

    def test_long_turns_that_wait_are_let_loose_then_short_ones_bound_again(self):
        """A bound worker is let loose while its turns are long and wait
        long for its CPU, and bound again once its turns are short
        (src/affinity.h). Long turns: h2load's bursts of 100 streams on 8
        connections for a service that does not exist, each answered by
        ferry itself (404), while a busy loop (an app's thread) holds each
        CPU, so that a woken worker (SCHED_BATCH) waits out the loop's
        slice and finds a batch of requests queued. The loops ran at nice
        19 once, and 4 connections of small requests: a worker's turns
        then ran 150-250 us and waited 80-300, on both sides of the
        thresholds, and in a CI run one worker was still bound after 15 s;
        now they run 220-900 and wait 1.2-1.8 times that, and both are loose after
        the 3 s the watch needs. Short turns: one HTTP/1.1 request a turn
        on each worker, the busy loops gone."""
        exe = shutil.which("h2load")
        if not exe:
            self.skipTest("h2load not installed (Debian package nghttp2-client)")
        if not os.path.exists("/proc/thread-self/schedstat"):
            self.skipTest("the kernel keeps no schedstat (CONFIG_SCHED_INFO)")
        two = set(sorted(os.sched_getaffinity(0))[:2])
        f, _ = self.ferry_on_cpus(two, workers=2)
        own = sorted([c] for c in two)
        self.assertEqual(sorted(map(sorted, thread_cpus(f).get("ferry-worker"))), own)
        hogs = [subprocess.Popen([sys.executable, "-c",
                                  "import os\nos.sched_setaffinity(0, {%d})\n"
                                  "while True:\n    pass\n" % cpu]) for cpu in sorted(two)]
        load = subprocess.Popen([exe, "-D", "30", "-c", "8", "-m", "100", "-t", "1",
                                 "-H", ":authority: nosuch", "-H", "x-pad: " + "p" * 2000,
                                 "http://127.0.0.1:%d/" % f.outbound_port],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            loose = wait_until(lambda: thread_cpus(f).get("ferry-worker") == [two, two], 20.0,
                               interval=0.2)
        finally:
            for p in hogs + [load]:
                p.kill()
                p.wait()
        self.assertTrue(loose, thread_cpus(f))
        # h2load's connections gone first: a worker still closing them would
        # hand both new ones to its sibling, and stay idle (and loose)
        self.assertTrue(wait_until(lambda: harness.counter(
            f, "ferry_downstream_connections", listener="outbound") == 0, 5.0, 0.05))

        stop = threading.Event()
        statuses = []

        def short_turns():
            with f.client() as c:
                while not stop.is_set():
                    statuses.append(c.request("GET", "/", [("Host", "nosuch")]).status)
        clients = [threading.Thread(target=short_turns) for _ in range(2)]
        for t in clients:
            t.start()
        before = worker_schedstats(f)
        try:
            bound = wait_until(lambda: sorted(map(sorted, thread_cpus(f).get("ferry-worker")))
                               == own, 30.0, interval=0.2)
        finally:
            stop.set()
            for t in clients:
                t.join()
        if not bound:
            runs = turns_since(before, worker_schedstats(f))
            why = "%r; per worker since the short turns began: %s\n%s" % (
                thread_cpus(f), "; ".join(
                    "%d runs, %.0f us run, %.0f us waited" % r for r in runs),
                f.stderr_tail())
            # the watch binds after five seconds in a row of runs of 75 us
            # or less: a machine slow enough that one request's run is
            # near that cannot show it (in one CI run a worker stayed
            # loose for 20 s; here they run 20-50 us)
            if max(r[1] for r in runs) > 60:
                self.skipTest("short turns not short on this machine: " + why)
            self.fail(why)
        self.assertEqual(set(statuses), {404})
        log = f.stderr_text()
        for w, cpu in enumerate(sorted(two)):
            self.assertIn("worker %d: let loose from CPU %d" % (w, cpu), log)
            self.assertIn("worker %d: bound to CPU %d again" % (w, cpu), log)


if __name__ == "__main__":
    harness.main()
