/* gr_client: request/reply and event streams over a DEALER to graft-broker,
 * plus the state directory of `graft up`. */
#include "gr_client.h"
#include "gr_err.h"
#include "gr_fs.h"
#include "gr_jsonb.h"
#include "gr_wire.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define CL_MAX_QUEUED 10000 /* events kept while waiting for a reply */

struct gr_client {
    void *zctx, *sock;
    char *endpoint;
    int64_t next_req;
    gr_json **events; /* FIFO of EVENT bodies */
    size_t nev, capev, headev;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

gr_client *gr_client_new(const char *endpoint)
{
    gr_client *c = calloc(1, sizeof *c);
    if (!c) {
        gr_seterr(GR_ENOMEM, "out of memory");
        return NULL;
    }
    c->next_req = 1;
    if (!(c->endpoint = strdup(endpoint ? endpoint : GR_CLIENT_DEFAULT_BROKER))) {
        gr_seterr(GR_ENOMEM, "out of memory");
        goto fail;
    }
    if (!(c->zctx = zmq_ctx_new())) {
        gr_seterr(GR_EIO, "zmq context: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (!(c->sock = gr_wire_dealer(c->zctx, c->endpoint))) goto fail;
    return c;
fail:
    gr_client_destroy(&c);
    return NULL;
}

void gr_client_destroy(gr_client **pc)
{
    if (!pc || !*pc) return;
    gr_client *c = *pc;
    if (c->sock) zmq_close(c->sock);
    if (c->zctx) zmq_ctx_term(c->zctx);
    for (size_t i = 0; i < c->nev; i++) gr_json_free(c->events[(c->headev + i) % c->capev]);
    free(c->events);
    free(c->endpoint);
    free(c);
    *pc = NULL;
}

const char *gr_client_endpoint(const gr_client *c)
{
    return c ? c->endpoint : "";
}

int gr_client_reconnect(gr_client *c)
{
    if (c->sock) zmq_close(c->sock);
    c->sock = gr_wire_dealer(c->zctx, c->endpoint);
    return c->sock ? 0 : gr_errcode();
}

static void queue_event(gr_client *c, gr_json *ev)
{
    if (c->nev == CL_MAX_QUEUED) { /* a reader that never reads: drop the oldest */
        gr_json_free(c->events[c->headev]);
        c->headev = (c->headev + 1) % c->capev;
        c->nev--;
    }
    if (c->nev == c->capev) {
        size_t nc = c->capev ? c->capev * 2 : 16;
        gr_json **n = malloc(nc * sizeof *n);
        if (!n) {
            gr_json_free(ev);
            return;
        }
        for (size_t i = 0; i < c->nev; i++) n[i] = c->events[(c->headev + i) % c->capev];
        free(c->events);
        c->events = n;
        c->capev = nc;
        c->headev = 0;
    }
    c->events[(c->headev + c->nev) % c->capev] = ev;
    c->nev++;
}

static int code_of(const char *name)
{
    static const struct {
        const char *n;
        int c;
    } map[] = {{"EINVAL", GR_EINVAL},       {"EIO", GR_EIO},           {"ENOMEM", GR_ENOMEM},
               {"ENOTFOUND", GR_ENOTFOUND}, {"EFORMAT", GR_EFORMAT},   {"ENET", GR_ENET},
               {"ECANCEL", GR_ECANCEL},     {"ETIMEOUT", GR_ETIMEOUT}, {"ESTATE", GR_ESTATE},
               {"EUNSUP", GR_EUNSUP}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (name && !strcmp(name, map[i].n)) return map[i].c;
    return GR_EIO;
}

/* Receives one message within ms; 0 with *m, 1 on timeout, <0 on failure. */
static int recv_one(gr_client *c, int ms, gr_wire_msg *m)
{
    int64_t end = mono_ms() + ms;
    for (;;) {
        int64_t left = end - mono_ms();
        if (left < 0) left = 0;
        zmq_pollitem_t it = {c->sock, 0, ZMQ_POLLIN, 0};
        int n = zmq_poll(&it, 1, (long)left);
        if (n < 0) {
            if (zmq_errno() == EINTR) return 1;
            return gr_seterr(GR_EIO, "zmq_poll: %s", zmq_strerror(zmq_errno()));
        }
        if (n == 0) return 1;
        int rc = gr_wire_recv(c->sock, GR_WIRE_TO_CLIENT, 0, GR_WIRE_NOWAIT, m, NULL);
        if (rc == 0) return 0;
        gr_wire_msg_clear(m);
        if (rc == GR_EIO) return rc;
        if (mono_ms() >= end) return 1; /* dropped a malformed message; keep waiting */
    }
}

int gr_client_call(gr_client *c, int cmd, const gr_json *body, int timeout_ms, gr_json **result)
{
    if (result) *result = NULL;
    gr_json *b = body ? gr_jsonb_copy(body) : gr_jsonb_obj();
    if (!b) return GR_ENOMEM;
    int64_t req = c->next_req++;
    int rc = gr_jsonb_set(b, "req", gr_jsonb_int(req));
    if (!rc) rc = gr_wire_send_json(c->sock, NULL, 0, cmd, b, NULL);
    gr_json_free(b);
    if (rc == GR_ENET)
        return gr_seterr(GR_ETIMEOUT, "broker at %s: cannot send (is graft-broker running?)",
                         c->endpoint);
    if (rc) return rc;
    int64_t end = mono_ms() + (timeout_ms > 0 ? timeout_ms : GR_CLIENT_TIMEOUT_MS);
    for (;;) {
        int64_t left = end - mono_ms();
        if (left <= 0)
            return gr_seterr(GR_ETIMEOUT,
                             "broker at %s did not answer %s within %.1f s (is graft-broker "
                             "running? `graft up` starts one)",
                             c->endpoint, gr_wire_cmd_name(cmd),
                             (timeout_ms > 0 ? timeout_ms : GR_CLIENT_TIMEOUT_MS) / 1000.0);
        gr_wire_msg m = {0};
        rc = recv_one(c, (int)left, &m);
        if (rc == 1) continue;
        if (rc < 0) return rc;
        if (m.cmd == GR_CMD_EVENT) {
            queue_event(c, m.body);
            m.body = NULL;
        } else if (gr_json_get_int(m.body, "req", -1) == req) {
            if (m.cmd == GR_CMD_ERROR) {
                rc = code_of(gr_json_get_str(m.body, "code", NULL));
                gr_seterr(rc, "%s", gr_json_get_str(m.body, "error", "the broker refused"));
                gr_wire_msg_clear(&m);
                return rc;
            }
            if (m.cmd == GR_CMD_REPLY) {
                const gr_json *r = gr_json_get(m.body, "result");
                if (result) {
                    *result = r ? gr_jsonb_copy(r) : gr_jsonb_null();
                    if (!*result) rc = GR_ENOMEM;
                }
                gr_wire_msg_clear(&m);
                return rc;
            }
        }
        gr_wire_msg_clear(&m); /* a late answer to an earlier request */
    }
}

int gr_client_event(gr_client *c, int timeout_ms, gr_json **ev)
{
    *ev = NULL;
    int64_t end = mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        if (c->nev) {
            *ev = c->events[c->headev];
            c->headev = (c->headev + 1) % c->capev;
            c->nev--;
            return 0;
        }
        int64_t left = end - mono_ms();
        if (left < 0) return 1;
        gr_wire_msg m = {0};
        int rc = recv_one(c, (int)left, &m);
        if (rc == 1) return 1;
        if (rc < 0) return rc;
        if (m.cmd == GR_CMD_EVENT) {
            queue_event(c, m.body);
            m.body = NULL;
        }
        gr_wire_msg_clear(&m);
    }
}

/* ------------------------------------------------------------- state */

char *gr_client_state_dir(const char *opt)
{
    const char *e;
    char *s = NULL;
    if (opt && *opt)
        s = strdup(opt);
    else if ((e = getenv("GRAFT_STATE")) && *e)
        s = strdup(e);
    else if ((e = getenv("XDG_STATE_HOME")) && *e)
        s = gr_fs_join(e, "graft");
    else if ((e = getenv("HOME")) && *e)
        s = gr_fs_join(e, ".local/state/graft");
    else {
        gr_seterr(GR_EINVAL, "no state directory: set --state, GRAFT_STATE or HOME");
        return NULL;
    }
    if (!s) gr_seterr(GR_ENOMEM, "out of memory");
    return s;
}

int gr_client_up_read(const char *state, gr_up_info *info)
{
    memset(info, 0, sizeof *info);
    char *path = gr_fs_join(state, "up.json");
    if (!path) return gr_seterr(GR_ENOMEM, "out of memory");
    char *data = NULL;
    size_t len = 0;
    int rc = gr_fs_read_file(path, 1 << 20, &data, &len);
    if (rc == GR_ENOTFOUND) {
        free(path);
        return 0;
    }
    if (rc) {
        free(path);
        return rc;
    }
    gr_json *j = gr_json_parse(data, len, path);
    free(data);
    if (!j || j->type != GR_JSON_OBJ) {
        gr_json_free(j);
        rc = gr_seterr(GR_EFORMAT, "%s: not a graft up state file (remove it)", path);
        free(path);
        return rc;
    }
    free(path);
    info->pid = (int)gr_json_get_int(j, "pid", 0);
    snprintf(info->broker, sizeof info->broker, "%s", gr_json_get_str(j, "broker", ""));
    snprintf(info->redis, sizeof info->redis, "%s", gr_json_get_str(j, "redis", ""));
    snprintf(info->store, sizeof info->store, "%s", gr_json_get_str(j, "store", ""));
    gr_json_free(j);
    if (info->pid <= 0 || !info->broker[0]) return 0;
    if (kill(info->pid, 0) && errno == ESRCH) return 0; /* stale: that graft up is gone */
    return 1;
}

int gr_client_up_write(const char *state, const gr_up_info *info)
{
    gr_buf b = {0};
    gr_buf_printf(&b, "{\"pid\":%d,\"broker\":", info->pid);
    gr_buf_json_str(&b, info->broker, strlen(info->broker));
    gr_buf_puts(&b, ",\"redis\":");
    gr_buf_json_str(&b, info->redis, strlen(info->redis));
    gr_buf_puts(&b, ",\"store\":");
    gr_buf_json_str(&b, info->store, strlen(info->store));
    gr_buf_puts(&b, "}\n");
    char *path = gr_fs_join(state, "up.json");
    int rc = b.oom || !path ? gr_seterr(GR_ENOMEM, "out of memory")
                            : gr_fs_write_atomic(path, b.data, b.len, 0644);
    free(path);
    gr_buf_free(&b);
    return rc;
}

char *gr_client_broker(const char *opt)
{
    const char *e;
    if (opt && *opt) return strdup(opt);
    if ((e = getenv("GRAFT_BROKER")) && *e) return strdup(e);
    char *state = gr_client_state_dir(NULL);
    if (state) {
        gr_up_info up;
        int live = gr_client_up_read(state, &up);
        free(state);
        if (live == 1) return strdup(up.broker);
    }
    gr_clearerr();
    return strdup(GR_CLIENT_DEFAULT_BROKER);
}

int gr_client_resolve(const char *endpoint, const char *ref, char id[72])
{
    const char *slash = strchr(ref, '/');
    if (!slash || slash == ref || !slash[1])
        return gr_seterr(GR_EINVAL, "'%s': expected JOB/STAGE[/OUTPUT] or sha256:<64 hex>", ref);
    char *ep = gr_client_broker(endpoint);
    char *job = strndup(ref, (size_t)(slash - ref));
    gr_client *c = NULL;
    gr_json *st = NULL, *body = NULL;
    int rc = GR_ENOMEM;
    if (!ep || !job) goto out;
    if (!(c = gr_client_new(ep))) {
        rc = gr_errcode();
        goto out;
    }
    body = gr_jsonb_obj();
    if (!body || gr_jsonb_set(body, "job", gr_jsonb_str(job))) goto out;
    if ((rc = gr_client_call(c, GR_CMD_STATUS, body, 0, &st))) goto out;
    const gr_json *stages = gr_json_get(st, "stages");
    const char *rest = slash + 1, *output = "out";
    const gr_json *hit = NULL;
    char *sid = NULL;
    for (int pass = 0; pass < 2 && !hit; pass++) {
        free(sid);
        sid = NULL;
        if (pass == 0)
            sid = strdup(rest);
        else {
            const char *last = strrchr(rest, '/');
            if (!last) break;
            sid = strndup(rest, (size_t)(last - rest));
            output = last + 1;
        }
        if (!sid) goto out;
        for (size_t i = 0; stages && i < stages->len && !hit; i++)
            if (!strcmp(gr_json_get_str(stages->items[i], "id", ""), sid)) hit = stages->items[i];
    }
    if (!hit) {
        rc = gr_seterr(GR_ENOTFOUND, "%s: job %s has no stage '%s'", ref, job, rest);
        free(sid);
        goto out;
    }
    const char *aid = gr_json_get_str(gr_json_get(hit, "outputs"), output, NULL);
    if (!aid) {
        rc = gr_seterr(GR_ESTATE, "%s: stage '%s' is %s and has no output '%s'", ref, sid,
                       gr_json_get_str(hit, "state", "?"), output);
        free(sid);
        goto out;
    }
    free(sid);
    if (strlen(aid) >= 72) {
        rc = gr_seterr(GR_EFORMAT, "%s: the broker returned a malformed artifact id", ref);
        goto out;
    }
    snprintf(id, 72, "%s", aid);
    rc = 0;
out:
    if (rc == GR_ENOMEM && gr_errcode() != GR_ENOMEM) gr_seterr(GR_ENOMEM, "out of memory");
    gr_json_free(st);
    gr_json_free(body);
    gr_client_destroy(&c);
    free(job);
    free(ep);
    return rc;
}
