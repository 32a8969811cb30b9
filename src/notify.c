#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "notify.h"

/* longest a send may wait for room in systemd's queue */
#define SEND_TIMEOUT_MS 1000

/* Set by notify_init() before any thread runs; only read afterwards. */
static int notify_fd = -1;
static struct sockaddr_un notify_addr;
static socklen_t notify_addrlen;
static int64_t watchdog_usec;

/* A decimal number that is all digits and fits; -1 otherwise. */
static long long
parse_decimal(const char *s)
{
	unsigned long long v;
	char *end;

	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v > (unsigned long long)INT64_MAX)
		return -1;
	return (long long)v;
}

/* "/path" or "@abstract" into notify_addr; -1 with errno when unusable. */
static int
parse_address(const char *s)
{
	size_t len = strlen(s);

	memset(&notify_addr, 0, sizeof(notify_addr));
	notify_addr.sun_family = AF_UNIX;
	if (s[0] == '/') {
		if (len >= sizeof(notify_addr.sun_path)) {
			errno = ENAMETOOLONG;
			return -1;
		}
		memcpy(notify_addr.sun_path, s, len + 1);
		notify_addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
		return 0;
	}
	if (s[0] == '@') {
		/* abstract namespace: a leading NUL, the name, no terminator */
		if (len < 2) {
			errno = EINVAL;
			return -1;
		}
		if (len > sizeof(notify_addr.sun_path)) {
			errno = ENAMETOOLONG;
			return -1;
		}
		memcpy(notify_addr.sun_path + 1, s + 1, len - 1);
		notify_addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
		return 0;
	}
	/* relative paths, and vsock: addresses of newer systemd */
	errno = s[0] == '\0' ? EINVAL : EAFNOSUPPORT;
	return -1;
}

static int64_t
read_watchdog(void)
{
	const char *pid = getenv("WATCHDOG_PID");
	long long usec;

	if (pid != NULL && parse_decimal(pid) != (long long)getpid())
		return 0;
	if ((usec = parse_decimal(getenv("WATCHDOG_USEC"))) <= 0)
		return 0;
	return usec;
}

int
notify_init(void)
{
	struct timeval tv = { SEND_TIMEOUT_MS / 1000, (SEND_TIMEOUT_MS % 1000) * 1000 };
	const char *sock;
	int fd;

	notify_close();
	if ((sock = getenv("NOTIFY_SOCKET")) == NULL)
		return 0;
	if (parse_address(sock) == -1)
		return -1;
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1)
		return -1;
	if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == -1) {
		int saved = errno;

		close(fd);
		errno = saved;
		return -1;
	}
	notify_fd = fd;
	watchdog_usec = read_watchdog();
	return 0;
}

void
notify_close(void)
{
	if (notify_fd != -1)
		close(notify_fd);
	notify_fd = -1;
	notify_addrlen = 0;
	watchdog_usec = 0;
}

bool
notify_enabled(void)
{
	return notify_fd != -1;
}

static int
send_raw(const char *msg, size_t len)
{
	ssize_t n;

	if (notify_fd == -1)
		return 0;
	do {
		n = sendto(notify_fd, msg, len, MSG_NOSIGNAL,
		    (const struct sockaddr *)&notify_addr, notify_addrlen);
	} while (n == -1 && errno == EINTR);
	if (n == -1)
		return -1;
	if ((size_t)n != len) {
		errno = EMSGSIZE;
		return -1;
	}
	return 0;
}

static int
send_vfmt(const char *fmt, va_list ap)
{
	char msg[NOTIFY_MAX + 1];
	int n;

	if (notify_fd == -1)
		return 0;
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	if (n < 0)
		return -1;
	if (n > NOTIFY_MAX) {
		errno = EMSGSIZE;
		return -1;
	}
	return send_raw(msg, (size_t)n);
}

int
notify_send(const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = send_vfmt(fmt, ap);
	va_end(ap);
	return rc;
}

/* After STOPPING=1 the service is going: a reload during the drain says
 * neither RELOADING=1 nor READY=1, which would tell systemd it serves
 * again. Main thread only. */
static bool stopping;

int
notify_ready(void)
{
	return stopping ? 0 : notify_send("READY=1");
}

int
notify_reloading(void)
{
	/* systemd >= 253 uses MONOTONIC_USEC to match the reload to the request */
	return stopping ? 0 :
	    notify_send("RELOADING=1\nMONOTONIC_USEC=%lld", (long long)clock_now_us());
}

int
notify_stopping(void)
{
	stopping = true;
	return notify_send("STOPPING=1");
}

int
notify_watchdog(void)
{
	return notify_send("WATCHDOG=1");
}

int
notify_status(const char *fmt, ...)
{
	static const char prefix[] = "STATUS=";
	char msg[NOTIFY_MAX + 1];
	size_t len;
	va_list ap;
	int n;

	if (notify_fd == -1)
		return 0;
	memcpy(msg, prefix, sizeof(prefix) - 1);
	va_start(ap, fmt);
	n = vsnprintf(msg + sizeof(prefix) - 1, sizeof(msg) - (sizeof(prefix) - 1), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -1;
	/* a long text is cut to fit; an embedded newline would start a new
	 * assignment (READY=1, say), so it becomes a space */
	len = strlen(msg);
	for (size_t i = sizeof(prefix) - 1; i < len; i++)
		if (msg[i] == '\n' || msg[i] == '\r')
			msg[i] = ' ';
	return send_raw(msg, len);
}

int64_t
notify_watchdog_interval_us(void)
{
	if (notify_fd == -1)
		return 0;
	return watchdog_usec / 2;
}
