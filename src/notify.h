/*
 * The systemd notification protocol (sd_notify(3), SPEC §10), spoken
 * directly: one AF_UNIX datagram per message to $NOTIFY_SOCKET, no
 * libsystemd. Every call is a no-op returning 0 when NOTIFY_SOCKET is
 * unset, so ferry behaves the same outside systemd.
 *
 * notify_init() must run before any thread sends; after it, the send
 * functions may be called from any thread (each message is a single
 * sendto(2) on a socket opened once, so running out of file descriptors
 * later cannot stop the watchdog pings).
 */
#ifndef FERRY_NOTIFY_H
#define FERRY_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

/* longest message sent; longer STATUS= texts are cut to fit */
#define NOTIFY_MAX 4096

/*
 * Reads NOTIFY_SOCKET ("/path" or "@abstract") and WATCHDOG_USEC (used
 * only when WATCHDOG_PID is unset or names this process) and opens the
 * socket. Returns 0, also when NOTIFY_SOCKET is unset; -1 with errno set
 * when it is set but unusable (notification is then off).
 */
int notify_init(void);
/* Closes the socket; notification is off until the next notify_init(). */
void notify_close(void);
/* true when NOTIFY_SOCKET was set and usable at notify_init() */
bool notify_enabled(void);

/*
 * Sends one datagram, the formatted text as is (assignments separated by
 * '\n'). 0 on success or when off; -1 with errno set (EMSGSIZE when the
 * text exceeds NOTIFY_MAX).
 */
int notify_send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

int notify_ready(void);		/* READY=1 */
int notify_reloading(void);	/* RELOADING=1\nMONOTONIC_USEC=<now> */
int notify_stopping(void);	/* STOPPING=1 */
int notify_watchdog(void);	/* WATCHDOG=1 */
/* STATUS=<text>; newlines in the text become spaces, so it stays one
 * assignment whatever it quotes. */
int notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* How often to send WATCHDOG=1: half of WATCHDOG_USEC, in microseconds;
 * 0 when there is no watchdog (or no notify socket). */
int64_t notify_watchdog_interval_us(void);

#endif
