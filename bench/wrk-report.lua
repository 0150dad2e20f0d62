-- Used by bench/load.ts for every wrk run.
-- WRK_METHOD (default GET) sets the method. WRK_DELAY_MS paces each connection: before
-- each request it waits an exponentially distributed time with that mean (16 ms on 16
-- connections ~ 1k req/s). Random waits keep connections from firing in lockstep: a
-- fixed delay makes all of them send together, and then every request queues behind
-- the burst, which measures the burst and not the proxy.
-- done() prints one line `WRK_JSON {...}` with latencies in microseconds.
wrk.method = os.getenv("WRK_METHOD") or "GET"

local mean_delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "0")
if mean_delay_ms > 0 then
  math.randomseed(os.time())
  function delay()
    -- wrk truncates to whole ms: +0.5 keeps the mean.
    return -math.log(1 - math.random()) * mean_delay_ms + 0.5
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"durationUs":%d,"errorStatus":%d,"connectErrors":%d,"readErrors":%d,"writeErrors":%d,"timeouts":%d,"p50Us":%d,"p90Us":%d,"p99Us":%d,"p999Us":%d,"maxUs":%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max))
end
