-- HTTP/1.1 connection behaviour: keep-alive, pipelining, close, bodies.
kr.map_route("GET", "/hello", function(req, res) res:text("hi") end)
kr.map_route("GET", "/slow", function(req, res) kr.sleep(100) res:text("slow") end)
kr.map_route("GET", "/fast", function(req, res) res:text("fast") end)
kr.map_route("GET", "/n/{n:int}", function(req, res)
  if req.params.n % 2 == 0 then kr.sleep(10) end
  res:text("n" .. req.params.n)
end)
kr.map_route({ "POST", "PUT" }, "/echo-body", function(req, res)
  if req.body == nil then res:text("<nil>") else res:text(req.body) end
end)
kr.map_route("GET", "/nothing", function(req, res) end)
kr.map_route("GET", "/boom", function(req, res) error("protocol-boom") end)
kr.map_route("GET", "/big", function(req, res) res:text(("0123456789abcdef"):rep(65536)) end)
