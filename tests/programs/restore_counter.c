/* Restore test workload: fills a 16 MiB heap buffer with pseudo-random
 * data and prints its checksum ("sum X"), then prints "count N" every
 * 10 ms (nanosleep) for N = 0..COUNT-1, then "final X pid P" with the
 * checksum recomputed and getpid(). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define SIZE (16u << 20)
#define COUNT 150

static uint64_t checksum(const uint64_t *b, size_t n) {
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++)
        s = s * 31 + b[i];
    return s;
}

int main(void) {
    size_t n = SIZE / sizeof(uint64_t);
    uint64_t *buf = malloc(SIZE);
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
    for (int i = 0; i < COUNT; i++) {
        printf("count %d\n", i);
        fflush(stdout);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    printf("final %llu pid %d\n", (unsigned long long)checksum(buf, n), (int)getpid());
    fflush(stdout);
    return 0;
}
