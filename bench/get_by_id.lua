-- wrk script: GET /api/releases/{id} with an id picked at random, per request, from
-- the file given as the first script argument (one id per line).
--   wrk -s bench/get_by_id.lua http://127.0.0.1:PORT -- bench/out/ids.txt
-- Options of bench/common.lua: BENCH_TOKEN, BENCH_STOP_AFTER.
--
-- The requests are formatted once, in init, and request() only picks one: wrk shares
-- the two cores with the server and PostgreSQL, and formatting each request in Lua cost
-- wrk about a quarter of its CPU time (docs/performance.md).
local common = dofile("bench/common.lua")
common.authorize()
common.stop_after_responses()
local requests = {}

function init(args)
  for line in io.lines(args[1]) do
    if line ~= "" then
      requests[#requests + 1] = wrk.format("GET", "/api/releases/" .. line)
    end
  end
  if #requests == 0 then error("no ids in " .. tostring(args[1])) end
  math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0))
end

function request()
  return requests[math.random(#requests)]
end
