-- prune.lua: forgets jobs that finished more than the retention ago (their
-- keys have expired or are deleted here) and old dead letters.
-- ARGV[A..]: max jobs per call. Returns the number of jobs removed.
local cutoff = n2s(NOW - RETENTION * 1000)
local old = redis.call('ZRANGEBYSCORE', P .. 'finished', '-inf', cutoff, 'LIMIT', 0, tonumber(ARGV[A]))
for _, jid in ipairs(old) do
  local jk = jkey(jid)
  for _, sid in ipairs(redis.call('LRANGE', jk .. ':stages', 0, -1)) do
    redis.call('DEL', skey(jid, sid))
  end
  redis.call('DEL', jk, jk .. ':stages', ekey(jid))
  redis.call('ZREM', P .. 'jobs', jid)
  redis.call('ZREM', P .. 'finished', jid)
end
redis.call('ZREMRANGEBYSCORE', P .. 'dead', '-inf', cutoff)
if #old > 0 then metric('jobs_pruned', #old) end
return #old
