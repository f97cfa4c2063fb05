-- ticker.lua: live prices and system metrics pushed on timers.
--
-- Shows: kr.every timers that broadcast: every client gets a SystemMetrics event every 5 s (the
-- "live system metrics" of Kestrun's SignalR guide); a price tick every second goes to the
-- clients that subscribed to its symbol. A subscription is a group: Subscribe / Unsubscribe join
-- and leave "symbol:ACME", whose members get ReceiveTick. Subscribe's result is the latest tick,
-- so the client has a price at once. Routes read the same state.
--
-- Run:   build/kestrun scripts/examples/ticker.lua            (listens on 127.0.0.1:5000)
--        PORT=8080 TICK_MS=250 build/kestrun scripts/examples/ticker.lua
-- Environment: PORT (default 5000; --listen HOST:PORT wins), TICK_MS (price ticks, default 1000),
-- METRICS_MS (SystemMetrics, default 5000).
-- Tested by tests/e2e/signalr/examples.test.js, which also runs the client below.
--
-- A client (Node 18+, `npm install @microsoft/signalr`):
--
--   const signalR = require("@microsoft/signalr");
--   const connection = new signalR.HubConnectionBuilder()
--     .withUrl("http://127.0.0.1:5000/ticker")
--     .withAutomaticReconnect()
--     .configureLogging(signalR.LogLevel.Warning)
--     .build();
--   connection.on("ReceiveTick", (t) => console.log(`${t.symbol} ${t.price} (${t.change})`));
--   connection.on("ReceiveEvent", (e) => console.log(e.eventName, JSON.stringify(e.data)));
--   connection.onreconnected(() => connection.invoke("Subscribe", "ACME")); // groups do not survive a reconnect
--   await connection.start();
--   const latest = await connection.invoke("Subscribe", "ACME");
--   console.log(`${latest.symbol} ${latest.price} (latest)`);
--
--   curl -s http://127.0.0.1:5000/api/prices

local TICK_MS = tonumber(os.getenv("TICK_MS")) or 1000
local METRICS_MS = tonumber(os.getenv("METRICS_MS")) or 5000

kr.listen{ host = "127.0.0.1", port = tonumber(os.getenv("PORT")) or 5000 }

local ticker = kr.hub("/ticker")    -- the default hub: kr.send_event targets it

local function round2(x)
  return math.floor(x * 100 + 0.5) / 100
end

-- The latest tick of each symbol. seq counts the ticks since the script was loaded.
local seq = 0
local latest = {}
for symbol, price in pairs({ ACME = 100.0, GLOBEX = 250.0, INITECH = 42.0 }) do
  latest[symbol] = { symbol = symbol, price = price, change = 0, seq = 0, at = kr.now() }
end

local function prices()
  local p = {}
  for symbol, tick in pairs(latest) do
    p[symbol] = tick.price
  end
  return p
end

-- Every TICK_MS: each price takes a random step of up to 1 %, and the members of "symbol:ACME"
-- get ReceiveTick({symbol, price, change, seq, at}).
kr.every(TICK_MS, function()
  seq = seq + 1
  local at = kr.now()
  for symbol, old in pairs(latest) do
    local price = math.max(1, round2(old.price * (1 + (math.random() - 0.5) / 50)))
    local tick = { symbol = symbol, price = price, change = round2(price - old.price), seq = seq, at = at }
    latest[symbol] = tick
    ticker:group_send("symbol:" .. symbol, "ReceiveTick", tick)
  end
end)

-- Every METRICS_MS: ReceiveEvent({eventName = "SystemMetrics", data = {...}, timestamp}) to
-- every client.
kr.every(METRICS_MS, function()
  local m = kr.metrics()
  kr.send_event("SystemMetrics", {
    CpuPercent = round2(m.cpu_percent),   -- average since the server started
    MemoryMB = round2(m.memory_mb),       -- resident memory
    Clients = kr.connections(),           -- hub clients connected now
    Timestamp = kr.now(),
  })
end)

-- Subscribe(symbol): join the symbol's group; the result is its latest tick, so the client has a
-- price before the next ReceiveTick. An unknown symbol makes invoke() reject.
ticker:on("Subscribe", function(ctx, symbol)
  local tick = latest[symbol]
  if tick == nil then
    error("unknown symbol: " .. tostring(symbol))
  end
  local ok, err = ctx:join("symbol:" .. symbol)
  if not ok then error(err) end
  return tick
end)

ticker:on("Unsubscribe", function(ctx, symbol)
  ctx:leave("symbol:" .. tostring(symbol))
  return true
end)

-- GET /api/prices: {"seq":N,"prices":{"ACME":..,...}}; GET /api/prices/ACME: the latest tick.
kr.map_route("GET", "/api/prices", function(req, res)
  res:json({ seq = seq, prices = prices() })
end)

kr.map_route("GET", "/api/prices/{symbol}", function(req, res)
  local tick = latest[req.params.symbol]
  if tick == nil then
    return res:json({ error = "unknown symbol" }, 404)
  end
  res:json(tick)
end)
