-- heartbeat.lua: a worker is alive. Records when it was last seen and its
-- RSS, and renews the lease of the attempt it runs (fenced on the attempt and
-- the worker). ARGV[A..]: worker id, task ('' if idle), attempt, lease ms,
-- rss bytes. Returns 1 if a lease was renewed, 0 if not, -1 if the task it
-- names is no longer its to run (the broker cancels it).
local wid, task, attempt, lease_ms, rss = ARGV[A], ARGV[A + 1], tonumber(ARGV[A + 2]),
  tonumber(ARGV[A + 3]), ARGV[A + 4]
local wk = P .. 'worker:' .. wid
if redis.call('EXISTS', wk) == 1 then
  redis.call('HSET', wk, 'last_seen', n2s(NOW), 'rss', rss)
  redis.call('ZADD', P .. 'workers', n2s(NOW), wid)
end
if task == '' then return 0 end
local jid, sid = split_task(task)
if not jid then return -1 end
local k = skey(jid, sid)
local v = redis.call('HMGET', k, 'state', 'attempt', 'worker')
if v[1] ~= 'running' or tonumber(v[2]) ~= attempt or v[3] ~= wid then return -1 end
local deadline = NOW + lease_ms
redis.call('ZADD', P .. 'leases', n2s(deadline), task .. ':' .. attempt)
redis.call('HSET', k, 'deadline', n2s(deadline))
return 1
