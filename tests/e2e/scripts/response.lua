-- The res object: status, header, text, json, html, redirect, send, chaining, 204, 500.
kr.map_route("GET", "/hello", function(req, res) res:text("hi") end)

kr.map_route("GET", "/res/text", function(req, res) res:text("hello text") end)
kr.map_route("GET", "/res/text-status", function(req, res) res:text("created", 201) end)
kr.map_route("GET", "/res/text-utf8", function(req, res) res:text("héllo ✓") end)

kr.map_route("GET", "/res/json", function(req, res) res:json({ Title = "x" }) end)
kr.map_route("GET", "/res/json-nested", function(req, res)
  res:json({ Title = "x", Items = { 1, 2, 3 }, Nested = { Flag = true, Nothing = kr.json.null, Pi = 1.5 },
             camelCase = "c", snake_case = "s" })
end)
kr.map_route("GET", "/res/json-status", function(req, res) res:json({ ok = false }, 422) end)
kr.map_route("GET", "/res/json-array", function(req, res) res:json({ "a", "b" }) end)
kr.map_route("GET", "/res/json-string", function(req, res) res:json("just a \"string\"\n") end)

kr.map_route("GET", "/res/html", function(req, res) res:html("<h1>hi</h1>") end)
kr.map_route("GET", "/res/html-status", function(req, res) res:html("<p>nope</p>", 404) end)

kr.map_route("GET", "/res/redirect", function(req, res) res:redirect("/hello") end)
kr.map_route("GET", "/res/redirect-301", function(req, res) res:redirect("https://example.com/x", 301) end)

kr.map_route("GET", "/res/send", function(req, res) res:send("a,b\n1,2\n", 200, "text/csv") end)
kr.map_route("GET", "/res/send-bin", function(req, res)
  local t = {}
  for i = 0, 255 do t[#t + 1] = string.char(i) end
  res:send(table.concat(t), 200, "application/octet-stream")
end)
kr.map_route("GET", "/res/send-status", function(req, res) res:send("teapot", 418, "text/plain") end)

kr.map_route("GET", "/res/chain", function(req, res)
  res:status(201):header("X-A", "1"):text("ok")
end)
kr.map_route("GET", "/res/headers", function(req, res)
  res:header("X-One", "1")
  res:header("Cache-Control", "no-store")
  res:status(202)
  res:text("accepted")
end)
kr.map_route("GET", "/res/status-then-json", function(req, res)
  res:status(400):json({ error = "bad" })
end)

kr.map_route("GET", "/res/nothing", function(req, res) end)
kr.map_route("POST", "/res/nothing", function(req, res) local _ = req.body end)
kr.map_route("GET", "/res/nothing-after-sleep", function(req, res) kr.sleep(20) end)

kr.map_route("GET", "/res/error", function(req, res) error("kaboom-unique-7731") end)
kr.map_route("GET", "/res/error-after-sleep", function(req, res)
  kr.sleep(20)
  error("late-kaboom-5512")
end)
kr.map_route("GET", "/res/error-table", function(req, res) error({ code = 1 }) end)
kr.map_route("GET", "/res/error-nil-index", function(req, res)
  local t = nil
  res:text(t.field)
end)
kr.map_route("GET", "/res/error-after-header", function(req, res)
  res:status(201):header("X-Partial", "yes")
  error("after-header-kaboom")
end)

kr.map_route("GET", "/res/json-cycle", function(req, res)
  local t = { name = "loop" }
  t.self = t
  res:json(t)
end)
kr.map_route("GET", "/res/header-crlf", function(req, res)
  res:header("X-Bad", "a\r\nInjected: 1"):text("body")
end)
kr.map_route("GET", "/res/redirect-crlf", function(req, res)
  res:redirect("/x\r\nInjected: 1")
end)
