/* Test stand-in for the popcorn runtime's migration point: stop the thread so a tracer (ptrace
 * natively, a breakpoint on __popcorn_migrate_stop under qemu-aarch64 -g) can take it.
 * XLATE_NO_STOP=1 runs the program without stopping (reference output). */
#include <signal.h>
#include <stdlib.h>

void __popcorn_migrate_stop(void) {
  if (!getenv("XLATE_NO_STOP"))
    raise(SIGSTOP);
}

void popcorn_migrate_point(void) { __popcorn_migrate_stop(); }
