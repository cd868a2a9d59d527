/* Post-copy target for tests/tests/dsm_uffd.rs: maps a fresh 4 MiB anonymous
 * region, prints "addr HEX" and "ready", waits for a line on stdin, then
 * NTHREADS threads (argv[1], default 3) each read every page in the same
 * order (so they often fault on the same page): some pages with plain loads,
 * some by write(2)-ing them into a pipe so the kernel takes the fault inside
 * a system call. Each thread prints "sum T HEX" (FNV-1a over the 64-bit
 * words) and "zeros T N" (pages that were all zero). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096
#define LEN (4 << 20)

static unsigned char *region;

static void *scan(void *arg) {
    long t = (long)arg;
    int p[2];
    if (pipe(p) != 0) {
        perror("pipe");
        exit(2);
    }
    uint64_t h = 0xcbf29ce484222325ull;
    int zeros = 0;
    static __thread uint64_t buf[PAGE / 8];
    for (long i = 0; i < LEN / PAGE; i++) {
        const volatile uint64_t *src = (const volatile uint64_t *)(region + i * PAGE);
        if ((i + t) % 3 == 0) {
            /* Kernel-side access: the fault happens inside write(2). */
            if (write(p[1], region + i * PAGE, PAGE) != PAGE) {
                perror("write from region");
                exit(3);
            }
            if (read(p[0], buf, PAGE) != PAGE) {
                perror("read pipe");
                exit(4);
            }
        } else {
            for (int j = 0; j < PAGE / 8; j++)
                buf[j] = src[j];
        }
        int zero = 1;
        for (int j = 0; j < PAGE / 8; j++) {
            h = (h ^ buf[j]) * 0x100000001b3ull;
            if (buf[j])
                zero = 0;
        }
        zeros += zero;
    }
    printf("sum %ld %016llx\nzeros %ld %d\n", t, (unsigned long long)h, t, zeros);
    fflush(stdout);
    return NULL;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 3;
    region = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    printf("addr %lx\nready\n", (unsigned long)region);
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin))
        return 1;
    pthread_t th[64];
    if (n < 1 || n > 64)
        n = 3;
    for (long t = 0; t < n; t++)
        pthread_create(&th[t], NULL, scan, (void *)t);
    for (long t = 0; t < n; t++)
        pthread_join(th[t], NULL);
    return 0;
}
