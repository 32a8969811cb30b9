/*
 * GET /config (SPEC §8): the effective configuration as one JSON object,
 * in the shape of the YAML file (SPEC §3) with every default filled in.
 *
 * The form, one rule per kind of value:
 *   durations	strings in the largest unit that divides them exactly, as
 *		the file would say it: "250ms", "5s", "2m", "1h"; zero is "0s"
 *   sizes	integers of bytes (retries.buffer, max_request_body)
 *   counts	integers; ratios and rates (budget.ratio, rps) numbers
 *   addresses	their text as written ("127.0.0.1:15001", "[::1]:80")
 *   enums	their names in the file ("info", "p2c_ewma", "http1", "1.2")
 *   lists	arrays, [] when empty; retries.on lists its conditions
 *   absent	null for an optional section or value that was not given
 *		(inbound, tls, auth, listen, rate_limit, health_check, srv,
 *		server_name, verify_san, tls cert/key, allowed_peers = any)
 * services is an array of objects, "name" first, in the file's order.
 *
 * Secrets: each loaded key appears only as "<redacted>" beside the name
 * it came from, which is shown (SPEC §8):
 *   service  "auth":{"key_env":"NAME","key":"<redacted>"}
 *            "auth":{"key_file":"/path","key":"<redacted>"}
 *   inbound  "auth":{"keys_env":["A","B"],"keys_file":"/p",
 *                    "keys":["<redacted>","<redacted>",...]}
 *            (one entry per loaded key; keys_env/keys_file only if given)
 * No byte of a key is ever read by this module.
 *
 * The output is compact (no whitespace) and valid UTF-8; on allocation
 * failure OUT->oom is set and the content is incomplete.
 */
#ifndef FERRY_CONFIG_JSON_H
#define FERRY_CONFIG_JSON_H

#include "config.h"
#include "sbuf.h"

void config_to_json(const struct config *c, struct sbuf *out);

#endif
