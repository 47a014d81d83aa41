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
local jobs = {} -- jid -> {cancel_requested, priority}: read once per call
local resolved, queued = {}, {} -- leave the `resolve` set / enter ready:<op>: one command each
local i = A + 1
while i + 6 <= #ARGV do
  local jid, sid, rp, inputs, memo, mode, detail =
    ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  i = i + 7
  local m = jid .. ':' .. sid
  local k = skey(jid, sid)
  -- blocked with nothing pending means not resolved yet (resolution moves it
  -- out of blocked), so this is the fence
  local v = redis.call('HMGET', k, 'state', 'pending', 'op', 'priority')
  if v[1] == 'blocked' and tonumber(v[2]) == 0 then
    local job = jobs[jid]
    if not job then
      job = redis.call('HMGET', jkey(jid), 'cancel_requested', 'priority')
      jobs[jid] = job
    end
    local mk = P .. 'memo:' .. memo
    local state = nil
    if job[1] == '1' then
      state = 'cancelled'
    elseif mode == 'error' then
      state = 'failed'
    elseif memo ~= '' and (mode == 'hit' or (mode == 'check' and trust)) and
           redis.call('EXISTS', mk) == 1 then
      state = 'cached'
    elseif memo ~= '' and mode == 'check' and redis.call('EXISTS', mk) == 1 then
      verify[#verify + 1] = {jid, sid, memo, redis.call('HGET', mk, 'outputs') or '{}'}
      if rp ~= '' then redis.call('HSET', k, 'rparams', rp, 'inputs', inputs, 'memo', memo) end
    else
      if mode == 'miss' and memo ~= '' then redis.call('DEL', mk) end
      state = 'ready'
    end
    if state then resolved[#resolved + 1] = m end
    local f = {'state', state}
    if rp ~= '' then
      f[#f + 1] = 'rparams'
      f[#f + 1] = rp
      f[#f + 1] = 'inputs'
      f[#f + 1] = inputs
      f[#f + 1] = 'memo'
      f[#f + 1] = memo
    end
    if state == 'cached' then
      local mv = redis.call('HMGET', mk, 'outputs', 'metrics')
      redis.call('EXPIRE', mk, RETENTION)
      count_state(jid, 'blocked', 'cached')
      for _, x in ipairs({'outputs', mv[1] or '{}', 'metrics', mv[2] or 'null', 'started', n2s(NOW),
                          'finished', n2s(NOW)}) do f[#f + 1] = x end
      redis.call('HSET', k, unpack(f))
      event(jid, 'type', 'stage', 'stage', sid, 'state', 'cached')
      metric('cached')
      unblock(jid, sid, out)
    elseif state == 'ready' then
      count_state(jid, 'blocked', 'ready')
      f[#f + 1] = 'ready_us'
      f[#f + 1] = NOW_US
      redis.call('HSET', k, unpack(f))
      enqueue(jid, sid, v[3], tonumber(v[4] or '0') + tonumber(job[2] or '0'), true, queued)
      ops[#ops + 1] = v[3]
      event(jid, 'type', 'stage', 'stage', sid, 'state', 'ready')
    elseif state == 'failed' then
      count_state(jid, 'blocked', 'failed')
      for _, x in ipairs({'error', detail, 'finished', n2s(NOW)}) do f[#f + 1] = x end
      redis.call('HSET', k, unpack(f))
      redis.call('ZADD', P .. 'dead', n2s(NOW), m)
      event(jid, 'type', 'stage', 'stage', sid, 'state', 'failed', 'error', detail)
      metric('failed')
      skip_dependants(jid, sid)
    elseif state == 'cancelled' then
      count_state(jid, 'blocked', 'cancelled')
      f[#f + 1] = 'finished'
      f[#f + 1] = n2s(NOW)
      redis.call('HSET', k, unpack(f))
    end
    if state and state ~= 'ready' then
      local fin = maybe_finish(jid)
      if fin then finals[#finals + 1] = {jid, fin} end
    end
  end
end
call_many('SREM', P .. 'resolve', resolved)
add_batched(queued)
return {out, verify, ops, finals}
