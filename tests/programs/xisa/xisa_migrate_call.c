/* A program that moves itself, Popcorn style: migrate(1) sends it to the
 * cluster's second node, migrate(0) back to the first. Without a popcorn
 * agent both return at once. Prints the same bytes either way; exits 3. */
#include <stdio.h>
#include <unistd.h>

#include "popcorn.h"

static long work(long seed)
{
	long v = seed;
	int i;
	for (i = 0; i < 100000; i++)
		v = (v * 6364136223846793005L + 1442695040888963407L) >> 1;
	return v & 0xffffff;
}

int main(void)
{
	int phase;
	long sum = 0;
	long w;
	for (phase = 0; phase < 6; phase++) {
		w = work(phase);
		sum += w;
		printf("phase %d: %ld\n", phase, sum);
		fflush(stdout);
		usleep(200000);
		if (phase == 1)
			migrate(1);
		if (phase == 3)
			migrate(0);
	}
	printf("done: %ld\n", sum);
	return 3;
}
