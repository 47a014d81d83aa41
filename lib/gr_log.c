/* gr_log: leveled log lines on stderr. One write() per line so that lines of
 * concurrent threads and processes do not interleave. */
#include "gr_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int log_level = -1;

void gr_log_set_level(int level)
{
    log_level = level;
}

int gr_log_level(void)
{
    if (log_level < 0) {
        const char *e = getenv("GRAFT_LOG");
        int lv = GR_LOG_INFO;
        if (e) {
            if (!strcmp(e, "debug")) lv = GR_LOG_DEBUG;
            else if (!strcmp(e, "warn")) lv = GR_LOG_WARN;
            else if (!strcmp(e, "error")) lv = GR_LOG_ERROR;
            else if (!strcmp(e, "off")) lv = GR_LOG_OFF;
        }
        log_level = lv;
    }
    return log_level;
}

void gr_log(int level, const char *component, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (level < gr_log_level() || level >= GR_LOG_OFF) return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s [%s] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, names[level], component ? component : "-");
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

double gr_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
