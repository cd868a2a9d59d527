/*
 * popcorn_rt.c: the popcorn cross-ISA runtime (see popcorn.h).
 *
 * Built by `popcorn build` for each ISA with the same flags as the
 * application (-O0 -g ...), and laid out at the same addresses, so its
 * functions and globals are identical on x86_64 and aarch64.
 *
 * Rules for this file: plain C, no thread-local storage, and calls written
 * as statements (`v = f(x);`), because the build's checker rejects values
 * held in callee-saved registers across calls.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "popcorn.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

volatile int __popcorn_migrate_request = 0;
volatile int __popcorn_agent_present = 0;
volatile int __popcorn_migrate_target = -1;

/* ---- migration points ------------------------------------------------ */

/*
 * Stops the thread for the agent with a breakpoint instruction at the global
 * label __popcorn_stop_insn: `int3` on x86_64 (SIGTRAP; the PC is already
 * past the 1-byte instruction), `brk #0` on aarch64 (SIGTRAP; the PC stays
 * on the instruction, step over it with PC += 4 to resume in place). Both a
 * ptrace tracer and qemu's gdbstub (stop reply T05) see it. Without either,
 * SIGTRAP kills the process, so only call this when an agent asked for it.
 */
__attribute__((noinline, used)) void __popcorn_migrate_stop(void)
{
#if defined(__x86_64__)
	__asm__ volatile(".globl __popcorn_stop_insn\n"
			 "__popcorn_stop_insn:\n\t"
			 "int3" ::: "memory");
#elif defined(__aarch64__)
	__asm__ volatile(".globl __popcorn_stop_insn\n"
			 "__popcorn_stop_insn:\n\t"
			 "brk #0" ::: "memory");
#else
#error "popcorn runtime: unsupported ISA"
#endif
}

/*
 * The flag is read again after the flush: an agent that gave up waiting
 * clears it, and a thread then still inside fflush must not trap. Only the
 * few instructions between that second read and the breakpoint remain; the
 * agent steps a thread it finds there out of this function first.
 */
void popcorn_migrate_point(void)
{
	if (__popcorn_migrate_request) {
		fflush(NULL);
		if (__popcorn_migrate_request)
			__popcorn_migrate_stop();
	}
}

int check_migrate(void)
{
	return __popcorn_migrate_request != 0;
}

/*
 * The agent polls __popcorn_migrate_target of the programs it runs, moves
 * this one to node `nid` (a migration point below), and the node it lands
 * on sets the target back to -1; so does a refusal.
 */
void migrate(int nid)
{
	if (!__popcorn_agent_present)
		return;
	__popcorn_migrate_target = nid;
	while (__popcorn_migrate_target != -1) {
		popcorn_migrate_point();
		usleep(1000);
	}
}

/* ---- heap arena -------------------------------------------------------- */

/*
 * First-fit allocator over an address-ordered free list, with coalescing.
 * All of its state (header below) lives at the start of the arena, so the
 * arena's bytes are the whole heap: copying them to the other ISA moves the
 * heap. Deterministic: the same sequence of calls gives the same addresses
 * on both ISAs.
 *
 * Block: 16-byte header {size (whole block, multiple of 16), used flag},
 * then the payload (16-byte aligned). A free block keeps its `next` pointer
 * in the payload.
 */
#define PC_ALIGN 16UL
#define PC_HDR 16UL
#define PC_MIN_BLOCK 32UL
#define PC_ARENA_MAGIC 0x6e726f6370706f70UL /* "popcornp" */

struct pc_block {
	size_t size;
	size_t used;
	struct pc_block *next; /* free blocks only */
};

struct pc_arena {
	uint64_t magic;
	size_t top; /* offset of the first never-allocated byte */
	struct pc_block *free_list;
	int lock;
	int pad;
	uint64_t reserved[4];
};

#define PC_ARENA ((struct pc_arena *)POPCORN_ARENA_BASE)
#define PC_FIRST_OFFSET 64UL

/* Set once the arena is mapped; a constructor maps it before main on both
 * ISAs, so a destination process stopped at main already has it. */
volatile int __popcorn_arena_ready = 0;

static void pc_die(const char *msg)
{
	ssize_t r;
	r = write(2, msg, strlen(msg));
	(void)r;
	_exit(127);
}

static void pc_arena_init(void)
{
	void *want;
	void *got;
	struct pc_arena *a;

	if (__popcorn_arena_ready)
		return;
	want = (void *)POPCORN_ARENA_BASE;
	got = mmap(want, POPCORN_ARENA_SIZE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
	if (got != want) {
		if (got != MAP_FAILED)
			munmap(got, POPCORN_ARENA_SIZE);
		pc_die("popcorn: cannot map the heap arena at 0x6000000000 (address in use)\n");
	}
	a = PC_ARENA;
	a->magic = PC_ARENA_MAGIC;
	a->top = PC_FIRST_OFFSET;
	a->free_list = NULL;
	a->lock = 0;
	__popcorn_arena_ready = 1;
}

/*
 * Allocations made before the program's constructors run (glibc's own
 * start-up: rtld search paths and the like, which differ per ISA) come from
 * a private, ISA-specific region instead, so that the arena's layout
 * depends only on what the program does. Private blocks are never freed.
 */
volatile int __popcorn_heap_shared = 0;
static char *pc_boot_cur;
static char *pc_boot_end;

static struct pc_block *pc_boot_block(size_t need)
{
	size_t chunk;
	void *m;
	struct pc_block *b;

	if ((size_t)(pc_boot_end - pc_boot_cur) < need) {
		chunk = need > 0x100000UL ? need : 0x100000UL;
		m = mmap(NULL, chunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (m == MAP_FAILED)
			return NULL;
		pc_boot_cur = m;
		pc_boot_end = pc_boot_cur + chunk;
	}
	b = (struct pc_block *)pc_boot_cur;
	pc_boot_cur += need;
	b->size = need;
	b->used = 1;
	b->next = NULL;
	return b;
}

/* Runs before the program's other constructors and main, after libc's
 * start-up: from here on every allocation comes from the shared arena. */
__attribute__((constructor(101))) static void pc_arena_ctor(void)
{
	pc_arena_init();
	__popcorn_heap_shared = 1;
}

static void pc_lock(void)
{
	int busy;
	pc_arena_init();
	for (;;) {
		busy = __atomic_exchange_n(&PC_ARENA->lock, 1, __ATOMIC_ACQUIRE);
		if (!busy)
			return;
	}
}

static void pc_unlock(void)
{
	__atomic_store_n(&PC_ARENA->lock, 0, __ATOMIC_RELEASE);
}

/* Whole block size for a payload of n bytes; 0 if too large. */
static size_t pc_block_size(size_t n)
{
	size_t s;
	if (n > POPCORN_ARENA_SIZE)
		return 0;
	s = (n + PC_HDR + PC_ALIGN - 1) & ~(PC_ALIGN - 1);
	if (s < PC_MIN_BLOCK)
		s = PC_MIN_BLOCK;
	return s;
}

static int pc_owns(void *p)
{
	uintptr_t u = (uintptr_t)p;
	return u >= POPCORN_ARENA_BASE + PC_FIRST_OFFSET &&
	       u < POPCORN_ARENA_BASE + POPCORN_ARENA_SIZE;
}

static struct pc_block *pc_header(void *p)
{
	return (struct pc_block *)((char *)p - PC_HDR);
}

/* Puts block b (not in the list) on the free list, merging neighbours; a
 * free block that ends at the top gives its space back to the top. */
static void pc_insert_free(struct pc_block *b)
{
	struct pc_arena *a = PC_ARENA;
	struct pc_block *prev = NULL;
	struct pc_block *cur = a->free_list;
	struct pc_block **pp;

	b->used = 0;
	while (cur && cur < b) {
		prev = cur;
		cur = cur->next;
	}
	if (cur && (char *)b + b->size == (char *)cur) {
		b->size += cur->size;
		cur = cur->next;
	}
	b->next = cur;
	if (prev && (char *)prev + prev->size == (char *)b) {
		prev->size += b->size;
		prev->next = b->next;
		b = prev;
	} else if (prev) {
		prev->next = b;
	} else {
		a->free_list = b;
	}
	if (!b->next && (uintptr_t)b + b->size == POPCORN_ARENA_BASE + a->top) {
		a->top -= b->size;
		pp = &a->free_list;
		while (*pp != b)
			pp = &(*pp)->next;
		*pp = NULL;
	}
}

/* Shrinks used block b to `need` bytes, freeing the tail if it is big enough. */
static void pc_split_tail(struct pc_block *b, size_t need)
{
	struct pc_block *rest;
	if (b->size - need < PC_MIN_BLOCK)
		return;
	rest = (struct pc_block *)((char *)b + need);
	rest->size = b->size - need;
	b->size = need;
	pc_insert_free(rest);
}

static struct pc_block *pc_alloc_block(size_t need)
{
	struct pc_arena *a = PC_ARENA;
	struct pc_block **pp = &a->free_list;
	struct pc_block *b;

	if (!__popcorn_heap_shared) {
		b = pc_boot_block(need);
		return b;
	}
	for (b = *pp; b; b = *pp) {
		if (b->size >= need) {
			*pp = b->next;
			b->used = 1;
			b->next = NULL;
			pc_split_tail(b, need);
			return b;
		}
		pp = &b->next;
	}
	if (need > POPCORN_ARENA_SIZE - a->top)
		return NULL;
	b = (struct pc_block *)(POPCORN_ARENA_BASE + a->top);
	a->top += need;
	b->size = need;
	b->used = 1;
	b->next = NULL;
	return b;
}

void *malloc(size_t n)
{
	size_t need;
	struct pc_block *b;

	need = pc_block_size(n);
	if (!need) {
		errno = ENOMEM;
		return NULL;
	}
	pc_lock();
	b = pc_alloc_block(need);
	pc_unlock();
	if (!b) {
		errno = ENOMEM;
		return NULL;
	}
	return (char *)b + PC_HDR;
}

void free(void *p)
{
	if (!p || !pc_owns(p))
		return;
	pc_lock();
	pc_insert_free(pc_header(p));
	pc_unlock();
}

void *calloc(size_t nmemb, size_t size)
{
	size_t n;
	void *p;

	if (__builtin_mul_overflow(nmemb, size, &n)) {
		errno = ENOMEM;
		return NULL;
	}
	p = malloc(n);
	if (p)
		memset(p, 0, n);
	return p;
}

size_t malloc_usable_size(void *p)
{
	/* Arena and private blocks have the same header. */
	if (!p)
		return 0;
	return pc_header(p)->size - PC_HDR;
}

void *realloc(void *p, size_t n)
{
	size_t need;
	size_t old;
	struct pc_block *b;
	struct pc_arena *a;
	void *q;

	if (!p) {
		q = malloc(n);
		return q;
	}
	if (n == 0) {
		free(p);
		return NULL;
	}
	need = pc_block_size(n);
	if (!need) {
		errno = ENOMEM;
		return NULL;
	}
	b = pc_header(p);
	if (pc_owns(p) && b->size >= need) {
		pc_lock();
		pc_split_tail(b, need);
		pc_unlock();
		return p;
	}
	a = PC_ARENA;
	pc_lock();
	if (pc_owns(p) && (uintptr_t)b + b->size == POPCORN_ARENA_BASE + a->top &&
	    need - b->size <= POPCORN_ARENA_SIZE - a->top) {
		a->top += need - b->size;
		b->size = need;
		pc_unlock();
		return p;
	}
	pc_unlock();
	q = malloc(n);
	if (!q)
		return NULL;
	old = b->size - PC_HDR;
	memcpy(q, p, old < n ? old : n);
	free(p);
	return q;
}

void *memalign(size_t align, size_t n)
{
	size_t need;
	struct pc_block *b;
	struct pc_block *ab;
	uintptr_t start;
	uintptr_t q;
	size_t lead;

	if (align <= PC_ALIGN) {
		q = (uintptr_t)malloc(n);
		return (void *)q;
	}
	if (align & (align - 1)) {
		errno = EINVAL;
		return NULL;
	}
	need = pc_block_size(n);
	if (!need || need > POPCORN_ARENA_SIZE - align - PC_MIN_BLOCK) {
		errno = ENOMEM;
		return NULL;
	}
	pc_lock();
	b = pc_alloc_block(need + align + PC_MIN_BLOCK);
	if (!b) {
		pc_unlock();
		errno = ENOMEM;
		return NULL;
	}
	start = (uintptr_t)b + PC_HDR;
	q = (start + align - 1) & ~(uintptr_t)(align - 1);
	while (q != start && q - start < PC_MIN_BLOCK)
		q += align;
	lead = q - start;
	ab = b;
	if (lead && !__popcorn_heap_shared) {
		/* private block: the lead-in is simply lost */
		ab = (struct pc_block *)((char *)b + lead);
		ab->size = b->size - lead;
		ab->used = 1;
		ab->next = NULL;
		pc_unlock();
		return (char *)ab + PC_HDR;
	}
	if (lead) {
		ab = (struct pc_block *)((char *)b + lead);
		ab->size = b->size - lead;
		ab->used = 1;
		ab->next = NULL;
		b->size = lead;
		pc_insert_free(b);
	}
	if (__popcorn_heap_shared)
		pc_split_tail(ab, need);
	pc_unlock();
	return (char *)ab + PC_HDR;
}

int posix_memalign(void **out, size_t align, size_t n)
{
	void *p;
	if (align < sizeof(void *) || (align & (align - 1)))
		return EINVAL;
	p = memalign(align, n);
	if (!p)
		return ENOMEM;
	*out = p;
	return 0;
}

void *aligned_alloc(size_t align, size_t n)
{
	void *p;
	p = memalign(align, n);
	return p;
}

void *valloc(size_t n)
{
	void *p;
	p = memalign(4096, n);
	return p;
}

void *pvalloc(size_t n)
{
	void *p;
	p = memalign(4096, (n + 4095) & ~(size_t)4095);
	return p;
}
