/* duty TOTAL_MS BUSY_MS PERIOD_MS: after a line on stdin, spins BUSY_MS and
 * sleeps the rest of every PERIOD_MS for TOTAL_MS, prints "done", then waits
 * for EOF on stdin. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
	double total = atof(argv[1]), busy = atof(argv[2]), period = atof(argv[3]);
	char line[64];
	if (!fgets(line, sizeof line, stdin))
		return 2;
	double start = now_ms();
	volatile unsigned long sink = 0;
	while (now_ms() - start < total) {
		double t0 = now_ms();
		while (now_ms() - t0 < busy)
			sink++;
		double rest = period - (now_ms() - t0);
		if (rest > 0) {
			struct timespec ts = {0, (long)(rest * 1e6)};
			nanosleep(&ts, 0);
		}
	}
	printf("done\n");
	fflush(stdout);
	while (fgets(line, sizeof line, stdin))
		;
	return 0;
}
