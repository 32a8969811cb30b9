#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "discovery.h"
#include "log.h"

#define MIN_REFRESH_MS 1000

struct dname;

struct dsvc {
	struct discovery *d;
	size_t index;
	const struct conf_service *conf;
	struct svc_runtime *rt;
	struct dname *names;		/* one per endpoint, or one SRV name */
	size_t n_names;
	/* the set published last, held (runtime.h): for health unwatch, the
	 * admin pages and the next set's carry */
	struct ep_runtime **current;
	size_t n_current;
	struct ep_spec *specs;
	struct outlier_group *outliers;
	bool published;			/* the last set went out */
	/* at a reload, while discovery_start() runs: the predecessor's
	 * service of the same name, whose outlier states carry over */
	const struct dsvc *prev;
};

/* One configured endpoint (or the SRV name) and its last good addresses. */
struct dname {
	struct dsvc *s;
	const struct conf_addr *addr;	/* NULL for SRV */
	struct resolved_addr *addrs;
	size_t n;
	bool answered;			/* looked up once (answer or failure) */
	struct resolver_query *q;
	struct event *timer;
	struct log_limit fail_limit;
};

struct discovery {
	struct event_base *base;
	const struct config *conf;
	struct runtime *rt;
	struct resolver *res;
	struct health *health;
	discovery_publish_fn publish;
	void *arg;
	struct dsvc *svcs;
	size_t n_svcs;
	size_t pending;			/* names not answered once yet */
	/* the tracing collector's name: the lookup under way, and the
	 * timer of the next */
	struct resolver_query *collector_q;
	struct event *collector_retry;
	struct log_limit collector_limit;
};

static void lookup_start(struct dname *dn);

/* The name SNI and certificate checks use for an SRV target: the record
 * name without its _service._proto labels. */
static const char *
srv_host(const char *srv)
{
	const char *p = srv;

	for (int i = 0; i < 2 && *p == '_'; i++) {
		const char *dot = strchr(p, '.');

		if (dot == NULL)
			break;
		p = dot + 1;
	}
	return p;
}

static bool
spec_dup(const struct ep_spec *items, size_t n, const struct resolved_addr *a)
{
	for (size_t i = 0; i < n; i++)
		if (items[i].salen == a->salen && memcmp(&items[i].sa, &a->sa, a->salen) == 0)
			return true;
	return false;
}

/* The endpoint published as RT, or NULL. */
static const struct ep_spec *
spec_of(const struct dsvc *s, const struct ep_runtime *rt)
{
	for (size_t k = 0; s->specs != NULL && k < s->n_current; k++)
		if (s->specs[k].rt == rt)
			return &s->specs[k];
	return NULL;
}

/* The same endpoints with the same weights as the set last published, in
 * any order: round-robin DNS answers the same records in a new order each
 * time, and each publication is work for every worker and an outlier
 * group kept until exit. (SET's addresses are distinct.) */
static bool
same_as_current(const struct dsvc *s, const struct ep_set *set)
{
	if (set->n != s->n_current)
		return false;
	for (size_t i = 0; i < set->n; i++) {
		const struct ep_spec *was = spec_of(s, set->items[i].rt);

		if (was == NULL || was->weight != set->items[i].weight)
			return false;
	}
	return true;
}

/* Every name of S has answered (or failed) once. */
static bool
all_answered(const struct dsvc *s)
{
	for (size_t i = 0; i < s->n_names; i++)
		if (!s->names[i].answered)
			return false;
	return true;
}

/* Outlier detection is per endpoint for the whole process (SPEC §6): an
 * endpoint that stays takes its state into the new set's group, from the
 * set published before or, at a reload, from the predecessor's. */
static void
outliers_carry(const struct dsvc *s, struct ep_set *set)
{
	const struct dsvc *from = s->specs != NULL ? s : s->prev;
	int64_t now = clock_now_ms();

	for (size_t i = 0; from != NULL && i < set->n; i++) {
		const struct ep_spec *was = spec_of(from, set->items[i].rt);

		if (was != NULL && was->outlier != NULL)
			outlier_carry(set->outliers, set->items[i].outlier, was->outlier,
			    &s->conf->outlier, now);
	}
}

/* Lets go of the set published last. */
static void
current_release(struct dsvc *s)
{
	for (size_t i = 0; i < s->n_current; i++)
		ep_runtime_unref(s->current[i]);
	if (s->outliers != NULL)
		outlier_group_unref(s->outliers);
	free(s->current);
	free(s->specs);
	s->current = NULL;
	s->specs = NULL;
	s->outliers = NULL;
	s->n_current = 0;
}

/* Builds the service's address set from every name's last good answer and
 * publishes it when it changed. */
static void
publish(struct dsvc *s)
{
	struct discovery *d = s->d;
	const struct conf_service *c = s->conf;
	struct ep_set *set;
	struct ep_runtime **current;
	size_t total = 0, n = 0;

	for (size_t i = 0; i < s->n_names; i++)
		total += s->names[i].n;
	set = calloc(1, sizeof(*set) + (total ? total : 1) * sizeof(set->items[0]));
	if (set == NULL)
		return;
	for (size_t i = 0; i < s->n_names; i++) {
		struct dname *dn = &s->names[i];

		for (size_t j = 0; j < dn->n; j++) {
			struct ep_spec *sp = &set->items[n];

			if (spec_dup(set->items, n, &dn->addrs[j]))
				continue;
			memcpy(&sp->sa, &dn->addrs[j].sa, dn->addrs[j].salen);
			sp->salen = dn->addrs[j].salen;
			snprintf(sp->text, sizeof(sp->text), "%s", dn->addrs[j].text);
			snprintf(sp->host, sizeof(sp->host), "%s",
			    dn->addr ? dn->addr->host : srv_host(c->srv));
			sp->host_is_ip = dn->addr && dn->addr->is_ip;
			sp->weight = dn->addrs[j].weight;
			if ((sp->rt = runtime_endpoint(s->rt, sp->text)) == NULL)
				goto out;
			n++;
		}
	}
	set->n = n;
	set->service = s->index;
	set->conf = d->conf;
	/* a first set goes out even empty once every name has answered: after
	 * a reload the workers hold the old config's endpoints until it does */
	if (same_as_current(s, set) && (s->published || !all_answered(s)))
		goto out;
	if ((set->outliers = runtime_outlier_group(d->rt, n)) == NULL ||
	    (current = calloc(n ? n : 1, sizeof(*current))) == NULL)
		goto out;
	for (size_t i = 0; i < n; i++) {
		set->items[i].outlier = outlier_get(set->outliers, i);
		current[i] = set->items[i].rt;
	}
	outliers_carry(s, set);
	/* health checks follow the set */
	if (c->health_check.enabled && d->health) {
		for (size_t i = 0; i < s->n_current; i++) {
			bool kept = false;

			for (size_t j = 0; j < n && !kept; j++)
				kept = current[j] == s->current[i];
			if (!kept)
				health_unwatch(d->health, s->current[i]);
		}
		for (size_t i = 0; i < n; i++)
			health_watch(d->health, c, set->items[i].rt,
			    (struct sockaddr *)&set->items[i].sa, set->items[i].salen,
			    set->items[i].text, set->items[i].host);
	}
	for (size_t i = 0; i < n; i++)
		ep_runtime_ref(current[i]);
	outlier_group_ref(set->outliers);
	current_release(s);
	s->current = current;
	s->n_current = n;
	if ((s->specs = malloc((n ? n : 1) * sizeof(*s->specs))) != NULL)
		memcpy(s->specs, set->items, n * sizeof(*s->specs));
	s->outliers = set->outliers;
	log_info("endpoints service=%s count=%zu", c->name, n);
	s->published = d->publish(d->arg, set);
out:
	free(set);
}

static void
refresh_due(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	lookup_start(arg);
}

static void
schedule(struct dname *dn, uint32_t ttl)
{
	int64_t ms = dn->s->conf->dns_refresh;
	struct timeval tv;

	if (ttl != RESOLVER_TTL_NONE && (int64_t)ttl * 1000 < ms)
		ms = (int64_t)ttl * 1000;
	if (ms < MIN_REFRESH_MS)
		ms = MIN_REFRESH_MS;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	event_add(dn->timer, &tv);
}

static void
lookup_done(void *arg, int err, const char *errtext, const struct resolved_addr *addrs,
    size_t n, uint32_t ttl)
{
	struct dname *dn = arg;
	struct dsvc *s = dn->s;
	const char *name = dn->addr ? dn->addr->text : s->conf->srv;
	uint32_t skipped;

	dn->q = NULL;
	if (err != 0) {
		/* a failed lookup keeps the last good set; TTL is only when to
		 * ask again (an NXDOMAIN's negative TTL) */
		if (log_ratelimit(&dn->fail_limit, clock_now_ms(), 60000, &skipped))
			log_warn("resolve failed service=%s name=%s cause=\"%s\" kept=%zu suppressed=%u",
			    s->conf->name, name, errtext ? errtext : "error", dn->n, skipped);
	} else {
		struct resolved_addr *copy = calloc(n ? n : 1, sizeof(*copy));

		if (copy != NULL) {
			if (n > 0)	/* ADDRS is NULL when there are none */
				memcpy(copy, addrs, n * sizeof(*copy));
			free(dn->addrs);
			dn->addrs = copy;
			dn->n = n;
		}
	}
	if (!dn->answered) {
		dn->answered = true;
		s->d->pending--;
	}
	publish(s);
	/* nothing known yet, and the DNS did not say how long that holds:
	 * try again soon rather than at dns_refresh */
	if (err != 0 && dn->n == 0 && ttl == RESOLVER_TTL_NONE)
		ttl = MIN_REFRESH_MS / 1000;
	schedule(dn, ttl);
}

static void
lookup_start(struct dname *dn)
{
	struct resolver *r = dn->s->d->res;

	if (dn->q != NULL)
		return;
	dn->q = dn->addr ? resolver_lookup(r, dn->addr->host, dn->addr->port, lookup_done, dn) :
	    resolver_lookup_srv(r, dn->s->conf->srv, lookup_done, dn);
}

struct discovery *
discovery_new(struct event_base *base, struct runtime *rt, struct resolver *res,
    struct health *health, discovery_publish_fn publish_fn, void *arg)
{
	struct discovery *d = calloc(1, sizeof(*d));

	if (d == NULL)
		return NULL;
	d->base = base;
	d->rt = rt;
	d->res = res;
	d->health = health;
	d->publish = publish_fn;
	d->arg = arg;
	return d;
}

static int
dname_init(struct dsvc *s, struct dname *dn, const struct conf_addr *a)
{
	dn->s = s;
	dn->addr = a;
	if ((dn->timer = evtimer_new(s->d->base, refresh_due, dn)) == NULL)
		return -1;
	if (a && a->is_ip) {
		/* known at once: no lookup, no refresh */
		if ((dn->addrs = calloc(1, sizeof(*dn->addrs))) == NULL)
			return -1;
		memcpy(&dn->addrs[0].sa, &a->sa, a->salen);
		dn->addrs[0].salen = a->salen;
		dn->addrs[0].weight = 1;
		snprintf(dn->addrs[0].text, sizeof(dn->addrs[0].text), "%s", a->text);
		dn->n = 1;
		dn->answered = true;
	} else {
		s->d->pending++;
	}
	return 0;
}

/* A reload keeps what the previous discovery knew of the same name, so
 * no service loses its endpoints while its names are looked up again. */
static void
seed(struct dname *dn, const struct discovery *prev)
{
	const char *svc = dn->s->conf->name;

	for (size_t i = 0; prev && i < prev->n_svcs; i++) {
		const struct dsvc *ps = &prev->svcs[i];

		if (strcmp(ps->conf->name, svc) != 0)
			continue;
		for (size_t j = 0; j < ps->n_names; j++) {
			const struct dname *pn = &ps->names[j];
			bool same = dn->addr ? pn->addr && strcmp(pn->addr->text, dn->addr->text) == 0 :
			    pn->addr == NULL && ps->conf->srv && dn->s->conf->srv &&
			    strcmp(ps->conf->srv, dn->s->conf->srv) == 0;

			if (!same || !pn->answered || pn->n == 0)
				continue;
			if ((dn->addrs = calloc(pn->n, sizeof(*dn->addrs))) == NULL)
				return;
			memcpy(dn->addrs, pn->addrs, pn->n * sizeof(*dn->addrs));
			dn->n = pn->n;
			dn->answered = true;
			dn->s->d->pending--;
			return;
		}
	}
}

static const struct dsvc *
predecessor(const struct discovery *prev, const char *name)
{
	for (size_t i = 0; prev != NULL && i < prev->n_svcs; i++)
		if (strcmp(prev->svcs[i].conf->name, name) == 0)
			return &prev->svcs[i];
	return NULL;
}

/* ------------------------------------------- the tracing collector ---- */

#define COLLECTOR_RETRY_MS	5000
/* its name is looked up again as its TTL says, within these (a service's
 * names: dns_refresh's default, and once a second at most) */
#define COLLECTOR_REFRESH_MIN_MS	1000
#define COLLECTOR_REFRESH_MAX_MS	30000

static void collector_lookup(struct discovery *d);

/* The answer's address to use: the one in use while the answer still
 * has it (round-robin DNS reorders answers: no move for that), else its
 * first. */
static const struct resolved_addr *
collector_pick(struct conf_collector *a, const struct resolved_addr *addrs, size_t n)
{
	struct sockaddr_storage cur;
	socklen_t len;
	uint32_t moves;

	if (collector_addr_get(a, &cur, &len, &moves))
		for (size_t i = 0; i < n; i++)
			if (addrs[i].salen == len && memcmp(&addrs[i].sa, &cur, len) == 0)
				return &addrs[i];
	return &addrs[0];
}

static void
collector_answer(void *arg, int err, const char *errtext, const struct resolved_addr *addrs,
    size_t n, uint32_t ttl)
{
	struct discovery *d = arg;
	struct conf_collector *a = d->conf->tracing.addr;
	const struct resolved_addr *r;
	uint32_t suppressed;
	int64_t ms = COLLECTOR_RETRY_MS;
	struct timeval tv;
	bool known = atomic_load_explicit(&a->ready, memory_order_relaxed);

	d->collector_q = NULL;
	if (err == 0 && n > 0) {
		r = collector_pick(a, addrs, n);
		if (collector_addr_set(a, (const struct sockaddr *)&r->sa, r->salen))
			log_info("tracing.otlp: %s is %s%s", d->conf->tracing.host, r->text,
			    known ? " now" : "");
		ms = (int64_t)ttl * 1000;
		ms = ms < COLLECTOR_REFRESH_MIN_MS ? COLLECTOR_REFRESH_MIN_MS :
		    ms > COLLECTOR_REFRESH_MAX_MS ? COLLECTOR_REFRESH_MAX_MS : ms;
	} else if (log_ratelimit(&d->collector_limit, clock_now_ms(), 60000, &suppressed)) {
		if (known)
			log_warn("tracing.otlp: cannot resolve %s: %s; spans go on to the "
			    "address it had; trying again every %ds", d->conf->tracing.host,
			    err ? errtext : "no address", COLLECTOR_RETRY_MS / 1000);
		else
			log_warn("tracing.otlp: cannot resolve %s: %s; spans are dropped "
			    "(export_failed) until it does; trying again every %ds",
			    d->conf->tracing.host, err ? errtext : "no address",
			    COLLECTOR_RETRY_MS / 1000);
	}
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	if (d->collector_retry != NULL)
		evtimer_add(d->collector_retry, &tv);
}

static void
collector_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	collector_lookup(arg);
}

static void
collector_lookup(struct discovery *d)
{
	const struct conf_tracing *t = &d->conf->tracing;
	struct timeval tv = { COLLECTOR_RETRY_MS / 1000, 0 };

	if (d->collector_q != NULL)
		return;
	d->collector_q = resolver_lookup(d->res, t->host, t->port, collector_answer, d);
	/* no lookup (out of memory) means no answer to set the next one */
	if (d->collector_q == NULL && d->collector_retry != NULL)
		evtimer_add(d->collector_retry, &tv);
}

/* The collector's name is looked up here, not by the loader: on the main
 * thread, DNS that does not answer held it (admin, signals, watchdog) for
 * as long as getaddrinfo waited, at each reload. A reload that keeps the
 * name starts with the address PREV knew, and looks it up again. Not
 * part of discovery_ready: tracing is no reason to refuse traffic. */
static int
collector_start(struct discovery *d, const struct discovery *prev)
{
	const struct conf_tracing *t = &d->conf->tracing;
	const struct conf_tracing *pt = prev ? &prev->conf->tracing : NULL;
	struct sockaddr_storage sa;
	socklen_t salen;
	uint32_t moves;

	/* an IP literal is known from the load, and never moves */
	if (!t->enabled || t->addr == NULL ||
	    atomic_load_explicit(&t->addr->ready, memory_order_relaxed))
		return 0;
	if (pt != NULL && pt->enabled && pt->addr != NULL && pt->port == t->port &&
	    strcmp(pt->host, t->host) == 0 && collector_addr_get(pt->addr, &sa, &salen, &moves))
		collector_addr_set(t->addr, (const struct sockaddr *)&sa, salen);
	if ((d->collector_retry = evtimer_new(d->base, collector_retry, d)) == NULL)
		return -1;
	collector_lookup(d);
	return 0;
}

/* ------------------------------------------------------------ start ---- */

int
discovery_start(struct discovery *d, const struct config *conf, const struct discovery *prev)
{
	d->conf = conf;
	if (collector_start(d, prev) != 0)
		return -1;
	/* counts are set once what they count exists: discovery_free walks
	 * them after a failure here */
	if ((d->svcs = calloc(conf->n_services ? conf->n_services : 1, sizeof(*d->svcs))) == NULL)
		return -1;
	d->n_svcs = conf->n_services;
	for (size_t i = 0; i < d->n_svcs; i++) {
		struct dsvc *s = &d->svcs[i];
		const struct conf_service *c = &conf->services[i];

		s->d = d;
		s->index = i;
		s->conf = c;
		s->prev = predecessor(prev, c->name);
		if ((s->rt = runtime_service(d->rt, c)) == NULL)
			return -1;
		if ((s->names = calloc(c->srv ? 1 : c->n_endpoints ? c->n_endpoints : 1,
		    sizeof(*s->names))) == NULL)
			return -1;
		s->n_names = c->srv ? 1 : c->n_endpoints;
		for (size_t j = 0; j < s->n_names; j++) {
			if (dname_init(s, &s->names[j], c->srv ? NULL : &c->endpoints[j]) != 0)
				return -1;
			if (!s->names[j].answered)
				seed(&s->names[j], prev);
		}
		publish(s);
		s->prev = NULL;		/* PREV goes after this call */
	}
	for (size_t i = 0; i < d->n_svcs; i++)
		for (size_t j = 0; j < d->svcs[i].n_names; j++) {
			struct dname *dn = &d->svcs[i].names[j];

			if (dn->addr == NULL || !dn->addr->is_ip)
				lookup_start(dn);
		}
	return 0;
}

bool
discovery_ready(const struct discovery *d)
{
	return d->pending == 0;
}

static bool
watched_by(const struct discovery *d, const struct ep_runtime *e)
{
	for (size_t i = 0; d && i < d->n_svcs; i++)
		for (size_t j = 0; j < d->svcs[i].n_current; j++)
			if (d->svcs[i].current[j] == e && d->svcs[i].conf->health_check.enabled)
				return true;
	return false;
}

void
discovery_free(struct discovery *d, const struct discovery *successor)
{
	if (d == NULL)
		return;
	if (d->collector_q)
		resolver_cancel(d->collector_q);
	if (d->collector_retry)
		event_free(d->collector_retry);
	for (size_t i = 0; i < d->n_svcs; i++) {
		struct dsvc *s = &d->svcs[i];

		for (size_t j = 0; j < s->n_names; j++) {
			struct dname *dn = &s->names[j];

			if (dn->q)
				resolver_cancel(dn->q);
			if (dn->timer)
				event_free(dn->timer);
			free(dn->addrs);
		}
		/* what the successor watches stays watched, with its state (no
		 * conf: discovery_start failed before this service) */
		if (s->conf != NULL && s->conf->health_check.enabled && d->health)
			for (size_t j = 0; j < s->n_current; j++)
				if (!watched_by(successor, s->current[j]))
					health_unwatch(d->health, s->current[j]);
		free(s->names);
		current_release(s);
	}
	free(d->svcs);
	free(d);
}

void
discovery_rewatch(struct discovery *d)
{
	for (size_t i = 0; d != NULL && d->health != NULL && i < d->n_svcs; i++) {
		const struct dsvc *s = &d->svcs[i];

		for (size_t j = 0; s->specs != NULL && j < s->n_current; j++)
			health_watch(d->health, s->conf, s->specs[j].rt,
			    (const struct sockaddr *)&s->specs[j].sa, s->specs[j].salen,
			    s->specs[j].text, s->specs[j].host);
	}
}

size_t
discovery_current(const struct discovery *d, size_t service, const struct ep_spec **specs,
    struct outlier_group **outliers)
{
	const struct dsvc *s;

	if (service >= d->n_svcs || d->svcs[service].specs == NULL) {
		*specs = NULL;
		*outliers = NULL;
		return 0;
	}
	s = &d->svcs[service];
	*specs = s->specs;
	*outliers = s->outliers;
	return s->n_current;
}
