-- Broadcast load for tests/e2e/signalr/load.test.js: ordered sequences to many clients and a
-- large paced broadcast that overruns a client that never reads (slow consumer).
kr.hub("/hub", { transports = { "WebSockets" }, protocols = { "json" } })

-- kr.send_event("Seq", { n = 1..count })
kr.map_route("GET", "/seq/{count:int}", function(req, res)
  local ok = 0
  for i = 1, req.params.count do
    if kr.send_event("Seq", { n = i }) then ok = ok + 1 end
  end
  res:json({ sent = ok })
end)

-- count events of size bytes each, `batch` at a time with a short sleep in between so that the
-- clients that read keep their queues short while the one that does not falls behind.
kr.map_route("GET", "/big", function(req, res)
  local count = tonumber(req.query.count) or 2000
  local size = tonumber(req.query.size) or 4096
  local batch = tonumber(req.query.batch) or 50
  local pause = tonumber(req.query.pause) or 5
  local s = string.rep("x", size)
  local ok = 0
  for i = 1, count do
    if kr.send_event("Big", { i = i, s = s }) then ok = ok + 1 end
    if i % batch == 0 then kr.sleep(pause) end
  end
  res:json({ sent = ok, connections = kr.connections() })
end)

kr.map_route("GET", "/connections", function(req, res)
  res:json({ n = kr.connections() })
end)
