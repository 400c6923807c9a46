-- wrk script: POSTs the requests of a file in turn, one per line: "<Stripe-Signature value>\t<body>".
-- Arguments: the file, then the thread count. Thread k sends lines k, k+n, k+2n, ... so no line is
-- sent twice until the file runs out ("wrapped" counts the requests sent after that). `done` prints
-- one line "BENCH {json}" with the counts and latency percentiles (microseconds).

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  signatures, bodies = {}, {}
  for line in io.lines(args[1]) do
    local tab = line:find("\t", 1, true)
    signatures[#signatures + 1] = line:sub(1, tab - 1)
    bodies[#bodies + 1] = line:sub(tab + 1)
  end
  step = tonumber(args[2]) or 1
  cursor = id
  ok, other, wrapped = 0, 0, 0
end

function request()
  if cursor >= #bodies then
    wrapped = wrapped + 1
  end
  local i = cursor % #bodies + 1
  cursor = cursor + step
  local headers = {["Content-Type"] = "application/json", ["Stripe-Signature"] = signatures[i]}
  return wrk.format("POST", nil, headers, bodies[i])
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local ok_total, other_total, wrapped_total = 0, 0, 0
  for _, thread in ipairs(threads) do
    ok_total = ok_total + thread:get("ok")
    other_total = other_total + thread:get("other")
    wrapped_total = wrapped_total + thread:get("wrapped")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "ok": %d, "other": %d, "wrapped": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "timeouts": %d, "mean_us": %.1f, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, ok_total, other_total, wrapped_total, e.connect, e.read, e.write,
    e.timeout, latency.mean, latency:percentile(50), latency:percentile(99)))
end
