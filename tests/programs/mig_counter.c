/* Migration workload: `mig_counter COUNT MIB`. Fills MIB MiB of heap with
 * pseudo-random data and prints its checksum ("sum X"), then prints
 * "count N" every 10 ms for N = 0..COUNT-1, then "final X" with the
 * checksum recomputed, and exits with status 7. Output is identical
 * wherever it runs. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static uint64_t checksum(const uint64_t *b, size_t n) {
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++)
        s = s * 31 + b[i];
    return s;
}

int main(int argc, char **argv) {
    int count = argc > 1 ? atoi(argv[1]) : 300;
    size_t mib = argc > 2 ? (size_t)atoi(argv[2]) : 16;
    size_t n = (mib << 20) / sizeof(uint64_t);
    uint64_t *buf = malloc(n * sizeof(uint64_t) + 8);
    if (!buf)
        return 1;
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = x;
    }
    printf("sum %llu\n", (unsigned long long)checksum(buf, n));
    fflush(stdout);
    for (int i = 0; i < count; i++) {
        printf("count %d\n", i);
        fflush(stdout);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    printf("final %llu\n", (unsigned long long)checksum(buf, n));
    return 7;
}
