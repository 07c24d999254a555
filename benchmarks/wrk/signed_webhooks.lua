-- wrk script for benchmarks/gateway_bench.py: distinct pre-signed Toggl webhook deliveries.
--
-- wrk -s signed_webhooks.lua URL -- REQUESTS_FILE THREADS [RATE]
-- REQUESTS_FILE has one delivery a line: "<X-Webhook-Signature-256 value>\t<JSON body>". Thread k sends
-- lines k, k+THREADS, ... once each, so no delivery is sent twice (a repeat would be answered from the
-- gateway's memory, not published). RATE > 0 offers that many requests per second in all: each thread
-- keeps a schedule of send slots RATE/THREADS a second apart, and a connection that is free waits for
-- the next slot (wrk 4.1 has no fixed-rate mode; this is its `delay()` hook on a monotonic clock). Slots
-- up to 100 ms late are made up at once; older ones are dropped, which shows as an offered rate below
-- RATE (too few free connections: give more). The last line printed is "RESULT key=value ...", read by
-- the benchmark.

local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]]
local clock = ffi.new("bench_timespec")
local CLOCK_MONOTONIC = 1

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path, count = args[1], tonumber(args[2])
  local rate = tonumber(args[3] or "0")
  interval = rate > 0 and 1000 * count / rate or 0
  next_slot = nil
  requests, sent, accepted, refused, exhausted = {}, 0, 0, 0, 0
  local index = 0
  for line in io.lines(path) do
    if index % count == tid then
      local signature, body = line:match("^([^\t]+)\t(.*)$")
      local headers = { ["Content-Type"] = "application/json", ["X-Webhook-Signature-256"] = signature }
      requests[#requests + 1] = wrk.format("POST", "/v1/webhooks/toggl", headers, body)
    end
    index = index + 1
  end
end

function request()
  sent = sent + 1
  if sent > #requests then
    exhausted = exhausted + 1
    sent = 1
  end
  return requests[sent]
end

function delay()
  if interval == 0 then
    return 0
  end
  local now = now_ms()
  if next_slot == nil or next_slot < now - 100 then
    next_slot = now
  end
  local wait = next_slot - now
  next_slot = next_slot + interval
  return wait > 0 and wait or 0
end

function response(status, headers, body)
  if status == 202 then
    accepted = accepted + 1
  else
    refused = refused + 1
  end
end

function done(summary, latency, requests)
  local ok, other, wrapped = 0, 0, 0
  for _, thread in ipairs(threads) do
    ok = ok + thread:get("accepted")
    other = other + thread:get("refused")
    wrapped = wrapped + thread:get("exhausted")
  end
  io.write(string.format(
    "RESULT accepted=%d other=%d wrapped=%d requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d errors=%d\n",
    ok, other, wrapped, summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
