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

/* The CPU for worker WORKER of N_WORKERS given the process's ALLOWED set,
 * or -1: leave it to the kernel. */
int affinity_cpu(const cpu_set_t *allowed, unsigned n_workers, unsigned worker);

#endif
