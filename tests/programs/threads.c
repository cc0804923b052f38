/* Several threads, each blocked in nested calls, while main crashes.
 * Usage: threads [NTHREADS]   (default 3)
 * Each worker: worker -> level1 -> level2 -> level3 -> wait_forever ->
 * pause() in libc. main waits until all workers are at their deepest call,
 * then main_level1 -> main_level2 -> boom (NULL write). */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define NOIPA __attribute__((noipa))

volatile int *volatile null_ptr = 0;
static pthread_barrier_t bar;

NOIPA void wait_forever(int id)
{
    volatile int me = id;
    pthread_barrier_wait(&bar);
    for (;;)
        pause();
    (void)me;
}

NOIPA void level3(int id) { volatile int x = id * 3; wait_forever(x); }
NOIPA void level2(int id) { volatile int x = id * 2; level3(x); }
NOIPA void level1(int id) { volatile int x = id + 1; level2(x); }

NOIPA void *worker(void *arg)
{
    level1((int)(long)arg);
    return NULL;
}

NOIPA void boom(int v) { *null_ptr = v; }
NOIPA void main_level2(int v) { volatile int x = v; boom(x); }
NOIPA void main_level1(int v) { volatile int x = v; main_level2(x); }

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 3;
    if (n < 1 || n > 64)
        n = 3;
    pthread_t t[64];
    pthread_barrier_init(&bar, NULL, n + 1);
    for (int i = 0; i < n; i++)
        pthread_create(&t[i], NULL, worker, (void *)(long)i);
    pthread_barrier_wait(&bar);
    usleep(200000); /* let every worker reach pause() */
    main_level1(n);
    return 0;
}
