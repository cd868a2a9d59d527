/* The demo's program: prints "count I" every 200 ms for I = 1..N (default
 * 25) and a checksum of 64 MiB it filled at the start, recomputed at the
 * end, so a migration that lost memory would show. No fork, no threads. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 25;
    size_t words = (64u << 20) / 8;
    uint64_t *mem = malloc(words * 8), x = 1, sum = 0;
    if (!mem)
        return 1;
    for (size_t i = 0; i < words; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        mem[i] = x;
        sum += x;
    }
    printf("filled 64 MiB, checksum %llx\n", (unsigned long long)sum);
    for (int i = 1; i <= n; i++) {
        printf("count %d\n", i);
        fflush(stdout);
        struct timespec ts = {0, 200 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    uint64_t again = 0;
    for (size_t i = 0; i < words; i++)
        again += mem[i];
    printf("checksum again %llx: %s\n", (unsigned long long)again, again == sum ? "intact" : "CORRUPTED");
    return again == sum ? 0 : 1;
}
