/* pages N: after a line on stdin, touches N fresh anonymous pages, prints
 * "ADDR done", then waits for EOF on stdin. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000;
	char line[64];
	if (!fgets(line, sizeof line, stdin))
		return 2;
	char *p = mmap(0, n * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return 3;
	for (long i = 0; i < n; i++)
		p[i * 4096] = 1;
	printf("%lu done\n", (unsigned long)p);
	fflush(stdout);
	while (fgets(line, sizeof line, stdin))
		;
	return 0;
}
