-- One request shape for every run of the benchmark, from the environment:
--   BENCH_METHOD (GET), BENCH_AUTH (an Authorization header), BENCH_BODY (a JSON body),
--   BENCH_UNIQUE ("register" or "audit": a fresh e-mail or audit event in every request),
--   BENCH_NONCE (unique per run, so that fresh values never collide across runs).
local method = os.getenv("BENCH_METHOD") or "GET"
local auth = os.getenv("BENCH_AUTH")
local body = os.getenv("BENCH_BODY")
local unique = os.getenv("BENCH_UNIQUE") or ""
local nonce = tonumber(os.getenv("BENCH_NONCE") or "0")

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

local counter = 0
local headers = {}

function init(args)
  if auth then headers["Authorization"] = auth end
  if body or unique ~= "" then headers["Content-Type"] = "application/json" end
end

local function uuid()
  counter = counter + 1
  return string.format("%08x-%04x-4000-8000-%012x", nonce % 0xffffffff, thread_id, counter)
end

function request()
  local payload = body
  if unique == "register" then
    local id = uuid()
    payload = string.format(
      '{"email":"bench-%s@example.com","password":"a long passphrase","full_name":"Bench"}', id)
  elseif unique == "audit" then
    payload = string.format(
      '{"events":[{"id":"%s","occurred_at":"%s","service":"users-fastapi",'
      .. '"actor":{"type":"service","id":"users-fastapi"},"action":"bench.write",'
      .. '"subject":{"type":"bench","id":"%s"},"payload":{}}]}',
      uuid(), os.date("!%Y-%m-%dT%H:%M:%S+00:00"), nonce)
  end
  return wrk.format(method, nil, headers, payload)
end
