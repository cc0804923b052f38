/* A corpus of everyday frame shapes, each ending in a crash (or a blocked
 * thread), checked against gdb's DWARF unwinding at every -O level.
 * Usage: frames MODE
 *   inline1   NULL write inside an always_inline helper (inline frame at #0)
 *   inline3   the same three always_inline helpers deep
 *   inlinemid an inlined pair in the middle of the stack makes the call that crashes
 *   static    a static helper gcc inlines on its own (no attribute) crashes
 *   join      a worker crashes in an inlined helper while main waits in pthread_join
 *             and other threads wait in a condition variable, a mutex, a semaphore,
 *             a read, nanosleep
 *   plt       main -> lib_twice@plt (libframes.so) -> lib_apply -> callback -> crash
 *   qsort     a qsort comparator crashes (libc calls back through its own frames)
 *   nullcall  a call through a NULL function pointer
 *   signal    a SIGUSR1 handler crashes in an inlined helper called from it */
#define _GNU_SOURCE
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NOIPA __attribute__((noipa))
#define AINLINE static inline __attribute__((always_inline))

int lib_twice(int (*cb)(int), int v);

volatile int *volatile null_ptr = 0;
void (*volatile null_fn)(int) = 0;
volatile int sink;

AINLINE void inl_c(int v)
{
    sink = v;
    *null_ptr = v + 3;
}
AINLINE void inl_b(int v)
{
    sink = v * 2;
    inl_c(v + 1);
    sink = v;
}
AINLINE void inl_a(int v)
{
    sink = v * 3;
    inl_b(v + 1);
    sink = v;
}

NOIPA void crash_inline1(int v)
{
    sink = v;
    inl_c(v);
    sink = v + 1;
}

NOIPA void crash_inline3(int v)
{
    inl_a(v);
    sink = v;
}

NOIPA void leaf_crash(int v) { *null_ptr = v; }

AINLINE void mid_b(int v)
{
    sink = v;
    leaf_crash(v + 1);
    sink = v;
}
AINLINE void mid_a(int v)
{
    mid_b(v * 2);
    sink = v;
}
NOIPA void mid_outer(int v)
{
    mid_a(v + 1);
    sink = v;
}

static void static_helper(int v)
{
    sink = v;
    *null_ptr = v * 5;
}
NOIPA void static_outer(int v)
{
    static_helper(v + 2);
    sink = v;
}

NOIPA void call_null(int v)
{
    null_fn(v);
    sink = v;
}

NOIPA int crash_cb(int v)
{
    inl_c(v);
    return v;
}

NOIPA int compare_crash(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    if (x == 7 || y == 7)
        crash_inline1(x);
    return x - y;
}

/* ---- threads in libc waits ---- */
static pthread_barrier_t bar;
static pthread_mutex_t held = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t cmu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static sem_t sem;
static int pipefd[2];

NOIPA void *cond_waiter(void *arg)
{
    pthread_mutex_lock(&cmu);
    pthread_barrier_wait(&bar);
    for (;;)
        pthread_cond_wait(&cv, &cmu);
    return arg;
}
NOIPA void *mutex_waiter(void *arg)
{
    pthread_barrier_wait(&bar);
    pthread_mutex_lock(&held);
    return arg;
}
NOIPA void *sem_waiter(void *arg)
{
    pthread_barrier_wait(&bar);
    sem_wait(&sem);
    return arg;
}
NOIPA void *read_waiter(void *arg)
{
    char c;
    pthread_barrier_wait(&bar);
    sink = read(pipefd[0], &c, 1);
    return arg;
}
NOIPA void *sleeper(void *arg)
{
    struct timespec ts = { 1000, 0 };
    pthread_barrier_wait(&bar);
    nanosleep(&ts, NULL);
    return arg;
}
NOIPA void *crasher(void *arg)
{
    pthread_barrier_wait(&bar);
    usleep(300000); /* let every other thread block */
    mid_outer((int)(long)arg);
    return arg;
}

NOIPA void run_join(void)
{
    void *(*fns[])(void *) = { cond_waiter, mutex_waiter, sem_waiter, read_waiter, sleeper };
    pthread_t t[6];
    int n = sizeof fns / sizeof fns[0];
    pthread_mutex_lock(&held);
    sem_init(&sem, 0, 0);
    if (pipe(pipefd))
        return;
    pthread_barrier_init(&bar, NULL, n + 2);
    for (int i = 0; i < n; i++)
        pthread_create(&t[i], NULL, fns[i], NULL);
    pthread_create(&t[n], NULL, crasher, (void *)3L);
    pthread_barrier_wait(&bar);
    pthread_join(t[n], NULL);
}

static void on_usr1(int sig)
{
    crash_inline3(sig);
}

NOIPA void raise_it(int v)
{
    sink = v;
    raise(SIGUSR1);
    sink = v + 1;
}

int main(int argc, char **argv)
{
    const char *m = argc > 1 ? argv[1] : "inline1";
    if (!strcmp(m, "inline1"))
        crash_inline1(argc);
    else if (!strcmp(m, "inline3"))
        crash_inline3(argc);
    else if (!strcmp(m, "inlinemid"))
        mid_outer(argc);
    else if (!strcmp(m, "static"))
        static_outer(argc);
    else if (!strcmp(m, "join"))
        run_join();
    else if (!strcmp(m, "plt"))
        sink = lib_twice(crash_cb, argc);
    else if (!strcmp(m, "qsort")) {
        int v[] = { 5, 3, 9, 7, 1, 8 };
        qsort(v, 6, sizeof v[0], compare_crash);
    } else if (!strcmp(m, "nullcall"))
        call_null(argc);
    else if (!strcmp(m, "signal")) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_usr1;
        sigaction(SIGUSR1, &sa, NULL);
        raise_it(argc);
    }
    return 0;
}
