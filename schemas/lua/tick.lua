-- tick.lua: the broker's periodic step. Lapsed leases (a worker stopped
-- heartbeating) and per-stage timeouts fail the attempt as retryable (a lost
-- worker's stage is requeued at once, a timed-out one after the backoff);
-- retries whose backoff is over go back to ready:<op>.
-- ARGV[A..]: check leases (0/1: 0 during the grace period after a start or a
-- Redis reconnect, while workers re-register), max entries per kind.
-- Returns {actions {kind, jid, sid, attempt, worker, result}, ops made ready}.
local check_leases, limit = ARGV[A] == '1', tonumber(ARGV[A + 1])
local actions, ops = {}, {}
local function expire(zkey, kind)
  local due = redis.call('ZRANGEBYSCORE', P .. zkey, '-inf', n2s(NOW), 'LIMIT', 0, limit)
  for _, lm in ipairs(due) do
    redis.call('ZREM', P .. zkey, lm)
    local jid, sid, attempt = split_lease(lm)
    local v = jid and redis.call('HMGET', skey(jid, sid), 'state', 'attempt', 'worker', 'timeout_ms') or {}
    if v[1] == 'running' and tonumber(v[2]) == attempt then
      local err, delay
      if kind == 'lost' then
        err = 'worker ' .. (v[3] or '?') .. ' lost (no heartbeat before the lease ran out)'
        delay = 0
        metric('requeued')
      else
        err = 'timed out after ' .. n2s(tonumber(v[4] or '0') / 1000) .. ' s'
        metric('timeouts')
      end
      local r = fail_attempt(jid, sid, attempt, err, true, delay)
      if r == 'retry' and delay == 0 then
        -- no backoff for a lost worker: straight back to the ready queue
        redis.call('ZREM', P .. 'delayed', jid .. ':' .. sid)
        local op = redis.call('HGET', skey(jid, sid), 'op')
        enqueue(jid, sid, op)
        ops[#ops + 1] = op
      end
      actions[#actions + 1] = {kind, jid, sid, attempt, v[3] or '', r}
    end
  end
end
if check_leases then expire('leases', 'lost') end
expire('timeouts', 'timeout')
local due = redis.call('ZRANGEBYSCORE', P .. 'delayed', '-inf', n2s(NOW), 'LIMIT', 0, limit)
for _, m in ipairs(due) do
  redis.call('ZREM', P .. 'delayed', m)
  local jid, sid = split_task(m)
  local v = jid and redis.call('HMGET', skey(jid, sid), 'state', 'op') or {}
  if v[1] == 'ready' then
    enqueue(jid, sid, v[2])
    ops[#ops + 1] = v[2]
  end
end
return {actions, ops}
