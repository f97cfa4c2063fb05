-- chat.lua: a chat hub written in Lua.
--
-- Shows: hub methods in Lua (hub:on) that broadcast to everyone, rooms as groups (ctx:join,
-- ctx:leave, hub:group_send), a message to one connection (hub:send_to), announcements from
-- on_connected / on_disconnected, a result returned to the client's invoke(), and HTTP routes
-- next to the hub (the message history, an announcement from a route).
--
-- Run:   build/kestrun scripts/examples/chat.lua            (listens on 127.0.0.1:5000)
--        PORT=8080 build/kestrun scripts/examples/chat.lua  (another port; --listen HOST:PORT wins over both)
-- Tested by tests/e2e/signalr/examples.test.js, which also runs the client below.
--
-- Users: kestrun has no authentication yet, so ctx.user is nil (WhoAmI shows it) and
-- kr.send_user(user, ...) reaches nobody (it returns true, 0). The `user` of SendMessage is the
-- name the client chose, not a verified identity; a connection is addressed by its id.
--
-- A client (Node 18+, `npm install @microsoft/signalr`; a browser page does the same with the
-- browser bundle):
--
--   const signalR = require("@microsoft/signalr");
--   const connection = new signalR.HubConnectionBuilder()
--     .withUrl("http://127.0.0.1:5000/chat")
--     .configureLogging(signalR.LogLevel.Warning)
--     .build();
--   connection.on("ReceiveMessage", (user, text) => console.log(`${user}: ${text}`));
--   connection.on("ReceiveRoomMessage", (room, user, text) => console.log(`[${room}] ${user}: ${text}`));
--   connection.on("UserConnected", (id, online) => console.log(`${id} connected (${online} online)`));
--   await connection.start();
--   await connection.invoke("SendMessage", "ann", "hello");       // resolves to the number of recipients
--   await connection.invoke("JoinRoom", "dev");
--   await connection.invoke("SendToRoom", "dev", "ann", "hi dev");
--
--   curl -s http://127.0.0.1:5000/api/history                  # the last 50 messages, as JSON
--   curl -s -X POST -d 'back in 5 minutes' http://127.0.0.1:5000/api/announce

kr.listen{ host = "127.0.0.1", port = tonumber(os.getenv("PORT")) or 5000 }

local chat = kr.hub("/chat")        -- the first hub declared: the default hub

-- The last HISTORY_MAX messages, oldest first. A reload of the script starts it empty again
-- (Lua state is per generation); connections and their rooms survive the reload.
local HISTORY_MAX = 50
local history = {}

local function remember(room, user, text)
  history[#history + 1] = { room = room or kr.json.null, user = user, text = text, at = kr.now() }
  if #history > HISTORY_MAX then
    table.remove(history, 1)
  end
end

-- Arguments come from the client: check them. A Lua error here makes the client's invoke()
-- reject with "An unexpected error occurred invoking 'X' on the server."; the message and the
-- traceback go to the server log.
local function check(name, value, max)
  if type(value) ~= "string" or value == "" or #value > max then
    error(name .. " must be a non-empty string of at most " .. max .. " bytes")
  end
end

-- SendMessage(user, text): ReceiveMessage(user, text) to everyone; the result is how many
-- clients it was sent to.
chat:on("SendMessage", function(ctx, user, text)
  check("user", user, 64)
  check("text", text, 1000)
  remember(nil, user, text)
  local _, n = chat:send_all("ReceiveMessage", user, text)
  return n
end)

-- JoinRoom(room) / LeaveRoom(room): a room is a group. Its members are told who came and went.
chat:on("JoinRoom", function(ctx, room)
  check("room", room, 64)
  local ok, err = ctx:join(room)
  if not ok then error(err) end
  chat:group_send(room, "ReceiveRoomMessage", room, "system",
                  ctx.connection_id .. " has joined the room " .. room .. ".")
  return true
end)

chat:on("LeaveRoom", function(ctx, room)
  check("room", room, 64)
  ctx:leave(room)
  chat:group_send(room, "ReceiveRoomMessage", room, "system",
                  ctx.connection_id .. " has left the room " .. room .. ".")
  return true
end)

-- SendToRoom(room, user, text): ReceiveRoomMessage(room, user, text) to the room's members.
chat:on("SendToRoom", function(ctx, room, user, text)
  check("room", room, 64)
  check("user", user, 64)
  check("text", text, 1000)
  remember(room, user, text)
  local _, n = chat:group_send(room, "ReceiveRoomMessage", room, user, text)
  return n
end)

-- SendPrivate(connectionId, text): ReceivePrivate(fromConnectionId, text) to one connection.
-- The result is true, or false when that connection is gone.
chat:on("SendPrivate", function(ctx, to, text)
  check("connectionId", to, 64)
  check("text", text, 1000)
  local ok = chat:send_to(to, "ReceivePrivate", ctx.connection_id, text)
  return ok
end)

-- WhoAmI(): what the server knows about the caller. `user` is null until authentication exists.
chat:on("WhoAmI", function(ctx)
  return { connectionId = ctx.connection_id, user = ctx.user or kr.json.null }
end)

-- Announcements: everyone (the newcomer included) gets UserConnected(id, online);
-- UserDisconnected(id) goes to those who stay.
chat:on_connected(function(ctx)
  chat:send_all("UserConnected", ctx.connection_id, chat:connections())
end)

chat:on_disconnected(function(ctx, err)
  chat:send_all("UserDisconnected", ctx.connection_id)
end)

-- GET /api/history[?room=dev]: the remembered messages (all of them, or one room's), as JSON.
kr.map_route("GET", "/api/history", function(req, res)
  local room = req.query.room
  local list = kr.json.array({})
  for _, m in ipairs(history) do
    if room == nil or m.room == room then
      list[#list + 1] = m
    end
  end
  res:json(list)
end)

-- POST /api/announce (the body is the text): ReceiveMessage("server", text) to everyone.
kr.map_route("POST", "/api/announce", function(req, res)
  local text = req.body
  if text == nil or #text > 1000 then
    return res:json({ error = "the body must be the announcement, at most 1000 bytes" }, 400)
  end
  remember(nil, "server", text)
  local _, n = kr.send_all("ReceiveMessage", "server", text)
  res:json({ delivered = n })
end)
