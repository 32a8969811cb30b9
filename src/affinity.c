#include "affinity.h"

int
affinity_cpu(const cpu_set_t *allowed, unsigned n_workers, unsigned worker)
{
	unsigned seen = 0;

	if (worker >= n_workers || (unsigned)CPU_COUNT(allowed) != n_workers)
		return -1;
	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
		if (CPU_ISSET(cpu, allowed) && seen++ == worker)
			return cpu;
	return -1;
}
