/* storm N: after a line on stdin, forks N children one after the other;
 * each exits at once with status i % 100 and is reaped. Prints "done",
 * then waits for EOF on stdin. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 100;
	char line[64];
	if (!fgets(line, sizeof line, stdin))
		return 2;
	for (int i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid < 0)
			return 3;
		if (pid == 0)
			_exit(i % 100);
		waitpid(pid, 0, 0);
	}
	printf("done\n");
	fflush(stdout);
	while (fgets(line, sizeof line, stdin))
		;
	return 0;
}
