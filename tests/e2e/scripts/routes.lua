-- Routing: literals, parameters, constraints, catch-all, verbs, 404/405.
kr.map_route("GET", "/hello", function(req, res) res:text("hi") end)

kr.map_route("GET", "/api/log/{level}", function(req, res)
  res:text("level=" .. req.params.level)
end)

kr.map_route("GET", "/items/{id:int}", function(req, res)
  res:text(math.type(req.params.id) .. ":" .. tostring(req.params.id + 1))
end)

kr.map_route("GET", "/files/{*rest}", function(req, res)
  res:text("rest=" .. tostring(req.params.rest))
end)

-- the parameter route is registered first: the literal must still win
kr.map_route("GET", "/users/{name}", function(req, res) res:text("param:" .. req.params.name) end)
kr.map_route("GET", "/users/me", function(req, res) res:text("literal") end)

kr.map_route("POST", "/only-post", function(req, res) res:text("posted") end)
kr.map_route("PUT", "/mixed", function(req, res) res:text("put") end)
kr.map_route("DELETE", "/mixed", function(req, res) res:text("delete") end)

kr.map_route("GET,POST", "/multi-a", function(req, res) res:text("a:" .. req.method) end)
kr.map_route({ "GET", "POST" }, "/multi-b", function(req, res) res:text("b:" .. req.method) end)

kr.map_route("GET", "/two/{a}/and/{b}", function(req, res)
  res:text(req.params.a .. "+" .. req.params.b)
end)
