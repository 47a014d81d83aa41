-- recover.lua: stages left waiting for resolution (the broker stopped between
-- a stage finishing and resolving its dependants). Entries that are no longer
-- waiting are dropped from the set. ARGV[A..]: max entries.
-- Returns the resolve_info of each.
local r = {}
for _, m in ipairs(redis.call('SRANDMEMBER', P .. 'resolve', tonumber(ARGV[A]))) do
  local jid, sid = split_task(m)
  local inf = jid and resolve_info(jid, sid)
  if inf then r[#r + 1] = inf else redis.call('SREM', P .. 'resolve', m) end
end
return r
