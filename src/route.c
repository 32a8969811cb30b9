#include "headers.h"
#include "route.h"

long
route_by_host(const struct config *conf, const char *host, size_t len)
{
	const struct conf_service *s = config_service_by_name(conf, host, len);

	return s ? (long)(s - conf->services) : -1;
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
