/* gr_client: a client connection to graft-broker (the CLI, tools): requests
 * matched to replies by `req`, job event streams, where to find the broker,
 * and the state directory that `graft up` records its processes in. */
#ifndef GR_CLIENT_H
#define GR_CLIENT_H

#include "gr_json.h"

#define GR_CLIENT_DEFAULT_BROKER "tcp://127.0.0.1:5555"
#define GR_CLIENT_TIMEOUT_MS     10000 /* default wait for a reply */

typedef struct gr_client gr_client;

/* A DEALER connected to endpoint (nothing is sent yet). NULL with gr_errmsg(). */
gr_client *gr_client_new(const char *endpoint);
void gr_client_destroy(gr_client **c);
const char *gr_client_endpoint(const gr_client *c);

/* Sends command cmd with body (an object, or NULL for {}; a fresh "req" is
 * added) and waits up to timeout_ms for the REPLY or ERROR carrying the same
 * req. EVENTs that arrive meanwhile are kept for gr_client_event; other
 * answers are dropped. REPLY: returns 0 and, when result is not NULL, *result
 * = its `result` (caller frees). ERROR: returns its code (EINVAL ->
 * GR_EINVAL, ...) with gr_errmsg() = the broker's message. No answer:
 * GR_ETIMEOUT naming the endpoint (is graft-broker running?). */
int gr_client_call(gr_client *c, int cmd, const gr_json *body, int timeout_ms, gr_json **result);

/* The next EVENT body (caller frees) within timeout_ms: returns 0 with *ev,
 * 1 when none came, or GR_EIO when the socket failed. */
int gr_client_event(gr_client *c, int timeout_ms, gr_json **ev);

/* Throws the socket away and connects a fresh one (after a broker restart
 * the broker forgets watchers; a new identity starts clean). */
int gr_client_reconnect(gr_client *c);

/* ---- where things are ---- */

/* State directory: opt (--state) if set, else $GRAFT_STATE, else
 * $XDG_STATE_HOME/graft, else $HOME/.local/state/graft. Caller frees. */
char *gr_client_state_dir(const char *opt);

/* What `graft up` records in <state>/up.json while it runs. */
typedef struct gr_up_info {
    int pid; /* the `graft up` process */
    char broker[256];
    char redis[256];
    char store[4096];
} gr_up_info;

/* Reads <state>/up.json. Returns 1 and fills *info when it names a process
 * that is still alive, 0 when there is none (or it is stale), <0 on a
 * malformed file (GR_EFORMAT naming it). */
int gr_client_up_read(const char *state, gr_up_info *info);
/* Writes <state>/up.json atomically. */
int gr_client_up_write(const char *state, const gr_up_info *info);

/* Broker endpoint to use: opt (--broker) if set, else $GRAFT_BROKER, else the
 * one a running `graft up` recorded in the default state directory, else
 * GR_CLIENT_DEFAULT_BROKER. Caller frees. */
char *gr_client_broker(const char *opt);

/* Resolves "JOB/STAGE" or "JOB/STAGE/OUTPUT" (OUTPUT default `out`) to an
 * artifact id through the broker at endpoint (NULL: gr_client_broker(NULL)).
 * Everything after JOB/ is first taken as the stage id (variant ids may hold
 * '/'); only when no stage has that id is the last '/' part the OUTPUT.
 * GR_ENOTFOUND when the job or stage is unknown, GR_ESTATE when the stage has
 * no such output yet (naming its state). */
int gr_client_resolve(const char *endpoint, const char *ref, char id[72]);

#endif
