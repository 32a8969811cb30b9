"""Load balancing around endpoints that fail fast (SPEC §6 Load balancing,
ferry.yaml(5) load_balancer): a refusing endpoint answers a connect at once,
has nothing in flight and no latency sample, and must not therefore become
the favourite of p2c_ewma, nor keep taking its turn in round_robin and
random, while outlier detection is off or capped.

Real upstreams and a closed loopback port; the assertions are on ferry's
own counts (ferry_upstream_attempts_total by result, the access log's
attempts) and on what the clients got."""

import threading
import time

import harness
from harness import counter
from harness import FerryTestCase, deep_merge, free_port, tls_client, wait_until

REQUESTS = 300
CLIENTS = 4
PACE = 0.03                 # between a client's requests: ~2.5 s in all, so
                            # backoffs run out and penalties decay meanwhile
# the first attempts the dead endpoint may still take (2 workers): round
# robin and random, a connect per backoff period (0.25, 0.5, 1, 2 s...) and
# worker; p2c_ewma, about one per worker before the penalty keeps it out.
# Without the penalty and backoff: about half, or all for p2c_ewma.
DEAD_MAX = {"p2c_ewma": 10, "round_robin": 30, "random": 30}


def endpoints_service(targets, **extra):
    eps = [t.address if hasattr(t, "address") else "127.0.0.1:%d" % t for t in targets]
    return deep_merge({"endpoints": eps, "tls": tls_client()}, extra)


class RefusingEndpointTest(FerryTestCase):

    def load(self, f, n=REQUESTS, clients=CLIENTS):
        """n GETs from `clients` keep-alive clients at once; the statuses
        that were not 200, with ferry's error code."""
        bad, lock = [], threading.Lock()

        def client(k):
            try:
                with f.client() as c:
                    for i in range(k, n, clients):
                        time.sleep(PACE)
                        r = c.request("GET", "/b%d" % i, [("Host", "svc")])
                        if r.status != 200:
                            with lock:
                                bad.append((i, r.status, r.header("x-ferry-error"),
                                            r.body[:120]))
            except Exception as e:      # reported in the test's thread
                with lock:
                    bad.append(repr(e))

        ts = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        return bad

    @staticmethod
    def diagnosis(f, bad):
        """What a failure message needs to say why: the errors by kind,
        ferry's attempt and ejection counts, its own log."""
        kinds = {}
        for b in bad:
            k = b if isinstance(b, str) else "%s %s %s" % (b[1], b[2], b[3][:100])
            kinds[k] = kinds.get(k, 0) + 1
        metrics = [l for l in f.admin("/metrics").body.decode().splitlines()
                   if 'service="svc"' in l and
                   ("attempts" in l or "eject" in l or "circuit" in l)]
        return "errors: %r\nmetrics:\n%s\nstderr:\n%s" % (
            kinds, "\n".join(metrics), f.stderr_tail(60))

    @staticmethod
    def log_lines(f):
        return [e for e in f.access_log() if e["service"] == "svc"]

    def check_one_dead(self, lb):
        dead = free_port()              # nothing listens: connection refused
        up = self.upstream()
        f = self.ferry({"svc": endpoints_service(
            [dead, up], load_balancer=lb,
            outlier_detection={"consecutive_failures": 0})})
        bad = self.load(f)
        self.assertEqual(bad, [], "%s: requests failed beside a healthy endpoint\n%s"
                         % (lb, self.diagnosis(f, bad)))
        self.assertEqual(len(up.requests), REQUESTS)
        # attempts are counted before the response's last byte is written
        # (README: /metrics); log lines reach stdout within a second
        wait_until(lambda: len(self.log_lines(f)) >= REQUESTS, 3)
        refused = counter(f, "ferry_upstream_attempts_total", service="svc",
                          result="connect_failure")
        ok = counter(f, "ferry_upstream_attempts_total", service="svc", result="ok")
        self.assertEqual(ok, REQUESTS)
        # a retry avoids the endpoint that just failed, so with one dead
        # endpoint each refusal is a first attempt
        self.assertLessEqual(refused, DEAD_MAX[lb],
                             "%s: %d of %d first attempts went to the refusing endpoint"
                             % (lb, refused, REQUESTS))
        lines = self.log_lines(f)
        self.assertEqual(len(lines), REQUESTS)
        self.assertEqual(sum(e["attempts"] for e in lines), REQUESTS + refused)
        first_live = sum(1 for e in lines if e["attempts"] == 1)
        self.assertEqual(first_live, REQUESTS - refused)

    def test_p2c_ewma_one_refusing(self):
        self.check_one_dead("p2c_ewma")

    def test_round_robin_one_refusing(self):
        self.check_one_dead("round_robin")

    def test_random_one_refusing(self):
        self.check_one_dead("random")

    def test_p2c_ewma_two_refusing_ejection_capped(self):
        """Two of three refuse; ejection is on but max_ejection_percent 50
        lets only one of them out at a time.

        The circuit breaker is off. It counts the failed attempts of the
        whole service (SPEC §6, default 5 in a row, open for 10 s), and a
        refusal comes back at once while the first TLS request to `up`
        takes tens of ms: at the start each worker usually meets both
        refusing endpoints before anything succeeds, four failures in a
        row; a fifth (picks made in one loop turn, before a refusal is
        seen, landing on the same refusing endpoint) opens it, and every
        later request gets "circuit open"."""
        dead = [free_port(), free_port()]
        up = self.upstream()
        f = self.ferry({"svc": endpoints_service(
            [dead[0], up, dead[1]], load_balancer="p2c_ewma",
            circuit_breaker={"consecutive_failures": 0},
            outlier_detection={"consecutive_failures": 2, "base_ejection": "30s",
                               "max_ejection_percent": 50})})
        bad = self.load(f)
        self.assertEqual(bad, [], "requests failed beside a healthy endpoint\n%s"
                         % self.diagnosis(f, bad))
        self.assertEqual(len(up.requests), REQUESTS)
        refused = counter(f, "ferry_upstream_attempts_total", service="svc",
                          result="connect_failure")
        self.assertLessEqual(refused, DEAD_MAX["p2c_ewma"] * 2,
                             "%d connects to refusing endpoints for %d requests"
                             % (refused, REQUESTS))

    def test_all_refusing_still_tried(self):
        """Backoff keeps an endpoint out of the first choice only while
        another is there: with every endpoint refusing, each request still
        gets its attempts and ferry's 503, not "no available endpoint"."""
        dead = [free_port(), free_port()]
        f = self.ferry({"svc": endpoints_service(
            dead, load_balancer="round_robin", retries={"max": 1},
            circuit_breaker={"consecutive_failures": 0},
            outlier_detection={"consecutive_failures": 0})}, workers=1)
        for i in range(5):
            r = f.get("/all%d" % i, host="svc")
            self.assert_ferry_error(r, 503, "SERVICE_UNAVAILABLE", r"refused \(2 attempts\)")


if __name__ == "__main__":
    harness.main()
