/* Migration workload: `mig_counter COUNT MIB`. Fills MIB MiB of heap with
 * pseudo-random data and prints its checksum ("sum X"), then prints
 * "count N" every 10 ms for N = 0..COUNT-1, then "final X" with the
 * checksum recomputed, and exits with status 7. Output is identical
 * wherever it runs. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "common.h"

int main(int argc, char **argv) {
    int count = argc > 1 ? atoi(argv[1]) : 300;
    size_t mib = argc > 2 ? (size_t)atoi(argv[2]) : 16;
    size_t n = (mib << 20) / sizeof(uint64_t);
    uint64_t *buf = malloc(n * sizeof(uint64_t) + 8);
    if (!buf)
        return 1;
    fill_xorshift(buf, n, XORSHIFT_SEED);
    printf("sum %llu\n", (unsigned long long)checksum(buf, n));
    fflush(stdout);
    for (int i = 0; i < count; i++) {
        printf("count %d\n", i);
        fflush(stdout);
        sleep_ms(10);
    }
    printf("final %llu\n", (unsigned long long)checksum(buf, n));
    return 7;
}
