-- Fibers, timers and helpers: kr.sleep, kr.after, kr.every, timer:stop, kr.spawn, kr.now, kr.log, kr.json.
kr.map_route("GET", "/hello", function(req, res) res:text("hi") end)
kr.map_route("GET", "/sleep", function(req, res) kr.sleep(500) res:text("slept") end)
kr.map_route("GET", "/sleep-many", function(req, res)
  for i = 1, 5 do kr.sleep(20) end
  res:text("five")
end)

-- kr.after
local after_count = 0
kr.map_route("GET", "/after/start", function(req, res)
  kr.after(100, function() after_count = after_count + 1 end)
  res:text("started")
end)
kr.map_route("GET", "/after/count", function(req, res) res:text(tostring(after_count)) end)

local cancelled_ran = false
kr.map_route("GET", "/after/cancel", function(req, res)
  local t = kr.after(150, function() cancelled_ran = true end)
  t:stop()
  res:text("cancelled")
end)
kr.map_route("GET", "/after/cancelled-ran", function(req, res) res:text(tostring(cancelled_ran)) end)

-- a timer callback is a fiber too: it may sleep
local after_sleep = "pending"
kr.map_route("GET", "/after/sleeper", function(req, res)
  kr.after(10, function() kr.sleep(50) after_sleep = "woke" end)
  res:text("ok")
end)
kr.map_route("GET", "/after/sleeper-state", function(req, res) res:text(after_sleep) end)

-- kr.every and timer:stop
local ticks, ticker = 0, nil
kr.map_route("GET", "/every/start", function(req, res)
  ticks = 0
  ticker = kr.every(50, function() ticks = ticks + 1 end)
  res:text("started")
end)
kr.map_route("GET", "/every/stop", function(req, res)
  ticker:stop()
  res:text(tostring(ticks))
end)
kr.map_route("GET", "/every/count", function(req, res) res:text(tostring(ticks)) end)

-- a tick is skipped while the previous run is still going
local running, max_running, slow_runs, slow_ticker = 0, 0, 0, nil
kr.map_route("GET", "/every/slow/start", function(req, res)
  slow_ticker = kr.every(30, function()
    running = running + 1
    if running > max_running then max_running = running end
    slow_runs = slow_runs + 1
    kr.sleep(150)
    running = running - 1
  end)
  res:text("started")
end)
kr.map_route("GET", "/every/slow/stop", function(req, res)
  slow_ticker:stop()
  res:json({ max_running = max_running, runs = slow_runs })
end)

-- timers created at load time
local load_ticks, load_after = 0, false
local load_timer = kr.every(50, function()
  load_ticks = load_ticks + 1
end)
kr.after(50, function() load_after = true end)
kr.map_route("GET", "/load-timers", function(req, res)
  res:json({ ticks = load_ticks, after = load_after })
end)
kr.map_route("GET", "/load-timers/stop", function(req, res)
  load_timer:stop()
  res:text(tostring(load_ticks))
end)

-- kr.spawn
local spawned = "none"
kr.map_route("GET", "/spawn/start", function(req, res)
  spawned = "none"
  kr.spawn(function(a, b)
    kr.sleep(50)
    spawned = a .. b
  end, "x", "y")
  res:text("started:" .. spawned)
end)
kr.map_route("GET", "/spawn/result", function(req, res) res:text(spawned) end)
kr.map_route("GET", "/spawn/error", function(req, res)
  kr.spawn(function() kr.sleep(10) error("spawned-fiber-boom-4821") end)
  res:text("ok")
end)

kr.map_route("GET", "/now", function(req, res) res:text(kr.now()) end)

kr.map_route("GET", "/log", function(req, res)
  kr.log("Warning", "log-marker-warning-9157")
  kr.log("Information", "log-marker-info-9157")
  kr.log("Debug", "log-marker-debug-9157")
  res:text("logged")
end)

kr.map_route("GET", "/json", function(req, res)
  local v = kr.json.decode('{"x":[1,2,{"y":"z"}],"s":"h\\u00e9","t":true,"f":1.5}')
  res:json({
    enc = kr.json.encode({ Title = "x" }),
    enc_arr = kr.json.encode({ 1, 2, 3 }),
    enc_null = kr.json.encode({ a = kr.json.null }),
    null_alone = kr.json.encode(kr.json.null),
    x2 = v.x[2],
    y = v.x[3].y,
    s = v.s,
    t = v.t,
    f = v.f,
    rt = kr.json.decode(kr.json.encode({ k = "v" })).k,
  })
end)
kr.map_route("GET", "/json/null-decode", function(req, res)
  local v = kr.json.decode('{"n":null}')
  res:text(tostring(v.n == nil or v.n == kr.json.null))
end)
