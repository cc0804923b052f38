/* Signal frames in awkward places, ending in a crash.
 * Usage: signals altstack|nested|siginfo
 *   altstack : a SIGSEGV handler installed with SA_ONSTACK runs on a
 *              sigaltstack and calls abort(): the handler frames lie on the
 *              alternate stack, the interrupted frames on the normal stack.
 *   nested   : a SIGUSR1 handler raises SIGUSR2; the SIGUSR2 handler runs
 *              while the SIGUSR1 handler is interrupted (two rt_sigframes on
 *              the stack, both live) and writes through NULL (SIGSEGV).
 *   siginfo  : a SIGSEGV handler installed with SA_SIGINFO (siginfo valid)
 *              calls abort().
 * Chain below every handler: main -> outer -> middle -> fault_here (NULL write)
 * or -> send_usr1 (raise). */
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define NOIPA __attribute__((noipa))

volatile int *volatile null_ptr = 0;
static volatile sig_atomic_t seen;
static char altstack[64 * 1024] __attribute__((aligned(16)));

NOIPA void fault_here(int v) { *null_ptr = v; }

NOIPA void send_usr1(int v)
{
    raise(SIGUSR1);
    seen += v;
}

NOIPA int middle(int mode, int x)
{
    if (mode == 1)
        send_usr1(x + 1);
    else
        fault_here(x + 1);
    return x * 3 + (int)seen;
}

NOIPA int outer(int mode, int x)
{
    volatile long pad[8];
    for (int i = 0; i < 8; i++)
        pad[i] = i * x;
    return middle(mode, x + 2) + (int)pad[3];
}

/* altstack: the handler's own chain, on the alternate stack. */
NOIPA void alt_inner(int sig)
{
    seen = sig;
    abort();
}

NOIPA void alt_handler(int sig) { alt_inner(sig + 0); seen++; }

/* nested: SIGUSR2 arrives while the SIGUSR1 handler runs. */
NOIPA void usr2_crash(int sig) { *null_ptr = sig; }

NOIPA void usr2_handler(int sig) { usr2_crash(sig); seen++; }

NOIPA void usr1_work(int sig)
{
    seen = sig;
    raise(SIGUSR2);
    seen++;
}

NOIPA void usr1_handler(int sig) { usr1_work(sig); seen++; }

/* siginfo: an SA_SIGINFO handler. */
NOIPA void info_inner(int sig, siginfo_t *si)
{
    seen = sig + (si->si_addr != 0);
    abort();
}

NOIPA void info_handler(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    info_inner(sig, si);
    seen++;
}

static void install(int sig, void (*h)(int), int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = h;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv)
{
    const char *m = argc > 1 ? argv[1] : "altstack";
    int mode = 0;
    if (strcmp(m, "altstack") == 0) {
        stack_t ss;
        memset(&ss, 0, sizeof ss);
        ss.ss_sp = altstack;
        ss.ss_size = sizeof altstack;
        sigaltstack(&ss, NULL);
        install(SIGSEGV, alt_handler, SA_ONSTACK);
    } else if (strcmp(m, "nested") == 0) {
        /* SIGUSR2 is not in SIGUSR1's sa_mask: it is delivered at once,
         * inside the SIGUSR1 handler. */
        install(SIGUSR1, usr1_handler, 0);
        install(SIGUSR2, usr2_handler, 0);
        mode = 1;
    } else if (strcmp(m, "siginfo") == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = info_handler;
        sa.sa_flags = SA_SIGINFO;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, NULL);
    } else {
        return 2;
    }
    return outer(mode, argc) & 0x7f;
}
