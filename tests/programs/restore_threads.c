/* Multi-threaded restore workload: 3 threads each print "t<k> <n> <tid>"
 * every 10 ms for n = 0..COUNT-1, taking a shared mutex each time; the
 * main thread joins them (which needs the kernel's clear_child_tid wake)
 * and prints "joined <total> pid <pid>". */
#include <pthread.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "common.h"

#define THREADS 3
#define COUNT 120

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long total;

static void *run(void *arg) {
    long k = (long)arg;
    for (int i = 0; i < COUNT; i++) {
        pthread_mutex_lock(&lock);
        total++;
        printf("t%ld %d %ld\n", k, i, (long)syscall(SYS_gettid));
        fflush(stdout);
        pthread_mutex_unlock(&lock);
        sleep_ms(10);
    }
    return NULL;
}

int main(void) {
    pthread_t t[THREADS];
    for (long k = 0; k < THREADS; k++)
        if (pthread_create(&t[k], NULL, run, (void *)k))
            return 1;
    for (int k = 0; k < THREADS; k++)
        pthread_join(t[k], NULL);
    printf("joined %ld pid %d\n", total, (int)getpid());
    fflush(stdout);
    return 0;
}
