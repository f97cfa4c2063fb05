-- The memory cap, with a generous CPU slice so that memory is what stops the handler.
kr.limits{ lua_max_memory_mb = 64, lua_max_slice_ms = 20000 }

kr.map_route("GET", "/hello", function(req, res) res:text("hi") end)

kr.map_route("GET", "/mem", function(req, res)
  local t = {}
  for i = 1, 1e9 do t[i] = ("x"):rep(100) .. i end
  res:text("unreachable")
end)

kr.map_route("GET", "/mem-string", function(req, res)
  local s = ("x"):rep(1024 * 1024 * 200)
  res:text(tostring(#s))
end)

kr.map_route("GET", "/alloc-ok", function(req, res)
  local t = {}
  for i = 1, 10000 do t[i] = ("y"):rep(100) .. i end
  res:text(tostring(#t))
end)

