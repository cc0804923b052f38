/* Frame shapes for the layout oracle test: compiled at many gcc settings and
   checked against the object's own .eh_frame. */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <setjmp.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#define NOINLINE __attribute__((noinline))
volatile long sink;

NOINLINE long leaf(long a, long b) { return a * 3 + b; }

NOINLINE long many_saved(long a, long b, long c, long d) {
    long x = leaf(a, b), y = leaf(c, d), z = leaf(x, y), w = leaf(z, a);
    long v = leaf(w, b), u = leaf(v, c);
    return x + y + z + w + v + u + a + b + c + d;
}

NOINLINE long shrink_wrapped(long *p, long n) {
    if (!p) return -1;          /* early exit before any push */
    long s = 0;
    for (long i = 0; i < n; i++) s += leaf(p[i], i);
    return s + many_saved(s, n, 1, 2);
}

NOINLINE long vla(int n) {
    char buf[n + 1];            /* alloca: rbp-based CFA */
    memset(buf, 'a', n);
    buf[n] = 0;
    return leaf(strlen(buf), buf[0]);
}

NOINLINE long consume(volatile char *p, long n) { long s = 0; for (long i = 0; i < n; i += 4096) s += p[i]; return s; }

NOINLINE long big_frame(int i) {
    char big[200000];           /* stack-clash probe loop with -fstack-clash-protection */
    memset(big, i, sizeof big);
    return consume(big, sizeof big) + leaf(big[i % 200000], big[7]);
}

NOINLINE long mid_frame(int i) {
    char mid[9000];             /* unrolled probes */
    memset(mid, i, sizeof mid);
    return consume(mid, sizeof mid);
}

NOINLINE long with_switch(int k, long v) {
    switch (k) {                /* jump table */
    case 0: return leaf(v, 1);
    case 1: return leaf(v, 2) + many_saved(v, 1, 2, 3);
    case 2: return v * 7;
    case 3: return leaf(v, v);
    case 4: return many_saved(v, v, v, v);
    case 5: return v - 3;
    case 6: return leaf(v + 1, 9);
    case 7: return v ^ 0x55;
    default: return 0;
    }
}

NOINLINE void die(const char *m) { fputs(m, stderr); abort(); }

NOINLINE long checks(long a) {
    if (a < 0) die("negative");  /* noreturn paths */
    if (a > 1000000) abort();
    return leaf(a, a);
}

NOINLINE long recurse(long n) { return n <= 1 ? 1 : n * recurse(n - 1) + leaf(n, 1); }

#ifdef __AVX2__
NOINLINE long use_vec(__m256 *v) { float f[8]; _mm256_storeu_ps(f, *v); return (long)f[0]; }
NOINLINE long realigned(float x) {
    __m256 v = _mm256_set1_ps(x); /* 32-byte aligned local: realigned frame */
    return use_vec(&v) + leaf(1, 2);
}
#else
NOINLINE long realigned(float x) { return (long)x + leaf(1, 2); }
#endif

jmp_buf jb;
NOINLINE long jumps(long a) {
    if (setjmp(jb)) return 1;
    if (a == 42) longjmp(jb, 1);
    return leaf(a, 2);
}

NOINLINE long loops(long n) {
    long s = 0;
    for (long i = 0; i < n; i++)
        for (long j = 0; j < i; j++)
            s += (i & 1) ? leaf(i, j) : many_saved(i, j, s, n);
    return s;
}

int main(int argc, char **argv) {
    long a = argc;
    long arr[4] = {1, 2, 3, 4};
    sink = shrink_wrapped(arr, 4) + vla(argc + 5) + big_frame(argc) + mid_frame(argc) + with_switch(argc, a) +
           checks(a) + recurse(a + 3) + realigned((float)a) + jumps(a) + loops(a + 2);
    (void)argv;
    return 0;
}
