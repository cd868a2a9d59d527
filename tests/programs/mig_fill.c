/* Migration workload: `mig_fill MIB TRIGGER`. Fills MIB MiB of anonymous
 * memory with pseudo-random data and prints its checksum ("sum X"), waits
 * (polling every 5 ms) until the file TRIGGER exists, then rereads all of
 * it and prints "final X" and "ok" if both checksums and a regenerated
 * copy of the data match, else "mismatch at WORD". Exits 0. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include "common.h"

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: mig_fill MIB TRIGGER\n");
        return 2;
    }
    size_t n = ((size_t)atoi(argv[1]) << 20) / sizeof(uint64_t);
    uint64_t *buf = mmap(NULL, n * sizeof(uint64_t), PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    const uint64_t seed = 0x9e3779b97f4a7c15ull;
    fill_xorshift(buf, n, seed);
    printf("sum %llu\n", (unsigned long long)checksum(buf, n));
    fflush(stdout);
    wait_for_file(argv[2]);
    printf("final %llu\n", (unsigned long long)checksum(buf, n));
    uint64_t x = seed;
    size_t bad = n;
    for (size_t i = 0; i < n && bad == n; i++)
        if (buf[i] != xorshift64(&x))
            bad = i;
    if (bad == n)
        printf("ok\n");
    else
        printf("mismatch at %zu\n", bad);
    return 0;
}
