"""Header handling on the outbound path (SPEC §5)."""

import os
import re
import secrets

import harness
from harness import (FerryTestCase, UUID4_RE, TRACEPARENT_NEW_RE, VIA_OUT_RE, chunked, echo,
                     fixed, service, via_tokens)

VALID_TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class HeadersTest(FerryTestCase):
    """One upstream behind three services: env-auth (key_env), file-auth
    (key_file) and noauth."""

    def setUp(self):
        super().setUp()
        self.up = self.upstream()
        self.env_key = "env-key-" + secrets.token_hex(8)
        self.file_key = "file-key-" + secrets.token_hex(8)
        key_file = os.path.join(harness.pki().dir, "svc-%s.key" % secrets.token_hex(4))
        with open(key_file, "w") as f:
            f.write(self.file_key + "\n")
        self.f = self.ferry({
            "env-auth": service(self.up, auth={"key_env": "FERRY_TEST_KEY"}),
            "file-auth": service(self.up, auth={"key_file": key_file}),
            "noauth": service(self.up),
        }, env={"FERRY_TEST_KEY": self.env_key})

    def send(self, headers, host="noauth", target="/h", method="GET", body=b"",
             version="HTTP/1.1"):
        """One request; (response, what the upstream received)."""
        with self.f.client() as c:
            resp = c.request(method, target, [("Host", host), *headers], body, version)
        self.assertEqual(resp.status, 200, resp.body[:300])
        return resp, self.up.last

    # x-service-auth

    def test_auth_from_key_env(self):
        _, req = self.send([], host="env-auth")
        self.assertEqual(req.header_all("x-service-auth"), [self.env_key])

    def test_auth_from_key_file(self):
        _, req = self.send([], host="file-auth")
        self.assertEqual(req.header_all("x-service-auth"), [self.file_key])

    def test_auth_replaces_the_apps(self):
        _, req = self.send([("X-Service-Auth", "app-key-1"), ("x-service-auth", "app-key-2")],
                           host="env-auth")
        self.assertEqual(req.header_all("x-service-auth"), [self.env_key])
        self.assertNotIn(b"app-key", req.raw_head)

    def test_auth_removed_for_service_without_auth(self):
        _, req = self.send([("X-Service-Auth", "leaked-key")], host="noauth")
        self.assertEqual(req.header_all("x-service-auth"), [])
        self.assertNotIn(b"leaked-key", req.raw_head)

    # x-correlation-id, x-request-id

    def test_valid_ids_kept(self):
        for corr, rid in (("abc.DEF_1:2-3", "req.1:2_3-x"), ("x" * 128, "y" * 128), ("7", "8")):
            with self.subTest(corr=corr[:20]):
                _, req = self.send([("X-Correlation-Id", corr), ("X-Request-Id", rid)])
                self.assertEqual(req.header_all("x-correlation-id"), [corr])
                self.assertEqual(req.header_all("x-request-id"), [rid])

    def test_ids_generated_when_absent(self):
        _, first = self.send([])
        _, second = self.send([])
        for req in (first, second):
            self.assertEqual(len(req.header_all("x-correlation-id")), 1)
            self.assertEqual(len(req.header_all("x-request-id")), 1)
            self.assertRegex(req.header("x-correlation-id"), UUID4_RE)
            self.assertRegex(req.header("x-request-id"), UUID4_RE)
        ids = {first.header("x-correlation-id"), first.header("x-request-id"),
               second.header("x-correlation-id"), second.header("x-request-id")}
        self.assertEqual(len(ids), 4, "generated ids must be fresh")

    def test_invalid_ids_replaced(self):
        for bad in ("x" * 129, "has space", "a/b", "semi;colon", "{x}", ""):
            with self.subTest(bad=bad[:20]):
                _, req = self.send([("x-correlation-id", bad), ("x-request-id", bad)])
                self.assertEqual(len(req.header_all("x-correlation-id")), 1)
                self.assertRegex(req.header("x-correlation-id"), UUID4_RE)
                self.assertEqual(len(req.header_all("x-request-id")), 1)
                self.assertRegex(req.header("x-request-id"), UUID4_RE)

    def test_response_carries_ids_sent_upstream(self):
        self.up.behaviour = echo(headers=[("X-Correlation-Id", "from-upstream"),
                                          ("x-request-id", "upstream-req")])
        for sent in ([], [("x-correlation-id", "app-corr"), ("x-request-id", "app-req")]):
            with self.subTest(app_sent=bool(sent)):
                resp, req = self.send(sent)
                self.assertEqual(resp.header_all("x-correlation-id"),
                                 req.header_all("x-correlation-id"))
                self.assertEqual(resp.header_all("x-request-id"), req.header_all("x-request-id"))
                if sent:
                    self.assertEqual(resp.header("x-correlation-id"), "app-corr")
                    self.assertEqual(resp.header("x-request-id"), "app-req")

    # traceparent

    def test_valid_traceparent_and_tracestate_pass(self):
        _, req = self.send([("traceparent", VALID_TRACEPARENT), ("tracestate", "congo=t61rcWkgMzE")])
        self.assertEqual(req.header_all("traceparent"), [VALID_TRACEPARENT])
        self.assertEqual(req.header_all("tracestate"), ["congo=t61rcWkgMzE"])

    def test_traceparent_generated_when_absent_and_tracestate_dropped(self):
        _, req = self.send([("tracestate", "congo=t61rcWkgMzE")])
        self.assert_new_traceparent(req)
        _, again = self.send([])
        self.assert_new_traceparent(again)
        self.assertNotEqual(req.header("traceparent"), again.header("traceparent"))

    def test_invalid_traceparent_replaced(self):
        bad_values = (
            VALID_TRACEPARENT.upper(),                                        # uppercase hex
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",        # zero trace-id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",        # zero parent-id
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",        # version ff
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",         # short trace-id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",           # no flags
            "garbage",
        )
        for bad in bad_values:
            with self.subTest(bad=bad):
                _, req = self.send([("traceparent", bad), ("tracestate", "congo=t61rcWkgMzE")])
                self.assert_new_traceparent(req)
                self.assertNotIn("4bf92f3577b34da6a3ce929d0e0e4736",
                                 req.header("traceparent").lower())

    def assert_new_traceparent(self, req):
        self.assertEqual(len(req.header_all("traceparent")), 1)
        m = re.match(TRACEPARENT_NEW_RE, req.header("traceparent"))
        self.assertIsNotNone(m, req.header("traceparent"))
        self.assertNotEqual(m.group(1), "0" * 32)
        self.assertNotEqual(m.group(2), "0" * 16)
        self.assertEqual(req.header_all("tracestate"), [])

    # hop-by-hop

    def test_hop_by_hop_request_headers_removed(self):
        _, req = self.send([("Connection", "keep-alive, X-Custom-Hop"), ("X-Custom-Hop", "1"),
                            ("Keep-Alive", "timeout=5, max=100"), ("Proxy-Connection", "keep-alive"),
                            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="), ("TE", "gzip"),
                            ("Upgrade", "foo/1"), ("X-After", "kept")])
        names = req.names()
        for gone in ("x-custom-hop", "proxy-connection", "proxy-authorization", "upgrade"):
            self.assertNotIn(gone, names)
        self.assertFalse(req.has_token("connection", "x-custom-hop"))
        self.assertNotIn("timeout=5, max=100", req.header_all("keep-alive"))
        self.assertFalse(any("gzip" in v for v in req.header_all("te")))
        self.assertNotIn(b"Zm9vOmJhcg", req.raw_head)
        self.assertEqual(req.header_all("x-after"), ["kept"])

    def test_te_trailers_forwarded(self):
        _, req = self.send([("TE", "trailers")])
        self.assertEqual(req.header_all("te"), ["trailers"])

    def test_hop_by_hop_response_headers_removed(self):
        self.up.behaviour = fixed(200, [("Connection", "X-Up-Hop"), ("X-Up-Hop", "secret"),
                                        ("Keep-Alive", "timeout=30, max=5"),
                                        ("Proxy-Connection", "keep-alive"), ("X-Normal", "yes")],
                                  b"body")
        resp, _ = self.send([])
        self.assertNotIn("x-up-hop", resp.names())
        self.assertNotIn("proxy-connection", resp.names())
        self.assertFalse(resp.has_token("connection", "x-up-hop"))
        self.assertEqual(resp.header_all("keep-alive"), ["timeout=60"])
        self.assertEqual(resp.header_all("x-normal"), ["yes"])
        self.assertEqual(resp.body, b"body")

    def test_keep_alive_timeout_advertised(self):
        resp, _ = self.send([])
        self.assertEqual(resp.header_all("keep-alive"), ["timeout=60"])
        f = self.ferry({"noauth": service(self.up)}, outbound={"idle_timeout": "7s"})
        resp = f.get("/", host="noauth")
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.header_all("keep-alive"), ["timeout=7"])

    # via and loops

    def test_via_appended(self):
        _, req = self.send([("Via", "1.0 corp-proxy")])
        tokens = via_tokens(req.headers)
        self.assertEqual(len(tokens), 2, tokens)
        self.assertEqual(tokens[0], "1.0 corp-proxy")
        self.assertRegex(tokens[1], VIA_OUT_RE)
        _, req2 = self.send([])
        self.assertEqual(via_tokens(req2.headers), tokens[1:], "one token per process")

    def test_via_token_differs_between_processes(self):
        _, req = self.send([])
        other = self.ferry({"noauth": service(self.up)})
        other.get("/", host="noauth")
        self.assertNotEqual(via_tokens(req.headers), via_tokens(self.up.last.headers))

    def test_own_via_token_is_a_loop(self):
        _, req = self.send([])
        token = via_tokens(req.headers)[-1]
        count = len(self.up.requests)
        for via in (token, "1.0 corp, " + token, "1.0 corp,%s (comment)" % token):
            with self.subTest(via=via):
                with self.f.client() as c:
                    resp = c.request("GET", "/", [("Host", "noauth"), ("Via", via)])
                self.assert_ferry_error(resp, 508, "LOOP_DETECTED")
        self.assertEqual(len(self.up.requests), count)

    def test_other_ferry_token_is_not_a_loop(self):
        _, req = self.send([])
        mine = via_tokens(req.headers)[-1]
        other = "1.1 ferry-%s-out" % ("0badf00d" if "0badf00d" not in mine else "1badf00d")
        _, req = self.send([("Via", other)])
        self.assertEqual(via_tokens(req.headers), [other, mine])
        # a name that only starts with this listener's is another one
        longer = mine + "x"
        resp, req = self.send([("Via", longer)])
        self.assertEqual(resp.status, 200, resp.body)
        self.assertEqual(via_tokens(req.headers), [longer, mine])

    def test_service_pointing_at_ferry_itself_is_508(self):
        port = harness.free_port()
        f = self.ferry({"loop": {"endpoints": ["127.0.0.1:%d" % port]}},
                       outbound={"address": "127.0.0.1:%d" % port})
        resp = f.get("/", host="loop")
        self.assertEqual(resp.status, 508, resp.body)
        self.assertEqual(resp.header("x-ferry-error"), "LOOP_DETECTED")
        self.assertEqual(resp.json()["error"]["code"], "LOOP_DETECTED")

    # everything else byte for byte

    def test_other_request_headers_pass_byte_for_byte(self):
        sent = [("X-MiXeD-Case", "Value  With   Spaces"), ("x-dup", "1"),
                ("Accept", "text/html, application/json;q=0.9"), ("X-Dup", "2"),
                ("Cookie", 'a=1; b="q"'), ("user-agent", "curl/8 (x)"), ("X-Empty", ""),
                ("X-Tab", "a\tb"), ("Authorization", "Bearer abc.def"),
                ("content-type", "text/plain; charset=utf-8")]
        _, req = self.send(sent, method="POST", body=b"payload")
        names = {n.lower() for n, _ in sent}
        self.assertEqual([h for h in req.headers if h[0].lower() in names], sent)
        self.assertEqual(req.body, b"payload")
        self.assertEqual(req.method, "POST")

    def test_other_response_headers_pass_byte_for_byte(self):
        sent = [("X-Resp-One", "A  b"), ("set-cookie", "a=1"), ("Content-Type", "text/plain"),
                ("Set-Cookie", "b=2; Path=/"), ("X-CASE", "MiXeD"), ("ETag", '"v1"')]
        self.up.behaviour = fixed(201, sent, b"created")
        with self.f.client() as c:
            resp = c.request("GET", "/", [("Host", "noauth")])
        self.assertEqual(resp.status, 201)
        self.assertEqual(resp.reason, "Created")
        names = {n.lower() for n, _ in sent}
        self.assertEqual([h for h in resp.headers if h[0].lower() in names], sent)
        self.assertEqual(resp.body, b"created")

    # HTTP/1.0 clients

    def test_http10_client_gets_close_delimited_not_chunked(self):
        self.up.behaviour = chunked([b"hello ", b"world", b"!" * 5000])
        with self.f.client() as c:
            resp = c.request("GET", "/", [("Host", "noauth")], version="HTTP/1.0")
            self.assertEqual(resp.status, 200)
            self.assertIsNone(resp.header("transfer-encoding"))
            self.assertEqual(resp.body, b"hello world" + b"!" * 5000)
            self.assertTrue(c.peer_closed(2), "HTTP/1.0 response not ended by close")

    def test_http10_client_with_length(self):
        self.up.behaviour = fixed(200, [("Content-Type", "text/plain")], b"x" * 1000)
        with self.f.client() as c:
            resp = c.request("GET", "/", [("Host", "noauth")], version="HTTP/1.0")
            self.assertEqual(resp.status, 200)
            self.assertIsNone(resp.header("transfer-encoding"))
            self.assertEqual(resp.body, b"x" * 1000)
            self.assertTrue(c.peer_closed(2))


class HeaderRulesTest(FerryTestCase):
    """SPEC §15: remove, set and add on requests and responses, defaults'
    rules first, then the service's (or the inbound listener's)."""

    def test_request_and_response_rules_in_order(self):
        def behave(conn, req):
            conn.respond(200, headers=[("Server", "nginx/1"), ("X-Powered-By", "php"),
                                       ("X-Frame-Options", "SAMEORIGIN"),
                                       ("X-Frame-Options", "ALLOW"), ("X-Keep", "k")],
                         body=b"ok")
        up = self.upstream(behave)
        svc = service(up)
        svc["headers"] = {
            "request": {"set": {"X-Tenant": "${FERRY_TEST_TENANT}", "x-env": "staging"},
                        "add": {"X-Extra": "two"}, "remove": ["X-Debug"]},
            "response": {"set": {"x-frame-options": "DENY"}, "remove": ["x-powered-by"]},
        }
        f = self.ferry({"svc": svc}, env={"FERRY_TEST_TENANT": "t-42"}, defaults={
            "headers": {"request": {"add": {"x-env": "prod", "x-extra": "one"},
                                    "remove": ["x-internal"]},
                        "response": {"remove": ["server"], "add": {"x-served-by": "ferry"}}},
        })
        resp = f.get("/r", host="svc", headers=[
            ("X-Debug", "1"), ("X-Internal", "secret"), ("X-Tenant", "app-said"),
            ("X-Env", "app"), ("X-Other", "kept")])
        self.assertEqual(resp.status, 200)
        seen = up.last
        self.assertEqual(seen.header_all("x-debug"), [])
        self.assertEqual(seen.header_all("x-internal"), [])
        # set replaces every line of its name, the app's and defaults' too
        self.assertEqual(seen.header_all("x-tenant"), ["t-42"])
        self.assertEqual(seen.header_all("x-env"), ["staging"])
        # add appends: defaults' first, then the service's
        self.assertEqual(seen.header_all("x-extra"), ["one", "two"])
        self.assertEqual(seen.header_all("x-other"), ["kept"])
        # ferry's own handling is untouched
        self.assertRegex(seen.header("x-request-id"), UUID4_RE)
        self.assertEqual(resp.header_all("server"), [])
        self.assertEqual(resp.header_all("x-powered-by"), [])
        self.assertEqual(resp.header_all("x-frame-options"), ["DENY"])
        self.assertEqual(resp.header_all("x-served-by"), ["ferry"])
        self.assertEqual(resp.header_all("x-keep"), ["k"])
        self.assertRegex(resp.header("x-correlation-id"), UUID4_RE)

    def test_rule_values_pass_a_peer_ferry_over_http2(self):
        """A value's blanks around it are no part of it: they are dropped
        at load, as an HTTP/1.1 parser drops them, so a peer ferry over
        HTTP/2 takes the field instead of resetting the stream (RFC 9113
        8.2.1: it used to be a 502 after three resets). A tab inside stays."""
        p = harness.pki()
        app = self.upstream(tls=False)
        port = harness.free_port()
        self.ferry({}, env={"MESH_KEY": "rules-mesh-key-0123456789"}, listeners={"inbound": {
            "address": "127.0.0.1:%d" % port,
            "tls": {"cert": p.server.cert, "key": p.server.key, "client_ca": p.ca.cert},
            "auth": {"keys_env": ["MESH_KEY"]}, "local_app": app.address}})
        for proto in ("h2", "http1"):
            f = self.ferry({"svc": {
                "endpoints": ["127.0.0.1:%d" % port], "protocol": proto,
                "tls": harness.tls_client("backend"), "auth": {"key_env": "MESH_KEY"},
                "headers": {"request": {"set": {"x-env": " prod ", "x-tab": "a\tb"},
                                        "add": {"x-tenant": "${FERRY_TEST_TENANT}"}}}}},
                env={"MESH_KEY": "rules-mesh-key-0123456789", "FERRY_TEST_TENANT": "t-42\t"})
            resp = f.get("/peer", host="svc")
            self.assertEqual(resp.status, 200, (proto, resp.body[:300]))
            seen = app.last
            self.assertEqual((seen.header_all("x-env"), seen.header_all("x-tab"),
                              seen.header_all("x-tenant")), (["prod"], ["a\tb"], ["t-42"]), proto)

    def test_no_rules_no_change(self):
        up = self.upstream()
        f = self.ferry({"svc": service(up)})
        resp = f.get("/n", host="svc", headers=[("X-Debug", "1")])
        self.assertEqual(resp.status, 200)
        self.assertEqual(up.last.header_all("x-debug"), ["1"])


if __name__ == "__main__":
    harness.main()
