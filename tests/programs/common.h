/* Helpers shared by the test programs: the xorshift generator and
 * checksum that fill and verify their memory, sleeps, a monotonic clock
 * and the wait for a trigger file. */
#ifndef POPCORN_TEST_COMMON_H
#define POPCORN_TEST_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

/* Seed of the fills whose checksums the tests compare. */
#define XORSHIFT_SEED 88172645463325252ull

/* One step of Marsaglia's xorshift64: advances *x and returns it. */
static inline uint64_t xorshift64(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* Fills b[0..n) with successive xorshift64 values from seed. */
static inline void fill_xorshift(uint64_t *b, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++)
        b[i] = xorshift64(&seed);
}

/* Order-sensitive checksum of b[0..n): s = s * 31 + word. */
static inline uint64_t checksum(const uint64_t *b, size_t n) {
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++)
        s = s * 31 + b[i];
    return s;
}

/* nanosleep for ms milliseconds; its result (-1 with errno on EINTR). */
static inline int sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    return nanosleep(&ts, NULL);
}

/* CLOCK_MONOTONIC in nanoseconds. */
static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* Polls every 5 ms until the file at path exists. */
static inline void wait_for_file(const char *path) {
    while (access(path, F_OK) != 0)
        sleep_ms(5);
}

#endif
