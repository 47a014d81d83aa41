-- submit.lua: creates a job and all its stages (state blocked) in one step.
-- ARGV[A..]: jid, name, priority, no_cache (0/1), spec (the pipeline text),
-- stages: a JSON array of [sid, op, params_json, deps_json, rdeps_json,
-- retries, timeout_ms, priority, line] in topological order.
-- Returns the resolve_info of every stage without dependencies (the broker
-- resolves them next), or an error if the job id exists.
local jid, name, prio, nocache, spec = ARGV[A], ARGV[A + 1], ARGV[A + 2], ARGV[A + 3], ARGV[A + 4]
local stages = cjson.decode(ARGV[A + 5])
local jk = jkey(jid)
if redis.call('EXISTS', jk) == 1 then
  return redis.error_reply('job ' .. jid .. ' exists')
end
redis.call('HSET', jk, 'name', name, 'state', 'queued', 'priority', prio, 'no_cache', nocache,
           'created', n2s(NOW), 'updated', n2s(NOW), 'nstages', #stages, 'spec', spec,
           'n_blocked', #stages, 'n_ready', 0, 'n_running', 0, 'n_done', 0, 'n_cached', 0,
           'n_failed', 0, 'n_cancelled', 0, 'n_skipped', 0)
redis.call('ZADD', P .. 'jobs', n2s(NOW), jid)
redis.call('SADD', P .. 'active', jid)
local sk = jk .. ':stages'
local roots = {}
for _, s in ipairs(stages) do
  local sid, deps = s[1], cjson.decode(s[4])
  redis.call('HSET', skey(jid, sid), 'op', s[2], 'state', 'blocked', 'params', s[3], 'deps', s[4],
             'rdeps', s[5], 'pending', #deps, 'retries', s[6], 'timeout_ms', s[7],
             'priority', s[8], 'line', s[9], 'attempt', 0)
  redis.call('RPUSH', sk, sid)
  if #deps == 0 then
    redis.call('SADD', P .. 'resolve', jid .. ':' .. sid)
    roots[#roots + 1] = resolve_info(jid, sid)
  end
end
event(jid, 'type', 'job', 'state', 'queued')
metric('jobs_submitted')
metric('submitted', #stages)
return roots
