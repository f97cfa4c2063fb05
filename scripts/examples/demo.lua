-- demo.lua: the kestrun demo. Run it with `make demo`, then open http://127.0.0.1:5000/
--
-- The use cases of Kestrun's SignalR guide in Lua: a hub at /runtime, routes that broadcast
-- logs and events, a metrics broadcast every 2 seconds, and a dashboard page that shows all
-- of it live through the official @microsoft/signalr browser client.

kr.listen{ host = "127.0.0.1", port = 5000 }

local hub = kr.hub("/runtime")          -- the default hub: kr.send_log / kr.send_event target it

-- The official browser client, from the dashboard's npm packages (scripts/deps.sh installs it).
kr.static("/lib/signalr", "scripts/examples/dashboard/node_modules/@microsoft/signalr/dist/browser")
kr.static("/", "scripts/examples/public")

-- Broadcast a log line: GET /api/log/Warning
kr.map_route("GET", "/api/log/{level}", function(req, res)
  local ok, err = kr.send_log(req.params.level, "Event occurred at " .. kr.now():sub(12, 19))
  if not ok then
    return res:text(err, 400)
  end
  res:text("Log broadcasted")
end)

-- Broadcast an event with data: GET /api/notify
kr.map_route("GET", "/api/notify", function(req, res)
  kr.send_event("Notification", {
    Title = "System Update",
    Message = "New features available",
    Timestamp = kr.now(),
  })
  res:text("Event broadcasted")
end)

-- Send to one group: GET /api/group/admins?message=hi
kr.map_route("GET", "/api/group/{group}", function(req, res)
  local ok, n = kr.group_send(req.params.group, "ReceiveGroupMessage",
                              { group = req.params.group, message = req.query.message or "hello" })
  res:json({ sent = ok, recipients = n })
end)

kr.map_route("GET", "/api/status", function(req, res)
  res:json({ connections = kr.connections(), metrics = kr.metrics(), now = kr.now() })
end)

-- A hub method written in Lua: connection.invoke("Add", 2, 3) returns 5.
hub:on("Add", function(ctx, a, b)
  return a + b
end)

hub:on_connected(function(ctx)
  ctx:send("Welcome", "connected as " .. ctx.connection_id)
end)

-- Periodic metrics for the dashboard.
kr.every(2000, function()
  local m = kr.metrics()
  kr.send_event("Metrics", {
    connections = m.connections,
    requests = m.requests,
    messages_sent = m.messages_sent,
    memory_mb = math.floor(m.memory_mb * 10 + 0.5) / 10,
    cpu_percent = math.floor(m.cpu_percent * 10 + 0.5) / 10,
    uptime_s = math.floor(m.uptime_s),
  })
end)

kr.log("Information", "demo loaded: open http://127.0.0.1:5000/")
