#include <strings.h>

#include "headers.h"
#include "route.h"

static bool
name_eq(const char *a, size_t alen, const char *b)
{
	return strlen(b) == alen && strncasecmp(a, b, alen) == 0;
}

long
route_by_host(const struct config *conf, const char *host, size_t len)
{
	const char *name;
	size_t nlen;

	host_strip_port(host, len, &name, &nlen);
	/* a fully qualified name may end with a dot */
	if (nlen > 1 && name[nlen - 1] == '.')
		nlen--;
	if (nlen == 0)
		return -1;
	for (size_t i = 0; i < conf->n_services; i++) {
		const struct conf_service *s = &conf->services[i];

		if (name_eq(name, nlen, s->name))
			return (long)i;
		for (size_t j = 0; j < s->n_hosts; j++)
			if (name_eq(name, nlen, s->hosts[j]))
				return (long)i;
	}
	return -1;
}

long
route_request(const struct config *conf, const char *msg, const struct http_head *h)
{
	const char *path, *auth;
	size_t path_len, auth_len;
	const struct http_header *host;

	target_split(msg + h->target.off, h->target.len, &path, &path_len, &auth, &auth_len);
	if (auth)
		return route_by_host(conf, auth, auth_len);
	if ((host = headers_find(h, HDR_HOST)) == NULL)
		return -1;
	return route_by_host(conf, msg + host->value.off, host->value.len);
}
