/* Restore test workload: fills a 16 MiB heap buffer with pseudo-random
 * data and prints its checksum ("sum X"), then prints "count N" every
 * 10 ms (nanosleep) for N = 0..COUNT-1, then "final X pid P usr1 U" with
 * the checksum recomputed, getpid() and whether a SIGUSR1 (blocked from
 * the start) is pending. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include "common.h"

#define SIZE (16u << 20)
#define COUNT 150

int main(void) {
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, NULL);
    size_t n = SIZE / sizeof(uint64_t);
    uint64_t *buf = malloc(SIZE);
    if (!buf)
        return 1;
    fill_xorshift(buf, n, XORSHIFT_SEED);
    printf("sum %llu\n", (unsigned long long)checksum(buf, n));
    fflush(stdout);
    for (int i = 0; i < COUNT; i++) {
        printf("count %d\n", i);
        fflush(stdout);
        sleep_ms(10);
    }
    sigset_t pending;
    sigpending(&pending);
    printf("final %llu pid %d usr1 %d\n", (unsigned long long)checksum(buf, n), (int)getpid(),
           sigismember(&pending, SIGUSR1));
    fflush(stdout);
    return 0;
}
