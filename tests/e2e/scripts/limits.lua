-- Availability guards: the CPU-slice hook and the memory cap, lowered for a fast test.
kr.limits{ lua_max_slice_ms = 100, lua_max_memory_mb = 64 }

kr.map_route("GET", "/hello", function(req, res) res:text("hi") end)

kr.map_route("GET", "/spin", function(req, res)
  while true do end
end)

kr.map_route("GET", "/spin-pcall", function(req, res)
  local ok, err = pcall(function() while true do end end)
  res:text("swallowed: " .. tostring(ok) .. " " .. tostring(err))
end)

kr.map_route("GET", "/spin-pcall-loop", function(req, res)
  -- retrying after the hook fired must not work either
  for i = 1, 100 do pcall(function() while true do end end) end
  res:text("swallowed")
end)

kr.map_route("GET", "/spin-xpcall", function(req, res)
  xpcall(function() while true do end end, function(e) return e end)
  res:text("swallowed")
end)

-- busy 50 ms at a time, yielding in between: each slice stays under the limit
kr.map_route("GET", "/busy-yielding", function(req, res)
  for i = 1, 8 do
    local t = os.clock() + 0.05
    while os.clock() < t do end
    kr.sleep(1)
  end
  res:text("done")
end)

-- yielding from a plain coroutine is an error, not a silent misbehaviour
kr.map_route("GET", "/yield-in-wrap", function(req, res)
  coroutine.wrap(function() kr.sleep(1) end)()
  res:text("unreachable")
end)

kr.map_route("GET", "/yield-in-resume", function(req, res)
  local co = coroutine.create(function() kr.sleep(1) return "no error" end)
  local ok, err = coroutine.resume(co)
  res:json({ ok = ok, err = tostring(err) })
end)

-- plain coroutines that do not call kr.* still work inside a fiber
kr.map_route("GET", "/plain-coroutine", function(req, res)
  local gen = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end)
  res:text(gen() .. gen() .. gen())
end)
