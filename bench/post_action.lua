-- wrk: POST /api/agents/{id}/action with a JSON body, round-robin over the agent ids given after `--`.
--
--   BENCH_TOKEN=shp_... wrk ... -s post_action.lua http://127.0.0.1:PORT -- agent-task-000001 ...
--
-- Every request is set_autonomy with a level 0-5 that changes from one round to the next, so each one
-- really updates its agent and appends an event; the token holds `approve`, so raising is allowed and
-- every answer should be 200. The requests are built once, in init, to keep wrk's own cost down.
-- Run with the bench/ folder as the working directory (for report.lua).

dofile("report.lua")

local requests = {}
local n = 0

function init(args)
   local token = os.getenv("BENCH_TOKEN") or ""
   local headers = {
      ["Authorization"] = "Bearer " .. token,
      ["Content-Type"] = "application/json",
   }
   for level = 0, 5 do
      for i = 1, #args do
         local body = string.format('{"action":"set_autonomy","params":{"level":%d}}', level)
         requests[#requests + 1] = wrk.format("POST", "/api/agents/" .. args[i] .. "/action", headers, body)
      end
   end
end

function request()
   n = n + 1
   return requests[(n - 1) % #requests + 1]
end
