/* Cross-ISA end-to-end test program (built with `popcorn build`): per
 * round a recursive computation, an integer sort and conjugate-gradient
 * iterations, each verified, with migration points inside all three (deep
 * in the recursion and the sort, between CG iterations) and in the pause
 * between rounds, which waits 12 calls deep so that a migration requested
 * then moves a deep stack. Prints one line per round and a summary; exits
 * with 5.
 *
 * Usage: xisa_kernels ROUNDS [PAUSE_MS [NAP_MS]]: after each round, waits
 * PAUSE_MS at migration points, then sleeps NAP_MS without any. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "popcorn.h"

#define N_SORT 2048
#define N_CG 48

static long g_calls;
static unsigned int g_rng = 12345u;

static unsigned int next_rand(void)
{
	g_rng = g_rng * 1103515245u + 12345u;
	return (g_rng >> 8) & 0xffffffu;
}

/* 2^depth leaves, a migration point at each. */
static long tree_sum(int depth, long seed)
{
	long left;
	long right;
	g_calls++;
	if (depth == 0) {
		popcorn_migrate_point();
		return seed % 1000;
	}
	left = tree_sum(depth - 1, seed * 3 + 1);
	right = tree_sum(depth - 1, seed * 5 + 2);
	return left + right + depth;
}

static void quicksort(int *a, int lo, int hi)
{
	int pivot;
	int i;
	int j;
	int t;
	if (lo >= hi)
		return;
	popcorn_migrate_point();
	pivot = a[(lo + hi) / 2];
	i = lo;
	j = hi;
	while (i <= j) {
		while (a[i] < pivot)
			i++;
		while (a[j] > pivot)
			j--;
		if (i <= j) {
			t = a[i];
			a[i] = a[j];
			a[j] = t;
			i++;
			j--;
		}
	}
	quicksort(a, lo, j);
	quicksort(a, i, hi);
}

/* Sorts fresh random numbers; returns a checksum, or -1 if unsorted. */
static long sort_round(int *a)
{
	int i;
	unsigned long sum = 0;
	for (i = 0; i < N_SORT; i++)
		a[i] = (int)next_rand() - 0x800000;
	quicksort(a, 0, N_SORT - 1);
	for (i = 0; i < N_SORT; i++) {
		if (i > 0 && a[i - 1] > a[i])
			return -1;
		sum = sum * 31u + (unsigned long)(unsigned int)a[i];
	}
	return (long)(sum % 1000000007ul);
}

/* y = A x for A = tridiag(-1, 2.5, -1). */
static void matvec(const double *x, double *y)
{
	int i;
	for (i = 0; i < N_CG; i++) {
		double v = 2.5 * x[i];
		if (i > 0)
			v -= x[i - 1];
		if (i + 1 < N_CG)
			v -= x[i + 1];
		y[i] = v;
	}
}

static double dot(const double *a, const double *b)
{
	int i;
	double s = 0.0;
	for (i = 0; i < N_CG; i++)
		s += a[i] * b[i];
	return s;
}

struct cg {
	double *x;
	double *r;
	double *p;
	double *ap;
	double rr;
};

/* One CG iteration on A x = 1; returns the new residual norm squared. */
static double cg_step(struct cg *s)
{
	double alpha;
	double beta;
	double rr_new;
	double pap;
	int i;
	matvec(s->p, s->ap);
	pap = dot(s->p, s->ap);
	alpha = s->rr / pap;
	for (i = 0; i < N_CG; i++) {
		s->x[i] += alpha * s->p[i];
		s->r[i] -= alpha * s->ap[i];
	}
	rr_new = dot(s->r, s->r);
	beta = rr_new / s->rr;
	for (i = 0; i < N_CG; i++)
		s->p[i] = s->r[i] + beta * s->p[i];
	s->rr = rr_new;
	popcorn_migrate_point();
	return rr_new;
}

static void cg_reset(struct cg *s)
{
	int i;
	for (i = 0; i < N_CG; i++) {
		s->x[i] = 0.0;
		s->r[i] = 1.0;
		s->p[i] = 1.0;
	}
	s->rr = dot(s->r, s->r);
}

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Waits until `until` (ms), `depth` calls deep, at migration points. */
static void pace(int depth, long until)
{
	long now;
	if (depth > 0) {
		pace(depth - 1, until);
		return;
	}
	now = now_ms();
	while (now < until) {
		usleep(1000);
		popcorn_migrate_point();
		now = now_ms();
	}
}

int main(int argc, char **argv)
{
	int rounds;
	int pause_ms = 0;
	int nap_ms = 0;
	int r;
	int k;
	long tree;
	long sorted;
	long total = 0;
	double rr = 0.0;
	double err;
	long start;
	int *arr;
	struct cg s;

	if (argc < 2) {
		fprintf(stderr, "usage: %s ROUNDS [PAUSE_MS [NAP_MS]]\n", argv[0]);
		return 2;
	}
	rounds = atoi(argv[1]);
	if (argc > 2)
		pause_ms = atoi(argv[2]);
	if (argc > 3)
		nap_ms = atoi(argv[3]);
	arr = malloc(N_SORT * sizeof(int));
	s.x = calloc(N_CG, sizeof(double));
	s.r = calloc(N_CG, sizeof(double));
	s.p = calloc(N_CG, sizeof(double));
	s.ap = calloc(N_CG, sizeof(double));
	if (!arr || !s.x || !s.r || !s.p || !s.ap)
		return 1;
	cg_reset(&s);
	for (r = 0; r < rounds; r++) {
		tree = tree_sum(6, r);
		sorted = sort_round(arr);
		if (r % 8 == 0)
			cg_reset(&s);
		for (k = 0; k < 3; k++) {
			rr = cg_step(&s);
		}
		total += tree + sorted;
		printf("round %d: tree %ld sort %ld cg %.12e\n", r, tree, sorted, rr);
		fflush(stdout);
		start = now_ms();
		pace(12, start + pause_ms);
		if (nap_ms > 0)
			usleep(nap_ms * 1000);
	}
	/* Verify the CG solution of the last run: A x ~ 1. */
	matvec(s.x, s.ap);
	err = 0.0;
	for (k = 0; k < N_CG; k++) {
		double d = s.ap[k] - 1.0;
		err += d * d;
	}
	/* argv after a migration is the destination's own (same arguments). */
	printf("done: %s rounds, %ld calls, total %ld, cg error %.12e\n", argv[1], g_calls, total,
	       err);
	free(arr);
	return 5;
}
