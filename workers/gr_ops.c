/* gr_ops: the table of every op this build serves. Each op family adds its
 * extern declaration and one entry. */
#include "gr_op.h"

#include <stddef.h>

const gr_op *const gr_ops[] = {
    NULL,
};
