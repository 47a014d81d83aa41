-- list.lua (read-only): the newest jobs. ARGV[A..]: limit, state filter
-- ('' for any). Returns {jid, name, state, created, updated, nstages,
-- n_blocked, n_ready, n_running, n_done, n_cached, n_failed, n_cancelled,
-- n_skipped} per job, newest first.
local limit, want = tonumber(ARGV[A]), ARGV[A + 1]
local r = {}
local start = 0
local batch = limit
if want ~= '' and batch < 200 then batch = 200 end
while #r < limit do
  local ids = redis.call('ZREVRANGE', P .. 'jobs', start, start + batch - 1)
  if #ids == 0 then break end
  start = start + batch
  for _, jid in ipairs(ids) do
    local v = redis.call('HMGET', jkey(jid), 'name', 'state', 'created', 'updated', 'nstages',
                         'n_blocked', 'n_ready', 'n_running', 'n_done', 'n_cached', 'n_failed',
                         'n_cancelled', 'n_skipped')
    if v[2] and (want == '' or v[2] == want) and #r < limit then
      local last = redis.call('XREVRANGE', ekey(jid), '+', '-', 'COUNT', 1)
      local ms = last[1] and tonumber(string.match(last[1][1], '^(%d+)'))
      if ms and ms > tonumber(v[4] or '0') then v[4] = n2s(ms) end
      local row = {jid}
      for i = 1, 13 do row[#row + 1] = v[i] or '0' end
      r[#r + 1] = row
    end
  end
end
return r
