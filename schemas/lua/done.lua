-- done.lua: a worker finished an attempt. Fenced: only the current attempt
-- of a running stage counts; anything else is 'stale' and changes nothing.
-- Records outputs and metrics, the memo entry, releases the lease, unblocks
-- dependants, finishes the job when it was the last stage, and (when ops are
-- given) leases the worker its next stage in the same step.
-- ARGV[A..]: jid, sid, attempt, worker, outputs JSON, metrics JSON,
-- elapsed ms, lease ms, op names to dispatch next...
-- Returns {'ok'|'stale', resolvable infos, final job state or false, next
-- task (as dispatch.lua) or false}.
local jid, sid, attempt, wid = ARGV[A], ARGV[A + 1], tonumber(ARGV[A + 2]), ARGV[A + 3]
local outputs, metrics, elapsed, lease_ms = ARGV[A + 4], ARGV[A + 5], ARGV[A + 6], tonumber(ARGV[A + 7])
local ops = {}
for i = A + 8, #ARGV do ops[#ops + 1] = ARGV[i] end
local k = skey(jid, sid)
local m = jid .. ':' .. sid
local v = redis.call('HMGET', k, 'state', 'attempt', 'memo', 'worker', 'timeout_ms', 'error', 'rdeps')
local status, res, final = 'stale', {}, false
if v[1] == 'running' and tonumber(v[2]) == attempt then
  status = 'ok'
  redis.call('ZREM', P .. 'leases', m .. ':' .. attempt)
  if tonumber(v[5] or '0') > 0 then redis.call('ZREM', P .. 'timeouts', m .. ':' .. attempt) end
  count_state(jid, 'running', 'done')
  redis.call('HSET', k, 'state', 'done', 'outputs', outputs, 'metrics', metrics,
             'finished', n2s(NOW), 'elapsed_ms', elapsed)
  if v[6] then redis.call('HDEL', k, 'error') end
  if v[3] and v[3] ~= '' then
    local mk = P .. 'memo:' .. v[3]
    redis.call('HSET', mk, 'outputs', outputs, 'metrics', metrics, 'job', jid, 'stage', sid,
               'created', n2s(NOW))
    redis.call('EXPIRE', mk, RETENTION)
  end
  event(jid, 'type', 'stage', 'stage', sid, 'state', 'done', 'attempt', attempt, 'worker', wid)
  metric('done')
  unblock(jid, sid, res, v[7])
  final = maybe_finish(jid)
  if v[4] and v[4] ~= wid then release_worker(v[4], m) end
else
  metric('stale')
end
local nxt = false
if #ops > 0 then nxt = dispatch_one(wid, ops, lease_ms) end
if not nxt and wid ~= '' then
  if status == 'ok' and v[4] == wid then
    redis.call('HSET', P .. 'worker:' .. wid, 'task', '', 'attempt', '0', 'state', 'idle')
  else
    release_worker(wid, m)
  end
end
return {status, res, final, nxt}
