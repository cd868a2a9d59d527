/* forker: after a line on stdin, forks a child that prints "child PID",
 * waits for a second line, then execs `sh -c 'sleep 0.1; exit 7'`; the
 * parent reaps it, prints "reaped STATUS", then waits for EOF on stdin. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void)
{
	char line[64];
	if (!fgets(line, sizeof line, stdin))
		return 2;
	pid_t pid = fork();
	if (pid < 0)
		return 3;
	if (pid == 0) {
		printf("child %d\n", getpid());
		fflush(stdout);
		if (!fgets(line, sizeof line, stdin))
			_exit(4);
		execl("/bin/sh", "sh", "-c", "sleep 0.1; exit 7", (char *)0);
		_exit(5);
	}
	int status = 0;
	waitpid(pid, &status, 0);
	printf("reaped %d\n", status);
	fflush(stdout);
	while (fgets(line, sizeof line, stdin))
		;
	return 0;
}
