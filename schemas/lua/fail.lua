-- fail.lua: a worker reports a failed attempt. Fenced like done.lua.
-- ARGV[A..]: jid, sid, attempt, worker, error, retryable (0/1), and
-- optionally 'undelivered': the broker could not hand the TASK to the worker,
-- so the stage goes straight back to its ready queue without using a retry.
-- Returns {'retry'|'failed'|'cancelled'|'requeued'|'stale', final job state
-- or false}.
local jid, sid, attempt, wid = ARGV[A], ARGV[A + 1], tonumber(ARGV[A + 2]), ARGV[A + 3]
local err, retryable = ARGV[A + 4], ARGV[A + 5] == '1'
local k = skey(jid, sid)
local v = redis.call('HMGET', k, 'state', 'attempt')
if v[1] ~= 'running' or tonumber(v[2]) ~= attempt then
  release_worker(wid, jid .. ':' .. sid)
  metric('stale')
  return {'stale', false}
end
if ARGV[A + 6] == 'undelivered' then
  local m = jid .. ':' .. sid
  redis.call('ZREM', P .. 'leases', m .. ':' .. attempt)
  redis.call('ZREM', P .. 'timeouts', m .. ':' .. attempt)
  release_worker(wid, m)
  set_state(jid, sid, 'running', 'ready')
  enqueue(jid, sid, redis.call('HGET', k, 'op'))
  event(jid, 'type', 'stage', 'stage', sid, 'state', 'ready', 'attempt', attempt, 'error', err)
  metric('requeued')
  return {'requeued', false}
end
local r = fail_attempt(jid, sid, attempt, err, retryable, nil)
release_worker(wid, jid .. ':' .. sid)
local st = redis.call('HGET', jkey(jid), 'finished') and redis.call('HGET', jkey(jid), 'state')
return {r, st or false}
