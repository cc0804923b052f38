/* Deep recursion that ends in a NULL write.
 * Usage: recursion [DEPTH]   (default 10; the benchmark uses 200 and 5000)
 * Frames at the crash: boom, rec x (DEPTH+1), start, main, libc start code.
 * Every call in the chain is a direct `call`, none is a tail call at any -O
 * level (a local escapes, so rec cannot become a loop). */
#include <stdlib.h>

#define NOIPA __attribute__((noipa))

volatile int *volatile null_ptr = 0;

NOIPA void escape(volatile char *p) { __asm__ volatile("" : : "r"(p) : "memory"); }

NOIPA void boom(int v) { *null_ptr = v; }

NOIPA int rec(int n)
{
    volatile char buf[16];
    buf[0] = (char)n;
    escape(buf);
    if (n <= 0) {
        boom(buf[0]);
        return 0;
    }
    int r = rec(n - 1);
    return r + buf[0];
}

NOIPA int start(int depth)
{
    int r = rec(depth);
    return r + 1;
}

int main(int argc, char **argv)
{
    int depth = argc > 1 ? atoi(argv[1]) : 10;
    return start(depth) & 0x7f;
}
