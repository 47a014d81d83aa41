-- progress.lua: progress of a running attempt (fenced), which also renews
-- its lease. ARGV[A..]: jid, sid, attempt, worker, done, total, message,
-- lease ms. Returns 1, or 0 for a stale attempt.
local jid, sid, attempt, wid = ARGV[A], ARGV[A + 1], tonumber(ARGV[A + 2]), ARGV[A + 3]
local k = skey(jid, sid)
local v = redis.call('HMGET', k, 'state', 'attempt')
if v[1] ~= 'running' or tonumber(v[2]) ~= attempt then return 0 end
local deadline = NOW + tonumber(ARGV[A + 7])
redis.call('HSET', k, 'p_done', ARGV[A + 4], 'p_total', ARGV[A + 5], 'p_msg', ARGV[A + 6],
           'deadline', n2s(deadline))
redis.call('ZADD', P .. 'leases', 'XX', n2s(deadline), jid .. ':' .. sid .. ':' .. attempt)
event(jid, 'type', 'progress', 'stage', sid, 'attempt', attempt, 'done', ARGV[A + 4],
      'total', ARGV[A + 5], 'message', ARGV[A + 6])
return 1
