/* gr_rconn: the broker's Redis connection — pipelined commands with
 * callbacks, the embedded Lua scripts called by EVALSHA, and reconnection
 * with backoff when Redis goes away. */
#ifndef GR_RCONN_H
#define GR_RCONN_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

typedef struct gr_rconn gr_rconn;

/* Called once per queued command with its reply (borrowed: freed after the
 * callback returns; may be an error reply), or with NULL when the connection
 * failed before the reply came (or was down when the command was queued). A
 * callback may queue further commands; gr_rconn_flush runs them too. */
typedef void (*gr_rconn_cb)(void *ud, redisReply *r);

/* Parses url: redis://[:password@]host[:port][/db], unix:///path/to/sock or
 * host[:port]. Does not connect. timeout_ms bounds connects and every read.
 * Returns NULL with gr_errmsg() naming the URL on a bad one. */
gr_rconn *gr_rconn_new(const char *url, int timeout_ms);
void gr_rconn_destroy(gr_rconn **c);

/* Connects (and loads every script) when down and the backoff since the last
 * failure has passed (100 ms doubling to 5 s). Returns 1 when up, 0 when
 * down; a failure is logged once per outage. */
int gr_rconn_ensure(gr_rconn *c);
int gr_rconn_up(const gr_rconn *c);
/* Counts successful connects: a change tells the broker that Redis was away
 * (or restarted) and its view must be refreshed. */
uint64_t gr_rconn_epoch(const gr_rconn *c);

/* Queues a command (argv copied). When down, cb(ud, NULL) runs at once.
 * Returns 0, or GR_ENOMEM. */
int gr_rconn_cmd(gr_rconn *c, gr_rconn_cb cb, void *ud, int argc, const char **argv,
                 const size_t *lens);
/* Queues EVALSHA of script (gr_lua_id) with no keys and argv as ARGV. */
int gr_rconn_script(gr_rconn *c, int script, gr_rconn_cb cb, void *ud, int argc, const char **argv,
                    const size_t *lens);
/* Without waiting: sends what the socket takes, reads (when readable: poll
 * reported POLLIN on gr_rconn_fd) what has arrived and runs the callbacks of
 * complete replies in order (commands they queue are sent too). A
 * connection silent for the timeout while replies are owed is marked down.
 * For an event loop that polls gr_rconn_fd (POLLIN, plus POLLOUT while
 * gr_rconn_want_write). */
void gr_rconn_pump(gr_rconn *c, int readable);
int gr_rconn_fd(const gr_rconn *c); /* -1 when down */
int gr_rconn_want_write(const gr_rconn *c);
/* Sends everything queued and runs the callbacks in order, waiting until
 * nothing is pending (including commands queued by callbacks). On a
 * connection failure the remaining callbacks get NULL and the connection is
 * marked down. */
void gr_rconn_flush(gr_rconn *c);
/* Number of commands queued and not yet answered. */
size_t gr_rconn_pending(const gr_rconn *c);

/* Runs one command synchronously (for tools and tests); returns the reply
 * (caller frees with freeReplyObject) or NULL with gr_errmsg() set. */
redisReply *gr_rconn_call(gr_rconn *c, int argc, const char **argv, const size_t *lens);

/* ---- argument lists ----
 * A growable argv whose strings are owned copies. */
typedef struct gr_rargs {
    char **v;
    size_t *len;
    size_t n, cap;
    int oom;
} gr_rargs;
void gr_rargs_add(gr_rargs *a, const char *s, size_t n);
void gr_rargs_str(gr_rargs *a, const char *s);
void gr_rargs_int(gr_rargs *a, int64_t v);
void gr_rargs_reset(gr_rargs *a); /* frees the strings, keeps nothing */

#endif
