/* Functions the checker must reject: temporaries live across calls (kept in callee-saved
 * registers), parameters passed on the stack, long double locals. */
void popcorn_migrate_point(void);

long step(long b) {
  popcorn_migrate_point();
  return b + 1;
}

long temporaries(long a, long b) {
  long x = a * 3 + step(b);
  long y = step(a) + step(b);
  return x + y;
}

long stack_args(long a1, long a2, long a3, long a4, long a5, long a6, long a7, long a8, long a9) {
  popcorn_migrate_point();
  return a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9;
}

long with_long_double(long v) {
  long double q = (long double)v * 1.5L;
  popcorn_migrate_point();
  return (long)q;
}

int main(void) {
  return (int)(temporaries(1, 2) + stack_args(1, 2, 3, 4, 5, 6, 7, 8, 9) + with_long_double(3));
}
