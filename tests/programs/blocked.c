/* Three threads blocked in three kinds of system call: the main thread in
 * read() on stdin, one in a 3 s relative nanosleep, one in FUTEX_WAIT. Used
 * to check that injected syscalls and freezes leave blocked syscalls
 * intact. Echoes each chunk read as "got:<text>"; a chunk containing "wake"
 * wakes the futex waiter. At EOF it reports how each thread fared.
 * SIGTRAP gets a handler, or with the argument "trap-ignored" is ignored
 * (syscall injection must leave either disposition alone). */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "common.h"

static _Atomic int word;
static long read_eintr, futex_eintr, futex_err, sleep_eintr;
static int sleep_short;

static void *sleeper(void *arg)
{
    (void)arg;
    struct timespec ts = { 3, 0 }, rem;
    uint64_t t0 = now_ns();
    while (nanosleep(&ts, &rem) != 0) {
        if (errno != EINTR)
            break;
        sleep_eintr++;
        ts = rem;
    }
    sleep_short = now_ns() - t0 < 3000000000ull;
    return NULL;
}

static void *waiter(void *arg)
{
    (void)arg;
    while (atomic_load(&word) == 0) {
        if (syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0) != 0) {
            if (errno == EINTR)
                futex_eintr++;
            else if (errno != EAGAIN)
                futex_err++;
        }
    }
    return NULL;
}

static void on_trap(int sig) { (void)sig; }

int main(int argc, char **argv)
{
    int ignore = argc > 1 && strcmp(argv[1], "trap-ignored") == 0;
    signal(SIGTRAP, ignore ? SIG_IGN : on_trap);
    pthread_t s, w;
    pthread_create(&s, NULL, sleeper, NULL);
    pthread_create(&w, NULL, waiter, NULL);
    printf("ready\n");
    fflush(stdout);
    char buf[4096];
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf - 1);
        if (n < 0) {
            if (errno == EINTR) {
                read_eintr++;
                continue;
            }
            perror("read");
            return 2;
        }
        if (n == 0)
            break;
        buf[n] = 0;
        printf("got:%s", buf);
        fflush(stdout);
        if (strstr(buf, "wake")) {
            atomic_store(&word, 1);
            syscall(SYS_futex, &word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
        }
    }
    pthread_join(w, NULL);
    pthread_join(s, NULL);
    printf("read_eintr=%ld futex_eintr=%ld futex_err=%ld sleep_eintr=%ld sleep_short=%d\n",
           read_eintr, futex_eintr, futex_err, sleep_eintr, sleep_short);
    return 0;
}
