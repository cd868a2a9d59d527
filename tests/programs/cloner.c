/* Keeps creating child processes with a raw clone() whose exit signal is 0
 * (not SIGCHLD): PTRACE_O_TRACECLONE auto-attaches such children too, so a
 * freeze that catches one must let it go. Each child exits with status 7;
 * the parent waits for it with __WALL. Also keeps a few threads coming and
 * going. Prints "done children=N bad=B" (B must be 0) after argv[1] rounds. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void *nothing(void *arg) { return arg; }

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 1000;
    long children = 0, bad = 0;
    printf("started\n");
    fflush(stdout);
    for (int i = 0; i < rounds; i++) {
        long pid = syscall(SYS_clone, 0L, 0L, 0L, 0L, 0L);
        if (pid == 0)
            syscall(SYS_exit_group, 7);
        if (pid < 0) {
            bad++;
            continue;
        }
        int st;
        if (waitpid(pid, &st, __WALL) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 7)
            bad++;
        children++;
        pthread_t t;
        if (pthread_create(&t, NULL, nothing, NULL) == 0)
            pthread_join(t, NULL);
        else
            bad++;
        usleep(500);
    }
    printf("done children=%ld bad=%ld\n", children, bad);
    return 0;
}
