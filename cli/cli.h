/* cli: the graft command-line tool's subcommands. Each returns the process
 * exit status: 0 success, 2 bad usage or input, 1 other failures. */
#ifndef GR_CLI_H
#define GR_CLI_H

typedef struct cli_cmd {
    const char *name;
    int (*fn)(int argc, char **argv); /* argv[0] is the subcommand name */
    const char *usage;
} cli_cmd;

/* Prints "graft: <gr_errmsg()>" on stderr and returns the exit status for
 * the library error code. */
int cli_fail(int code);
/* Prints "graft: <message>" and returns 2 (bad usage). */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* In-process ops (exec, merge): SIGINT sets cli_cancel, which the op polls
 * through its context; cli_progress draws a one-line percentage on a
 * terminal (nothing otherwise). */
extern volatile int cli_cancel;
void cli_on_interrupt(int sig);
void cli_progress(void *ud, double done, double total, const char *msg);

/* 1 if dir is missing or an empty directory (rename(2) replaces those, so an
 * output can be moved there whole), 0 otherwise. */
int cli_dir_usable(const char *dir);

/* The hidden work area of an in-process op whose result appears as dest
 * only when it succeeds (exec -o, merge OUT_DIR): base = <dest's parent, or
 * /tmp when dest is NULL>/<prefix>XXXXXX holding out/ and work/ (caller
 * frees the three and removes base). From then on SIGINT and SIGTERM set
 * cli_cancel. Returns 0, or an error code with gr_errmsg() naming the path
 * and the cause. */
int cli_work_area(const char *dest, const char *prefix, char **base, char **out, char **work);

/* Subcommands (one file each: cli/cmd_<name>.c). */
int cmd_put(int argc, char **argv);     /* cmd_store.c */
int cmd_get(int argc, char **argv);     /* cmd_store.c */
int cmd_store(int argc, char **argv);   /* cmd_store.c */
int cmd_submit(int argc, char **argv);  /* cmd_jobs.c */
int cmd_status(int argc, char **argv);  /* cmd_jobs.c */
int cmd_watch(int argc, char **argv);   /* cmd_jobs.c */
int cmd_cancel(int argc, char **argv);  /* cmd_jobs.c */
int cmd_workers(int argc, char **argv); /* cmd_jobs.c */
int cmd_top(int argc, char **argv);     /* cmd_top.c */
int cmd_up(int argc, char **argv);      /* cmd_up.c */
int cmd_run(int argc, char **argv);     /* cmd_up.c */
int cmd_ops(int argc, char **argv);     /* cmd_ops.c */
int cmd_exec(int argc, char **argv);    /* cmd_exec.c */
int cmd_merge(int argc, char **argv);   /* cmd_merge.c */
int cmd_tensors(int argc, char **argv); /* cmd_tensors.c */

#endif
