-- kestrun_fanout.lua: the kestrun side of the broadcast fan-out benchmark (bench/fanout).
--
--   build/kestrun --no-watch --log-level Warning --listen 127.0.0.1:0 --port-file F \
--       bench/fanout/kestrun_fanout.lua
--
-- A SignalR hub at /runtime (the default hub, so kr.send_event reaches its clients) and two
-- control routes, the same as the Node peers' (bench/fanout/common.js):
--
--   GET /start?seconds=S[&rate=R]  broadcast for S seconds (0 < S <= 600) in a background fiber;
--                                  R = 0 or absent: as fast as allowed, R > 0: R broadcasts/s.
--                                  Answers at once; 409 while a run is going.
--   GET /stats                     counters of the current or last run
--
-- Every broadcast is kr.send_event("tick", {n = i, t = <µs since the epoch>}), which each client
-- receives as {"type":1,"target":"ReceiveEvent","arguments":[{"eventName":"tick",
-- "data":{"n":i,"t":µs},"timestamp":"…Z"}]}\x1e; the load generator reads "t" for latency.
--
-- Loops (the same policy as the Node peers):
--   max rate  one broadcast per event-loop turn: send, then kr.yield() so the server flushes the
--             sockets and serves I/O between broadcasts (as the Node servers' setImmediate ticks).
--             What happens to a client that does not keep up is kestrun's own outbound policy.
--   rate R    open loop: broadcast i is due at t0 + i/R µs; each wake-up sends every due
--             broadcast with t = its scheduled time (coordinated-omission-safe), then sleeps until
--             the next one is due (kr.sleep has 1 ms granularity, as the Node timers).
--
-- Needs kr.clock_us(): the wall clock (CLOCK_REALTIME) in whole microseconds, as a Lua integer.

local clock_us = assert(kr.clock_us, "kestrun_fanout.lua needs kr.clock_us() (wall clock in µs)")
local hub = kr.hub("/runtime")

local st = { running = false, broadcasts = 0, failed = 0, seconds = 0, rate = 0,
             elapsed_s = 0, last_error = nil }
local n = 0 -- message number, over all runs

local function send(t)
  n = n + 1
  local ok, err = kr.send_event("tick", { n = n, t = t })
  st.broadcasts = st.broadcasts + 1
  if not ok then
    st.failed = st.failed + 1
    st.last_error = err
  end
end

local function run_max(seconds)
  local t_end = clock_us() + math.floor(seconds * 1000000)
  while true do
    local t = clock_us()
    if t >= t_end then break end
    send(t)
    kr.yield()
  end
end

local function run_rate(seconds, rate)
  local t0 = clock_us()
  local t_end = t0 + math.floor(seconds * 1000000)
  local interval = 1000000 / rate
  local i = 0
  while true do
    local due = t0 + math.floor(i * interval)
    if due >= t_end then break end
    local now = clock_us()
    if due <= now then
      send(due)
      i = i + 1
    else
      kr.sleep(math.max(1, math.ceil((due - now) / 1000)))
    end
  end
end

local function run(seconds, rate)
  local t0 = clock_us()
  local ok, err = pcall(rate > 0 and run_rate or run_max, seconds, rate)
  st.elapsed_s = (clock_us() - t0) / 1e6
  st.running = false
  if not ok then
    st.last_error = tostring(err)
    kr.log("Error", "fanout loop failed: " .. tostring(err))
  end
end

kr.map_route("GET", "/start", function(req, res)
  local seconds = tonumber(req.query.seconds or "5")
  local rate = tonumber(req.query.rate or "0")
  if not seconds or seconds <= 0 or seconds > 600 then
    return res:json({ error = "seconds: 0 < S <= 600" }, 400)
  end
  if not rate or rate < 0 or rate > 1e6 then
    return res:json({ error = "rate: 0 <= R <= 1e6" }, 400)
  end
  if st.running then
    return res:json({ error = "already running" }, 409)
  end
  st.running, st.broadcasts, st.failed = true, 0, 0
  st.seconds, st.rate, st.elapsed_s, st.last_error = seconds, rate, 0, nil
  local ok, err = kr.spawn(run, seconds, rate)
  if not ok then
    st.running = false
    return res:json({ error = "cannot start: " .. tostring(err) }, 503)
  end
  res:json({ started = true, seconds = seconds, rate = rate, clients = hub:connections() })
end)

kr.map_route("GET", "/stats", function(req, res)
  res:json({ running = st.running, broadcasts = st.broadcasts, failed = st.failed,
             seconds = st.seconds, rate = st.rate, elapsed_s = st.elapsed_s,
             last_error = st.last_error or kr.json.null, clients = hub:connections() })
end)
