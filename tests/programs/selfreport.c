/* Sets up known per-thread and per-process state, prints it (key=value in
 * hex, one per line), then loads a known pattern into xmm15 and spins in an
 * asm loop that keeps it there. A capture of the frozen process must report
 * exactly what was printed. Prints "ready" (before the asm) and "spinning"
 * (from inside the asm, with a raw write, once xmm15 holds the pattern). */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/rseq.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static void on_usr1(int sig) { (void)sig; }

static const char spinning_msg[] = "spinning\n";
static const uint64_t pattern[2] = { 0x0123456789abcdefull, 0xfedcba9876543210ull };

int main(void)
{
    /* Signal mask: SIGUSR2, SIGWINCH, SIGRTMIN+3 (kernel numbering: 12, 28, 37). */
    uint64_t mask = (1ull << (12 - 1)) | (1ull << (28 - 1)) | (1ull << (37 - 1));
    if (syscall(SYS_rt_sigprocmask, SIG_SETMASK, &mask, NULL, 8) != 0)
        return 2;

    stack_t ss = { .ss_sp = malloc(65536), .ss_size = 65536, .ss_flags = 0 };
    if (sigaltstack(&ss, NULL) != 0)
        return 3;

    umask(027);
    if (chdir("/tmp") != 0)
        return 4;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = 777;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 5;

    struct sigaction sa = { 0 };
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGUSR2);
    if (sigaction(SIGUSR1, &sa, NULL) != 0)
        return 6;

    unsigned long fs = 0;
    syscall(SYS_arch_prctl, ARCH_GET_FS, &fs);
    uint64_t head = 0;
    size_t len = 0;
    syscall(SYS_get_robust_list, 0, &head, &len);
    uint64_t tidaddr = 0;
    prctl(PR_GET_TID_ADDRESS, &tidaddr);
    uint64_t rseq = __rseq_size ? (uint64_t)((char *)__builtin_thread_pointer() + __rseq_offset) : 0;

    printf("pid=%x\n", (unsigned)getpid());
    printf("fs_base=%lx\n", fs);
    printf("sigmask=%llx\n", (unsigned long long)mask);
    printf("altstack_sp=%lx\n", (unsigned long)ss.ss_sp);
    printf("altstack_size=%lx\n", (unsigned long)ss.ss_size);
    printf("robust_head=%llx\n", (unsigned long long)head);
    printf("robust_len=%lx\n", (unsigned long)len);
    printf("tid_address=%llx\n", (unsigned long long)tidaddr);
    printf("rseq=%llx\n", (unsigned long long)rseq);
    printf("handler=%lx\n", (unsigned long)on_usr1);
    printf("xmm15_lo=%llx\n", (unsigned long long)pattern[0]);
    printf("xmm15_hi=%llx\n", (unsigned long long)pattern[1]);
    printf("ready\n");
    fflush(stdout);

    __asm__ volatile(
        "movdqu (%[pat]), %%xmm15\n\t"
        "mov $1, %%eax\n\t"          /* write(1, spinning_msg, 9) */
        "mov $1, %%edi\n\t"
        "mov %[msg], %%rsi\n\t"
        "mov $9, %%edx\n\t"
        "syscall\n\t"
        "1: pause\n\t"
        "jmp 1b\n\t"
        :
        : [pat] "r"(pattern), [msg] "r"(spinning_msg)
        : "rax", "rdi", "rsi", "rdx", "rcx", "r11", "xmm15", "memory");
    return 0;
}
