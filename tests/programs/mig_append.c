/* Migration workload: `mig_append COUNT OUT IN`. Opens OUT for appending
 * and IN (records "%07d\n", 8 bytes each) for reading, then every 10 ms for
 * i = 0..COUNT-1 reads the next record of IN with read(2) (so the file
 * offset is the only place its position lives), checks it is i, appends
 * "line i\n" to OUT with write(2) and prints "count i". Prints "done" and
 * exits 0, or "FAIL …" and exits 1. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "common.h"

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: mig_append COUNT OUT IN\n");
        return 2;
    }
    int count = atoi(argv[1]);
    int out = open(argv[2], O_WRONLY | O_APPEND | O_CREAT, 0644);
    int in = open(argv[3], O_RDONLY);
    if (out < 0 || in < 0) {
        printf("FAIL open: %s\n", strerror(errno));
        return 1;
    }
    for (int i = 0; i < count; i++) {
        char rec[9] = {0};
        ssize_t n = read(in, rec, 8);
        if (n != 8 || atoi(rec) != i) {
            printf("FAIL record %d: read %zd bytes \"%.8s\"\n", i, n, rec);
            return 1;
        }
        char line[32];
        int len = snprintf(line, sizeof line, "line %d\n", i);
        if (write(out, line, len) != len) {
            printf("FAIL append %d: %s\n", i, strerror(errno));
            return 1;
        }
        printf("count %d\n", i);
        fflush(stdout);
        sleep_ms(10);
    }
    printf("done\n");
    return 0;
}
