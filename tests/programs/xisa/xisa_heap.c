/* Allocator stress for popcorn build: a fixed pseudo-random sequence of
 * malloc/calloc/realloc/free/memalign/posix_memalign/aligned_alloc, with
 * every block filled and checked. Prints a hash of every address returned:
 * it must be the same on x86_64 and aarch64. */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "popcorn.h"

#define SLOTS 256
#define OPS 20000

static unsigned char *slot[SLOTS];
static size_t len[SLOTS];
static unsigned char tag[SLOTS];
static uint64_t seed = 88172645463325252ULL;
static uint64_t hash = 1469598103934665603ULL;
static int bad;

static uint64_t rnd(void)
{
	seed ^= seed << 13;
	seed ^= seed >> 7;
	seed ^= seed << 17;
	return seed;
}

static void mix(void *p)
{
	hash ^= (uint64_t)(uintptr_t)p;
	hash *= 1099511628211ULL;
}

static void fill(int i)
{
	memset(slot[i], tag[i], len[i]);
}

static void check(int i)
{
	size_t k;
	for (k = 0; k < len[i]; k++) {
		if (slot[i][k] != tag[i]) {
			bad++;
			return;
		}
	}
}

static void in_arena(void *p)
{
	uintptr_t u = (uintptr_t)p;
	if (u < POPCORN_ARENA_BASE || u >= POPCORN_ARENA_BASE + POPCORN_ARENA_SIZE)
		bad++;
}

int main(void)
{
	int op;
	int i;
	int kind;
	size_t n;
	size_t align;
	void *p;
	uint64_t r;

	for (op = 0; op < OPS; op++) {
		r = rnd();
		i = (int)(r % SLOTS);
		kind = (int)((r >> 8) % 6);
		n = (size_t)((r >> 16) % ((r >> 40) % 4 == 0 ? 20000 : 300));
		align = (size_t)1 << (4 + (r >> 32) % 9);
		if (slot[i]) {
			check(i);
			if (kind == 0) {
				p = realloc(slot[i], n + 1);
				mix(p);
				in_arena(p);
				slot[i] = p;
				if (n + 1 < len[i])
					len[i] = n + 1;
				check(i);
				len[i] = n + 1;
				fill(i);
				continue;
			}
			free(slot[i]);
			slot[i] = NULL;
			continue;
		}
		if (kind == 1) {
			p = calloc(n + 1, 1);
			if (p && ((unsigned char *)p)[n] != 0)
				bad++;
		} else if (kind == 2) {
			p = memalign(align, n + 1);
		} else if (kind == 3) {
			p = NULL;
			if (posix_memalign(&p, align, n + 1) != 0)
				bad++;
		} else if (kind == 4) {
			p = aligned_alloc(align, n + 1);
		} else {
			p = malloc(n + 1);
		}
		if (!p) {
			bad++;
			continue;
		}
		if (kind >= 2 && kind <= 4 && ((uintptr_t)p & (align - 1)))
			bad++;
		mix(p);
		in_arena(p);
		slot[i] = p;
		len[i] = n + 1;
		tag[i] = (unsigned char)(op & 0xff);
		fill(i);
	}
	for (i = 0; i < SLOTS; i++) {
		if (slot[i]) {
			check(i);
			free(slot[i]);
		}
	}
	p = malloc(16);
	mix(p);
	popcorn_migrate_point();
	printf("heap ops=%d bad=%d hash=%016llx last=%p\n", OPS, bad, (unsigned long long)hash, p);
	return bad != 0;
}
