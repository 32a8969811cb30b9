/*
 * GET / (SPEC §8): the self-contained HTML status page, src/status_page.html,
 * embedded at build time by tools/embed.py. It refreshes itself every 2 s
 * from /services and /metrics (relative URLs, so it must be served at "/").
 */
#ifndef FERRY_STATUS_PAGE_H
#define FERRY_STATUS_PAGE_H

#include <stddef.h>

extern const char status_page_html[];		/* NUL-terminated */
extern const size_t status_page_html_len;	/* without the NUL */

#endif
