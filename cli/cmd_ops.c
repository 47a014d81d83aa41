/* cmd_ops: `graft ops [OP] [--json]` lists the ops this build serves, with
 * their version and parameters (the same table workers register). */
#include "cli.h"
#include "gr_buf.h"
#include "gr_op.h"

#include <stdio.h>
#include <string.h>

static const char *ptype_name(gr_ptype t)
{
    static const char *names[] = {"any",    "number",  "integer", "bool",
                                  "string", "numbers", "input",   "inputs"};
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "?";
}

static void print_op_json(gr_buf *b, const gr_op *op)
{
    gr_buf_puts(b, "{\"name\":");
    gr_buf_json_str(b, op->name, strlen(op->name));
    gr_buf_printf(b, ",\"version\":%d,\"summary\":", op->version);
    gr_buf_json_str(b, op->summary ? op->summary : "", op->summary ? strlen(op->summary) : 0);
    gr_buf_printf(b, ",\"open_params\":%s,\"params\":[", op->open_params ? "true" : "false");
    for (const gr_param *p = op->params; p && p->name; p++) {
        gr_buf_puts(b, p == op->params ? "{\"name\":" : ",{\"name\":");
        gr_buf_json_str(b, p->name, strlen(p->name));
        gr_buf_printf(b, ",\"type\":\"%s\",\"required\":%s,\"help\":", ptype_name(p->type),
                      p->required ? "true" : "false");
        gr_buf_json_str(b, p->help ? p->help : "", p->help ? strlen(p->help) : 0);
        gr_buf_putc(b, '}');
    }
    gr_buf_puts(b, "]}");
}

static void print_op_text(const gr_op *op, int detail)
{
    printf("%-14s v%-3d %s\n", op->name, op->version, op->summary ? op->summary : "");
    if (!detail) return;
    for (const gr_param *p = op->params; p && p->name; p++)
        printf("    %-16s %-8s %s%s\n", p->name, ptype_name(p->type),
               p->required ? "(required) " : "", p->help ? p->help : "");
    if (op->open_params) printf("    (accepts further parameters; see the op's documentation)\n");
}

int cmd_ops(int argc, char **argv)
{
    int json = 0;
    const char *name = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (argv[i][0] == '-')
            return cli_usage_error("ops: unknown option '%s'", argv[i]);
        else if (!name)
            name = argv[i];
        else
            return cli_usage_error("usage: graft ops [OP] [--json]");
    }
    const gr_op *one = NULL;
    if (name && !(one = gr_op_find(name)))
        return cli_usage_error("ops: unknown op '%s' (graft ops lists them)", name);
    if (json) {
        gr_buf b = {0};
        if (one)
            print_op_json(&b, one);
        else {
            gr_buf_putc(&b, '[');
            for (size_t i = 0; gr_ops[i]; i++) {
                if (i) gr_buf_putc(&b, ',');
                print_op_json(&b, gr_ops[i]);
            }
            gr_buf_putc(&b, ']');
        }
        if (b.oom) return cli_usage_error("ops: out of memory");
        puts(b.data);
        gr_buf_free(&b);
        return 0;
    }
    if (one)
        print_op_text(one, 1);
    else
        for (size_t i = 0; gr_ops[i]; i++) print_op_text(gr_ops[i], 0);
    return 0;
}
