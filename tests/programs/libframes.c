/* A shared library called through the PLT by frames.c: each entry calls back
 * into the executable (an indirect call), so the frame of the caller of the
 * library's function is checked through its PLT stub. */
#define NOIPA __attribute__((noipa))

volatile int lib_sink;

NOIPA int lib_apply(int (*cb)(int), int v)
{
    int r = cb(v + 1);
    lib_sink = r;
    return r + 1;
}

NOIPA int lib_twice(int (*cb)(int), int v)
{
    int r = lib_apply(cb, v * 2);
    lib_sink = r;
    return r + 2;
}
