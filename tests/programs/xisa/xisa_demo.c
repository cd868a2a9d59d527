/* popcorn build test program: globals, static locals, string literals,
 * function pointers, recursion and heap allocations, with migration points.
 * Prints the same bytes on x86_64 and aarch64 (addresses included). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "popcorn.h"
#include "xisa_list.h"

int g_counter = 3;
long g_zero;
const int g_table[5] = {2, 3, 5, 7, 11};
static const char *g_names[] = {"alpha", "beta", "gamma"};
char g_buf[64];

static int twice(int v)
{
	static int calls;
	calls++;
	return v * 2 + calls;
}

static int thrice(int v)
{
	static int calls = 10;
	calls++;
	return v * 3 + calls;
}

static int (*g_ops[2])(int) = {twice, thrice};

static long fact(int n)
{
	long r;
	if (n <= 1)
		return 1;
	r = fact(n - 1);
	return n * r;
}

/* A migration point deep in a recursion. */
static int depth(int n)
{
	int r;
	if (n == 0) {
		popcorn_migrate_point();
		return 0;
	}
	r = depth(n - 1);
	return r + n;
}

int main(void)
{
	int i;
	int acc = 0;
	int v;
	long f;
	char *s;
	char *t;
	int *arr;
	void *big;
	void *al;
	struct node *list = NULL;

	for (i = 0; i < 5; i++) {
		v = g_ops[i % 2](g_table[i]);
		acc += v;
	}
	popcorn_migrate_point();
	f = fact(10);
	v = depth(6);
	s = malloc(40);
	strcpy(s, g_names[1]);
	t = strdup("a literal copied to the heap");
	arr = calloc(100, sizeof(int));
	for (i = 0; i < 100; i++)
		arr[i] = i * i;
	big = malloc(100000);
	free(s);
	s = malloc(24);
	al = aligned_alloc(4096, 100);
	arr = realloc(arr, 1000 * sizeof(int));
	for (i = 0; i < 10; i++)
		list = list_push(list, i * g_counter);
	snprintf(g_buf, sizeof(g_buf), "sum=%d", list_sum(list));
	g_zero = f;
	printf("acc=%d fact=%ld depth=%d %s %s %s %s arr[99]=%d\n", acc, g_zero, v, g_names[0], g_names[2], t,
	       g_buf, arr[99]);
	printf("heap s=%p t=%p arr=%p big=%p al=%p list=%p\n", (void *)s, (void *)t, (void *)arr, big, al,
	       (void *)list);
	printf("data g_counter=%p g_zero=%p g_names=%p name0=%p lit=%p twice=%p list_push=%p\n",
	       (void *)&g_counter, (void *)&g_zero, (void *)g_names, (void *)g_names[0], (void *)"lit",
	       (void *)twice, (void *)list_push);
	printf("migration pending=%d\n", check_migrate());
	migrate(1); /* no agent: returns at once */
	return 0;
}
