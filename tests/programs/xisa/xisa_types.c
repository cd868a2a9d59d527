/* popcorn build must refuse this program: state whose representation
 * differs between x86_64 and aarch64 (long double, va_list) or that needs a
 * variadic argument save area, in migrated data or suspendable frames. */
#include <stdarg.h>
#include <stdio.h>

#include "popcorn.h"

long double g_scale = 1.5L;

static int vsum(int n, ...)
{
	va_list ap;
	int s = 0;
	int i;
	va_start(ap, n);
	for (i = 0; i < n; i++)
		s += va_arg(ap, int);
	va_end(ap);
	popcorn_migrate_point();
	return s;
}

/* Not on a path to a migration point: allowed. */
static long double twice(long double x)
{
	return x * 2;
}

int main(void)
{
	int r;
	double d;
	r = vsum(2, 1, 2);
	d = (double)twice(2.0L);
	printf("%d %f\n", r, d);
	return 0;
}

/* Also refused: a jmp_buf in migrated data. Only warned about: a FILE *. */
#include <setjmp.h>
jmp_buf g_env;
FILE *g_log;
