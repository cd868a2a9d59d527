/* A migration point in a second thread: the outermost application frame is the thread's start
 * function (its caller, libc's start_thread, has no DWARF). The result goes to a global that
 * main prints after the join. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

void popcorn_migrate_point(void);

long g_result;

long deep(int n, long acc, long *sum) {
  long local = acc * 3 + n;
  long r;
  *sum += local;
  if (n == 0) {
    popcorn_migrate_point();
    r = local;
  } else {
    r = deep(n - 1, local, sum);
  }
  return r * 7 + local + *sum;
}

void *worker(void *arg) {
  long seed = (long)arg;
  long sum = seed;
  long r = deep(6, seed, &sum);
  g_result = r ^ sum;
  return 0;
}

int main(void) {
  const char *e = getenv("XLATE_SEED");
  long seed = e ? atol(e) : 3;
  pthread_t t;
  if (pthread_create(&t, 0, worker, (void *)seed) != 0)
    return 1;
  pthread_join(t, 0);
  printf("thread result %ld\n", g_result);
  return 0;
}
