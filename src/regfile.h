/*
 * Opening a file that must be a regular one (keys, certificates): a FIFO
 * given by mistake or malice would otherwise hang the main thread, which
 * loads configs and reloads (admin, signals and the watchdog with it).
 */
#ifndef FERRY_REGFILE_H
#define FERRY_REGFILE_H

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* PATH opened for reading, its stat in *ST; -1 with errno set (EISDIR for
 * a directory, ENODEV for another file that is not a regular one).
 * O_NONBLOCK: opening a FIFO does not wait for a writer. */
static inline int
regfile_open(const char *path, struct stat *st)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY), e;

	if (fd < 0)
		return -1;
	if (fstat(fd, st) != 0)
		e = errno;
	else if (S_ISREG(st->st_mode))
		return fd;
	else
		e = S_ISDIR(st->st_mode) ? EISDIR : ENODEV;
	close(fd);
	errno = e;
	return -1;
}

/* What regfile_open's errno says, for an error message. */
static inline const char *
regfile_error(void)
{
	return errno == ENODEV ? "not a regular file" : strerror(errno);
}

#endif
