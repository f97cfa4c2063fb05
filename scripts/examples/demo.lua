-- demo.lua: the kestrun demo. Run it with `make demo`, then open http://127.0.0.1:5000/
--
-- Routes written in Lua, each in its own fiber; a timer; static files; JSON in and out.

kr.listen{ host = "127.0.0.1", port = 5000 }
kr.static("/", "scripts/examples/public")

local started = kr.now()
local hits = 0

-- A plain text route with a route parameter.
kr.map_route("GET", "/hello/{name}", function(req, res)
  hits = hits + 1
  res:text("Hello, " .. req.params.name .. "!")
end)

-- JSON out, with an integer-constrained parameter.
kr.map_route("GET", "/api/item/{id:int}", function(req, res)
  res:json({ id = req.params.id, name = "item " .. req.params.id, price = 9.99 })
end)

-- JSON in: echo the decoded body, or 400 with the parse error.
kr.map_route("POST", "/api/echo", function(req, res)
  local body, err = req:json()
  if not body then
    return res:json({ error = err }, 400)
  end
  res:json({ received = body, at = kr.now() })
end)

-- kr.sleep suspends only this request: other requests keep being served meanwhile.
kr.map_route("GET", "/api/slow", function(req, res)
  local ms = tonumber(req.query.ms) or 500
  kr.sleep(math.min(ms, 5000))
  res:json({ slept_ms = ms })
end)

kr.map_route("GET", "/api/status", function(req, res)
  local m = kr.metrics()
  res:json({ started = started, now = kr.now(), hits = hits, metrics = m })
end)

-- A periodic job: logs the request count every 30 seconds.
kr.every(30000, function()
  kr.log("Information", "demo heartbeat", { hits = hits })
end)

kr.log("Information", "demo loaded: try /hello/world, /api/item/7, /api/slow?ms=300, /api/status")
