/* Migration workload: `mig_threads ROUNDS TICKS`. The main thread and 8
 * others that spend their time blocked in futex, nanosleep or read:
 *  - stdin: reads lines with read(2): "add N" adds N to a total, "wake"
 *    wakes the condition waiter, "end" (or end of file) stops it;
 *  - ticker: TICKS times nanosleep(30 ms), adding 1..TICKS to a total;
 *  - timed waiter: pthread_cond_timedwait with 50 ms timeouts until the
 *    end (anything but a timeout or a wake-up is an error);
 *  - condition waiter: pthread_cond_wait until "wake", then prints
 *    "woken", then waits for the end;
 *  - 4 workers: ROUNDS rounds of nanosleep(10 ms), a counter bumped under
 *    the mutex, a barrier (the barrier's serial thread counts rounds).
 * Prints "ready" once every thread runs, and at the end "stdin X",
 * "ticks Y", "counter Z", "rounds R", "done". Any failing call (an EINTR
 * included: nothing here installs a signal handler) prints "error …" and
 * exits 1. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "common.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static pthread_barrier_t bar;
static int rounds, ticks, woken_flag, stop_flag;
static long long stdin_total, tick_total, counter, generations;

static void die(const char *what, int err) {
    printf("error %s: %s\n", what, strerror(err));
    fflush(stdout);
    exit(1);
}

static void lock(void) {
    int e = pthread_mutex_lock(&mu);
    if (e)
        die("mutex_lock", e);
}

static void unlock(void) {
    int e = pthread_mutex_unlock(&mu);
    if (e)
        die("mutex_unlock", e);
}

static void nap(long ms) {
    if (sleep_ms(ms) != 0)
        die("nanosleep", errno);
}

static void line(const char *l) {
    lock();
    if (strncmp(l, "add ", 4) == 0) {
        stdin_total += atoll(l + 4);
    } else if (strcmp(l, "wake") == 0) {
        woken_flag = 1;
        pthread_cond_broadcast(&cv);
    } else if (strcmp(l, "end") == 0) {
        stop_flag = 1;
        pthread_cond_broadcast(&cv);
    } else {
        printf("error unknown input %s\n", l);
        fflush(stdout);
        exit(1);
    }
    unlock();
}

static void *stdin_reader(void *arg) {
    char buf[4096];
    size_t have = 0;
    for (;;) {
        ssize_t n = read(0, buf + have, sizeof buf - 1 - have);
        if (n < 0)
            die("read stdin", errno);
        if (n == 0) {
            line("end");
            return NULL;
        }
        have += n;
        buf[have] = 0;
        char *start = buf, *nl;
        while ((nl = strchr(start, '\n'))) {
            *nl = 0;
            line(start);
            if (strcmp(start, "end") == 0)
                return NULL;
            start = nl + 1;
        }
        have -= start - buf;
        memmove(buf, start, have);
    }
}

static void *ticker(void *arg) {
    for (int i = 1; i <= ticks; i++) {
        nap(30);
        lock();
        tick_total += i;
        unlock();
    }
    return NULL;
}

static void *timed_waiter(void *arg) {
    lock();
    while (!stop_flag) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 50 * 1000 * 1000;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        int e = pthread_cond_timedwait(&cv, &mu, &until);
        if (e && e != ETIMEDOUT)
            die("cond_timedwait", e);
    }
    unlock();
    return NULL;
}

static void *waiter(void *arg) {
    lock();
    while (!woken_flag) {
        int e = pthread_cond_wait(&cv, &mu);
        if (e)
            die("cond_wait", e);
    }
    printf("woken\n");
    fflush(stdout);
    while (!stop_flag) {
        int e = pthread_cond_wait(&cv, &mu);
        if (e)
            die("cond_wait", e);
    }
    unlock();
    return NULL;
}

static void *worker(void *arg) {
    for (int r = 0; r < rounds; r++) {
        nap(10);
        lock();
        counter++;
        unlock();
        int e = pthread_barrier_wait(&bar);
        if (e == PTHREAD_BARRIER_SERIAL_THREAD) {
            lock();
            generations++;
            unlock();
        } else if (e) {
            die("barrier_wait", e);
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: mig_threads ROUNDS TICKS\n");
        return 2;
    }
    rounds = atoi(argv[1]);
    ticks = atoi(argv[2]);
    pthread_barrier_init(&bar, NULL, 4);
    void *(*fns[8])(void *) = {stdin_reader, ticker, timed_waiter, waiter,
                               worker,       worker,      worker,      worker};
    pthread_t t[8];
    for (int i = 0; i < 8; i++) {
        int e = pthread_create(&t[i], NULL, fns[i], NULL);
        if (e)
            die("pthread_create", e);
    }
    printf("ready\n");
    fflush(stdout);
    for (int i = 0; i < 8; i++) {
        int e = pthread_join(t[i], NULL);
        if (e)
            die("pthread_join", e);
    }
    printf("stdin %lld\nticks %lld\ncounter %lld\nrounds %lld\ndone\n", stdin_total,
           tick_total, counter, generations);
    return 0;
}
