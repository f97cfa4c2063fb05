-- The req object: method, path, query, headers, cookies, body, json, form, remote_addr.
local ALL = { "GET", "POST", "PUT", "DELETE", "PATCH" }

kr.map_route("GET", "/hello", function(req, res) res:text("hi") end)

kr.map_route(ALL, "/req/info/{*rest}", function(req, res)
  res:json({
    method = req.method,
    path = req.path,
    raw_query = req.raw_query,
    raw_query_type = type(req.raw_query),
    remote_addr = req.remote_addr,
  })
end)

kr.map_route("GET", "/req/query", function(req, res)
  local all = req:query_all("a")
  res:json({
    a = req.query.a,
    b = req.query.b,
    sp = req.query.sp,
    utf = req.query["ü"],
    all = table.concat(all, "|"),
    n_all = #all,
    n_missing = #req:query_all("zzz"),
    missing_is_nil = req.query.zzz == nil,
  })
end)

kr.map_route("GET", "/req/headers", function(req, res)
  res:json({
    custom = req.headers["x-custom-thing"],
    host = req.headers.host,
    accept = req.headers.accept,
    missing_is_nil = req.headers["x-not-sent"] == nil,
  })
end)

kr.map_route("GET", "/req/cookie", function(req, res)
  res:json({
    sid = req:cookie("sid"),
    theme = req:cookie("theme"),
    missing_is_nil = req:cookie("nope") == nil,
  })
end)

kr.map_route(ALL, "/req/body", function(req, res)
  local b = req.body
  local sum = 0
  if b then for i = 1, #b do sum = sum + b:byte(i) end end
  res:json({
    is_nil = b == nil,
    body_type = type(b),
    len = b and #b or 0,
    sum = sum,
    text = b or "",
  })
end)

kr.map_route("POST", "/req/json", function(req, res)
  local v, err = req:json()
  if v == nil then
    res:json({ ok = false, err = tostring(err), err_type = type(err) })
  else
    res:json({ ok = true, name = v.name, n = v.n, n_type = math.type(v.n), second = v.arr[2],
               nested = v.obj.k })
  end
end)

kr.map_route("POST", "/req/form", function(req, res)
  local f = req:form()
  res:json({ a = f.a, b = f.b, c = f.c, e = f["ü"] })
end)
