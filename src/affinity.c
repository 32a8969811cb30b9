#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "affinity.h"

int
affinity_cpu(const cpu_set_t *allowed, unsigned n_workers, unsigned worker)
{
	unsigned seen = 0;

	if (worker >= n_workers || (unsigned)CPU_COUNT(allowed) != n_workers)
		return -1;
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
		if (CPU_ISSET(cpu, allowed) && seen++ == worker)
			return cpu;
	return -1;
}

/* How much of the time since the last sample the other CPUs idled, in
 * percent, or -1: not known. Keeps OTHERS for the next. */
static int
others_idle_pct(struct affinity_watch *w, const struct cpu_ticks *others)
{
	struct cpu_ticks last = w->others;
	bool known = w->others_known;
	uint64_t d_idle, d_all;

	w->others_known = others != NULL;
	if (others == NULL)
		return -1;
	w->others = *others;
	if (!known || others->all <= last.all || others->idle < last.idle)
		return -1;
	d_idle = others->idle - last.idle;
	d_all = others->all - last.all;
	if (d_idle > d_all || d_all > UINT64_MAX / 100)
		return -1;
	return (int)(d_idle * 100 / d_all);
}

bool
affinity_watch_sample(struct affinity_watch *w, uint64_t run_ns, uint64_t wait_ns,
    uint64_t runs, const struct cpu_ticks *others)
{
	uint64_t d_run = run_ns - w->run_ns, d_wait = wait_ns - w->wait_ns;
	uint64_t d_runs = runs - w->runs;
	int idle_pct = others_idle_pct(w, others);
	bool first = !w->sampled, argues;

	w->run_ns = run_ns;
	w->wait_ns = wait_ns;
	w->runs = runs;
	w->sampled = true;
	/* counters that went back (another thread's) start over */
	if (first || d_runs < AFFINITY_MIN_RUNS || d_runs > runs || d_run > run_ns ||
	    d_wait > wait_ns) {
		w->streak = 0;
		return false;
	}
	if (w->loose)
		argues = d_run <= d_runs * AFFINITY_BIND_US * 1000;
	else
		argues = d_run >= d_runs * AFFINITY_LOOSE_US * 1000 &&
		    d_wait >= d_runs * AFFINITY_LOOSE_US * 1000 &&
		    idle_pct >= AFFINITY_LOOSE_IDLE_PCT;
	if (!argues) {
		w->streak = 0;
		return false;
	}
	if (++w->streak < (w->loose ? AFFINITY_BIND_AFTER : AFFINITY_LOOSE_AFTER))
		return false;
	w->loose = !w->loose;
	w->streak = 0;
	return true;
}

/* Reads the next number of a /proc/stat line at *P into *V; false at its
 * end or at anything but digits. */
static bool
next_ticks(const char **p, unsigned long long *v)
{
	char *end;

	while (**p == ' ')
		(*p)++;
	if (!isdigit((unsigned char)**p))
		return false;
	*v = strtoull(*p, &end, 10);
	*p = end;
	return true;
}

bool
affinity_cpu_ticks(const char *stat, const cpu_set_t *set, struct cpu_ticks *sum)
{
	int found = 0;

	*sum = (struct cpu_ticks){ 0 };
	/* a line counts only whole: a short read may have cut the last one */
	for (const char *line = stat, *nl; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
		/* user nice system idle iowait irq softirq steal: guest time
		 * after them is already in user and nice */
		unsigned long long cpu, t[8];
		const char *p = line + 3;
		int n = 0;

		if (strncmp(line, "cpu", 3) != 0 || !isdigit((unsigned char)line[3]) ||
		    !next_ticks(&p, &cpu) || p[0] != ' ' ||
		    cpu >= CPU_SETSIZE || !CPU_ISSET((int)cpu, set))
			continue;
		while (n < 8 && p < nl && next_ticks(&p, &t[n]))
			n++;
		if (n < 5)
			continue;
		sum->idle += t[3] + t[4];
		while (n-- > 0)
			sum->all += t[n];
		found++;
	}
	return found == CPU_COUNT(set);
}
