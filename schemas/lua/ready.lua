-- ready.lua: a worker (re-)registers. When it names a task it still runs and
-- that is the current attempt of a running stage leased to it, the broker
-- re-adopts it (lease renewed) instead of running it again.
-- ARGV[A..]: worker id, host, pid, ops JSON, version, threads, task ('' if
-- none), attempt, lease ms.
-- Returns 'idle', 'adopted' or 'stale' (the task it names is not its to run).
local wid, task, attempt, lease_ms = ARGV[A], ARGV[A + 6], tonumber(ARGV[A + 7]), tonumber(ARGV[A + 8])
local wk = P .. 'worker:' .. wid
redis.call('HSET', wk, 'host', ARGV[A + 1], 'pid', ARGV[A + 2], 'ops', ARGV[A + 3],
           'version', ARGV[A + 4], 'threads', ARGV[A + 5], 'registered', n2s(NOW),
           'last_seen', n2s(NOW), 'task', '', 'attempt', 0, 'state', 'idle')
redis.call('ZADD', P .. 'workers', n2s(NOW), wid)
metric('workers_registered')
if task == '' then return 'idle' end
local jid, sid = split_task(task)
if not jid then return 'stale' end
local k = skey(jid, sid)
local v = redis.call('HMGET', k, 'state', 'attempt', 'worker')
if v[1] ~= 'running' or tonumber(v[2]) ~= attempt or v[3] ~= wid then return 'stale' end
local deadline = NOW + lease_ms
redis.call('ZADD', P .. 'leases', n2s(deadline), task .. ':' .. attempt)
redis.call('HSET', k, 'deadline', n2s(deadline))
redis.call('HSET', wk, 'task', task, 'attempt', attempt, 'state', 'busy')
event(jid, 'type', 'stage', 'stage', sid, 'state', 'running', 'attempt', attempt, 'worker', wid,
      'message', 'adopted after reconnect')
metric('adopted')
return 'adopted'
