/* gr_ops: the table of every op this build serves. Each op family adds its
 * extern declaration and one entry. */
#include "gr_op.h"

#include <stddef.h>

extern const gr_op gr_op_noop, gr_op_sleep, gr_op_fail, gr_op_echo; /* test ops (testops/) */
extern const gr_op gr_op_delta, gr_op_prune, gr_op_merge, gr_op_apply, gr_op_extract_lora; /* surgery/ */
extern const gr_op gr_op_fetch; /* fetch/ */
extern const gr_op gr_op_nbody, gr_op_nbody_train; /* nbody/ */
extern const gr_op gr_op_train, gr_op_report; /* train/, report/ */
extern const gr_op gr_op_evaluate; /* evaluate/ */

const gr_op *const gr_ops[] = {
    &gr_op_noop, &gr_op_sleep, &gr_op_fail, &gr_op_echo, /* test ops */
    &gr_op_delta, &gr_op_prune, &gr_op_merge, &gr_op_apply, &gr_op_extract_lora, /* surgery */
    &gr_op_fetch, /* fetch/ */
    &gr_op_nbody, &gr_op_nbody_train, /* nbody/ */
    &gr_op_train, &gr_op_report, /* train/, report/ */
    &gr_op_evaluate, /* evaluate/ */
    NULL,
};
