-- The SignalR end-to-end tests' main script (tests/e2e/signalr/*.test.js).
-- /hub is the default hub (first declared): the built-ins plus Lua methods; /detailed has
-- detailed errors; /plain has no built-ins. Routes drive the broadcasters and expose state.

local WS = { transports = { "WebSockets" }, protocols = { "json" } }
local function opts(extra)
  local t = { transports = WS.transports, protocols = WS.protocols }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

local hub = kr.hub("/hub", opts())
local detailed = kr.hub("/detailed", opts({ detailed_errors = true }))
local plain = kr.hub("/plain", opts({ builtins = false }))
local small = kr.hub("/small", opts({ max_message_bytes = 1024 }))

state = { connected = {}, disconnected = {}, order = {}, fired = {}, nconnected = 0 }

local function methods(h)
  h:on("Add", function(ctx, a, b)
    if a == "boom" then error("boom") end
    return a + b
  end)
  h:on("Obj", function(ctx) return { Title = "x", n = 1, list = { 1, 2, 3 } } end)
  h:on("Nothing", function(ctx) end)
  h:on("Fire", function(ctx, key, value) state.fired[key] = value end)
  h:on("GetFired", function(ctx, key) return state.fired[key] end)
  h:on("Sleep", function(ctx, ms) kr.sleep(ms) return "slept" end)
  h:on("Order", function(ctx, tag, ms)
    local id = ctx.connection_id
    state.order[id] = state.order[id] or {}
    table.insert(state.order[id], tag .. ":start")
    if ms > 0 then kr.sleep(ms) end
    table.insert(state.order[id], tag .. ":end")
    return tag
  end)
  h:on("GetOrder", function(ctx) return state.order[ctx.connection_id] end)
  h:on("WhoAmI", function(ctx) return ctx.connection_id end)
  h:on("SendMe", function(ctx, method, a, b) ctx:send(method, a, b) return "sent" end)
  h:on("JoinMe", function(ctx, g) ctx:join(g) return "joined" end)
  h:on("LeaveMe", function(ctx, g) ctx:leave(g) return "left" end)
  h:on("Connections", function(ctx) return kr.connections() end)
  h:on("Back", function(ctx, v) return v end)
end
methods(hub)
methods(detailed)
methods(plain)
methods(small)

hub:on_connected(function(ctx)
  state.connected[ctx.connection_id] = true
  state.nconnected = state.nconnected + 1
  ctx:join("lobby")
  ctx:send("Welcome", ctx.connection_id)
end)
hub:on_disconnected(function(ctx, err)
  state.disconnected[ctx.connection_id] = { err = err and tostring(err) or nil }
end)

local function result(res, ok, x)
  if ok then res:json({ ok = true, n = x }) else res:json({ ok = false, err = tostring(x) }) end
end

kr.map_route("GET", "/group/{g}", function(req, res)
  kr.group_send(req.params.g, "Notice", "x", 42)
  res:text("ok")
end)
kr.map_route("GET", "/groupres/{g}", function(req, res)
  result(res, kr.group_send(req.params.g, "Notice", "x", 42))
end)
kr.map_route("GET", "/log", function(req, res)
  result(res, kr.send_log(req.query.level, req.query.message))
end)
kr.map_route("GET", "/event", function(req, res)
  result(res, kr.send_event("Thing", { Title = "x", n = 1 }))
end)
kr.map_route("GET", "/event-string", function(req, res)
  result(res, kr.send_event("Plain", "just text"))
end)
kr.map_route("GET", "/all", function(req, res)
  result(res, kr.send_all("Broadcast", "a", 1, { k = "v" }))
end)
kr.map_route("GET", "/hub-all", function(req, res)
  result(res, hub:send_all("HubBroadcast", "via hub object"))
end)
kr.map_route("GET", "/detailed-all", function(req, res)
  result(res, detailed:send_all("DetailedBroadcast", "only /detailed"))
end)
kr.map_route("GET", "/to/{id}", function(req, res)
  result(res, kr.send_to(req.params.id, "Direct", "hello", req.params.id))
end)
kr.map_route("GET", "/connections", function(req, res)
  res:json({ n = kr.connections(), hub = hub:connections(), detailed = detailed:connections() })
end)
kr.map_route("GET", "/lobby", function(req, res)
  result(res, kr.group_send("lobby", "LobbyNotice", "hello lobby"))
end)
kr.map_route("GET", "/connected/{id}", function(req, res)
  res:json({ seen = state.connected[req.params.id] == true })
end)
kr.map_route("GET", "/disconnected/{id}", function(req, res)
  local d = state.disconnected[req.params.id]
  res:json({ seen = d ~= nil, err = d and d.err or nil })
end)
kr.map_route("GET", "/send-user", function(req, res)
  result(res, kr.send_user("nobody-logged-in", "ForUser", 1))
end)
kr.map_route("GET", "/bad-args", function(req, res)
  kr.send_all({})   -- a table as the method name: a programming error, raises
  res:text("not reached")
end)
kr.map_route("GET", "/burst/{n:int}", function(req, res)
  for i = 1, req.params.n do kr.send_all("Burst", i) end
  res:text("ok")
end)
