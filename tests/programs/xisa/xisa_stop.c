/* popcorn build test program for the migration stop. Without arguments:
 * three rounds, each printing a line and passing a migration point (an
 * agent or debugger sets __popcorn_migrate_request to stop it there).
 * With "self": calls migrate() without an agent (returns at once), then
 * sets the request as an agent would; untraced, the breakpoint at the next
 * migration point kills it with SIGTRAP. */
#include <stdio.h>
#include <string.h>

#include "popcorn.h"

int rounds;

int main(int argc, char **argv)
{
	int i;
	if (argc > 1 && strcmp(argv[1], "self") == 0) {
		migrate(1); /* no agent: returns at once */
		printf("no agent: still here\n");
		printf("before the stop\n"); /* stdout is a pipe: buffered until the stop */
		__popcorn_migrate_request = 1;
		popcorn_migrate_point();
		printf("not reached\n");
		return 0;
	}
	for (i = 0; i < 3; i++) {
		rounds++;
		printf("round %d\n", i);
		popcorn_migrate_point();
	}
	return 0;
}
