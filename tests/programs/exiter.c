/* Starts a few threads that keep creating short-lived threads, then exits
 * (exit_group) after the number of microseconds given as argv[1]: a process
 * that is likely to exit while it is being frozen. */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

static void *nothing(void *arg) { return arg; }

static void *churn(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_t t;
        if (pthread_create(&t, NULL, nothing, NULL) == 0)
            pthread_join(t, NULL);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long us = argc > 1 ? atol(argv[1]) : 1000;
    for (int i = 0; i < 4; i++) {
        pthread_t t;
        pthread_create(&t, NULL, churn, NULL);
    }
    usleep(us);
    exit(0);
}
