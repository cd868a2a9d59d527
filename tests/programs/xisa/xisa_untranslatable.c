/* popcorn build must refuse this program: line 21 keeps f(a)'s result in
 * a callee-saved register across the call to g, which can migrate. */
#include <stdio.h>

#include "popcorn.h"

static int f(int a)
{
	return a + 1;
}

static int g(int b)
{
	popcorn_migrate_point();
	return b * 2;
}

int main(void)
{
	int a = 1, b = 2, x;
	x = f(a) + g(b);
	printf("%d\n", x);
	return 0;
}
