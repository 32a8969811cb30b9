/*
 * Unit tests for src/route.c (SPEC 4): absolute-form authority, then Host;
 * names and hosts aliases compare case-insensitively, port removed.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "config.h"
#include "headers.h"
#include "http1.h"
#include "route.h"

static char *user_hosts[] = { "users.internal", "Users.Example.COM" };
static char *orders_hosts[] = { "orders.svc.cluster.local" };
static char *local_hosts[] = { "::1", "127.0.0.1" };

static struct conf_service services[] = {
	{ .name = "user-service", .hosts = user_hosts, .n_hosts = 2 },
	{ .name = "billing" },
	{ .name = "Orders", .hosts = orders_hosts, .n_hosts = 1 },
	{ .name = "local", .hosts = local_hosts, .n_hosts = 2 },
};

static struct config conf = {
	.services = services,
	.n_services = sizeof(services) / sizeof(services[0]),
};

static struct http_parser hp;
static struct http_head head;

static long
by_host(const char *s)
{
	return route_by_host(&conf, s, strlen(s));
}

static long
route(const char *msg)
{
	size_t used;
	enum http_status st;

	http_parser_init(&hp, false, &head);
	st = http_parse(&hp, msg, strlen(msg), 0, &used);
	ck_assert_msg(st == HTTP_HEAD_DONE, "parse: status %d (%s)", st,
	    hp.err_text ? hp.err_text : "");
	ck_assert_int_eq(headers_classify(msg, &head), 0);
	return route_request(&conf, msg, &head);
}

struct host_case {
	const char *host;
	long want;
};

static const struct host_case host_cases[] = {
	{ "user-service", 0 },
	{ "USER-SERVICE", 0 },
	{ "User-Service:8080", 0 },
	{ "users.internal", 0 },
	{ "USERS.example.com:80", 0 },
	{ "users.internal.", 0 },
	{ "billing", 1 },
	{ "billing:80", 1 },
	{ "billing.", 1 },
	{ "billing.:8080", 1 },
	{ "orders", 2 },
	{ "ORDERS:1", 2 },
	{ "orders.svc.cluster.local", 2 },
	{ "[::1]:15001", 3 },
	{ "[::1]", 3 },
	{ "127.0.0.1:80", 3 },
	{ "unknown", -1 },
	{ "unknown:80", -1 },
	{ "", -1 },
	{ ":80", -1 },
	{ ".", -1 },
	{ "billing..", -1 },
	{ "billin", -1 },
	{ "billingx", -1 },
	{ "user", -1 },
	{ "user-service-x", -1 },
	{ "users", -1 },
	{ "[::2]:80", -1 },
	{ "[]", -1 },
};

START_TEST(test_by_host)
{
	const struct host_case *c = &host_cases[_i];

	ck_assert_msg(by_host(c->host) == c->want, "\"%s\": %ld, want %ld", c->host,
	    by_host(c->host), c->want);
}
END_TEST

START_TEST(test_by_host_length)
{
	/* only LEN bytes count */
	ck_assert_int_eq(route_by_host(&conf, "billingXYZ", 7), 1);
	ck_assert_int_eq(route_by_host(&conf, "billing", 6), -1);
	ck_assert_int_eq(route_by_host(&conf, "billing", 0), -1);
}
END_TEST

START_TEST(test_by_host_empty_config)
{
	struct config empty = { .services = NULL, .n_services = 0 };

	ck_assert_int_eq(route_by_host(&empty, "billing", 7), -1);
}
END_TEST

START_TEST(test_request_host)
{
	ck_assert_int_eq(route("GET / HTTP/1.1\r\nHost: billing\r\n\r\n"), 1);
	ck_assert_int_eq(route("GET /x HTTP/1.1\r\nhost: USERS.INTERNAL:8080\r\n\r\n"), 0);
	ck_assert_int_eq(route("GET / HTTP/1.1\r\nX-A: b\r\nHOST: orders\r\n\r\n"), 2);
	ck_assert_int_eq(route("GET / HTTP/1.1\r\nHost: user-service.\r\n\r\n"), 0);
	ck_assert_int_eq(route("GET / HTTP/1.1\r\nHost: [::1]:15001\r\n\r\n"), 3);
	ck_assert_int_eq(route("GET / HTTP/1.1\r\nHost: nobody\r\n\r\n"), -1);
	ck_assert_int_eq(route("GET / HTTP/1.1\r\nHost:\r\n\r\n"), -1);
}
END_TEST

START_TEST(test_request_no_host)
{
	ck_assert_int_eq(route("GET / HTTP/1.1\r\nX-Host: billing\r\n\r\n"), -1);
	ck_assert_int_eq(route("GET / HTTP/1.0\r\n\r\n"), -1);
	/* the path never routes */
	ck_assert_int_eq(route("GET /billing HTTP/1.1\r\n\r\n"), -1);
}
END_TEST

START_TEST(test_request_absolute_form)
{
	/* the authority decides and overrides Host */
	ck_assert_int_eq(route("GET http://billing/api HTTP/1.1\r\nHost: user-service\r\n\r\n"), 1);
	ck_assert_int_eq(route(
	    "GET http://Users.Internal:8080/x?y HTTP/1.1\r\nHost: billing\r\n\r\n"), 0);
	ck_assert_int_eq(route("GET https://user:pw@orders/ HTTP/1.1\r\nHost: billing\r\n\r\n"), 2);
	ck_assert_int_eq(route("GET http://billing HTTP/1.1\r\n\r\n"), 1);
	ck_assert_int_eq(route("GET http://billing?q=1 HTTP/1.1\r\n\r\n"), 1);
	ck_assert_int_eq(route("GET http://billing.:80/ HTTP/1.1\r\n\r\n"), 1);
	ck_assert_int_eq(route("GET http://[::1]:15001/ HTTP/1.1\r\n\r\n"), 3);
	/* an unknown authority does not fall back to Host */
	ck_assert_int_eq(route("GET http://nobody/api HTTP/1.1\r\nHost: billing\r\n\r\n"), -1);
	/* a URL in the query of an origin-form target is not an authority */
	ck_assert_int_eq(route("GET /r?to=http://billing/ HTTP/1.1\r\nHost: orders\r\n\r\n"), 2);
}
END_TEST

/* A field value excludes trailing whitespace (RFC 9110 5.5): "Host: billing "
 * names the service billing. */
START_TEST(test_request_host_ows)
{
	ck_assert_int_eq(route("GET / HTTP/1.1\r\nHost:   billing\r\n\r\n"), 1);
	ck_assert_int_eq(route("GET / HTTP/1.1\r\nHost: billing \r\n\r\n"), 1);
	ck_assert_int_eq(route("GET / HTTP/1.1\r\nHost: billing\t\r\n\r\n"), 1);
}
END_TEST

static Suite *
route_suite(void)
{
	Suite *s = suite_create("route");
	TCase *tc = tcase_create("core");

	tcase_add_loop_test(tc, test_by_host, 0, sizeof(host_cases) / sizeof(host_cases[0]));
	tcase_add_test(tc, test_by_host_length);
	tcase_add_test(tc, test_by_host_empty_config);
	tcase_add_test(tc, test_request_host);
	tcase_add_test(tc, test_request_no_host);
	tcase_add_test(tc, test_request_absolute_form);
	tcase_add_test(tc, test_request_host_ows);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(route_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
