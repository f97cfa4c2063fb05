-- The transport x protocol matrix (tests/e2e/signalr/matrix.test.js): one server for every cell.
-- /hub is the default hub (the target of kr.send_log, kr.send_event, kr.group_send);
-- /detailed is the same hub with detailed_errors. Both allow every transport and both protocols.
-- Per-cell state is keyed by a string the test passes (e.g. "LongPolling-messagepack").

local ALL_TRANSPORTS = { "WebSockets", "ServerSentEvents", "LongPolling" }
local ALL_PROTOCOLS = { "json", "messagepack" }

local hub = kr.hub("/hub", { transports = ALL_TRANSPORTS, protocols = ALL_PROTOCOLS, detailed_errors = false })
local detailed = kr.hub("/detailed", { transports = ALL_TRANSPORTS, protocols = ALL_PROTOCOLS, detailed_errors = true })

state = { ticks = {}, stopped = {}, collected = {} }

-- Values the Lua methods return (Value(kind)): every kind the hub codecs must encode.
local VALUES = {
  int = 42,
  neg = -7,
  float = 2.5,
  big = 1099511627776,                       -- 2^40: wider than 32 bits
  str = "héllo ✓ \"q\"",
  empty_str = "",
  yes = true,
  no = false,
  array = { 1, "two", 3.5, true },
  object = { Title = "x", n = 1, list = { 1, 2, 3 }, nested = { deep = { ok = true } } },
  mixed = { list = { 1, kr.json.null, { a = "b" } }, none = kr.json.null, empty = kr.json.empty_array },
}

local function methods(h)
  h:on("Value", function(ctx, kind)
    if kind == "nil" then return nil end
    return VALUES[kind]
  end)
  h:on("Back", function(ctx, v) return v end)
  h:on("Describe", function(ctx, v) return { type = type(v), value = v } end)
  h:on("Boom", function(ctx) error("kaboom") end)

  -- server-to-client streams
  h:stream("Counter", function(ctx, emit, n, delay_ms)
    for i = 1, n do emit(i); kr.sleep(delay_ms) end
  end)
  h:stream("FailAfter2", function(ctx, emit)
    emit(1)
    emit(2)
    kr.sleep(10)
    error("stream broke")
  end)
  -- emits 1, 2, 3, ... until the stream is over; state.ticks[key] counts the items emitted
  h:stream("Ticker", function(ctx, emit, key, delay_ms)
    state.ticks[key] = 0
    state.stopped[key] = nil
    while true do
      if not emit(state.ticks[key] + 1) then
        state.stopped[key] = "emit returned false"
        return
      end
      state.ticks[key] = state.ticks[key] + 1
      kr.sleep(delay_ms)
    end
  end)

  -- client-to-server streams
  h:on("Sum", function(ctx, stream)
    local total = 0
    for item in stream do total = total + item end
    return total
  end)
  h:on("SumCatch", function(ctx, stream)
    local ok, r = pcall(function()
      local total = 0
      for item in stream do total = total + item end
      return total
    end)
    if ok then return r end
    return "caught: " .. tostring(r)
  end)
  h:on("Collect", function(ctx, key, stream)
    local items = kr.json.array({})
    for item in stream do items[#items + 1] = item end
    state.collected[key] = items
  end)
  h:on("GetCollected", function(ctx, key) return state.collected[key] end)
  h:stream("Scale", function(ctx, emit, factor, stream)
    for item in stream do emit(item * factor) end
  end)

  -- client results
  h:on("AskName", function(ctx, hint)
    local name, err = ctx:invoke("GetName", hint)
    return name or ("error: " .. tostring(err))
  end)
  h:on("AskValue", function(ctx)
    local v, err = ctx:invoke("GetValue")
    if err ~= nil then return { error = err } end
    return { value = v }
  end)
end
methods(hub)
methods(detailed)

local function result(res, ok, x)
  if ok then res:json({ ok = true, n = x }) else res:json({ ok = false, err = tostring(x) }) end
end

kr.map_route("POST", "/group/{g}", function(req, res)
  result(res, kr.group_send(req.params.g, "GroupMsg", "hello", { n = 1, list = { 1, 2 } }))
end)
kr.map_route("POST", "/log", function(req, res)
  result(res, kr.send_log("Warning", "disk almost full"))
end)
kr.map_route("POST", "/event", function(req, res)
  result(res, kr.send_event("Nested", {
    obj = { a = 1, b = "two", inner = { c = { 3, 4 } } },
    arr = { 1, 2.5, "x", true, false, kr.json.null, { k = "v" } },
    num = -12,
    flag = true,
    off = false,
    none = kr.json.null,
    empty = kr.json.empty_array,
  }))
end)
kr.map_route("GET", "/ticks/{key}", function(req, res)
  res:json({ n = state.ticks[req.params.key] or -1, stopped = state.stopped[req.params.key] })
end)
