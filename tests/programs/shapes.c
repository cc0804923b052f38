/* Many prologue and call shapes in one chain, ending in a crash.
 * Usage: shapes [null|abort|signal]   (default null)
 *   null   : NULL write in crash_here (SIGSEGV)
 *   abort  : crash_here calls abort() (SIGABRT; ra may point past the function)
 *   signal : NULL write, a SIGSEGV handler catches it and calls abort(), so the
 *            stack goes through the signal trampoline.
 * Chain (outermost first): main -> many_locals (big frame) -> with_vla
 * (alloca + VLA) -> callee_saved_heavy (rbx, r12-r15 live across calls) ->
 * inline_step (always_inline) -> via_pointer (call through a function
 * pointer) -> via_member (ops->fn(x)) -> tail_caller (`return g(x)`: a jmp at
 * -O2) -> tail_target -> crash_here. */
#define _GNU_SOURCE
#include <alloca.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define NOIPA __attribute__((noipa))

volatile int *volatile null_ptr = 0;
static int mode; /* 0 null, 1 abort, 2 signal */

NOIPA void crash_here(int v)
{
    if (mode == 1)
        abort();
    *null_ptr = v;
}

NOIPA int tail_target(int x)
{
    crash_here(x);
    return x * 3 + 1;
}

NOIPA int tail_caller(int x) { return tail_target(x + 1); }

struct ops {
    int (*fn)(int);
    const char *name;
};

NOIPA int via_member(const struct ops *o, int x)
{
    int r = o->fn(x);
    return r + 1;
}

static struct ops the_ops = { tail_caller, "tail" };

NOIPA int via_pointer(int (*fp)(const struct ops *, int), int x)
{
    int r = fp(&the_ops, x);
    return r + 2;
}

NOIPA long mix(long v) { return v * 2654435761u ^ (v >> 7); }

static inline __attribute__((always_inline)) long inline_step(long x)
{
    int (*volatile fp)(const struct ops *, int) = via_member;
    return via_pointer(fp, (int)x) + 5;
}

NOIPA long callee_saved_heavy(int x)
{
    long a = x, b = x * 3L, c = x * 5L, d = x * 7L, e = x * 11L, f = x * 13L;
    for (int i = 0; i < 3; i++) {
        a += mix(b);
        b ^= mix(c);
        c += mix(d);
        d ^= mix(e);
        e += mix(f);
        f ^= mix(a);
    }
    long r = inline_step(x);
    return r + a + b + c + d + e + f;
}

NOIPA int with_vla(int n)
{
    char *p = alloca(n);
    volatile char vla[n];
    memset(p, 1, n);
    vla[0] = 2;
    vla[n - 1] = 3;
    long r = callee_saved_heavy(n);
    return (int)r + p[3] + vla[1];
}

NOIPA int many_locals(int x)
{
    volatile long big[64];
    volatile int a = x, b = x + 1, c = x + 2, d = x + 3;
    for (int i = 0; i < 64; i++)
        big[i] = i * x;
    int r = with_vla(x % 50 + 16);
    return r + (int)big[5] + a + b + c + d;
}

static void segv_handler(int sig)
{
    (void)sig;
    abort();
}

NOIPA void handler_helper(int sig) { segv_handler(sig); }

static void on_segv(int sig) { handler_helper(sig); }

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "abort") == 0)
        mode = 1;
    if (argc > 1 && strcmp(argv[1], "signal") == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_segv;
        sigaction(SIGSEGV, &sa, NULL);
        mode = 2;
    }
    return many_locals(argc) & 0x7f;
}
