/* A stack of several MiB in use, full of noise, for the benchmark of
 * `regs-from-stack --scan`. Usage: bigstack [LEVELS]  (64 KiB per level,
 * default 120: 7.5 MiB, under the usual 8 MiB limit). Ends in a NULL write. */
#include <stdlib.h>

#define NOIPA __attribute__((noipa))
#define FRAME (64 * 1024)

volatile int *volatile null_ptr = 0;

NOIPA void fill(unsigned long *p, unsigned long n, unsigned long seed)
{
    for (unsigned long i = 0; i < n; i++) {
        seed = seed * 6364136223846793005UL + 1442695040888963407UL;
        p[i] = seed;
    }
}

NOIPA int level(int n)
{
    unsigned long buf[FRAME / sizeof(unsigned long)];
    fill(buf, sizeof buf / sizeof buf[0], (unsigned long)n);
    if (n <= 0) {
        *null_ptr = (int)buf[3];
        return 0;
    }
    return level(n - 1) + (int)buf[n & 7];
}

int main(int argc, char **argv)
{
    return level(argc > 1 ? atoi(argv[1]) : 120);
}
