/* gr_broker: graft-broker's core — one ROUTER socket, Redis as the only
 * state (every transition one Lua script), a single-threaded event loop with
 * timers for heartbeats, leases, retries, watchers and retention. */
#ifndef GR_BROKER_H
#define GR_BROKER_H

#include <signal.h>
#include <stdint.h>

#include "gr_wire.h"

typedef struct gr_broker_opts {
    const char *bind;      /* ZeroMQ endpoint, e.g. tcp://0.0.0.0:5555 */
    const char *redis_url; /* redis://host:port[/db], unix:///path */
    const char *prefix;    /* Redis key prefix, default "graft:" */
    int heartbeat_ms;      /* worker heartbeat interval, default 1000 */
    int liveness;          /* missed heartbeats before a worker is dead, default 3 */
    int64_t retention_s;   /* finished jobs kept this long, default 604800 */
    const char *store;     /* CAS root to check memo outputs against, or NULL */
    int backoff_ms;        /* first retry delay, default 1000 (doubles, jittered) */
    int events_max;        /* approximate cap of each job's event stream, default 10000 */
} gr_broker_opts;

typedef struct gr_broker gr_broker;

/* Fills defaults for every zero/NULL field. */
void gr_broker_opts_default(gr_broker_opts *o);
/* Binds the socket and prepares the Redis connection (Redis need not be up:
 * the broker keeps trying). NULL with gr_errmsg() on a bad option, URL or
 * endpoint. */
gr_broker *gr_broker_new(const gr_broker_opts *o);
/* Runs until *stop becomes nonzero (checked at least every 100 ms).
 * Returns 0, or a GR_E* code if the socket failed. */
int gr_broker_run(gr_broker *b, volatile sig_atomic_t *stop);
void gr_broker_destroy(gr_broker **b);
/* The wire counters (for tests). */
const gr_wire_stats *gr_broker_wire_stats(const gr_broker *b);

#endif
