-- wrk script: POST /api/releases, each request a new version of service wrk-bench
-- ("<start time>-<thread>-<counter>", so every request creates a release: 201), with
-- the template of the file given as the script argument.
--   wrk -s bench/post.lua http://127.0.0.1:PORT -- bench/template.yaml
-- Options of bench/common.lua: BENCH_TOKEN, BENCH_STOP_AFTER.
local common = dofile("bench/common.lua")
common.authorize()
common.stop_after_responses()
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

local function json_string(text)
  local escaped = text:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    if c == "\n" then return "\\n" end
    if c == "\t" then return "\\t" end
    return string.format("\\u%04x", c:byte())
  end)
  return '"' .. escaped .. '"'
end

local prefix, head, tail
local counter = 0

function init(args)
  local file = assert(io.open(args[1], "r"))
  local template = file:read("*a")
  file:close()
  -- A random part too, so that runs started within the same second do not collide.
  math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0))
  prefix = os.time() .. "-" .. tostring(thread_number) .. "-" .. math.random(1000000000)
  head = '{"service":"wrk-bench","version":"'
  tail = '","image":"registry.example.com/team-3/wrk-bench:2.0.0","template":'
    .. json_string(template)
    .. ',"attributes":{"team":"team-3","git_sha":"0123456789ab","pipeline":"build-1","replicas":"2"}'
    .. ',"comment":"Jenkins build #1"}'
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  return wrk.format("POST", "/api/releases", nil, head .. prefix .. "-" .. counter .. tail)
end
