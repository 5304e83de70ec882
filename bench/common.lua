-- Shared by the wrk scripts of bench/ (loaded with dofile):
-- * BENCH_TOKEN, when set, is sent as `Authorization: Bearer <token>` on every request;
-- * BENCH_STOP_AFTER=N ends wrk (run it with -t1) after N responses, so that a run
--   serves a fixed number of requests (bench/instructions counts the server's CPU
--   instructions per request that way); wrk then prints no summary.
local common = {}

function common.authorize()
  local token = os.getenv("BENCH_TOKEN")
  if token ~= nil and token ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. token
  end
end

function common.stop_after_responses()
  local limit = tonumber(os.getenv("BENCH_STOP_AFTER") or "")
  if limit == nil then return end
  local seen = 0
  response = function(status)
    if status >= 300 then
      io.stderr:write("bench: HTTP status " .. status .. "\n")
      os.exit(1)
    end
    seen = seen + 1
    -- wrk itself would run on for its whole duration: end it here (use -t1).
    if seen >= limit then os.exit(0) end
  end
end

return common
