/* A thread caught as it is created: gdb stops at the clone3 syscall, the new thread is
   still at its entry (tests/e2e/test_new_thread.py). */
#include <pthread.h>
#include <unistd.h>
static void *run(void *a) { pause(); return a; }
int main(void) { pthread_t t; pthread_create(&t, 0, run, 0); pthread_join(t, 0); return 0; }
