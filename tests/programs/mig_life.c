/* Migration workload: `mig_life TRIGGER`. Before migration it fills a
 * 32 MiB malloc'd block and a 16 MiB mapping with known data, installs a
 * SIGALRM handler, arms a 50 ms SIGALRM interval timer and prints
 * "ready". Then, for each phase p = 1, 2, it
 * waits until the file TRIGGERp exists and checks that a migrated program
 * can still manage its memory, threads and signals, printing one line per
 * check: "OK what" or "FAIL what: why":
 *  - timer-before (phase 1): the timer armed before the migration still
 *    ticks (3 more signals), then it is disarmed;
 *  - malloc: large blocks (mmap'd by malloc) and many small ones (brk),
 *    written, verified and freed;
 *  - mmap: new mappings written, partly unmapped, verified; the 16 MiB
 *    mapping from before the migration replaced by a fresh one (must read
 *    as zeros, not as the old data) and a part of it dropped with
 *    MADV_DONTNEED;
 *  - realloc: the 32 MiB block grown (malloc moves it with mremap) keeps
 *    its data;
 *  - threads: 4 new threads sum the block, results joined;
 *  - alarm: a 10 ms SIGALRM interval timer delivers 5 signals to the
 *    handler installed before the migration.
 * Then "phase p done". Exits 0 after phase 2. */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <unistd.h>
#include "common.h"

#define MIB (1UL << 20)

static volatile sig_atomic_t alarms;
static uint64_t *block;
static size_t block_words = 32 * MIB / 8;
static unsigned char *region;
static const size_t region_len = 16 * MIB;
static int failures;

static void on_alarm(int sig) { alarms++; }

static void report(const char *what, const char *why) {
    if (why) {
        printf("FAIL %s: %s\n", what, why);
        failures++;
    } else {
        printf("OK %s\n", what);
    }
    fflush(stdout);
}

static uint64_t word(size_t i) { return i * 0x9e3779b97f4a7c15ull + 12345; }

static const char *check_malloc(int phase) {
    for (int i = 1; i <= 12; i++) {
        size_t len = (size_t)i * 3 * MIB + (size_t)phase * 4096;
        unsigned char *p = malloc(len);
        if (!p)
            return "large malloc returned NULL";
        memset(p, i + phase, len);
        for (size_t j = 0; j < len; j += 4093)
            if (p[j] != (unsigned char)(i + phase))
                return "large block lost its data";
        free(p);
    }
    enum { N = 20000 };
    static char *small[N];
    for (int i = 0; i < N; i++) {
        small[i] = malloc(200 + i % 800);
        if (!small[i])
            return "small malloc returned NULL";
        snprintf(small[i], 200, "block %d", i);
    }
    for (int i = 0; i < N; i++) {
        char want[32];
        snprintf(want, sizeof want, "block %d", i);
        if (strcmp(small[i], want) != 0)
            return "small block lost its data";
    }
    for (int i = 0; i < N; i += 2)
        free(small[i]);
    for (int i = 1; i < N; i += 2)
        free(small[i]);
    return NULL;
}

static const char *check_mmap(int phase) {
    for (int i = 0; i < 8; i++) {
        size_t len = 8 * MIB;
        unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return "mmap failed";
        for (size_t j = 0; j < len; j += 4096)
            if (p[j] != 0)
                return "a new mapping is not zero-filled";
        memset(p, 0x5a, len);
        if (munmap(p + 2 * MIB, 2 * MIB) != 0)
            return "partial munmap failed";
        for (size_t j = 0; j < len; j += 4096) {
            if (j >= 2 * MIB && j < 4 * MIB)
                continue;
            if (p[j] != 0x5a)
                return "a mapping lost its data after a partial munmap";
        }
        munmap(p, 2 * MIB);
        munmap(p + 4 * MIB, len - 4 * MIB);
    }
    /* The mapping from before the migration, replaced by a fresh one. */
    for (size_t j = 0; j < region_len; j += 4096)
        if (region[j] != (unsigned char)(j / 4096 + phase))
            return "the old mapping lost its data";
    if (munmap(region, region_len) != 0)
        return "munmap of the old mapping failed";
    unsigned char *p = mmap(region, region_len, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (p != region)
        return "mmap at the old address failed";
    for (size_t j = 0; j < region_len; j += 4096)
        if (region[j] != 0)
            return "a fresh mapping at the old address shows stale data";
    for (size_t j = 0; j < region_len; j += 4096)
        region[j] = (unsigned char)(j / 4096 + phase + 1);
    /* Dropped pages read as zeros again. */
    if (madvise(region, MIB, MADV_DONTNEED) != 0)
        return "madvise failed";
    for (size_t j = 0; j < region_len; j += 4096) {
        unsigned char want = j < MIB ? 0 : (unsigned char)(j / 4096 + phase + 1);
        if (region[j] != want)
            return "MADV_DONTNEED pages do not read as zeros";
    }
    for (size_t j = 0; j < MIB; j += 4096)
        region[j] = (unsigned char)(j / 4096 + phase + 1);
    return NULL;
}

static const char *check_realloc(void) {
    size_t old = block_words;
    uint64_t *p = realloc(block, old * 2 * 8);
    if (!p)
        return "realloc returned NULL";
    block = p;
    for (size_t i = 0; i < old; i++)
        if (block[i] != word(i))
            return "realloc lost the block's data";
    for (size_t i = old; i < 2 * old; i++)
        block[i] = word(i);
    block_words = 2 * old;
    return NULL;
}

struct part {
    size_t from, to;
    uint64_t sum;
};

static void *sum_part(void *arg) {
    struct part *p = arg;
    for (size_t i = p->from; i < p->to; i++)
        p->sum += block[i];
    return NULL;
}

static const char *check_threads(void) {
    struct part parts[4];
    pthread_t t[4];
    size_t per = block_words / 4;
    for (int i = 0; i < 4; i++) {
        parts[i] = (struct part){i * per, (i + 1) * per, 0};
        if (pthread_create(&t[i], NULL, sum_part, &parts[i]) != 0)
            return "pthread_create failed";
    }
    uint64_t total = 0, want = 0;
    for (int i = 0; i < 4; i++) {
        if (pthread_join(t[i], NULL) != 0)
            return "pthread_join failed";
        total += parts[i].sum;
    }
    for (size_t i = 0; i < block_words; i++)
        want += word(i);
    return total == want ? NULL : "threads summed the wrong data";
}

static const char *check_timer_before(void) {
    sig_atomic_t start = alarms;
    for (int i = 0; i < 300 && alarms < start + 3; i++)
        sleep_ms(10);
    struct itimerval it;
    getitimer(ITIMER_REAL, &it);
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    if (alarms < start + 3)
        return "the timer armed before the migration stopped";
    if (it.it_interval.tv_sec != 0 || it.it_interval.tv_usec != 50000)
        return "the timer's interval changed";
    return NULL;
}

static const char *check_alarm(void) {
    alarms = 0;
    struct itimerval it = {{0, 10000}, {0, 10000}};
    if (setitimer(ITIMER_REAL, &it, NULL) != 0)
        return "setitimer failed";
    for (int i = 0; i < 300 && alarms < 5; i++)
        sleep_ms(10);
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    return alarms >= 5 ? NULL : "fewer than 5 SIGALRM within 3 s";
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: mig_life TRIGGER\n");
        return 2;
    }
    block = malloc(block_words * 8);
    region = mmap(NULL, region_len, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!block || region == MAP_FAILED) {
        printf("FAIL setup\n");
        return 1;
    }
    for (size_t i = 0; i < block_words; i++)
        block[i] = word(i);
    for (size_t j = 0; j < region_len; j += 4096)
        region[j] = (unsigned char)(j / 4096 + 1);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 50000}, {0, 50000}};
    setitimer(ITIMER_REAL, &it, NULL);
    printf("ready\n");
    fflush(stdout);
    for (int phase = 1; phase <= 2; phase++) {
        char trigger[4096];
        snprintf(trigger, sizeof trigger, "%s%d", argv[1], phase);
        wait_for_file(trigger);
        if (phase == 1)
            report("timer-before", check_timer_before());
        report("malloc", check_malloc(phase));
        report("mmap", check_mmap(phase));
        report("realloc", check_realloc());
        report("threads", check_threads());
        report("alarm", check_alarm());
        printf("phase %d done\n", phase);
        fflush(stdout);
    }
    return failures ? 1 : 0;
}
