#ifndef FERRY_CLEAN_MAPS_H
#define FERRY_CLEAN_MAPS_H

#include <stddef.h>

/* Drops this process's page mappings of the read-only segments of the
 * program and its libraries (code, read-only data) that hold no written
 * page; returns the bytes of the segments dropped. A page comes back,
 * from the page cache, on its next use. */
size_t clean_maps_release(void);

#endif
