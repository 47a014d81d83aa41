/* gr_dash: the numbers of a graft dashboard (`graft top`), read straight from
 * Redis as schemas/redis-keys.md documents the keys — read-only, never a
 * write — and their plain-text and JSON forms. */
#ifndef GR_DASH_H
#define GR_DASH_H

#include <stddef.h>
#include <stdint.h>

#include "gr_buf.h"

#define GR_DASH_DEFAULT_URL    "redis://127.0.0.1:6379"
#define GR_DASH_DEFAULT_PREFIX "graft:"
/* Latency sample: the first GR_DASH_SAMPLE_STAGES stages (topological order)
 * of the GR_DASH_SAMPLE_JOBS most recently created jobs. The Grafana panel in
 * deploy/grafana/graft-dashboard.json uses the same rule. */
#define GR_DASH_SAMPLE_JOBS   20
#define GR_DASH_SAMPLE_STAGES 2000
#define GR_DASH_MAX_ITEMS     1000 /* ops, workers, active jobs read per sample */

/* ---- Redis URLs ---- */

typedef struct gr_dash_url {
    char host[256];     /* empty for a unix socket */
    char path[1024];    /* unix socket path */
    char user[128];     /* ACL user, or empty */
    char password[256]; /* empty: no AUTH */
    int port, db;
} gr_dash_url;

/* Parses redis://[[user]:password@]host[:port][/db], unix:///path/to/sock or
 * host[:port] ([v6addr] in brackets). Returns 0, or GR_EINVAL with a message
 * naming the URL (its password masked) and the rule broken: empty host or
 * socket path, a port outside 1..65535, a database that is not a number in
 * 0..1000000, control characters or spaces, parts too long. */
int gr_dash_parse_url(const char *url, gr_dash_url *out);
/* The URL as it may be shown: any password replaced by "***". */
void gr_dash_url_display(const char *url, char *buf, size_t size);

/* ---- one sample of the numbers ---- */

enum { /* stage states, in the order of the job hash's n_* counts */
       GR_DASH_BLOCKED,
       GR_DASH_READY,
       GR_DASH_RUNNING,
       GR_DASH_DONE,
       GR_DASH_CACHED,
       GR_DASH_FAILED,
       GR_DASH_CANCELLED,
       GR_DASH_SKIPPED,
       GR_DASH_NSTATES
};
/* "blocked", "ready", ... for i < GR_DASH_NSTATES. */
const char *gr_dash_state_name(int i);

typedef struct gr_dash_queue {
    char *op;
    int64_t ready; /* ZCARD P ready:<op> */
    int served;    /* a listed worker serves the op */
} gr_dash_queue;

/* Percentiles of a latency sample, in ms; NaN when n is 0. */
typedef struct gr_dash_lat {
    size_t n;
    double p50, p95, p99, max;
} gr_dash_lat;

typedef struct gr_dash_counter {
    char *name;
    int64_t value;
    double rate; /* per second over the window; NaN without one or after a reset */
} gr_dash_counter;

typedef struct gr_dash_worker {
    char *id, *host, *state, *version;
    char *task;  /* "<jid>:<sid>" or "" */
    char *op;    /* the task's op, or "" */
    char *ops;   /* the ops it serves, comma-separated */
    char *p_msg; /* progress message of the task, or "" */
    int64_t pid, attempt, rss, threads;
    int64_t heartbeat_age_ms; /* sample time - last_seen */
    double p_done, p_total;   /* progress of the task (total 0: none) */
    double task_ms;           /* how long the current attempt has run; NaN when idle */
} gr_dash_worker;

typedef struct gr_dash_job {
    char *id, *name, *state;
    int64_t nstages;
    int64_t n[GR_DASH_NSTATES];
    int64_t created, finished; /* ms; finished 0 while the job runs */
    int active;                /* member of P active */
} gr_dash_job;

/* Everything one sample read; strings are owned by the snapshot. */
typedef struct gr_dash_snap {
    char *redis;     /* URL with the password masked */
    char *prefix;    /* key prefix */
    int64_t time_ms; /* Redis server time of the sample (TIME) */
    double window_s; /* seconds since the previous sample; 0 for the first */
    gr_dash_queue *queues;
    size_t nqueues;
    int64_t ready_total; /* sum of the queues */
    int64_t in_flight;   /* ZCARD P leases */
    int64_t delayed;     /* ZCARD P delayed: waiting out a retry backoff */
    int64_t resolving;   /* SCARD P resolve */
    int64_t dead;        /* ZCARD P dead: stages failed for good */
    int64_t jobs_total;  /* ZCARD P jobs */
    int64_t jobs_active; /* SCARD P active */
    int64_t workers_total, workers_busy;
    gr_dash_counter *counters; /* HGETALL P metrics, sorted by name */
    size_t ncounters;
    gr_dash_lat wait, run; /* ms: attempt_started - ready_us/1000; finished - attempt_started */
    size_t sample_jobs, sample_stages;
    gr_dash_worker *workers; /* most recently heard first */
    size_t nworkers;
    gr_dash_job *jobs; /* active jobs (newest first), then recently finished ones */
    size_t njobs;
} gr_dash_snap;

void gr_dash_snap_free(gr_dash_snap **s);
/* A counter's value (0 when absent) and its rate (NaN when absent). */
int64_t gr_dash_snap_counter(const gr_dash_snap *s, const char *name);
double gr_dash_snap_rate(const gr_dash_snap *s, const char *name);

/* ---- the reader ---- */

typedef struct gr_dash gr_dash;

/* A reader of the installation whose keys start with prefix, on the Redis
 * server at url. Connects at once: NULL with gr_errmsg() (one line naming
 * the URL, its password masked) when the URL is bad (GR_EINVAL) or the server
 * cannot be reached or refuses AUTH/SELECT (GR_ENET). timeout_ms bounds the
 * connect and every reply. max_jobs: job rows kept per sample (active first,
 * then the most recently finished). */
gr_dash *gr_dash_new(const char *url, const char *prefix, int timeout_ms, int max_jobs);
void gr_dash_destroy(gr_dash **d);

/* Reads one sample (caller frees *out). Only read commands are sent (TIME,
 * SCAN, ZCARD, SCARD, ZREVRANGE, SMEMBERS, LLEN, LRANGE, HMGET, HGETALL).
 * Rates are taken against the previous successful sample of this reader.
 * A broken connection is reconnected on the next call. Errors: GR_ENET (the
 * server went away), GR_EFORMAT naming the key that holds something else
 * than redis-keys.md says. */
int gr_dash_sample(gr_dash *d, gr_dash_snap **out);

/* ---- presentation ---- */

/* Appends the snapshot as one JSON object (no newline); the fields are
 * documented in deploy/grafana/README.md and `graft top --help`. */
int gr_dash_json(const gr_dash_snap *s, gr_buf *out);
/* Appends the snapshot as plain ASCII text, every line at most width bytes
 * (>= 40) and, when height > 0, at most height lines (the job and worker
 * tables are cut to fit, saying how many rows were left out). */
int gr_dash_text(const gr_dash_snap *s, gr_buf *out, int width, int height);

/* The p-th percentile (0..100) of sorted[0..n) by linear interpolation
 * between the closest ranks (numpy's default): NaN when n is 0. */
double gr_dash_percentile(const double *sorted, size_t n, double p);
/* Sorts v[0..n) in place and fills *out (p50, p95, p99, max). */
void gr_dash_latency(double *v, size_t n, gr_dash_lat *out);

/* Short human forms, NUL-terminated in buf (size >= 16): durations
 * ("0.42ms", "12.3ms", "850ms", "4.21s", "42.0s", "4m05s", "2h03m", "-" for
 * NaN), sizes ("512B", "1.5KiB", "12.0MiB", ...) and rates ("12.3/s"). */
char *gr_dash_fmt_ms(char *buf, size_t size, double ms);
char *gr_dash_fmt_bytes(char *buf, size_t size, double bytes);
char *gr_dash_fmt_rate(char *buf, size_t size, double per_s);
/* A DAG progress bar of exactly width cells between brackets in buf (size >
 * width + 2): '#' done or cached, 'x' failed, cancelled or skipped, '>'
 * running, '.' ready or blocked. Cell boundaries are floor(cumulative count *
 * width / total), so the bar is all '#' only when every stage is done. */
char *gr_dash_bar(char *buf, size_t size, int width, const int64_t n[GR_DASH_NSTATES]);
/* Appends s with the glob characters of Redis MATCH patterns (* ? [ ] \)
 * escaped by a backslash. */
int gr_dash_glob_escape(gr_buf *out, const char *s, size_t n);

#endif
