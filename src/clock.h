/* Monotonic time: policies take "now" as an argument; this is the one
 * place that reads the clock.
 *
 * A worker reads it once per turn of its event loop, as nginx and HAProxy
 * do: a proxied request asks for the time some fifteen times, and on a
 * virtual machine each reading costs a paravirtual clock read. A turn
 * lasts as long as its callbacks run, so "now" within a turn is behind by
 * at most that. Other threads (the main loop, tests) read the clock at
 * every call. */
#ifndef FERRY_CLOCK_H
#define FERRY_CLOCK_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

struct clock_turn {
	int64_t us;
	bool on;	/* this thread's loop starts turns */
	bool fresh;	/* us was read in this turn */
};

extern _Thread_local struct clock_turn clock_turn;

static inline int64_t
clock_read_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* A new turn of the calling thread's loop, before it waits for events:
 * the next reading is taken after the wait. */
static inline void
clock_turn_begin(void)
{
	clock_turn.on = true;
	clock_turn.fresh = false;
}

/* The loop has ended: read the clock at every call again. */
static inline void
clock_turn_end(void)
{
	clock_turn.on = false;
}

static inline int64_t
clock_now_us(void)
{
	if (!clock_turn.on)
		return clock_read_us();
	if (!clock_turn.fresh) {
		clock_turn.us = clock_read_us();
		clock_turn.fresh = true;
	}
	return clock_turn.us;
}

static inline int64_t
clock_now_ms(void)
{
	return clock_now_us() / 1000;
}

/* Wall clock, for timestamps people read (the access log). */
static inline int64_t
clock_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
