/* Migration workload: `mig_fork TRIGGER`. Fills 16 MiB with known data,
 * prints "ready", waits until the file TRIGGER exists, then forks: the
 * child counts the words that differ from what the parent wrote and
 * prints "child bad N" (exit 1 if N > 0); the parent waits for it, does
 * the same check ("parent bad N") and prints "OK fork" when both are 0.
 * Exits 0. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include "common.h"

static size_t n = (16u << 20) / 8;
static uint64_t *b;

static uint64_t word(size_t i) { return i * 2654435761u + 1; }

static size_t bad(void) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (b[i] != word(i))
            k++;
    return k;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: mig_fork TRIGGER\n");
        return 2;
    }
    b = malloc(n * 8);
    if (!b)
        return 1;
    for (size_t i = 0; i < n; i++)
        b[i] = word(i);
    printf("ready\n");
    fflush(stdout);
    wait_for_file(argv[1]);
    pid_t p = fork();
    if (p < 0) {
        perror("fork");
        return 1;
    }
    if (p == 0) {
        size_t k = bad();
        printf("child bad %zu\n", k);
        fflush(stdout);
        _exit(k ? 1 : 0);
    }
    int st;
    if (waitpid(p, &st, 0) != p)
        return 1;
    size_t k = bad();
    printf("parent bad %zu\n", k);
    if (k == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0)
        printf("OK fork\n");
    return 0;
}
