-- cancel.lua: cancels a job. Blocked and ready stages become cancelled at
-- once; running ones stay running until their worker answers (the broker
-- sends each a CANCEL) or their lease lapses. ARGV[A..]: jid.
-- Returns {'notfound'}, {'final', state} for a finished job, or {'ok', state,
-- running {sid, attempt, worker}}.
local jid = ARGV[A]
local jk = jkey(jid)
local v = redis.call('HMGET', jk, 'state', 'finished')
if not v[1] then return {'notfound'} end
if v[2] then return {'final', v[1]} end
redis.call('HSET', jk, 'cancel_requested', '1', 'state', 'cancelled', 'updated', n2s(NOW))
local running = {}
for _, sid in ipairs(redis.call('LRANGE', jk .. ':stages', 0, -1)) do
  local k = skey(jid, sid)
  local s = redis.call('HMGET', k, 'state', 'op', 'attempt', 'worker')
  local m = jid .. ':' .. sid
  if s[1] == 'blocked' or s[1] == 'ready' then
    redis.call('ZREM', P .. 'ready:' .. s[2], m)
    redis.call('ZREM', P .. 'delayed', m)
    redis.call('SREM', P .. 'resolve', m)
    set_state(jid, sid, s[1], 'cancelled')
    redis.call('HSET', k, 'finished', n2s(NOW))
    metric('cancelled')
  elseif s[1] == 'running' then
    running[#running + 1] = {sid, s[3], s[4] or ''}
  end
end
event(jid, 'type', 'job', 'state', 'cancelled')
maybe_finish(jid)
return {'ok', redis.call('HGET', jk, 'state'), running}
