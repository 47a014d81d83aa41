-- dispatch.lua: leases the best ready stage (lowest score in ready:<op> over
-- the worker's ops: highest priority, then longest waiting) to a worker.
-- ARGV[A..]: worker id, lease ms, op names...
-- Returns {jid, sid, attempt, op, params, inputs, deadline, timeout_ms,
-- ready_us} or nil.
local ops = {}
for i = A + 2, #ARGV do ops[#ops + 1] = ARGV[i] end
return dispatch_one(ARGV[A], ops, tonumber(ARGV[A + 1]))
