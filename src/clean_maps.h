#ifndef FERRY_CLEAN_MAPS_H
#define FERRY_CLEAN_MAPS_H

#include <stddef.h>

/* Opens what clean_maps_release reads; call before the process makes
 * itself non-dumpable. */
void clean_maps_init(void);

/* Drops this process's page mappings of the read-only segments of the
 * program and its libraries (code, read-only data) that hold no written
 * page; returns the resident bytes dropped. A page comes back, from the
 * page cache, on its next use. */
size_t clean_maps_release(void);

#endif
