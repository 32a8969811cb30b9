/*
 * Which CPU a worker is bound to (ferry.yaml(5) "cpu_affinity: auto").
 * Bound, a worker keeps its caches and its connections' socket state on
 * one CPU instead of being moved by the scheduler: on the bench's two
 * CPUs at 16 KiB, 3-8 % less CPU a request and 5-10 % more requests a
 * second (README, "CPU affinity").
 *
 * Only when the process may use exactly as many CPUs as it has workers (a
 * VM or container sized for ferry and its app, a cpuset, taskset): on a
 * share of a bigger host every ferry would bind to the same first CPUs.
 */
#ifndef FERRY_AFFINITY_H
#define FERRY_AFFINITY_H

#include <sched.h>
#include <stdbool.h>
#include <stdint.h>

/* The CPU for worker WORKER of N_WORKERS given the process's ALLOWED set,
 * or -1: leave it to the kernel. */
int affinity_cpu(const cpu_set_t *allowed, unsigned n_workers, unsigned worker);

/*
 * A bound worker cannot run anywhere but on its CPU. When a busy thread
 * of another process holds that CPU (a single-threaded app or backend
 * beside ferry), the worker waits out that thread's turns while another
 * CPU may idle. That costs little when the worker's own turns are short
 * (HTTP/1.1: tens of microseconds each time it runs), and binding wins
 * there; when its work comes in long batches (HTTP/2's many streams a
 * read), each wait holds up a whole batch: on the bench's two CPUs,
 * bound workers ran about 300 us and waited about as long each time, and
 * ferry served 5-10 % fewer requests a second than unbound (README, "CPU
 * affinity").
 *
 * So a bound worker watches its turns in the kernel's schedstat (time
 * run, time waited on a run queue, times run), once a second. It is let
 * loose after AFFINITY_LOOSE_AFTER busy seconds in a row in which it ran
 * a mean AFFINITY_LOOSE_US or more each time and waited as long; a loose
 * worker is bound again after AFFINITY_BIND_AFTER busy seconds in a row
 * of turns of AFFINITY_BIND_US or less. A second with fewer than
 * AFFINITY_MIN_RUNS turns is not busy: it moves nothing, and breaks a
 * run of seconds.
 *
 * Only HTTP/2's turns argue for a move: they are long because its work
 * comes in batches (many streams a read). HTTP/1.1's turns are long only
 * when the load is full, and a loose HTTP/1.1 worker pays for the moves:
 * on the bench's two CPUs at 64 B, its busier worker sometimes ran 160
 * us and waited 420 a turn, and once let loose, ferry spent 31-40 us a
 * request against 23-26 bound, for the 25-40 s its turns took to get
 * short enough to bind it again; also when the other CPU had idled
 * a tenth of the time (so its idle time is not the test). So a second
 * argues for letting a worker loose only when HTTP/2 streams were at
 * least half of the requests it began in it.
 *
 * Pure: the caller reads the counters and applies the verdict.
 */
#define AFFINITY_LOOSE_US	150
#define AFFINITY_BIND_US	75
#define AFFINITY_LOOSE_AFTER	2
#define AFFINITY_BIND_AFTER	5
#define AFFINITY_MIN_RUNS	100

/* The requests a worker began, since it started: HTTP/1.x requests and
 * HTTP/2 streams. */
struct affinity_work {
	uint64_t h1_requests, h2_streams;
};

struct affinity_watch {
	uint64_t run_ns, wait_ns, runs;	/* at the last sample */
	struct affinity_work work;	/* the worker's, likewise */
	bool sampled;
	bool loose;		/* let loose: its binding undone */
	unsigned streak;	/* busy seconds in a row that argue for a move */
};

/* Takes the thread's cumulative counters (schedstat's three) and its
 * worker's WORK, a second after the last ones; true when W->loose
 * changed: loosen or bind the thread now. */
bool affinity_watch_sample(struct affinity_watch *w, uint64_t run_ns, uint64_t wait_ns,
    uint64_t runs, struct affinity_work work);

#endif
