-- submit.lua: creates a job and its stages (state blocked), in chunks so
-- that no single script holds Redis for long. The first chunk creates the job
-- in state 'submitting' (nothing of it runs yet); the last one seals it
-- ('queued'), puts every stage without dependencies in the `resolve` set and
-- returns the resolve_info of up to 1000 of them. A job of one chunk is
-- created 'queued' at once.
-- ARGV[A..]: jid, name, priority, no_cache (0/1), spec (the pipeline text),
-- stages: a JSON array of [sid, op, params_json, deps_json, rdeps_json,
-- retries, timeout_ms, priority, line] (this chunk, topological order),
-- first (0/1), last (0/1), total number of stages.
-- Returns {infos, more roots waiting in `resolve` (0/1)}; an error if the job
-- exists (first chunk) or is not being submitted (later chunks).
local jid, name, prio, nocache, spec = ARGV[A], ARGV[A + 1], ARGV[A + 2], ARGV[A + 3], ARGV[A + 4]
local stages = cjson.decode(ARGV[A + 5])
local first, last, total = ARGV[A + 6] == '1', ARGV[A + 7] == '1', tonumber(ARGV[A + 8])
local jk = jkey(jid)
local rk = jk .. ':roots'
-- a job in one chunk is stored and sealed by this one script: nothing can
-- see it half-stored, so it needs no 'submitting' state and no roots list
local whole = first and last
if first then
  if redis.call('EXISTS', jk) == 1 then
    return redis.error_reply('job ' .. jid .. ' exists')
  end
  redis.call('HSET', jk, 'name', name, 'state', whole and 'queued' or 'submitting',
             'priority', prio, 'no_cache', nocache,
             'created', n2s(NOW), 'updated', n2s(NOW), 'nstages', total, 'spec', spec,
             'n_blocked', total, 'n_ready', 0, 'n_running', 0, 'n_done', 0, 'n_cached', 0,
             'n_failed', 0, 'n_cancelled', 0, 'n_skipped', 0)
  if not whole then redis.call('ZADD', P .. 'submitting', n2s(NOW), jid) end
elseif redis.call('HGET', jk, 'state') ~= 'submitting' then
  return redis.error_reply('job ' .. jid .. ' is not being submitted')
end
local sk = jk .. ':stages'
-- the chunk's ids go to the lists in one RPUSH per 1000
local sids, roots, root_info = {}, {}, {}
for _, s in ipairs(stages) do
  local sid, deps = s[1], cjson.decode(s[4])
  redis.call('HSET', skey(jid, sid), 'op', s[2], 'state', 'blocked', 'params', s[3], 'deps', s[4],
             'rdeps', s[5], 'pending', #deps, 'retries', s[6], 'timeout_ms', s[7],
             'priority', s[8], 'line', s[9], 'attempt', 0)
  sids[#sids + 1] = sid
  if #deps == 0 then
    roots[#roots + 1] = sid
    -- resolve_info of a root, from what was just stored
    if whole and #root_info < 1000 then root_info[#root_info + 1] = {jid, sid, s[2], s[3], nocache} end
  end
end
call_many('RPUSH', sk, sids)
if not whole then call_many('RPUSH', rk, roots) end
if not last then return {{}, 0} end
if not whole then
  redis.call('HSET', jk, 'state', 'queued')
  redis.call('ZREM', P .. 'submitting', jid)
  roots = redis.call('LRANGE', rk, 0, -1)
  redis.call('DEL', rk)
end
redis.call('ZADD', P .. 'jobs', n2s(NOW), jid)
redis.call('SADD', P .. 'active', jid)
local infos, members = root_info, {}
for i, sid in ipairs(roots) do
  members[i] = jid .. ':' .. sid
end
call_many('SADD', P .. 'resolve', members)
if not whole then
  for i = 1, math.min(#roots, 1000) do
    infos[#infos + 1] = resolve_info(jid, roots[i])
  end
end
event(jid, 'type', 'job', 'state', 'queued')
metric('jobs_submitted')
metric('submitted', total)
local more = 0
if #roots > 1000 then more = 1 end
return {infos, more}
