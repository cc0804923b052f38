/* A function that calls one pointer from two branches decided by an argument: whether
   a lost return address into it can be told apart depends on where the argument lives. */
#include <stdlib.h>
#define NOIPA __attribute__((noipa, noinline))

volatile int *null_ptr;
NOIPA int crash_cb(int v) { *null_ptr = v; return v; }

NOIPA int twice(int (*f)(int), int x)
{
    int r;
    if (x > 0)
        r = f(x) + 1;
    else
        r = f(-x) * 3;
    return r;
}

int main(int argc, char **argv)
{
    (void)argv;
    return twice(crash_cb, argc - 3) + 7;
}
