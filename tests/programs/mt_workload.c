/* Multi-threaded workload with a fixed amount of work and deterministic
 * output, used to check that freezing/thawing (and syscall injection) is
 * invisible to the program: busy hashing, nanosleep loops that verify every
 * sleep lasted long enough, a blocking pipe reader fed by a writer thread,
 * a futex ping-pong pair, and a thread that keeps creating and joining
 * short-lived threads. Every EINTR, short sleep or unexpected error is
 * counted and printed; all of them must be 0.
 *
 * Usage: mt_workload [scale]   (scale multiplies the amount of work) */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "common.h"

static int scale = 1;

static atomic_long eintr_count;
static atomic_long short_sleeps;
static atomic_long unexpected;

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 33);
}

/* ---- busy hashing ---- */
static uint64_t hash_result;
static void *hasher(void *arg)
{
    (void)arg;
    uint64_t h = 1;
    long n = 400000000L * scale;
    for (long i = 0; i < n; i++)
        h = mix(h, (uint64_t)i);
    hash_result = h;
    return NULL;
}

/* ---- sleeps: relative nanosleep and absolute clock_nanosleep ---- */
static long sleeps_done[2];
static void *sleeper(void *arg)
{
    int absolute = (int)(intptr_t)arg;
    int n = 400 * scale;
    for (int i = 0; i < n; i++) {
        uint64_t req = 3000000 + (i % 5) * 1000000; /* 3..7 ms */
        uint64_t t0 = now_ns();
        if (absolute) {
            struct timespec until;
            uint64_t end = t0 + req;
            until.tv_sec = end / 1000000000ull;
            until.tv_nsec = end % 1000000000ull;
            int r;
            while ((r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL)) != 0) {
                if (r == EINTR)
                    eintr_count++;
                else {
                    unexpected++;
                    break;
                }
            }
        } else {
            struct timespec ts = { req / 1000000000ull, req % 1000000000ull }, rem;
            while (nanosleep(&ts, &rem) != 0) {
                if (errno == EINTR) {
                    eintr_count++;
                    ts = rem;
                } else {
                    unexpected++;
                    break;
                }
            }
        }
        if (now_ns() - t0 < req)
            short_sleeps++;
        sleeps_done[absolute]++;
    }
    return NULL;
}

/* ---- pipe: writer thread, blocking reader thread ---- */
static int pipefd[2];
static uint64_t pipe_sum;
static long pipe_msgs, pipe_bad;
static void *writer(void *arg)
{
    (void)arg;
    int n = 5000 * scale;
    for (int i = 0; i < n; i++) {
        char msg[16];
        snprintf(msg, sizeof msg, "%08x", (unsigned)(i * 2654435761u));
        ssize_t w;
        while ((w = write(pipefd[1], msg, 8)) < 0 && errno == EINTR)
            eintr_count++;
        if (w != 8)
            unexpected++;
        if (i % 4 == 0)
            usleep(1500);
    }
    close(pipefd[1]);
    return NULL;
}
static void *reader(void *arg)
{
    (void)arg;
    char buf[8];
    size_t have = 0;
    long i = 0;
    for (;;) {
        ssize_t r = read(pipefd[0], buf + have, sizeof buf - have);
        if (r < 0) {
            if (errno == EINTR)
                eintr_count++;
            else
                unexpected++;
            continue;
        }
        if (r == 0)
            break;
        have += r;
        if (have < sizeof buf)
            continue;
        have = 0;
        char want[16];
        snprintf(want, sizeof want, "%08x", (unsigned)(i * 2654435761u));
        if (memcmp(buf, want, 8) != 0)
            pipe_bad++;
        pipe_sum = mix(pipe_sum, strtoull(want, NULL, 16));
        pipe_msgs++;
        i++;
    }
    return NULL;
}

/* ---- futex ping-pong ---- */
static _Atomic int turn; /* 0: ping's turn, 1: pong's turn */
static uint64_t futex_acc;
static long futex_rounds;
static void futex_wait_for(int want)
{
    int cur;
    while ((cur = atomic_load(&turn)) != want) {
        long r = syscall(SYS_futex, &turn, FUTEX_WAIT_PRIVATE, cur, NULL, NULL, 0);
        if (r != 0) {
            if (errno == EINTR)
                eintr_count++;
            else if (errno != EAGAIN)
                unexpected++;
        }
    }
}
static void *futexer(void *arg)
{
    int me = (int)(intptr_t)arg;
    int n = 8000 * scale;
    for (int i = 0; i < n; i++) {
        futex_wait_for(me);
        futex_acc = mix(futex_acc, (uint64_t)(i * 2 + me));
        if (me == 1)
            futex_rounds++;
        atomic_store(&turn, 1 - me);
        if (syscall(SYS_futex, &turn, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0) < 0)
            unexpected++;
        if (i % 64 == 0)
            usleep(200);
    }
    return NULL;
}

/* ---- short-lived threads ---- */
static long spawned;
static uint64_t spawn_sum;
static void *child(void *arg)
{
    uint64_t h = (uint64_t)(intptr_t)arg;
    for (int i = 0; i < 1000; i++)
        h = mix(h, i);
    return (void *)(uintptr_t)h;
}
static void *spawner(void *arg)
{
    (void)arg;
    int n = 600 * scale;
    for (int i = 0; i < n; i++) {
        pthread_t t[2];
        for (int k = 0; k < 2; k++)
            if (pthread_create(&t[k], NULL, child, (void *)(intptr_t)(i * 2 + k)) != 0)
                unexpected++;
        for (int k = 0; k < 2; k++) {
            void *ret;
            if (pthread_join(t[k], &ret) != 0)
                unexpected++;
            spawn_sum = mix(spawn_sum, (uint64_t)(uintptr_t)ret);
            spawned++;
        }
        usleep(3000);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        scale = atoi(argv[1]);
    if (pipe(pipefd) != 0)
        return 2;
    pthread_t th[8];
    pthread_create(&th[0], NULL, hasher, NULL);
    pthread_create(&th[1], NULL, sleeper, (void *)0);
    pthread_create(&th[2], NULL, sleeper, (void *)1);
    pthread_create(&th[3], NULL, writer, NULL);
    pthread_create(&th[4], NULL, reader, NULL);
    pthread_create(&th[5], NULL, futexer, (void *)0);
    pthread_create(&th[6], NULL, futexer, (void *)1);
    pthread_create(&th[7], NULL, spawner, NULL);
    printf("started\n");
    fflush(stdout);
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    printf("hash=%016llx\n", (unsigned long long)hash_result);
    printf("sleeps=%ld,%ld\n", sleeps_done[0], sleeps_done[1]);
    printf("pipe msgs=%ld bad=%ld sum=%016llx\n", pipe_msgs, pipe_bad, (unsigned long long)pipe_sum);
    printf("futex rounds=%ld acc=%016llx\n", futex_rounds, (unsigned long long)futex_acc);
    printf("spawned=%ld sum=%016llx\n", spawned, (unsigned long long)spawn_sum);
    printf("eintr=%ld short_sleeps=%ld unexpected=%ld\n", (long)eintr_count, (long)short_sleeps,
           (long)unexpected);
    return (eintr_count || short_sleeps || unexpected) ? 1 : 0;
}
