-- The kestrun script under test in the HTTP route benchmark (bench/run.sh routes).
-- bench/nginx.conf serves the same two URLs with the same bodies from content_by_lua_block.
-- run.sh starts it with `--listen 127.0.0.1:0 --port-file FILE`, so it declares no kr.listen.

kr.map_route("GET", "/hello", function(req, res)
  res:text("Hello, World!")
end)

kr.map_route("GET", "/api/item/{id:int}", function(req, res)
  res:json({ id = req.params.id, name = "item " .. req.params.id, price = 9.99, tags = { "a", "b" } })
end)
