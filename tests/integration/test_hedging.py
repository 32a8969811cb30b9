"""Hedged requests (SPEC §16 Hedging): when no response head came `after`
the attempt began, ferry sends the same idempotent request to another
endpoint; the first head wins, the other attempt is cancelled (its
connection closed, its HTTP/2 stream reset with CANCEL) and costs its
endpoint nothing. Hedges take from the retry budget and never outlive the
request deadline.

Real upstreams on loopback (plain HTTP/1.1, and python3-h2 for HTTP/2);
the assertions are on what the upstreams saw, on the clients' timings and
on ferry's own counts (ferry_hedges_total, /services, the access log)."""

import json
import select
import socket
import threading
import time

import harness
from harness import counter
from harness import FerryTestCase, echo, wait_until

SLOW = 0.5


def hedges(f, result):
    return counter(f, "ferry_hedges_total", service="svc", result=result)


def slow_unless_cancelled(seconds, cancelled, lock=None):
    """Answer after `seconds`, unless ferry closes the connection first:
    then note the request's path in `cancelled` and answer nothing."""
    lock = lock or threading.Lock()

    def behave(conn, req):
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([conn.sock], [], [], left)
            if not r:
                break
            try:
                data = conn.sock.recv(1, socket.MSG_PEEK)
            except OSError:
                data = b""
            if data == b"":
                with lock:
                    cancelled.append(req.target)
                conn.keep_open = False
                return
            time.sleep(0.005)   # bytes of a next request: not ours to read
        echo()(conn, req)
    return behave


def svc(upstreams, hedging, **extra):
    s = {"endpoints": [u.address for u in upstreams], "load_balancer": "round_robin"}
    if hedging is not None:
        s["hedging"] = hedging
    return harness.deep_merge(s, extra)


# a single failure counted against an endpoint would eject it or open the
# breaker: the loser of a race must never be counted
TOUCHY = {
    "outlier_detection": {"consecutive_failures": 1, "max_ejection_percent": 100},
    "circuit_breaker": {"consecutive_failures": 2},
}


class HedgingTest(FerryTestCase):

    def timed_gets(self, f, n, path="/r%d", method="GET", headers=()):
        times, statuses = [], []
        with f.client() as c:
            for i in range(n):
                t0 = time.monotonic()
                r = c.request(method, path % i, [("Host", "svc"), *headers])
                times.append(time.monotonic() - t0)
                statuses.append(r.status)
        return times, statuses

    def test_slow_endpoint_is_hedged_and_cancelled(self):
        cancelled = []
        slow = self.upstream(slow_unless_cancelled(SLOW, cancelled), tls=False)
        fast = self.upstream(echo(), tls=False)
        f = self.ferry({"svc": svc([slow, fast], {"after": "50ms"}, **TOUCHY)})
        times, statuses = self.timed_gets(f, 20)
        self.assertEqual(statuses, [200] * 20)
        self.assertLess(max(times), 0.3, "a GET waited for the slow endpoint: %r" % times)
        # round robin sent about half of them to the slow one first
        self.assertGreaterEqual(len(slow.requests), 5)
        won, lost = hedges(f, "won"), hedges(f, "lost")
        # (a loaded upstream thread may read a request after ferry hedged it)
        wait_until(lambda: len(slow.requests) >= won + lost, 3)
        # every attempt at the slow one lost: the first attempts there to
        # a hedge that won, and (on a loaded machine) a hedge sent there
        # when the fast one took over 50 ms to a first attempt that won
        self.assertEqual(won + lost, len(slow.requests), "every slow attempt lost: %s\n%s"
                         % ([r.target for r in slow.requests], f.stdout_text()[-3000:]))
        self.assertGreaterEqual(won, 5)
        # the slow attempts were cancelled: their connections closed
        wait_until(lambda: len(cancelled) == len(slow.requests), 3)
        self.assertEqual(sorted(cancelled), sorted(r.target for r in slow.requests))
        self.assertEqual(hedges(f, "budget"), 0)
        # the fast one got every request, the hedged ones too
        self.assertEqual(len(fast.requests), 20)
        # no penalty for the loser: not ejected, breaker closed, no failed attempt
        services = json.loads(f.admin("/services").body)
        text = json.dumps(services)
        self.assertNotIn('"ejected": true', text, text)
        self.assertNotIn('"circuit": "open"', text, text)
        for result in ("timeout", "reset", "connect_failure", "5xx"):
            self.assertEqual(counter(f, "ferry_upstream_attempts_total", service="svc",
                                     result=result), 0, result)
        # the access log names the winner and counts both attempts
        wait_until(lambda: len([e for e in f.access_log() if e.get("service") == "svc"]) >= 20, 3)
        log = [e for e in f.access_log() if e.get("service") == "svc"]
        self.assertEqual(len(log), 20)
        hedged = [e for e in log if e.get("attempts") == 2]
        self.assertEqual(len(hedged), won + lost)
        self.assertTrue(all(e["upstream"] == fast.address for e in hedged), hedged[:2])
        # SPEC §16: the fate says a hedge won; a first attempt that beat its
        # hedge, and the requests never hedged, were plain ok
        self.assertEqual(len([e for e in hedged if e["fate"] == "ok_by_hedge"]), won)
        self.assertEqual({e["fate"] for e in log if e["fate"] != "ok_by_hedge"}, {"ok"})
        self.assertEqual(counter(f, "ferry_request_fate_total", direction="outbound",
                                 service="svc", fate="ok_by_hedge"), won)
        self.assert_upstream_clean(slow)
        self.assert_upstream_clean(fast)

    def body_streaming_past_after(self, h2c):
        """A PUT whose body is still coming in when `after` passes cannot
        be sent twice yet; once it is whole the hedge follows, `after`
        later (it used to be never hedged)."""
        cancelled = []
        slow = self.upstream(slow_unless_cancelled(SLOW, cancelled), tls=False)
        fast = self.upstream(echo(), tls=False)
        f = self.ferry({"svc": svc([slow, fast], {"after": "50ms"}, **TOUCHY)}, workers=1)
        if h2c:
            from test_h2 import H2
            with H2(f.outbound_port) as c:
                sid = c.request("/up", method="PUT", headers=[("content-length", "10")],
                                body=b"01234", content_length=False, end_stream=False)
                time.sleep(0.2)
                t0 = time.monotonic()
                c.send_body(sid, b"56789")
                status = c.response(sid).status
                took = time.monotonic() - t0
        else:
            with f.client() as c:
                c.send(harness.build_request("PUT", "/up", [("Host", "svc"),
                                                            ("Content-Length", "10")]) + b"01234")
                time.sleep(0.2)
                t0 = time.monotonic()
                c.send(b"56789")
                status = c.read_response().status
                took = time.monotonic() - t0
        self.assertEqual(status, 200)
        self.assertLess(took, SLOW - 0.1, "the slow endpoint answered: no hedge")
        self.assertEqual([(q.method, q.body) for q in fast.requests], [("PUT", b"0123456789")])
        self.assertEqual(hedges(f, "won"), 1)
        wait_until(lambda: cancelled, 2)
        self.assertEqual(cancelled, ["/up"])

    def test_p2c_ewma_learns_from_lost_races(self):
        # an endpoint whose attempts always lose to a hedge answers nothing:
        # if it learnt nothing, its EWMA would stay unmeasured and p2c_ewma
        # would keep picking it first. A lost race says it was at least
        # that slow (SPEC §6, §16)
        cancelled = []
        slow = self.upstream(slow_unless_cancelled(SLOW, cancelled), tls=False)
        fast = self.upstream(echo(), tls=False)
        f = self.ferry({"svc": svc([slow, fast], {"after": "20ms"}, load_balancer="p2c_ewma",
                                   retries={"budget": {"ratio": 10, "min_per_second": 1000}},
                                   **TOUCHY)}, workers=1)
        times, statuses = self.timed_gets(f, 30)
        self.assertEqual(statuses, [200] * 30)
        self.assertLessEqual(len(slow.requests), 5, "the slow endpoint got %d of 30 first "
                             "attempts" % len(slow.requests))
        eps = {e["address"]: e for e in
               json.loads(f.admin("/services").body)["services"][0]["endpoints"]}
        self.assertGreater(eps[slow.address]["ewma_ms"], eps[fast.address]["ewma_ms"], eps)

    def test_body_streaming_past_after_is_hedged_once_whole(self):
        self.body_streaming_past_after(False)

    def test_h2c_body_streaming_past_after_is_hedged_once_whole(self):
        self.body_streaming_past_after(True)

    def test_unhedged_baseline_waits(self):
        """The same set-up without hedging: the slow endpoint is waited for
        (what makes the test above able to fail)."""
        slow = self.upstream(echo(), tls=False)
        slow.behaviour = harness.delay(SLOW)
        fast = self.upstream(echo(), tls=False)
        f = self.ferry({"svc": svc([slow, fast], None)})
        times, _ = self.timed_gets(f, 6)
        self.assertGreaterEqual(max(times), SLOW - 0.05)
        self.assertEqual(hedges(f, "won") + hedges(f, "lost"), 0)

    def test_post_is_not_hedged_unless_idempotency_key(self):
        cancelled = []
        slow = self.upstream(slow_unless_cancelled(SLOW, cancelled), tls=False)
        fast = self.upstream(echo(), tls=False)
        f = self.ferry({"svc": svc([slow, fast], {"after": "50ms"})})
        times, statuses = self.timed_gets(f, 6, path="/post%d", method="POST")
        self.assertEqual(statuses, [200] * 6)
        # each POST went to one endpoint only, and the client waited for the slow one
        self.assertEqual(len(slow.requests) + len(fast.requests), 6)
        self.assertGreaterEqual(len(slow.requests), 1)
        self.assertGreaterEqual(max(times), SLOW - 0.05)
        self.assertEqual(cancelled, [])
        self.assertEqual(hedges(f, "won") + hedges(f, "lost") + hedges(f, "budget"), 0)
        # with Idempotency-Key, a POST may be sent twice
        times, statuses = self.timed_gets(f, 6, path="/key%d", method="POST",
                                          headers=[("Idempotency-Key", "k1")])
        self.assertEqual(statuses, [200] * 6)
        self.assertLess(max(times), 0.3, times)
        self.assertGreaterEqual(hedges(f, "won"), 1)

    def test_budget_stops_a_hedge_storm(self):
        """Every endpoint slow: each request would be hedged; the retry
        budget (ratio 0.2, no floor) lets about one in five go, and the
        first attempt still answers first (the hedge loses)."""
        seen, lock = set(), threading.Lock()

        def hedge_slower(conn, req):
            # the hedge (a target seen before) answers 0.7 s after the
            # first attempt. Which is the hedge is known only by arrival,
            # and the hedge leaves 100 ms after the first attempt: a 10 ms
            # head start lost to thread scheduling on a loaded machine
            # (twice, once with equal delays)
            with lock:
                again = req.target in seen
                seen.add(req.target)
            harness.delay(1.0 if again else 0.3)(conn, req)

        a = self.upstream(hedge_slower, tls=False)
        b = self.upstream(hedge_slower, tls=False)
        n = 20
        f = self.ferry({"svc": svc([a, b], {"after": "100ms"},
                                   retries={"budget": {"ratio": 0.2, "min_per_second": 0}})})
        _, statuses = self.timed_gets(f, n)
        self.assertEqual(statuses, [200] * n)
        sent = hedges(f, "won") + hedges(f, "lost")
        self.assertLessEqual(sent, 0.2 * n + 1)
        self.assertGreaterEqual(sent, 1)
        self.assertEqual(hedges(f, "budget"), n - sent)
        self.assertEqual(hedges(f, "won"), 0, "the first attempt answers first; arrivals "
                         "(target, connection, seq) %r %r, resends %s"
                         % ([(r.target, r.conn_id, r.seq) for r in a.requests],
                            [(r.target, r.conn_id, r.seq) for r in b.requests],
                            counter(f, "ferry_upstream_resends_total", service="svc")))
        cfg = json.loads(f.admin("/config").body)
        self.assertEqual([s["hedging"] for s in cfg["services"]], [{"after": "100ms", "max": 1}])
        wait_until(lambda: len(a.requests) + len(b.requests) == n + sent, 2)
        self.assertEqual(len(a.requests) + len(b.requests), n + sent)

    def test_never_past_the_deadline(self):
        a = self.upstream(harness.delay(SLOW), tls=False)
        b = self.upstream(harness.delay(SLOW), tls=False)
        # after is past the deadline: never a hedge
        f = self.ferry({"svc": svc([a, b], {"after": "300ms"}, timeouts={"request": "150ms"},
                                   retries={"max": 0})})
        t0 = time.monotonic()
        r = f.get("/late", host="svc")
        self.assertLess(time.monotonic() - t0, 0.4)
        self.assert_ferry_error(r, 504, "SERVICE_TIMEOUT")
        time.sleep(0.3)
        self.assertEqual(len(a.requests) + len(b.requests), 1)
        self.assertEqual(hedges(f, "won") + hedges(f, "lost") + hedges(f, "budget"), 0)

    def test_hedge_ends_with_the_deadline(self):
        ca, cb = [], []
        a = self.upstream(slow_unless_cancelled(SLOW, ca), tls=False)
        b = self.upstream(slow_unless_cancelled(SLOW, cb), tls=False)
        f = self.ferry({"svc": svc([a, b], {"after": "40ms"}, timeouts={"request": "150ms"},
                                   retries={"max": 0})})
        t0 = time.monotonic()
        r = f.get("/both", host="svc")
        self.assertLess(time.monotonic() - t0, 0.4)
        self.assert_ferry_error(r, 504, "SERVICE_TIMEOUT")
        # the hedge went, and both attempts were closed at the deadline
        self.assertEqual(len(a.requests) + len(b.requests), 2)
        wait_until(lambda: len(ca) + len(cb) == 2, 2)
        self.assertEqual(len(ca) + len(cb), 2)
        self.assertEqual(hedges(f, "lost"), 1)

    def test_deadline_counts_the_first_attempt_only(self):
        """At the request's deadline both attempts time out together. The
        first one's endpoint had the whole budget: a timeout; the hedge
        began later, and is cancelled (no penalty), whichever of the two
        timers fires first. Many requests, so both orders occur."""
        a = self.upstream(harness.delay(SLOW), tls=False)
        b = self.upstream(harness.delay(SLOW), tls=False)
        f = self.ferry({"svc": svc([a, b], {"after": "20ms"}, timeouts={"request": "60ms"},
                                   retries={"max": 0},
                                   outlier_detection={"consecutive_failures": 1000},
                                   circuit_breaker={"consecutive_failures": 1000})},
                       workers=1)
        n = 12
        with f.client() as c:
            for i in range(n):
                self.assertEqual(c.request("GET", "/d%d" % i, [("Host", "svc")]).status, 504)
        wait_until(lambda: len([e for e in f.access_log() if e.get("service") == "svc"]) >= n, 3)
        log = [e for e in f.access_log() if e.get("service") == "svc"]
        self.assertEqual(len(log), n)
        for e in log:
            self.assertEqual(sorted(x["result"] for x in e["attempts_detail"]),
                             ["cancelled", "timeout"], e)

    def test_after_p95(self):
        """after: p95 follows the service's own answers: fast ones make it
        the 5 ms floor, so a slow endpoint is hedged at once."""
        cancelled = []
        a = self.upstream(echo(), tls=False)
        b = self.upstream(echo(), tls=False)
        f = self.ferry({"svc": svc([a, b], {"after": "p95"})}, workers=1)
        self.timed_gets(f, 40, path="/warm%d")
        before = hedges(f, "won")
        b.behaviour = slow_unless_cancelled(SLOW, cancelled)
        times, statuses = self.timed_gets(f, 20)
        self.assertEqual(statuses, [200] * 20)
        self.assertLess(max(times), 0.3, times)
        self.assertGreaterEqual(hedges(f, "won") - before, 5)
        cfg = json.loads(f.admin("/config").body)
        self.assertEqual([s["hedging"] for s in cfg["services"]], [{"after": "p95", "max": 1}])

    def test_http2_loser_stream_is_cancelled(self):
        import test_h2_upstream
        slow = test_h2_upstream.H2Upstream()
        fast = test_h2_upstream.H2Upstream()
        fast.gate.set()     # /hold... answered at once
        self._closers += [slow.close, fast.close]
        f = self.ferry({"svc": svc([slow, fast], {"after": "50ms"}, protocol="h2", **TOUCHY)})
        times, statuses = self.timed_gets(f, 10, path="/hold%d")
        self.assertEqual(statuses, [200] * 10)
        self.assertLess(max(times), 0.3, times)
        held = [p for p in slow.paths if p.startswith("/hold")]
        self.assertGreaterEqual(len(held), 3)
        wait_until(lambda: len(slow.resets) >= len(held), 2)
        self.assertEqual({p: slow.resets.get(p) for p in held},
                         {p: 8 for p in held}, "the loser's stream: RST_STREAM CANCEL")
        # each held stream lost: a first attempt to a hedge that won, or
        # (on a loaded machine) a hedge sent when the fast one took over
        # 50 ms to a first attempt that won
        self.assertEqual(hedges(f, "won") + hedges(f, "lost"), len(held))
        self.assertGreaterEqual(hedges(f, "won"), 3)
        text = f.admin("/services").body.decode()
        self.assertNotIn('"ejected":true', text.replace(" ", ""))


    def test_every_attempt_is_listed(self):
        """SPEC §16: the access log line (attempts_detail) and ferry's JSON
        error (error.attempts) list each attempt, the hedge and the
        attempt it raced with among them: a lost race is "cancelled", a
        hedge's own failure its result. "attempts" counts the same ones."""
        cancelled = []
        slow = self.upstream(slow_unless_cancelled(SLOW, cancelled), tls=False)
        fast = self.upstream(echo(), tls=False)
        f = self.ferry({"svc": svc([slow, fast], {"after": "50ms"})}, workers=1)
        for i in range(4):
            self.assertEqual(f.get("/won%d" % i, host="svc").status, 200)
        wait_until(lambda: len([e for e in f.access_log() if e.get("service") == "svc"]) >= 4, 3)
        log = [e for e in f.access_log() if e.get("service") == "svc"]
        hedged = [e for e in log if e["attempts"] == 2]
        self.assertGreaterEqual(len(hedged), 1, log)
        for e in log:
            self.assertEqual(len(e["attempts_detail"]), e["attempts"], e)
        for e in hedged:
            self.assertEqual(sorted((a["endpoint"], a["result"]) for a in e["attempts_detail"]),
                             sorted([(slow.address, "cancelled"), (fast.address, "ok")]), e)
        self.assertEqual({e["fate"] for e in hedged}, {"ok_by_hedge"})

        # both too slow for the deadline: ferry's 504 names both attempts
        ca, cb = [], []
        a = self.upstream(slow_unless_cancelled(SLOW, ca), tls=False)
        b = self.upstream(slow_unless_cancelled(SLOW, cb), tls=False)
        g = self.ferry({"svc": svc([a, b], {"after": "40ms"}, timeouts={"request": "200ms"},
                                   retries={"max": 0})})
        r = g.get("/late", host="svc")
        body = self.assert_ferry_error(r, 504, "SERVICE_TIMEOUT", r"\(2 attempts\)")
        # the hedge ends at the same deadline: timed out itself, or
        # cancelled when the first attempt's timer came first
        self.assertIn(sorted(x["result"] for x in body["error"]["attempts"]),
                      (["cancelled", "timeout"], ["timeout", "timeout"]), body)
        self.assertEqual({x["endpoint"] for x in body["error"]["attempts"]},
                         {a.address, b.address}, body)
        wait_until(lambda: [e for e in g.access_log() if e.get("service") == "svc"], 3)
        e = [e for e in g.access_log() if e.get("service") == "svc"][0]
        self.assertEqual(e["attempts"], 2)
        self.assertEqual(e["attempts_detail"], body["error"]["attempts"])
        self.assertEqual(e["fate"], "timeout")

        # a hedge that fails (503 at once) while the first attempt
        # answers: the hedge's 503 is listed too, the answer is the 200
        seen, lock = set(), threading.Lock()

        def first_slow_hedge_503(conn, req):
            with lock:
                again = req.target in seen
                seen.add(req.target)
            if again:
                conn.respond(503, [("Content-Type", "text/plain")], b"busy\n")
            else:
                harness.delay(0.3)(conn, req)

        c = self.upstream(first_slow_hedge_503, tls=False)
        d = self.upstream(first_slow_hedge_503, tls=False)
        h = self.ferry({"svc": svc([c, d], {"after": "50ms"}, retries={"max": 0})})
        self.assertEqual(h.get("/five", host="svc").status, 200)
        wait_until(lambda: [e for e in h.access_log() if e.get("service") == "svc"], 3)
        e = [e for e in h.access_log() if e.get("service") == "svc"][0]
        self.assertEqual(e["attempts"], 2, e)
        self.assertEqual(sorted(x["result"] for x in e["attempts_detail"]), ["503", "ok"], e)
        self.assertEqual(e["fate"], "ok", e)


    def first_attempt_meets_a_closed_connection(self, head_after):
        """The first attempt meets a reused connection the upstream closed
        (SPEC §6: re-sent on a new connection) while a hedge races, and
        the only endpoint left is the hedge's, whose one connection
        (pool.max_per_endpoint 1) the hedge holds. The hedge answers
        HEAD_AFTER seconds after that close. Its response is the answer,
        whole: the hedge takes the first attempt's place, as it does when
        that attempt fails. (A re-send used to wait for room in the pool,
        and at the connect timeout, 600ms, end the request with 503 and
        cancel the hedge; one that found room under the hedge's response
        would have started another attempt.)"""
        lock = threading.Lock()
        seen = []                   # arrivals of /x
        sick = set()                # upstreams whose health check fails
        failed_checks = {}          # failed checks answered, by upstream
        first_closed = threading.Event()
        parts = [b"a" * 1000, b"b" * 1000, b"c" * 1000, b"d" * 1000]

        def behaviour(name):
            def behave(conn, req):
                if req.target == "/health":
                    with lock:
                        bad = name in sick
                        if bad:
                            failed_checks[name] = failed_checks.get(name, 0) + 1
                    conn.respond(503 if bad else 200, [("Content-Type", "text/plain")], b"hc\n")
                    return
                if req.target != "/x":
                    echo()(conn, req)
                    return
                with lock:
                    seen.append((name, conn.conn_id))
                    n = len(seen)
                    if n == 1:
                        sick.add(name)
                if n == 1:
                    # the first attempt: its endpoint turns unhealthy, then
                    # closes the reused connection without an answer
                    wait_until(lambda: failed_checks.get(name, 0) >= 2, 5)
                    conn.keep_open = False
                    first_closed.set()
                elif n == 2:
                    # the hedge: answers once the re-send waits for room,
                    # and its body takes longer than the connect timeout
                    first_closed.wait(5)
                    conn.sleep(head_after)
                    conn.head(200, [("Content-Type", "application/octet-stream"),
                                    ("Content-Length", str(sum(map(len, parts))))])
                    for i, part in enumerate(parts):
                        if i and not conn.sleep(0.4):
                            return
                        conn.send(part)
                else:
                    conn.respond(200, [("Content-Type", "text/plain")], b"STRAY")
            return behave

        a = self.upstream(None, tls=False)
        b = self.upstream(None, tls=False)
        a.behaviour, b.behaviour = behaviour("a"), behaviour("b")
        f = self.ferry({"svc": svc([a, b], {"after": "50ms"},
                                   pool={"max_per_endpoint": 1},
                                   timeouts={"connect": "600ms"},
                                   health_check={"path": "/health", "interval": "50ms",
                                                 "timeout": "500ms", "healthy": 1,
                                                 "unhealthy": 1})}, workers=1)
        with f.client(timeout=8) as c:
            # a pooled connection to each (round robin): the request goes
            # on to the first one's, the hedge to the second one's
            for i in range(2):
                self.assertEqual(c.request("GET", "/w%d" % i, [("Host", "svc")]).status, 200)
            c.send(harness.build_request("GET", "/x", [("Host", "svc")]))
            try:
                r = c.read_response()
            except (harness.IncompleteMessage, OSError) as e:
                self.fail("the response was cut: %r, got %r\n%s"
                          % (e, bytes(c.reader.buf[:300]), f.stderr_tail()))
        self.assertTrue(first_closed.is_set(), "the first attempt never closed: %r" % seen)
        self.assertEqual(r.status, 200, r.body[:300])
        self.assertEqual(r.body, b"".join(parts), r.body[:300])
        time.sleep(0.3)
        self.assertEqual(len(seen), 2, "a third attempt under the answer: %r" % seen)
        self.assertEqual(hedges(f, "won"), 1)
        self.assertEqual(counter(f, "ferry_upstream_resends_total", service="svc"), 0)
        wait_until(lambda: [e for e in f.access_log() if e.get("path") == "/x"], 3)
        e = [e for e in f.access_log() if e.get("path") == "/x"][0]
        self.assertEqual((e["attempts"], [x["result"] for x in e["attempts_detail"]]),
                         (1, ["ok"]), e)

    def test_hedge_takes_the_place_of_a_closed_connection(self):
        self.first_attempt_meets_a_closed_connection(0.2)

    def test_hedge_answering_after_the_connect_timeout_is_not_cut(self):
        self.first_attempt_meets_a_closed_connection(1.0)


if __name__ == "__main__":
    harness.main()
