/* Target for the GDB-stub thread control test, built for aarch64 and run
 * under qemu-aarch64 -g: spins until `go` is set, then prints `message`
 * and whether it counted, and exits with status 3. */
#include <stdio.h>

volatile int go;
volatile long counter;
char message[64] = "hello";

int main(void)
{
    while (!go)
        counter++;
    printf("%s %d\n", message, counter > 0);
    return 3;
}
