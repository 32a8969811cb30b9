"""Outbound routing (SPEC §4)."""

import harness
from harness import FerryTestCase, service, tls_client


class RoutingTest(FerryTestCase):
    """Three services, each with its own upstream:

    user-service   TLS, server_name backend, two hosts aliases, its own listen port
    order-service  TLS without server_name (verified by IP), hosts [orders.example, ...]
    billing        plain HTTP, no hosts
    """

    def setUp(self):
        super().setUp()
        self.users = self.upstream()
        self.orders = self.upstream()
        self.billing = self.upstream(tls=False)
        self.listen_port = harness.free_port()
        self.f = self.ferry({
            "user-service": service(self.users, hosts=["users.internal",
                                                       "user-service.prod.svc.cluster.local"],
                                    listen="127.0.0.1:%d" % self.listen_port),
            "order-service": {"endpoints": [self.orders.address],
                              "tls": tls_client(server_name=None),
                              "hosts": ["orders.example", "orders-alias"]},
            "billing": service(self.billing.port),
        })

    def send(self, target, headers, port=None, method="GET", version="HTTP/1.1"):
        with self.f.client(port) as c:
            return c.request(method, target, headers, version=version)

    def assert_routed(self, resp, upstream, target="/x", host="backend"):
        self.assertEqual(resp.status, 200, resp.body[:300])
        req = upstream.last
        self.assertIsNotNone(req, "request did not reach the expected upstream")
        self.assertEqual(req.target, target)
        self.assertEqual(req.header_all("host"), [host])
        self.assertEqual(resp.json()["target"], target)
        others = [u for u in (self.users, self.orders, self.billing) if u is not upstream]
        self.assertEqual([len(u.requests) for u in others], [0, 0], "went to another upstream")

    def assert_nothing_forwarded(self):
        self.assertEqual([len(u.requests) for u in (self.users, self.orders, self.billing)],
                         [0, 0, 0])

    # Host header

    def test_host_header_routes(self):
        resp = self.send("/x", [("Host", "user-service")])
        self.assert_routed(resp, self.users)

    def test_origin_form_target_passes_unchanged(self):
        target = "/a/b%20c/?q=1&r=%2F"
        resp = self.send(target, [("Host", "user-service")])
        self.assert_routed(resp, self.users, target=target)

    def test_host_port_is_ignored(self):
        resp = self.send("/x", [("Host", "user-service:8080")])
        self.assert_routed(resp, self.users)

    def test_host_case_insensitive(self):
        resp = self.send("/x", [("Host", "USER-Service")])
        self.assert_routed(resp, self.users)

    def test_hosts_alias(self):
        resp = self.send("/x", [("Host", "users.internal")])
        self.assert_routed(resp, self.users)

    def test_hosts_alias_case_and_port(self):
        resp = self.send("/x", [("Host", "USER-SERVICE.prod.svc.cluster.LOCAL:443")])
        self.assert_routed(resp, self.users)

    def test_upstream_host_is_first_hosts_entry_without_server_name(self):
        resp = self.send("/x", [("Host", "orders-alias")])
        self.assert_routed(resp, self.orders, host="orders.example")

    def test_upstream_host_is_service_name_without_server_name_or_hosts(self):
        resp = self.send("/x", [("Host", "billing:80")])
        self.assert_routed(resp, self.billing, host="billing")

    def test_upstream_gets_client_certificate_over_tls(self):
        resp = self.send("/x", [("Host", "user-service")])
        self.assert_routed(resp, self.users)
        self.assertEqual(self.users.last.peer_cert["uri_sans"], ["spiffe://test/app"])
        self.assertIn(self.users.last.tls_version, ("TLSv1.2", "TLSv1.3"))

    # absolute form

    def test_absolute_form_overrides_host(self):
        resp = self.send("http://user-service/api/users?id=7", [("Host", "order-service")])
        self.assert_routed(resp, self.users, target="/api/users?id=7")

    def test_absolute_form_scheme_ignored_port_stripped(self):
        resp = self.send("https://Orders.Example:8443/p", [("Host", "billing")])
        self.assert_routed(resp, self.orders, target="/p", host="orders.example")

    def test_absolute_form_empty_path_becomes_slash(self):
        resp = self.send("http://billing", [("Host", "billing")])
        self.assert_routed(resp, self.billing, target="/", host="billing")

    def test_absolute_form_unknown_authority_is_404(self):
        resp = self.send("http://nowhere/x", [("Host", "user-service")])
        self.assert_ferry_error(resp, 404, "UNKNOWN_SERVICE")
        self.assert_nothing_forwarded()

    # listen port

    def test_listen_port_routes_regardless_of_host(self):
        resp = self.send("/x", [("Host", "order-service")], port=self.listen_port)
        self.assert_routed(resp, self.users)

    def test_listen_port_routes_unknown_host(self):
        resp = self.send("/x", [("Host", "127.0.0.1:%d" % self.listen_port)], port=self.listen_port)
        self.assert_routed(resp, self.users)

    def test_listen_port_beats_absolute_form(self):
        resp = self.send("http://billing/x", [("Host", "billing")], port=self.listen_port)
        self.assert_routed(resp, self.users)

    # no route

    def test_unknown_host_is_404_json(self):
        resp = self.send("/x", [("Host", "no-such-service"), ("x-correlation-id", "corr-404")])
        self.assert_ferry_error(resp, 404, "UNKNOWN_SERVICE", correlation_id="corr-404")
        self.assert_nothing_forwarded()

    def test_ferry_own_address_is_not_a_service(self):
        resp = self.send("/x", [("Host", "127.0.0.1:%d" % self.f.outbound_port)])
        self.assert_ferry_error(resp, 404, "UNKNOWN_SERVICE")
        self.assert_nothing_forwarded()

    def test_ipv6_literal_host_no_match(self):
        resp = self.send("/x", [("Host", "[::1]:%d" % self.f.outbound_port)])
        self.assert_ferry_error(resp, 404, "UNKNOWN_SERVICE")

    def test_suffix_or_prefix_is_not_a_match(self):
        for host in ("user-service.evil", "xuser-service", "user"):
            with self.subTest(host=host):
                resp = self.send("/x", [("Host", host)])
                self.assert_ferry_error(resp, 404, "UNKNOWN_SERVICE")
        self.assert_nothing_forwarded()

    def test_http11_without_host_is_400(self):
        resp = self.send("/x", [("Accept", "*/*")])
        self.assert_ferry_error(resp, 400, "BAD_REQUEST")
        self.assert_nothing_forwarded()

    def test_http10_without_host_has_no_route(self):
        resp = self.send("/x", [("Accept", "*/*")], version="HTTP/1.0")
        self.assert_ferry_error(resp, 404, "UNKNOWN_SERVICE")

    def test_http10_without_host_on_listen_port_routes(self):
        resp = self.send("/x", [], port=self.listen_port, version="HTTP/1.0")
        self.assert_routed(resp, self.users)

    def test_connect_is_405(self):
        resp = self.send("user-service:443", [("Host", "user-service:443")], method="CONNECT")
        self.assert_ferry_error(resp, 405, "METHOD_NOT_ALLOWED")
        self.assert_nothing_forwarded()

    def test_keepalive_connection_routes_each_request(self):
        with self.f.client() as c:
            # (the 404 comes last: whether ferry keeps a connection open after
            # its own error responses is not part of the contract)
            for host, upstream in (("user-service", self.users), ("orders.example", self.orders),
                                   ("billing", self.billing), ("user-service", self.users),
                                   ("nope", None)):
                resp = c.request("GET", "/k", [("Host", host)])
                if upstream is None:
                    self.assert_ferry_error(resp, 404, "UNKNOWN_SERVICE")
                else:
                    self.assertEqual(resp.status, 200)
                    self.assertEqual(upstream.last.target, "/k")
        self.assertEqual([len(u.requests) for u in (self.users, self.orders, self.billing)],
                         [2, 1, 1])


if __name__ == "__main__":
    harness.main()
