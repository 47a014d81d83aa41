/* gr_log: leveled log lines on stderr, tagged with a component name. */
#ifndef GR_LOG_H
#define GR_LOG_H

enum { GR_LOG_DEBUG = 0, GR_LOG_INFO = 1, GR_LOG_WARN = 2, GR_LOG_ERROR = 3, GR_LOG_OFF = 4 };

/* Level is read once from GRAFT_LOG (debug|info|warn|error|off, default info)
 * unless gr_log_set_level() was called. */
void gr_log_set_level(int level);
int gr_log_level(void);
void gr_log(int level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Seconds on the monotonic clock, for durations and rates. */
double gr_now_s(void);

#define GR_DEBUG(comp, ...) gr_log(GR_LOG_DEBUG, comp, __VA_ARGS__)
#define GR_INFO(comp, ...)  gr_log(GR_LOG_INFO, comp, __VA_ARGS__)
#define GR_WARN(comp, ...)  gr_log(GR_LOG_WARN, comp, __VA_ARGS__)
#define GR_ERROR(comp, ...) gr_log(GR_LOG_ERROR, comp, __VA_ARGS__)

#endif
