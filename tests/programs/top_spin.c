/* Monitor workload: `top_spin SECONDS`. One thread keeps a CPU busy
 * hashing; every 100 ms of wall time it prints "tick N"; it exits 0 after
 * SECONDS with "done X" (the hash, so the work cannot be optimised away). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 10;
    double start = now(), next = start;
    uint64_t h = 1469598103934665603ull;
    int tick = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (next - start < seconds) {
        for (int i = 0; i < 100000; i++)
            h = (h ^ (uint64_t)i) * 1099511628211ull;
        double t = now();
        if (t >= next) {
            printf("tick %d\n", tick++);
            next += 0.1;
        }
    }
    printf("done %llu\n", (unsigned long long)h);
    return 0;
}
