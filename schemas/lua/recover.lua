-- recover.lua: stages left waiting for resolution (the broker stopped between
-- a stage finishing and resolving its dependants, or a big job's roots beyond
-- the first 1000). Entries that are no longer waiting are dropped from the
-- set. Jobs whose submission was interrupted (still 'submitting' a minute
-- later) are deleted. ARGV[A..]: max entries.
-- Returns the resolve_info of each waiting stage.
local r = {}
for _, m in ipairs(redis.call('SRANDMEMBER', P .. 'resolve', tonumber(ARGV[A]))) do
  local jid, sid = split_task(m)
  local inf = jid and resolve_info(jid, sid)
  if inf then r[#r + 1] = inf else redis.call('SREM', P .. 'resolve', m) end
end
local stale = redis.call('ZRANGEBYSCORE', P .. 'submitting', '-inf', n2s(NOW - 60000), 'LIMIT', 0, 10)
for _, jid in ipairs(stale) do
  local jk = jkey(jid)
  if redis.call('HGET', jk, 'state') == 'submitting' then
    for _, sid in ipairs(redis.call('LRANGE', jk .. ':stages', 0, -1)) do
      redis.call('DEL', skey(jid, sid))
    end
    redis.call('DEL', jk, jk .. ':stages', jk .. ':roots')
  end
  redis.call('ZREM', P .. 'submitting', jid)
end
return r
