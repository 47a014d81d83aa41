/* th_rss: peak anonymous memory (RssAnon: heap and anonymous maps, not the
 * page cache of mapped files) of this process over a stretch of code, for
 * the tests and benchmarks that check what a streamed model holds. A thread
 * reads /proc/self/status every millisecond between start and stop. */
#ifndef TH_RSS_H
#define TH_RSS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* RssAnon now, in KiB (-1 when /proc cannot tell). */
static inline long th_rss_anon_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "RssAnon:", 8)) {
            kb = atol(line + 8);
            break;
        }
    fclose(f);
    return kb;
}

typedef struct th_peak {
    pthread_t th;
    long base;
    atomic_long peak_kb;
    atomic_int run;
} th_peak;

static inline void *th_peak_main(void *arg)
{
    th_peak *p = arg;
    while (atomic_load(&p->run)) {
        long kb = th_rss_anon_kb();
        if (kb > atomic_load(&p->peak_kb)) atomic_store(&p->peak_kb, kb);
        usleep(1000);
    }
    return NULL;
}

/* Starts sampling; 0, or -1 when the thread cannot start. */
static inline int th_peak_start(th_peak *p)
{
    p->base = th_rss_anon_kb();
    atomic_store(&p->peak_kb, p->base);
    atomic_store(&p->run, 1);
    return pthread_create(&p->th, NULL, th_peak_main, p) ? -1 : 0;
}

/* Stops sampling (after a last few samples with everything still
 * allocated); returns the peak above the level at start, in MB. */
static inline double th_peak_stop(th_peak *p)
{
    usleep(3000);
    atomic_store(&p->run, 0);
    pthread_join(p->th, NULL);
    return (double)(atomic_load(&p->peak_kb) - p->base) / 1024.0;
}

#endif
