/*
 * Eight bytes at a time in a 64-bit word, for the scans every head and
 * every log line goes through (http1.c, ids.c, errors.c, h2_frames.c).
 * Each test is exact as to whether some byte matches, not as to which.
 */
#ifndef FERRY_SWAR_H
#define FERRY_SWAR_H

#include <stdint.h>
#include <string.h>

#define SWAR_ONES	0x0101010101010101ull
#define SWAR_HIGHS	0x8080808080808080ull

static inline uint64_t
swar_load(const void *p)
{
	uint64_t x;

	memcpy(&x, p, 8);
	return x;
}

/* A word whose every byte is C. */
static inline uint64_t
swar_bytes(unsigned char c)
{
	return SWAR_ONES * c;
}

/* Nonzero when some byte of X is zero. */
static inline uint64_t
swar_zero_byte(uint64_t x)
{
	return (x - SWAR_ONES) & ~x & SWAR_HIGHS;
}

/* The high bit of each byte of X that lies in [LO, HI], for X whose
 * bytes are all under 0x80: adding 0x80 - LO sets a byte's high bit where
 * it is at least LO, adding 0x7f - HI where it is past HI, and neither
 * carries into the next byte. */
static inline uint64_t
swar_in_range(uint64_t x, unsigned char lo, unsigned char hi)
{
	return (x + swar_bytes((unsigned char)(0x80 - lo))) &
	    ~(x + swar_bytes((unsigned char)(0x7f - hi))) & SWAR_HIGHS;
}

#endif
