/* Counts a process's clock reads (clock_gettime, gettimeofday) for bench/page_cost.py, loaded with LD_PRELOAD.
 * Every 0.1 s it writes the count so far to $CLOCKCOUNT_DIR/clock.<pid>; a forked child starts again from 0 with
 * a writer of its own. The real functions (the vDSO's, where the clock source allows) are called as usual.
 * With CLOCKCOUNT_DELAY_NS set, every read also spins that long first: a clock source the hypervisor must emulate
 * (a read that exits to it) costs microseconds, and this shows what that does to a server. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <time.h>
#include <sys/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <pthread.h>
#include <stdatomic.h>
static atomic_long calls;
static long delay_ns = -1;
static int (*real_cg)(clockid_t, struct timespec *);
static void spin(void) {
    if (delay_ns < 0) delay_ns = getenv("CLOCKCOUNT_DELAY_NS") ? atol(getenv("CLOCKCOUNT_DELAY_NS")) : 0;
    if (delay_ns == 0) return;
    struct timespec start, now;
    real_cg(CLOCK_MONOTONIC, &start);
    do real_cg(CLOCK_MONOTONIC, &now);
    while ((now.tv_sec - start.tv_sec) * 1000000000L + (now.tv_nsec - start.tv_nsec) < delay_ns);
}
int clock_gettime(clockid_t c, struct timespec *t) {
    atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
    if (!real_cg) real_cg = dlsym(RTLD_NEXT, "clock_gettime");
    spin();
    return real_cg(c, t);
}
static void *writer(void *arg) {
    char path[128], tmp[140];
    snprintf(path, sizeof path, "%s/clock.%d", getenv("CLOCKCOUNT_DIR") ? getenv("CLOCKCOUNT_DIR") : "/tmp", getpid());
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    for (;;) {
        FILE *f = fopen(tmp, "w");
        if (f) { fprintf(f, "%ld\n", atomic_load(&calls)); fclose(f); rename(tmp, path); }
        usleep(100000);
    }
    return 0;
}
static int (*real_gtod)(struct timeval *, void *);
int gettimeofday(struct timeval *tv, void *tz) {
    atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
    if (!real_gtod) real_gtod = dlsym(RTLD_NEXT, "gettimeofday");
    if (!real_cg) real_cg = dlsym(RTLD_NEXT, "clock_gettime");
    spin();
    return real_gtod(tv, tz);
}
static void start(void) { pthread_t t; atomic_store(&calls, 0); pthread_create(&t, 0, writer, 0); pthread_detach(t); }
__attribute__((constructor)) static void init(void) { pthread_atfork(0, 0, start); start(); }
