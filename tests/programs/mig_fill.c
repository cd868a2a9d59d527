/* Migration workload: `mig_fill MIB TRIGGER`. Fills MIB MiB of anonymous
 * memory with pseudo-random data and prints its checksum ("sum X"), waits
 * (polling every 5 ms) until the file TRIGGER exists, then rereads all of
 * it and prints "final X" and "ok" if both checksums and a regenerated
 * copy of the data match, else "mismatch at WORD". Exits 0. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static uint64_t next(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

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
    uint64_t x = 0x9e3779b97f4a7c15ull, s = 0;
    for (size_t i = 0; i < n; i++) {
        buf[i] = next(&x);
        s = s * 31 + buf[i];
    }
    printf("sum %llu\n", (unsigned long long)s);
    fflush(stdout);
    while (access(argv[2], F_OK) != 0) {
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    uint64_t f = 0;
    x = 0x9e3779b97f4a7c15ull;
    size_t bad = n;
    for (size_t i = 0; i < n; i++) {
        f = f * 31 + buf[i];
        if (buf[i] != next(&x) && bad == n)
            bad = i;
    }
    printf("final %llu\n", (unsigned long long)f);
    if (bad == n)
        printf("ok\n");
    else
        printf("mismatch at %zu\n", bad);
    return 0;
}
