-- wrk script: GET the URL's path as it is (a page of releases), with the options of
-- bench/common.lua (BENCH_TOKEN, BENCH_STOP_AFTER).
--   wrk -s bench/get.lua 'http://127.0.0.1:PORT/api/releases?limit=50'
local common = dofile("bench/common.lua")
common.authorize()
common.stop_after_responses()
