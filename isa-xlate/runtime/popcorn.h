/*
 * popcorn.h: the popcorn cross-ISA runtime, linked into every program built
 * with `popcorn build` (same source for x86_64 and aarch64).
 *
 * Migration points: call popcorn_migrate_point() (as a statement, never
 * inside an expression) where the program may move to the other ISA. When
 * the popcorn agent has requested a migration, the call flushes stdio and
 * stops the thread; the thread then continues on the other ISA as if
 * popcorn_migrate_point() had just returned.
 *
 * Heap: malloc, free, calloc, realloc, posix_memalign, aligned_alloc,
 * memalign, valloc, pvalloc and malloc_usable_size are served from one
 * arena at the same fixed address on both ISAs (POPCORN_ARENA_BASE), so heap
 * pointers stay valid after a migration.
 */
#ifndef POPCORN_H
#define POPCORN_H

#ifdef __cplusplus
extern "C" {
#endif

/* The heap arena: same address and size on x86_64 and aarch64. */
#define POPCORN_ARENA_BASE 0x6000000000UL
#define POPCORN_ARENA_SIZE 0x40000000UL /* 1 GiB, reserved lazily (MAP_NORESERVE) */

/* A migration point: returns at once unless a migration was requested. */
void popcorn_migrate_point(void);

/* Popcorn-compatible: non-zero when a migration is pending. */
int check_migrate(void);

/* Popcorn-compatible: move to node `nid` (the cluster file's order, from
 * 0) now. Returns once the program runs there, or at once when no popcorn
 * agent serves the process or the agent refused (its log says why). */
void migrate(int nid);

/* Set by the agent (by writing the process's memory), read by the runtime. */
extern volatile int __popcorn_migrate_request; /* non-zero: stop at the next migration point */
extern volatile int __popcorn_agent_present;   /* non-zero: an agent serves migrate() */
/* Written by migrate(nid) for the agent: the requested node, -1 if none. */
extern volatile int __popcorn_migrate_target;

#ifdef __cplusplus
}
#endif

#endif /* POPCORN_H */
