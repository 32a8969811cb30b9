#include <sys/socket.h>

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "resolver_priv.h"

void
resolver_format_addr(const struct sockaddr *sa, char *out, size_t cap)
{
	char ip[INET6_ADDRSTRLEN];

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;

		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
		snprintf(out, cap, "%s:%u", ip, ntohs(s4->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;

		inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
		if (s6->sin6_scope_id != 0)
			snprintf(out, cap, "[%s%%%u]:%u", ip, s6->sin6_scope_id,
			    ntohs(s6->sin6_port));
		else
			snprintf(out, cap, "[%s]:%u", ip, ntohs(s6->sin6_port));
	} else {
		snprintf(out, cap, "?");
	}
}

int
resolver_parse_ip(const char *host, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	char buf[INET6_ADDRSTRLEN + IF_NAMESIZE + 4], *pct;
	size_t hl = strlen(host);

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		*len = sizeof(*s4);
		return 0;
	}
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
		host++;
		hl -= 2;
	}
	if (hl >= sizeof(buf))
		return -1;
	memcpy(buf, host, hl);
	buf[hl] = '\0';
	if ((pct = strchr(buf, '%')) != NULL)
		*pct++ = '\0';
	if (inet_pton(AF_INET6, buf, &s6->sin6_addr) != 1)
		return -1;
	if (pct != NULL) {
		char *end;
		unsigned long id = strtoul(pct, &end, 10);

		if (*pct == '\0' || *end != '\0')
			id = if_nametoindex(pct);
		if (id == 0 || id > UINT32_MAX)
			return -1;
		s6->sin6_scope_id = (uint32_t)id;
	}
	s6->sin6_family = AF_INET6;
	s6->sin6_port = htons(port);
	*len = sizeof(*s6);
	return 0;
}

bool
resolver_is_localhost(const char *name)
{
	size_t l = strlen(name);

	if (l > 0 && name[l - 1] == '.')
		l--;
	return (l == 9 && strncasecmp(name, "localhost", 9) == 0) ||
	    (l > 10 && strncasecmp(name + l - 10, ".localhost", 10) == 0);
}

int
addrset_add(struct addrset *s, const struct sockaddr_storage *ss, socklen_t len,
    uint16_t weight)
{
	struct resolved_addr *ra;

	for (size_t i = 0; i < s->n; i++)
		if (s->a[i].salen == len && memcmp(&s->a[i].sa, ss, len) == 0)
			return 0;
	if (s->n >= RESOLVER_MAX_ADDRS)
		return 0;
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 4;

		if ((ra = reallocarray(s->a, cap, sizeof(*ra))) == NULL)
			return -1;
		s->a = ra;
		s->cap = cap;
	}
	ra = &s->a[s->n++];
	memset(ra, 0, sizeof(*ra));
	memcpy(&ra->sa, ss, len);
	ra->salen = len;
	ra->weight = weight;
	resolver_format_addr((const struct sockaddr *)ss, ra->text, sizeof(ra->text));
	return 0;
}

int
resolver_read_resolv_conf(const char *path, struct sockaddr_storage *out,
    socklen_t *lens, size_t max)
{
	char line[512], *kw, *val, *save;
	size_t n = 0;
	FILE *f;

	if ((f = fopen(path, "re")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, "#;")] = '\0';
		if ((kw = strtok_r(line, " \t\r\n", &save)) == NULL ||
		    strcmp(kw, "nameserver") != 0 ||
		    (val = strtok_r(NULL, " \t\r\n", &save)) == NULL)
			continue;		/* search, domain, options: ignored */
		if (n < max && resolver_parse_ip(val, 53, &out[n], &lens[n]) == 0)
			n++;
	}
	fclose(f);
	return (int)n;
}

