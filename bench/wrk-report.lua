-- Used by bench/load.ts for every wrk run.
-- WRK_METHOD (default GET) sets the method; WRK_DELAY_MS paces each connection
-- (delay before each request, in ms: 16 ms on 16 connections ~ 1k req/s).
-- done() prints one line `WRK_JSON {...}` with latencies in microseconds.
wrk.method = os.getenv("WRK_METHOD") or "GET"

local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "0")
if delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"durationUs":%d,"errorStatus":%d,"connectErrors":%d,"readErrors":%d,"writeErrors":%d,"timeouts":%d,"p50Us":%d,"p90Us":%d,"p99Us":%d,"p999Us":%d,"maxUs":%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max))
end
