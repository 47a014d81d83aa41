/* graft: the user's command-line interface; dispatches to cli/cmd_*.c. */
#include "cli.h"
#include "gr_err.h"
#include "gr_fs.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const cli_cmd commands[] = {
    {"put", cmd_put, "put [--store DIR] PATH...           import files or directories; prints ids"},
    {"get", cmd_get, "get ID -o PATH [--force] [--copy]    export a blob or tree from the store"},
    {"store", cmd_store, "store verify [--gc] [--quarantine] | path ID | root"},
    {"tensors", cmd_tensors, "tensors inspect|stats PATH [--json] | diff A B [--atol X]"},
    {"up", cmd_up,
     "up [--workers N] [--redis URL] [--state DIR]   start Redis, broker and workers"},
    {"run", cmd_run, "run PIPELINE.yaml [--set k=v] [--json]   up if needed, submit, watch, print"},
    {"submit", cmd_submit, "submit PIPELINE.yaml [--set k=v] [--no-cache]   prints the job id"},
    {"status", cmd_status, "status [JOB] [--json]                 jobs, or one job's stages"},
    {"watch", cmd_watch, "watch JOB                             progress until the job ends"},
    {"cancel", cmd_cancel, "cancel JOB"},
    {"workers", cmd_workers, "workers [--json]"},
    {"top", cmd_top, "top [--redis URL] [--prefix P] [--once] [--json] [--interval S]   dashboard"},
    {"ops", cmd_ops,
     "ops [OP] [--json]                     the ops this build serves, with parameters"},
    {"exec", cmd_exec, "exec OP key=value... [--input NAME=PATH] [-o DIR]   run one op in-process"},
    {"merge", cmd_merge,
     "merge CONFIG.yml OUT_DIR [--threads N] [--seed N]   run a mergekit config"},
    {NULL, NULL, NULL},
};

int cli_fail(int code)
{
    fprintf(stderr, "graft: %s\n", gr_errmsg());
    return gr_exit_status(code);
}

int cli_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("graft: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 2;
}

volatile int cli_cancel;

void cli_on_interrupt(int sig)
{
    (void)sig;
    cli_cancel = 1;
}

void cli_progress(void *ud, double done, double total, const char *msg)
{
    (void)ud;
    static double last = -1;
    if (!isatty(2)) return;
    if (total > 0 && done < total && done - last < total / 200) return;
    last = done;
    fprintf(stderr, "\r\033[2K%6.1f%% %.70s", total > 0 ? 100 * done / total : 0.0, msg);
    if (total > 0 && done >= total) fputc('\n', stderr);
}

int cli_dir_usable(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT;
    struct dirent *e;
    int empty = 1;
    while (empty && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = 0;
    closedir(d);
    return empty;
}

int cli_work_area(const char *dest, const char *prefix, char **base, char **out, char **work)
{
    char parent[PATH_MAX] = "/tmp";
    if (dest) { /* beside dest, so that the result is renamed into place */
        snprintf(parent, sizeof parent, "%s", dest);
        char *slash = strrchr(parent, '/');
        if (slash == parent)
            parent[1] = 0;
        else if (slash)
            *slash = 0;
        else
            snprintf(parent, sizeof parent, ".");
    }
    *base = *out = *work = NULL;
    int rc = gr_fs_mkdtemp(parent, prefix, base);
    if (!rc && (!(*out = gr_fs_join(*base, "out")) || !(*work = gr_fs_join(*base, "work"))))
        rc = gr_seterr(GR_ENOMEM, "out of memory");
    if (!rc && (mkdir(*out, 0755) || mkdir(*work, 0755)))
        rc = gr_seterr(GR_EIO, "%s: cannot make a work directory: %s", *base, strerror(errno));
    if (rc) return rc;
    struct sigaction sa = {0};
    sa.sa_handler = cli_on_interrupt;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: graft COMMAND [ARGS...]\n\ncommands:\n");
    for (const cli_cmd *c = commands; c->name; c++) fprintf(f, "  %s\n", c->usage);
}

int main(int argc, char **argv)
{
    /* A write past a file-size limit (ulimit -f) then fails with EFBIG and
     * goes through the writers' cleanup, instead of SIGXFSZ killing graft
     * with temporaries left half-written. */
    signal(SIGXFSZ, SIG_IGN);
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("graft %s\n", GRAFT_VERSION);
        return 0;
    }
    for (const cli_cmd *c = commands; c->name; c++)
        if (!strcmp(c->name, argv[1])) return c->fn(argc - 1, argv + 1);
    fprintf(stderr, "graft: unknown command '%s' (graft --help lists them)\n", argv[1]);
    return 2;
}
