/* cmd_store: `graft put`, `graft get` and `graft store` — moving artifacts in
 * and out of the content-addressed store and checking it. */
#include "cli.h"
#include "gr_cas.h"
#include "gr_client.h"
#include "gr_err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Options shared by the three commands. */
typedef struct store_opts {
    const char *store;  /* --store DIR */
    const char *output; /* -o PATH */
    int force, copy, raw, gc, quarantine;
    const char *args[64];
    int nargs;
} store_opts;

/* Parses argv[1..]: flags anywhere, the rest positional. Returns 0, or the
 * exit status of a usage error. */
static int parse_opts(int argc, char **argv, store_opts *o, const char *allowed)
{
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        if (!strcmp(a, "--")) {
            for (i++; i < argc; i++) {
                if (o->nargs == 64) return cli_usage_error("%s: too many arguments", argv[0]);
                o->args[o->nargs++] = argv[i];
            }
            break;
        }
        if (!strncmp(a, "--store=", 8)) {
            o->store = a + 8;
            continue;
        }
        if (!strcmp(a, "--store") || (!strcmp(a, "-o") && strchr(allowed, 'o'))) {
            if (i + 1 >= argc) return cli_usage_error("%s: %s needs a value", argv[0], a);
            val = argv[++i];
            if (a[1] == 'o')
                o->output = val;
            else
                o->store = val;
            continue;
        }
        if (!strcmp(a, "--force") && strchr(allowed, 'f'))
            o->force = 1;
        else if (!strcmp(a, "--copy") && strchr(allowed, 'c'))
            o->copy = 1;
        else if (!strcmp(a, "--raw") && strchr(allowed, 'r'))
            o->raw = 1;
        else if (!strcmp(a, "--gc") && strchr(allowed, 'g'))
            o->gc = 1;
        else if (!strcmp(a, "--quarantine") && strchr(allowed, 'q'))
            o->quarantine = 1;
        else if (a[0] == '-' && a[1])
            return cli_usage_error("%s: unknown option '%s'", argv[0], a);
        else if (o->nargs == 64)
            return cli_usage_error("%s: too many arguments", argv[0]);
        else
            o->args[o->nargs++] = a;
    }
    return 0;
}

static gr_cas *open_store(const store_opts *o)
{
    char *root = gr_cas_default_root(o->store);
    if (!root) return NULL;
    gr_cas *c = gr_cas_open(root);
    free(root);
    return c;
}

int cmd_put(int argc, char **argv)
{
    store_opts o;
    int rc = parse_opts(argc, argv, &o, "");
    if (rc) return rc;
    if (o.nargs < 1) return cli_usage_error("usage: graft put [--store DIR] PATH...");
    gr_cas *c = open_store(&o);
    if (!c) return cli_fail(gr_errcode());
    for (int i = 0; i < o.nargs && !rc; i++) {
        char id[GR_ID_SZ];
        if ((rc = gr_cas_put_path(c, o.args[i], id))) break;
        printf(o.nargs > 1 ? "%s  %s\n" : "%s\n", id, o.args[i]);
    }
    gr_cas_destroy(&c);
    return rc ? cli_fail(rc) : 0;
}

/* Turns what the user typed into an artifact id. Only sha256: ids are
 * resolved here; JOB/STAGE references (resolved through the broker) plug in
 * at this one place. */
static int resolve_ref(gr_cas *c, const char *ref, char id[GR_ID_SZ])
{
    (void)c;
    if (!strncmp(ref, GR_ID_PREFIX, GR_ID_PREFIX_LEN)) {
        int rc = gr_id_parse(ref, NULL);
        if (rc) return rc;
        memcpy(id, ref, GR_ID_SZ);
        return 0;
    }
    if (strchr(ref, '/')) return gr_client_resolve(NULL, ref, id); /* JOB/STAGE via the broker */
    return gr_seterr(GR_EINVAL, "'%s': not an artifact id (sha256:<64 hex>) nor JOB/STAGE", ref);
}

int cmd_get(int argc, char **argv)
{
    store_opts o;
    int rc = parse_opts(argc, argv, &o, "ofcr");
    if (rc) return rc;
    if (o.nargs != 1 || !o.output)
        return cli_usage_error(
            "usage: graft get [--store DIR] ID -o PATH [--force] [--copy] [--raw]");
    gr_cas *c = open_store(&o);
    if (!c) return cli_fail(gr_errcode());
    char id[GR_ID_SZ];
    rc = resolve_ref(c, o.args[0], id);
    if (!rc)
        rc = gr_cas_export(c, id, o.output,
                           (o.force ? GR_CAS_FORCE : 0) | (o.copy ? GR_CAS_COPY : 0) |
                               (o.raw ? GR_CAS_RAW : 0));
    gr_cas_destroy(&c);
    return rc ? cli_fail(rc) : 0;
}

static void print_problem(void *ud, const char *line)
{
    (void)ud;
    fprintf(stderr, "graft: store: %s\n", line);
}

static int store_verify(const store_opts *o)
{
    gr_cas *c = open_store(o);
    if (!c) return cli_fail(gr_errcode());
    gr_cas_report r;
    int flags = (o->gc ? GR_CAS_VERIFY_GC : 0) | (o->quarantine ? GR_CAS_VERIFY_QUARANTINE : 0);
    int rc = gr_cas_verify(c, flags, &r, print_problem, NULL);
    if (rc) {
        gr_cas_destroy(&c);
        return cli_fail(rc);
    }
    printf("%s: %llu blobs (%llu bytes), %llu trees; %llu corrupt, %llu bad manifests, "
           "%llu missing tree entries, %llu stray files",
           gr_cas_root(c), (unsigned long long)r.blobs, (unsigned long long)r.bytes,
           (unsigned long long)r.trees, (unsigned long long)r.corrupt,
           (unsigned long long)r.bad_trees, (unsigned long long)r.missing,
           (unsigned long long)r.stray);
    if (o->quarantine) printf("; %llu quarantined", (unsigned long long)r.quarantined);
    if (o->gc || o->quarantine)
        printf("; %llu dead temporaries and %llu damaged materialised trees removed",
               (unsigned long long)r.tmp_removed, (unsigned long long)r.trees_removed);
    printf("\n");
    gr_cas_destroy(&c);
    return r.corrupt || r.bad_trees || r.missing || r.stray ? 1 : 0;
}

static int store_path(const store_opts *o)
{
    if (o->nargs != 2) return cli_usage_error("usage: graft store path [--store DIR] ID");
    gr_cas *c = open_store(o);
    if (!c) return cli_fail(gr_errcode());
    char id[GR_ID_SZ], *path = NULL;
    int rc = resolve_ref(c, o->args[1], id);
    if (!rc) rc = gr_cas_materialize(c, id, &path);
    if (!rc) printf("%s\n", path);
    free(path);
    gr_cas_destroy(&c);
    return rc ? cli_fail(rc) : 0;
}

int cmd_store(int argc, char **argv)
{
    store_opts o;
    int rc = parse_opts(argc, argv, &o, "gq");
    if (rc) return rc;
    if (o.nargs >= 1 && !strcmp(o.args[0], "verify")) {
        if (o.nargs != 1) return cli_usage_error("usage: graft store verify [--gc] [--quarantine]");
        return store_verify(&o);
    }
    if (o.nargs >= 1 && !strcmp(o.args[0], "path")) return store_path(&o);
    if (o.nargs >= 1 && !strcmp(o.args[0], "root")) {
        char *root = gr_cas_default_root(o.store);
        if (!root) return cli_fail(gr_errcode());
        printf("%s\n", root);
        free(root);
        return 0;
    }
    return cli_usage_error("usage: graft store verify [--gc] [--quarantine] | path ID | root "
                           "[--store DIR]");
}
