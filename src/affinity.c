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

bool
affinity_watch_sample(struct affinity_watch *w, uint64_t run_ns, uint64_t wait_ns,
    uint64_t runs, struct affinity_work work)
{
	uint64_t d_run = run_ns - w->run_ns, d_wait = wait_ns - w->wait_ns;
	uint64_t d_runs = runs - w->runs;
	/* the worker's own counters: they only grow */
	uint64_t d_h1 = work.h1_requests - w->work.h1_requests;
	uint64_t d_h2 = work.h2_streams - w->work.h2_streams;
	bool first = !w->sampled, argues;

	w->run_ns = run_ns;
	w->wait_ns = wait_ns;
	w->runs = runs;
	w->work = work;
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
		    d_wait >= d_runs * AFFINITY_LOOSE_US * 1000 && d_h2 > 0 && d_h2 >= d_h1;
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
