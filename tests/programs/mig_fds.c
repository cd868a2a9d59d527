/* Migration workload: `mig_fds COUNT`. Opens an eventfd and a UDP socket
 * (fds 3 and 4: descriptors popcorn refuses to move) and prints "fds 3 4",
 * then every 10 ms prints "count N" for N = 0..COUNT-1; between counts it
 * reads stdin without blocking and obeys "close N" lines (printing
 * "closed N"). Prints "final" and exits 7. */
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include "common.h"

int main(int argc, char **argv) {
    int count = argc > 1 ? atoi(argv[1]) : 300;
    int efd = eventfd(0, 0);
    int sock = socket(AF_INET, SOCK_DGRAM, 0);
    printf("fds %d %d\n", efd, sock);
    fflush(stdout);
    char buf[256];
    size_t have = 0;
    for (int i = 0; i < count; i++) {
        printf("count %d\n", i);
        fflush(stdout);
        struct pollfd p = {0, POLLIN, 0};
        if (have < sizeof buf - 1 && poll(&p, 1, 0) == 1 && (p.revents & POLLIN)) {
            ssize_t n = read(0, buf + have, sizeof buf - 1 - have);
            if (n > 0)
                have += n;
        }
        buf[have] = 0;
        char *nl;
        while ((nl = strchr(buf, '\n'))) {
            *nl = 0;
            if (strncmp(buf, "close ", 6) == 0) {
                int fd = atoi(buf + 6);
                close(fd);
                printf("closed %d\n", fd);
                fflush(stdout);
            }
            have -= nl + 1 - buf;
            memmove(buf, nl + 1, have + 1);
        }
        sleep_ms(10);
    }
    printf("final\n");
    return 7;
}
