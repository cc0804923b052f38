/* Frames gcc realigns (locals needing 32/64-byte alignment): through a DRAP
 * register (r10; r13 in a nested function, whose r10 is the static chain) when
 * the frame also has variable size, with rbp alone otherwise; main realigned
 * too. Crashes below every realigned frame or inside one.
 *   realign below    SIGSEGV in a leaf called through all of them
 *   realign inside   SIGSEGV in the DRAP frame itself (after its calls)
 *   realign nested   SIGSEGV inside the r13-DRAP nested function
 */
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile int *volatile null_ptr;
static int mode; /* 0 below, 1 inside, 2 nested */

__attribute__((noipa)) void use(void *b, int n) { memset(b, n, 8); }

__attribute__((noipa)) int leaf(int n) {
    *null_ptr = n; /* below */
    return n;
}

typedef double v4d __attribute__((vector_size(32)));

/* 32-byte vectors on the stack: realigned with rbp (AVX with -mavx2). */
__attribute__((noipa)) double avx_locals(int n) {
    v4d l[3];
    for (int i = 0; i < 3; i++)
        l[i] = (v4d){n, n + i, n * i, 1.0};
    use(l, n);
    return l[1][2] + leaf(n);
}

/* aligned(64), fixed size: realigned with rbp. */
__attribute__((noipa)) int aligned64(int n) {
    char buf[128] __attribute__((aligned(64)));
    use(buf, n);
    return buf[n & 127] + (int)avx_locals(n + 1);
}

/* alignas(32) and a variable-length array: realigned through r10 (DRAP). */
__attribute__((noipa)) int drap_vla(int n) {
    alignas(32) char buf[64];
    char v[n + 8];
    use(buf, n);
    use(v, n);
    int r = aligned64(n + 1);
    if (mode == 1)
        *null_ptr = r; /* inside */
    return buf[n & 63] + v[n & 7] + r;
}

/* A nested function uses r10 for its static chain, so its DRAP is r13. */
__attribute__((noipa)) int nested_outer(int n) {
    int k = n * 3;
    __attribute__((noipa)) int nested_drap(int m) {
        alignas(64) char b[64];
        char v[m + 8];
        use(b, m + k);
        use(v, m);
        int r = (mode == 2) ? (*null_ptr = m) : drap_vla(m + 1);
        return b[1] + v[m & 7] + r;
    }
    return nested_drap(n) + 1;
}

int main(int argc, char **argv) {
    /* main realigned (and DRAP-framed at some -O levels): a VLA and alignas(32) */
    alignas(32) char big[32];
    char v[argc + 8];
    const char *m = argc > 1 ? argv[1] : "below";
    mode = !strcmp(m, "inside") ? 1 : !strcmp(m, "nested") ? 2 : 0;
    use(big, argc);
    use(v, argc);
    int r = nested_outer(argc + 2);
    printf("%d\n", r + big[argc & 31] + v[argc & 7]);
    return 0;
}
