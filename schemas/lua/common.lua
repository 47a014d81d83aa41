-- common.lua: helpers prepended to every graft broker script (see
-- schemas/redis-keys.md). Every script receives the same first ARGV entries:
--   ARGV[1] key prefix (e.g. "graft:")   ARGV[2] now, Unix ms
--   ARGV[3] now, Unix microseconds (a string, never used in arithmetic)
--   ARGV[4] retention of finished jobs, seconds   ARGV[5] events stream MAXLEN
--   ARGV[6] retry backoff base, ms      ARGV[7] jitter factor in [0.5, 1.5)
-- and its own arguments from ARGV[8] on. Keys are built from the prefix, so
-- the scripts need one Redis server (not a cluster).
local P = ARGV[1]
local NOW = tonumber(ARGV[2])
local NOW_US = ARGV[3]
local RETENTION = tonumber(ARGV[4])
local EVMAX = ARGV[5]
local BACKOFF_BASE = tonumber(ARGV[6])
local JITTER = tonumber(ARGV[7])
local A = 8

local PRIO_SCALE = 1e12 -- one priority step outweighs any age (ms)
local PRIO_MAX = 1000

-- integral number -> exact decimal string (Lua's default %.14g would round)
local function n2s(x)
  return string.format('%.0f', x)
end

local function jkey(jid) return P .. 'job:' .. jid end
local function skey(jid, sid) return P .. 'stage:' .. jid .. ':' .. sid end
local function ekey(jid) return P .. 'events:' .. jid end

-- "<jid>:<sid>" -> jid, sid (nil for anything else)
local function split_task(m)
  local jid = string.match(m, '^([^:]+):.')
  if not jid then return nil end
  return jid, string.sub(m, #jid + 2)
end

-- "<jid>:<sid>:<attempt>" -> jid, sid, attempt (nil for anything else)
local function split_lease(m)
  local jid = string.match(m, '^([^:]+):.')
  local att = string.match(m, ':(%d+)$')
  if not jid or not att or #jid + #att + 2 >= #m then return nil end
  return jid, string.sub(m, #jid + 2, #m - #att - 1), tonumber(att)
end

-- Counter increments (job state counts, metrics) are gathered while the
-- script runs and applied once per key and field: by flush_counts(), which
-- runs when the script ends (the build wraps every script, see
-- broker/embed_lua.cmake); maybe_finish, the one reader of the counts inside
-- a script, adds what is still to be applied to what it reads. A batch of
-- 1000 stages of one job moved from blocked to ready costs 2 HINCRBYs, not
-- 2000, and a worker's DONE plus its next lease from the same job leaves
-- n_running as it is without a command. Scripts are atomic: no reader sees
-- the counts before they are applied.
local count_keys, count_vals = {}, {}

local function incr(key, field, n)
  local t = count_vals[key]
  if not t then
    t = {}
    count_vals[key] = t
    count_keys[#count_keys + 1] = key
  end
  t[field] = (t[field] or 0) + n
end

local function flush_counts()
  for _, key in ipairs(count_keys) do
    for field, n in pairs(count_vals[key]) do
      if n ~= 0 then redis.call('HINCRBY', key, field, n) end
    end
  end
  count_keys, count_vals = {}, {}
end

local function metric(name, n)
  incr(P .. 'metrics', name, n or 1)
end

-- cmd (RPUSH, SADD, ...) key with every item of list as arguments, 1000 a
-- call (one command instead of one per item; unpack has a stack limit)
local function call_many(cmd, key, list)
  for i = 1, #list, 1000 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 999, #list)))
  end
end

-- appends one event (field/value pairs) to the job's capped stream
local function event(jid, ...)
  redis.call('XADD', ekey(jid), 'MAXLEN', '~', EVMAX, '*', 'ts', n2s(NOW), ...)
end

-- keeps the job's per-state counts when a stage changes state (the stage's
-- own `state` field is written by the caller with its other fields; the
-- job's `updated` is the time of its last event, see status.lua)
local function count_state(jid, old, new)
  local jk = jkey(jid)
  if old then incr(jk, 'n_' .. old, -1) end
  incr(jk, 'n_' .. new, 1)
end

local function set_state(jid, sid, old, new)
  redis.call('HSET', skey(jid, sid), 'state', new)
  count_state(jid, old, new)
end

-- queues a ready stage: score = now - priority * PRIO_SCALE (stage + job
-- priority, clamped); prio may be given to save the lookups; stamped: the
-- caller has written the stage's ready_us (NOW_US) with its other fields;
-- batch: a table op -> {score, member, ...} that the caller adds with
-- add_batched (one ZADD per op) instead of a ZADD now
local function enqueue(jid, sid, op, prio, stamped, batch)
  if not prio then
    prio = tonumber(redis.call('HGET', skey(jid, sid), 'priority') or '0') +
           tonumber(redis.call('HGET', jkey(jid), 'priority') or '0')
  end
  if prio > PRIO_MAX then prio = PRIO_MAX elseif prio < -PRIO_MAX then prio = -PRIO_MAX end
  local score = n2s(NOW - prio * PRIO_SCALE)
  if batch then
    local t = batch[op]
    if not t then
      t = {}
      batch[op] = t
    end
    t[#t + 1] = score
    t[#t + 1] = jid .. ':' .. sid
  else
    redis.call('ZADD', P .. 'ready:' .. op, score, jid .. ':' .. sid)
  end
  if not stamped then redis.call('HSET', skey(jid, sid), 'ready_us', NOW_US) end
end

local function add_batched(batch)
  for op, pairs_ in pairs(batch) do call_many('ZADD', P .. 'ready:' .. op, pairs_) end
end

-- jid -> {cancel_requested, state} as this script last read or wrote them:
-- a DONE that leases the worker the next stage of the same job reads the
-- job hash once, not twice
local job_flags = {}

local FINAL_COUNTS = {'n_done', 'n_cached', 'n_failed', 'n_cancelled', 'n_skipped'}

-- When every stage has reached a final state: the job's final state, its
-- retention and its removal from the active set. Returns the final state or
-- false.
local function maybe_finish(jid)
  local jk = jkey(jid)
  local v = redis.call('HMGET', jk, 'nstages', 'n_done', 'n_cached', 'n_failed', 'n_cancelled',
                       'n_skipped', 'finished', 'cancel_requested', 'state')
  if v[1] then job_flags[jid] = {v[8] or false, v[9] or false} end
  if not v[1] or v[7] then return false end
  -- the stored counts plus what this script has yet to apply
  local owed = count_vals[jk] or {}
  local fin = 0
  for i = 2, 6 do
    v[i] = tonumber(v[i] or '0') + (owed[FINAL_COUNTS[i - 1]] or 0)
    fin = fin + v[i]
  end
  if fin < tonumber(v[1]) then return false end
  local final = 'done'
  if v[8] == '1' then final = 'cancelled'
  elseif v[4] > 0 or v[6] > 0 then final = 'failed' end
  redis.call('HSET', jk, 'state', final, 'finished', n2s(NOW), 'updated', n2s(NOW))
  job_flags[jid] = {v[8] or false, final}
  redis.call('SREM', P .. 'active', jid)
  redis.call('ZADD', P .. 'finished', n2s(NOW), jid)
  event(jid, 'type', 'job', 'state', final, 'final', '1')
  metric('jobs_' .. final)
  -- retention: every key of the job expires; prune.lua drops it from `jobs`
  local sk = jk .. ':stages'
  for _, sid in ipairs(redis.call('LRANGE', sk, 0, -1)) do
    redis.call('EXPIRE', skey(jid, sid), RETENTION)
  end
  redis.call('EXPIRE', sk, RETENTION)
  redis.call('EXPIRE', ekey(jid), RETENTION)
  redis.call('EXPIRE', jk, RETENTION)
  return final
end

-- What the broker needs to resolve a stage whose dependencies are all
-- finished: {jid, sid, op, params, no_cache, then per dependency: dep sid,
-- op, resolved params, metrics, outputs}. False if the stage is not (or no
-- longer) waiting for resolution.
local no_cache_of = {} -- jid -> the job's no_cache, read once per script
local function resolve_info(jid, sid)
  local v = redis.call('HMGET', skey(jid, sid), 'op', 'params', 'deps', 'state', 'pending')
  if v[4] ~= 'blocked' or tonumber(v[5]) ~= 0 then return false end
  local nc = no_cache_of[jid]
  if not nc then
    nc = redis.call('HGET', jkey(jid), 'no_cache') or '0'
    no_cache_of[jid] = nc
  end
  local r = {jid, sid, v[1], v[2], nc}
  for _, d in ipairs(cjson.decode(v[3])) do
    local dv = redis.call('HMGET', skey(jid, d), 'op', 'rparams', 'metrics', 'outputs')
    r[#r + 1] = d
    r[#r + 1] = dv[1] or ''
    r[#r + 1] = dv[2] or '{}'
    r[#r + 1] = dv[3] or 'null'
    r[#r + 1] = dv[4] or '{}'
  end
  return r
end

-- A stage finished with outputs: its dependants' pending counts drop; those
-- that reach zero wait in the `resolve` set and are appended to out. rd: the
-- stage's `rdeps` when the caller has read it already.
local function unblock(jid, sid, out, rd)
  rd = rd or redis.call('HGET', skey(jid, sid), 'rdeps')
  if not rd or rd == '[]' then return end
  for _, d in ipairs(cjson.decode(rd)) do
    local dk = skey(jid, d)
    if redis.call('HGET', dk, 'state') == 'blocked' then
      if redis.call('HINCRBY', dk, 'pending', -1) == 0 then
        redis.call('SADD', P .. 'resolve', jid .. ':' .. d)
        local inf = resolve_info(jid, d)
        if inf then out[#out + 1] = inf end
      end
    end
  end
end

-- A stage failed for good: every blocked stage downstream is skipped.
local function skip_dependants(jid, sid)
  local stack = {sid}
  while #stack > 0 do
    local s = table.remove(stack)
    local rd = redis.call('HGET', skey(jid, s), 'rdeps')
    if rd then
      for _, d in ipairs(cjson.decode(rd)) do
        if redis.call('HGET', skey(jid, d), 'state') == 'blocked' then
          set_state(jid, d, 'blocked', 'skipped')
          redis.call('HSET', skey(jid, d), 'error', "dependency '" .. sid .. "' failed",
                     'finished', n2s(NOW))
          redis.call('SREM', P .. 'resolve', jid .. ':' .. d)
          event(jid, 'type', 'stage', 'stage', d, 'state', 'skipped')
          metric('skipped')
          stack[#stack + 1] = d
        end
      end
    end
  end
end

local function release_worker(wid, task)
  if not wid or wid == '' then return end
  local wk = P .. 'worker:' .. wid
  if redis.call('HGET', wk, 'task') == task then
    redis.call('HSET', wk, 'task', '', 'attempt', '0', 'state', 'idle')
  end
end

-- Ends a running attempt that failed (the worker said so, its lease lapsed or
-- it timed out). Retried with exponential backoff and jitter while attempts
-- remain and a retry can help; otherwise the stage fails (dead letter) and its
-- dependants are skipped. Returns 'retry', 'failed' or 'cancelled'.
local function fail_attempt(jid, sid, attempt, err, retryable, delay_ms)
  local k = skey(jid, sid)
  local m = jid .. ':' .. sid
  local lm = m .. ':' .. attempt
  redis.call('ZREM', P .. 'leases', lm)
  redis.call('ZREM', P .. 'timeouts', lm)
  local v = redis.call('HMGET', k, 'retries', 'worker')
  release_worker(v[2], m)
  redis.call('HSET', k, 'error', err)
  if redis.call('HGET', jkey(jid), 'cancel_requested') == '1' then
    set_state(jid, sid, 'running', 'cancelled')
    redis.call('HSET', k, 'finished', n2s(NOW))
    event(jid, 'type', 'stage', 'stage', sid, 'state', 'cancelled', 'attempt', attempt)
    maybe_finish(jid)
    return 'cancelled'
  end
  -- retries count failed attempts (not attempts: an undelivered one is free)
  local failures = redis.call('HINCRBY', k, 'failures', 1)
  if retryable and failures <= tonumber(v[1] or '0') then
    if not delay_ms then
      delay_ms = BACKOFF_BASE * 2 ^ (failures - 1)
      if delay_ms > 60000 then delay_ms = 60000 end
      delay_ms = math.floor(delay_ms * JITTER)
    end
    set_state(jid, sid, 'running', 'ready')
    redis.call('HSET', k, 'retry_at', n2s(NOW + delay_ms))
    redis.call('ZADD', P .. 'delayed', n2s(NOW + delay_ms), m)
    event(jid, 'type', 'stage', 'stage', sid, 'state', 'ready', 'attempt', attempt, 'error', err)
    metric('retried')
    return 'retry'
  end
  set_state(jid, sid, 'running', 'failed')
  redis.call('HSET', k, 'finished', n2s(NOW))
  redis.call('ZADD', P .. 'dead', n2s(NOW), m)
  event(jid, 'type', 'stage', 'stage', sid, 'state', 'failed', 'attempt', attempt, 'error', err)
  metric('failed')
  skip_dependants(jid, sid)
  maybe_finish(jid)
  return 'failed'
end

-- Leases the best ready stage among ops to worker wid: {jid, sid, attempt,
-- op, params, inputs, deadline, timeout, ready_us} or false.
local function dispatch_one(wid, ops, lease_ms)
  for _ = 1, 64 do
    local best, bop
    if #ops == 1 then
      local r = redis.call('ZPOPMIN', P .. 'ready:' .. ops[1])
      if not r[1] then return false end
      best, bop = r[1], ops[1]
    else
      local bscore
      for _, op in ipairs(ops) do
        local r = redis.call('ZRANGE', P .. 'ready:' .. op, 0, 0, 'WITHSCORES')
        if r[1] and (not bscore or tonumber(r[2]) < bscore) then
          best, bscore, bop = r[1], tonumber(r[2]), op
        end
      end
      if not best then return false end
      redis.call('ZREM', P .. 'ready:' .. bop, best)
    end
    local jid, sid = split_task(best)
    local k = jid and skey(jid, sid) or ''
    local v = jid and redis.call('HMGET', k, 'state', 'rparams', 'inputs', 'timeout_ms', 'ready_us',
                                 'started', 'attempt', 'retry_at') or {}
    local jk = jid and jkey(jid) or ''
    local j = {'1'}
    if v[1] == 'ready' then
      j = job_flags[jid] or redis.call('HMGET', jk, 'cancel_requested', 'state')
    end
    if j[1] ~= '1' then
      local attempt = tonumber(v[7] or '0') + 1
      local deadline = NOW + lease_ms
      local timeout = tonumber(v[4] or '0')
      count_state(jid, 'ready', 'running')
      local f = {'state', 'running', 'attempt', attempt, 'worker', wid, 'deadline', n2s(deadline),
                 'p_done', '0', 'p_total', '0', 'p_msg', '', 'attempt_started', n2s(NOW)}
      if not v[6] then
        f[#f + 1] = 'started'
        f[#f + 1] = n2s(NOW)
      end
      redis.call('HSET', k, unpack(f))
      if v[8] then redis.call('HDEL', k, 'retry_at') end
      redis.call('ZADD', P .. 'leases', n2s(deadline), best .. ':' .. attempt)
      if timeout > 0 then
        redis.call('ZADD', P .. 'timeouts', n2s(NOW + timeout), best .. ':' .. attempt)
      end
      if j[2] == 'queued' then
        redis.call('HSET', jk, 'state', 'running', 'updated', n2s(NOW))
        event(jid, 'type', 'job', 'state', 'running')
      end
      job_flags[jid] = {j[1], j[2] == 'queued' and 'running' or j[2]}
      redis.call('HSET', P .. 'worker:' .. wid, 'task', best, 'attempt', attempt, 'state', 'busy')
      event(jid, 'type', 'stage', 'stage', sid, 'state', 'running', 'attempt', attempt, 'worker', wid)
      metric('dispatched')
      return {jid, sid, attempt, bop, v[2], v[3], n2s(deadline), n2s(timeout), v[5] or ''}
    end
  end
  return false
end
