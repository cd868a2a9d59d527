/* Fork during post-copy: fills 16 MiB, prints "ready", waits for a line on
 * stdin, then forks. The child checks every word (its memory arrives through
 * its own pager) and exits 0 if all match; the parent checks too, waits
 * for the child and exits with 0 only if both were intact. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define WORDS ((16u << 20) / 8)

static int check(const uint64_t *m) {
    uint64_t x = 7;
    for (size_t i = 0; i < WORDS; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        if (m[i] != x)
            return 0;
    }
    return 1;
}

int main(void) {
    uint64_t *m = malloc(WORDS * 8), x = 7;
    if (!m)
        return 2;
    for (size_t i = 0; i < WORDS; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        m[i] = x;
    }
    printf("ready\n");
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin))
        return 3;
    pid_t c = fork();
    if (c < 0)
        return 4;
    if (c == 0) {
        int ok = check(m);
        printf("child %s\n", ok ? "intact" : "CORRUPTED");
        fflush(stdout);
        _exit(ok ? 0 : 1);
    }
    int ok = check(m), st = 0;
    waitpid(c, &st, 0);
    printf("parent %s\n", ok ? "intact" : "CORRUPTED");
    return ok && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}
