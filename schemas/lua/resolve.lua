-- resolve.lua: moves stages whose dependencies are finished out of
-- `blocked`: to `cached` when the memo has their outputs, else to `ready`
-- (queued in ready:<op>), or to `failed` when the broker could not resolve
-- their inputs. ARGV[A..]: trust_memo (1: a memo entry is used as is; 0:
-- hits are returned for the broker to check against the store), then groups
-- of 7: jid, sid, resolved params JSON, inputs JSON ('' and '' keep what an
-- earlier 'check' stored), memo key ('' = no caching), mode, detail. mode: 'check' (look the memo up), 'hit' (the
-- broker checked the memo's outputs: detail = memo key whose outputs to
-- use), 'miss' (the memo entry is stale: delete it, run the stage), 'error'
-- (detail = message; the stage fails).
-- Returns {newly resolvable infos, memo hits to verify {jid, sid, memo,
-- outputs}, ops that got ready stages, jobs that finished {jid, state}}.
local trust = ARGV[A] == '1'
local out, verify, ops, finals = {}, {}, {}, {}
local i = A + 1
while i + 6 <= #ARGV do
  local jid, sid, rp, inputs, memo, mode, detail =
    ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  i = i + 7
  local m = jid .. ':' .. sid
  local k = skey(jid, sid)
  local v = redis.call('HMGET', k, 'state', 'pending', 'op')
  if v[1] == 'blocked' and tonumber(v[2]) == 0 and redis.call('SISMEMBER', P .. 'resolve', m) == 1 then
    if rp ~= '' then redis.call('HSET', k, 'rparams', rp, 'inputs', inputs, 'memo', memo) end
    local mk = P .. 'memo:' .. memo
    local state = nil
    if redis.call('HGET', jkey(jid), 'cancel_requested') == '1' then
      state = 'cancelled'
    elseif mode == 'error' then
      state = 'failed'
    elseif memo ~= '' and (mode == 'hit' or (mode == 'check' and trust)) and
           redis.call('EXISTS', mk) == 1 then
      state = 'cached'
    elseif memo ~= '' and mode == 'check' and redis.call('EXISTS', mk) == 1 then
      verify[#verify + 1] = {jid, sid, memo, redis.call('HGET', mk, 'outputs') or '{}'}
    else
      if mode == 'miss' and memo ~= '' then redis.call('DEL', mk) end
      state = 'ready'
    end
    if state then redis.call('SREM', P .. 'resolve', m) end
    if state == 'cached' then
      local mv = redis.call('HMGET', mk, 'outputs', 'metrics')
      redis.call('EXPIRE', mk, RETENTION)
      set_state(jid, sid, 'blocked', 'cached')
      redis.call('HSET', k, 'outputs', mv[1] or '{}', 'metrics', mv[2] or 'null',
                 'started', n2s(NOW), 'finished', n2s(NOW))
      event(jid, 'type', 'stage', 'stage', sid, 'state', 'cached')
      metric('cached')
      unblock(jid, sid, out)
    elseif state == 'ready' then
      set_state(jid, sid, 'blocked', 'ready')
      enqueue(jid, sid, v[3])
      ops[#ops + 1] = v[3]
      event(jid, 'type', 'stage', 'stage', sid, 'state', 'ready')
    elseif state == 'failed' then
      set_state(jid, sid, 'blocked', 'failed')
      redis.call('HSET', k, 'error', detail, 'finished', n2s(NOW))
      redis.call('ZADD', P .. 'dead', n2s(NOW), m)
      event(jid, 'type', 'stage', 'stage', sid, 'state', 'failed', 'error', detail)
      metric('failed')
      skip_dependants(jid, sid)
    elseif state == 'cancelled' then
      set_state(jid, sid, 'blocked', 'cancelled')
      redis.call('HSET', k, 'finished', n2s(NOW))
    end
    if state and state ~= 'ready' then
      local f = maybe_finish(jid)
      if f then finals[#finals + 1] = {jid, f} end
    end
  end
end
return {out, verify, ops, finals}
