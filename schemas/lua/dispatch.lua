-- dispatch.lua: leases idle workers their next stage, one call for several
-- workers, each lease its own transition in order: the best ready stage
-- (lowest score in ready:<op> over the worker's ops: highest priority, then
-- longest waiting).
-- ARGV[A]: lease ms; then per worker: worker id, number of op names n, n op
-- names.
-- Returns one entry per worker: {jid, sid, attempt, op, params, inputs,
-- deadline, timeout_ms, ready_us} or false (nothing ready for it).
local lease_ms = tonumber(ARGV[A])
local out = {}
local i = A + 1
while i + 1 <= #ARGV do
  local nops = tonumber(ARGV[i + 1]) or 0
  local ops = {}
  for j = 1, nops do ops[j] = ARGV[i + 1 + j] end
  out[#out + 1] = dispatch_one(ARGV[i], ops, lease_ms)
  i = i + 2 + nops
end
return out
