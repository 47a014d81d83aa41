/* gr_lua: the broker's Redis scripts, one per state transition
 * (schemas/lua/<name>.lua with common.lua prepended), embedded at build time. */
#ifndef GR_LUA_H
#define GR_LUA_H

typedef enum {
    GR_LUA_CANCEL,
    GR_LUA_DISPATCH,
    GR_LUA_DONE,
    GR_LUA_FAIL,
    GR_LUA_HEARTBEAT,
    GR_LUA_LIST,
    GR_LUA_PROGRESS,
    GR_LUA_PRUNE,
    GR_LUA_READY,
    GR_LUA_RECOVER,
    GR_LUA_RESOLVE,
    GR_LUA_STATUS,
    GR_LUA_SUBMIT,
    GR_LUA_TICK,
    GR_LUA_WORKER_GONE,
    GR_LUA_COUNT
} gr_lua_id;

/* Script texts (generated file gr_lua_gen.c in the build directory). */
extern const char *const gr_lua_src[GR_LUA_COUNT];

#endif
