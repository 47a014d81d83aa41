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
local v = redis.call('HMGET', k, 'state', 'attempt', 'memo', 'worker')
local status, res, final = 'stale', {}, false
if v[1] == 'running' and tonumber(v[2]) == attempt then
  status = 'ok'
  redis.call('ZREM', P .. 'leases', m .. ':' .. attempt)
  redis.call('ZREM', P .. 'timeouts', m .. ':' .. attempt)
  set_state(jid, sid, 'running', 'done')
  redis.call('HSET', k, 'outputs', outputs, 'metrics', metrics, 'finished', n2s(NOW),
             'elapsed_ms', elapsed)
  redis.call('HDEL', k, 'error')
  if v[3] and v[3] ~= '' then
    local mk = P .. 'memo:' .. v[3]
    redis.call('HSET', mk, 'outputs', outputs, 'metrics', metrics, 'job', jid, 'stage', sid,
               'created', n2s(NOW))
    redis.call('EXPIRE', mk, RETENTION)
  end
  event(jid, 'type', 'stage', 'stage', sid, 'state', 'done', 'attempt', attempt, 'worker', wid)
  metric('done')
  unblock(jid, sid, res)
  final = maybe_finish(jid)
  release_worker(v[4], m)
else
  metric('stale')
end
release_worker(wid, m)
local nxt = false
if #ops > 0 then nxt = dispatch_one(wid, ops, lease_ms) end
return {status, res, final, nxt}
