-- worker_gone.lua: a worker missed `liveness` heartbeats. Its record goes;
-- the stage it ran is requeued by tick.lua when its lease lapses.
-- ARGV[A..]: worker id. Returns 1 if it was registered.
local wk = P .. 'worker:' .. ARGV[A]
redis.call('ZREM', P .. 'workers', ARGV[A])
if redis.call('DEL', wk) == 1 then
  metric('workers_lost')
  return 1
end
return 0
