-- signalr_demo.lua: the kestrun demo, Kestrun's SignalR guide and tutorial 15.5 in Lua.
--
--   make demo                                  (or: build/kestrun scripts/examples/signalr_demo.lua)
--   then open http://127.0.0.1:5000/
--
-- A SignalR hub at /runtime (Kestrun's KestrunHub: JoinGroup, LeaveGroup, Echo), routes that
-- broadcast logs, events and group messages, a long "process" that reports its progress, background
-- operations run as tasks, system metrics every 5 seconds, a heartbeat on a cron schedule, server log
-- lines forwarded to the browsers, and a dashboard at / that shows all of it live through the official
-- @microsoft/signalr browser client (served from scripts/examples/dashboard/node_modules, no CDN).
--
-- Settings (environment variables; `--listen HOST:PORT` on the command line wins over PORT):
--   PORT                     listen port on 127.0.0.1 (default 5000; 0 = any free port)
--   KR_DEMO_METRICS_MS       interval of the SystemMetrics event, in ms (default 5000)
--   KR_DEMO_HEARTBEAT_CRON   schedule of the ServerHeartbeat event, 6-field cron with seconds
--                            first (default "*/30 * * * * *": every 30 seconds)
--
-- Try it from a shell while the dashboard is open:
--   curl localhost:5000/api/log/Warning
--   curl localhost:5000/api/notify
--   curl -X POST localhost:5000/api/notify-group/Admins
--   curl -X POST localhost:5000/api/process                 (answers "Complete" after about 5.5 s)
--   curl -X POST 'localhost:5000/api/operation/start?seconds=5'
--   curl localhost:5000/api/operation/status/<TaskId>
--   curl localhost:5000/api/status

-- Files are found next to this script, whatever the current directory is.
local HERE = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"

-- An integer from the environment, at least `min`; a bad value stops the load with a clear message.
local function env_integer(name, default, min)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  local n = math.tointeger(tonumber(v))
  if n == nil or n < min then
    error(("%s must be an integer >= %d, not '%s'"):format(name, min, v), 0)
  end
  return n
end

local METRICS_MS = env_integer("KR_DEMO_METRICS_MS", 5000, 1)
local HEARTBEAT_CRON = os.getenv("KR_DEMO_HEARTBEAT_CRON") or "*/30 * * * * *"

kr.listen{ host = "127.0.0.1", port = env_integer("PORT", 5000, 0) }  -- 0: any free port

-- Log lines go to the console and, as ReceiveLog, to every dashboard (Kestrun's missing
-- Add-KrSinkSignalR).
kr.logger{ level = "Information", console = true, signalr = true }

-- The default hub: kr.send_log, kr.send_event and kr.group_send target it.
local hub = kr.hub("/runtime")

-- The dashboard and the official browser client.
local SIGNALR_DIR = HERE .. "dashboard/node_modules/@microsoft/signalr/dist/browser"
local bundle = io.open(SIGNALR_DIR .. "/signalr.min.js")
if not bundle then
  error("the @microsoft/signalr browser bundle is missing from " .. SIGNALR_DIR ..
        ": run scripts/deps.sh (or `npm ci` in scripts/examples/dashboard)", 0)
end
bundle:close()
kr.static("/lib/signalr", SIGNALR_DIR, { max_age = 3600 })
kr.static("/", HERE .. "public")

---------------------------------------------------------------------------------------------------
-- Broadcasting from routes (the guide's "Broadcasting Messages")
---------------------------------------------------------------------------------------------------

-- GET /api/log/Warning -> ReceiveLog {level, message, timestamp} to every client.
kr.map_route("GET", "/api/log/{level}", function(req, res)
  local ok, err = kr.send_log(req.params.level, "Event occurred at " .. kr.now():sub(12, 19))
  if not ok then
    return res:text(err, 400)
  end
  res:text("Log broadcasted")
end)

-- GET /api/notify -> ReceiveEvent {eventName = "Notification", data, timestamp}.
kr.map_route("GET", "/api/notify", function(req, res)
  kr.send_event("Notification", {
    Title = "System Update",
    Message = "New features available",
    Timestamp = kr.now(),
  })
  res:text("Event broadcasted")
end)

-- POST /api/notify-group/Admins -> ReceiveMessage {Message} to the members of the group only.
kr.map_route("POST", "/api/notify-group/{group}", function(req, res)
  local group = req.params.group
  kr.group_send(group, "ReceiveMessage", { Message = "Group notification" })
  res:text("Sent to group: " .. group)
end)

-- POST /api/process: the guide's "Progress Monitoring". The route itself runs the work, as in the
-- guide: every 500 ms an event Progress {Percent, Status}, 0 to 100 in steps of 10, then the answer
-- "Complete". kr.sleep suspends only this request, so everything else keeps being served meanwhile.
kr.map_route("POST", "/api/process", function(req, res)
  for i = 0, 100, 10 do
    kr.sleep(500)
    kr.send_event("Progress", { Percent = i, Status = "Processing item " .. i })
  end
  res:text("Complete")
end)

-- GET /api/status: the server at a glance.
kr.map_route("GET", "/api/status", function(req, res)
  res:json({ connections = kr.connections(), metrics = kr.metrics(), now = kr.now() })
end)

---------------------------------------------------------------------------------------------------
-- Long operations as background tasks (tutorial 15.5)
---------------------------------------------------------------------------------------------------

-- One step per second; each step records the task's progress and broadcasts OperationProgress,
-- the end broadcasts OperationComplete.
local function long_operation(task, args)
  local seconds = args.seconds
  local id = task.id
  for i = 1, seconds do
    kr.sleep(1000)
    local percent = i * 100 // seconds
    local status = ("Sleeping (%d/%d)"):format(i, seconds)
    task:progress(percent, status)
    kr.send_event("OperationProgress", {
      TaskId = id,
      Progress = percent,
      Step = i,
      Message = ("Processing step %d of %d..."):format(i, seconds),
      Timestamp = kr.now(),
    })
  end
  kr.send_event("OperationComplete", {
    TaskId = id,
    Progress = 100,
    Message = "Operation completed successfully!",
    Timestamp = kr.now(),
  })
  return { seconds = seconds }
end

-- POST /api/operation/start?seconds=N (default 20; below 1 means 2; at most 3600).
kr.map_route("POST", "/api/operation/start", function(req, res)
  local seconds = tonumber(req.query.seconds) or 20
  if seconds ~= seconds then seconds = 20 end       -- NaN
  seconds = math.floor(seconds)
  if seconds < 1 then seconds = 2 end
  if seconds > 3600 then seconds = 3600 end
  local id, err = kr.task(long_operation, { seconds = seconds },
                          { name = ("LongOperation (%d s)"):format(seconds) })
  if not id then
    return res:json({ Success = false, Message = "Could not start the operation: " .. tostring(err) }, 503)
  end
  kr.log("Information", "long operation started: " .. id, { seconds = seconds })
  res:json({ Success = true, TaskId = id, Message = "Starting long operation with ID: " .. id })
end)

-- GET /api/operation/status/{taskId}
kr.map_route("GET", "/api/operation/status/{taskId}", function(req, res)
  local id = req.params.taskId
  local t = kr.task_status(id)
  if not t then
    return res:json({ Success = false, Message = "No task found for operation '" .. id .. "'" }, 404)
  end
  local null = kr.json.null
  res:json({
    OperationId = id,
    TaskId = id,
    State = t.state,
    StartedAt = t.started_at or null,
    CompletedAt = t.completed_at or null,
    Progress = t.progress or 0,
    Status = t.status or null,
    Message = "Operation status retrieved",
  })
end)

---------------------------------------------------------------------------------------------------
-- Periodic broadcasts
---------------------------------------------------------------------------------------------------

local function round(x, digits)
  local m = 10 ^ digits
  return math.floor(x * m + 0.5) / m
end

-- The guide's "Live System Metrics": CPU over the last interval and resident memory.
kr.every(METRICS_MS, function()
  local m = kr.metrics()
  kr.send_event("SystemMetrics", {
    CpuPercent = round(m.cpu_percent, 2),
    MemoryMB = round(m.memory_mb, 2),
    Timestamp = kr.now(),
  })
end)

-- A duration the way .NET writes a TimeSpan ("c" format): [d.]hh:mm:ss[.fffffff].
local function timespan(seconds)
  local ticks = math.floor(seconds * 1e7 + 0.5)
  local whole, frac = ticks // 10000000, ticks % 10000000
  local days = whole // 86400
  local s = ("%02d:%02d:%02d"):format(whole % 86400 // 3600, whole % 3600 // 60, whole % 60)
  if days > 0 then s = days .. "." .. s end
  if frac > 0 then s = s .. (".%07d"):format(frac) end
  return s
end

-- Tutorial 15.5's HeartbeatBroadcast schedule.
kr.cron(HEARTBEAT_CRON, function()
  kr.send_event("ServerHeartbeat", {
    Type = "Heartbeat",
    ServerTime = kr.now(),
    Uptime = timespan(kr.metrics().uptime_s),
    ConnectedClients = kr.connections(),
    Message = "Server heartbeat from scheduled task",
  })
end)

---------------------------------------------------------------------------------------------------
-- The hub: Kestrun's built-ins (JoinGroup, LeaveGroup, Echo) plus one method written in Lua
---------------------------------------------------------------------------------------------------

-- connection.invoke("Add", 2, 3) returns 5.
hub:on("Add", function(ctx, a, b)
  return a + b
end)

hub:on_connected(function(ctx)
  ctx:send("Welcome", "connected as " .. ctx.connection_id)
end)

kr.log("Information", "SignalR demo loaded: hub at /runtime, dashboard at /")
