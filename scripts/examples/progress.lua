-- progress.lua: reporting the progress of long operations, three ways.
--
-- Shows:
--   1. POST /api/process: a route that works while the request waits and broadcasts each step
--      as a Progress event to every client (Kestrun's "progress monitoring" use case);
--   2. StartJob(steps, delayMs): a hub method that starts the work in the background
--      (kr.spawn), returns a job id at once and reports to the caller only (JobProgress,
--      JobCompleted); GET /api/jobs/{id} gives the job's state;
--   3. Process(steps, delayMs): the same work as a server-to-client stream (hub:stream): the
--      client reads the steps with connection.stream(...) and can cancel it.
--
-- Run:   build/kestrun scripts/examples/progress.lua            (listens on 127.0.0.1:5000)
--        PORT=8080 build/kestrun scripts/examples/progress.lua  (another port; --listen HOST:PORT wins)
-- Tested by tests/e2e/signalr/examples.test.js, which also runs the client below.
--
-- A client (Node 18+, `npm install @microsoft/signalr`):
--
--   const signalR = require("@microsoft/signalr");
--   const connection = new signalR.HubConnectionBuilder()
--     .withUrl("http://127.0.0.1:5000/progress")
--     .configureLogging(signalR.LogLevel.Warning)
--     .build();
--   connection.on("ReceiveEvent", (e) => console.log(e.eventName, e.data.Percent, e.data.Status)); // 1.
--   connection.on("JobProgress", (id, p) => console.log(id, p.Percent, p.Status));                // 2.
--   connection.on("JobCompleted", (id) => console.log(id, "completed"));
--   await connection.start();
--   await fetch("http://127.0.0.1:5000/api/process?steps=4&delayMs=100", { method: "POST" });
--   const jobId = await connection.invoke("StartJob", 4, 100);                 // "job-1", at once
--   console.log("started", jobId);
--   connection.stream("Process", 4, 100).subscribe({                                              // 3.
--     next: (p) => console.log(p.Percent, p.Status),
--     complete: () => console.log("done"),
--     error: (err) => console.error(err),
--   });
--
--   curl -s -X POST 'http://127.0.0.1:5000/api/process?steps=4&delayMs=100'

kr.listen{ host = "127.0.0.1", port = tonumber(os.getenv("PORT")) or 5000 }

local hub = kr.hub("/progress")     -- the default hub: kr.send_event targets it

-- The operation itself: `steps` items of `delay_ms` each. After each one, report({Percent,
-- Status}) is called; when it returns false (nobody is listening any more) the work stops.
-- Returns true when every step was done.
local function work(steps, delay_ms, report)
  for i = 1, steps do
    kr.sleep(delay_ms)                 -- stands in for real work; other requests keep running
    local p = { Percent = i * 100 // steps, Status = ("Processed item %d of %d"):format(i, steps) }
    if report(p) == false then
      return false
    end
  end
  return true
end

-- steps 1..100, delay 0..10000 ms; nil when a value is missing or out of range.
local function limits(steps, delay_ms)
  steps, delay_ms = math.tointeger(tonumber(steps)), math.tointeger(tonumber(delay_ms))
  if steps == nil or steps < 1 or steps > 100 or delay_ms == nil or delay_ms < 0 or delay_ms > 10000 then
    return nil
  end
  return steps, delay_ms
end

-- 1. POST /api/process?steps=5&delayMs=500 (the defaults): every client receives
--    ReceiveEvent({eventName = "Progress", data = {Percent, Status}, timestamp}) after each step;
--    the answer, "Complete", comes when the work is done.
kr.map_route("POST", "/api/process", function(req, res)
  local steps, delay_ms = limits(req.query.steps or 5, req.query.delayMs or 500)
  if steps == nil then
    return res:text("steps must be 1..100 and delayMs 0..10000\n", 400)
  end
  work(steps, delay_ms, function(p)
    kr.send_event("Progress", p)
  end)
  res:text("Complete\n")
end)

-- 2. StartJob(steps, delayMs) -> "job-N": the work runs in a background fiber; the caller gets
--    JobProgress("job-N", {Percent, Status}) after each step, then JobCompleted("job-N").
--    If the caller disconnects, the job stops (state "Stopped").
local jobs = {}         -- id -> { id, state, percent, status, startedAt, completedAt }
local next_job = 0

hub:on("StartJob", function(ctx, steps, delay_ms)
  steps, delay_ms = limits(steps, delay_ms)
  if steps == nil then
    error("steps must be 1..100 and delayMs 0..10000")
  end
  next_job = next_job + 1
  local job = { id = "job-" .. next_job, state = "Running", percent = 0, status = "Started",
                startedAt = kr.now(), completedAt = kr.json.null }
  jobs[job.id] = job
  local ok, err = kr.spawn(function()
    local done = work(steps, delay_ms, function(p)
      job.percent, job.status = p.Percent, p.Status
      return (ctx:send("JobProgress", job.id, p))   -- false once the caller is gone
    end)
    job.state = done and "Completed" or "Stopped"
    job.completedAt = kr.now()
    if done then
      ctx:send("JobCompleted", job.id)
    end
  end)
  if not ok then
    jobs[job.id] = nil
    error(err)
  end
  return job.id          -- the invoke() resolves now; the work goes on
end)

-- GET /api/jobs/job-1: the job's state as JSON; 404 for an unknown id.
kr.map_route("GET", "/api/jobs/{id}", function(req, res)
  local job = jobs[req.params.id]
  if job == nil then
    return res:json({ error = "unknown job" }, 404)
  end
  res:json(job)
end)

-- 3. Process(steps, delayMs): each step is a stream item {Percent, Status}; the stream completes
--    after the last one. When the client cancels (or disconnects), emit returns false and the
--    work stops.
hub:stream("Process", function(ctx, emit, steps, delay_ms)
  steps, delay_ms = limits(steps, delay_ms)
  if steps == nil then
    error("steps must be 1..100 and delayMs 0..10000")
  end
  work(steps, delay_ms, emit)
end)
