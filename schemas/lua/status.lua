-- status.lua (read-only): one job's fields and every stage in topological
-- order, plus the id of the last event (where a WATCH starts).
-- ARGV[A..]: jid. Returns false for an unknown job, else {{name, state,
-- created, updated, finished}, last event id or '', stages {sid, op, state,
-- attempt, outputs, metrics, error, p_done, p_total, p_msg, worker, started,
-- finished}}.
local jid = ARGV[A]
local jk = jkey(jid)
local j = redis.call('HMGET', jk, 'name', 'state', 'created', 'updated', 'finished')
if not j[2] then return false end
local last = redis.call('XREVRANGE', ekey(jid), '+', '-', 'COUNT', 1)
local lastid = ''
if last[1] then
  lastid = last[1][1]
  -- the job's last change is its last event (stream ids start with the ms)
  local ms = tonumber(string.match(lastid, '^(%d+)'))
  if ms and ms > tonumber(j[4] or '0') then j[4] = n2s(ms) end
end
local st = {}
for _, sid in ipairs(redis.call('LRANGE', jk .. ':stages', 0, -1)) do
  local v = redis.call('HMGET', skey(jid, sid), 'op', 'state', 'attempt', 'outputs', 'metrics',
                       'error', 'p_done', 'p_total', 'p_msg', 'worker', 'started', 'finished')
  st[#st + 1] = {sid, v[1] or '', v[2] or '', v[3] or '0', v[4] or '', v[5] or '', v[6] or '',
                 v[7] or '', v[8] or '', v[9] or '', v[10] or '', v[11] or '', v[12] or ''}
end
return {{j[1] or '', j[2], j[3] or '', j[4] or '', j[5] or ''}, lastid, st}
