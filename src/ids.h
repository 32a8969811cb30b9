/*
 * Request identifiers: UUIDv4, W3C traceparent, and the fast per-thread
 * generator behind them (RAND_bytes costs ~0.5 µs a call; one seed per
 * thread from it, then xoshiro256**).
 */
#ifndef FERRY_IDS_H
#define FERRY_IDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UUID_LEN 36
#define TRACEPARENT_LEN 55

/* Seeds the calling thread's generator from the OS CSPRNG. */
void ids_thread_init(void);
uint64_t ids_random(void);

/* Writes UUID_LEN characters (no NUL). */
void ids_uuid4(char *out);
/* Writes TRACEPARENT_LEN characters (no NUL): 00-<trace>-<parent>-01. */
void ids_traceparent(char *out);

/* x-correlation-id / x-request-id rule: 1-128 chars of [A-Za-z0-9._:-]. */
bool ids_valid(const char *s, size_t len);
/* A well-formed W3C traceparent (version 00, or a future version with the
 * same prefix), trace-id and parent-id not all zero. */
bool ids_traceparent_valid(const char *s, size_t len);

#endif
