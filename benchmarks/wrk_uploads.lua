-- wrk script of `python -m benchmarks ingest`: POST pre-built uploads, each with a fresh upload id.
--
--   wrk -t2 -c32 -d20s -s benchmarks/wrk_uploads.lua http://127.0.0.1:PORT/v1/uploads -- MANIFEST RUN
--
-- MANIFEST is a Lua file written by benchmarks/generators.py returning one entry per upload:
-- {path = body file, content_type = ..., token = device token, trip = trip number, ids = {{at = offset, kind = "upload"|"trip"}, ...}}
-- (1-based offsets of the 36-character upload and trip ids inside the body, in order). Every request
-- swaps in an upload id unique to this thread and request, and a trip id unique to the thread and
-- round, so ingest never sees a duplicate. done() prints one JSON line with the figures.

local ID_LENGTH = 36
local entries = {}
local counter = 0
statuses = {}  -- global: done() reads it per thread with thread:get
local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("thread_number", #threads)
end

function init(args)
   local manifest = dofile(args[1])
   -- A run number (second argument) keeps the ids of successive runs apart.
   run_number = tonumber(args[2] or "0")
   for index, entry in ipairs(manifest) do
      local file = assert(io.open(entry.path, "rb"))
      local body = file:read("*a")
      file:close()
      local pieces, kinds, position = {}, {}, 1
      for _, id in ipairs(entry.ids) do
         table.insert(pieces, body:sub(position, id.at - 1))
         table.insert(kinds, id.kind)
         position = id.at + ID_LENGTH
      end
      table.insert(pieces, body:sub(position))
      entries[index] = {
         pieces = pieces,
         kinds = kinds,
         trip = entry.trip,
         headers = {["Authorization"] = "Bearer " .. entry.token, ["Content-Type"] = entry.content_type},
      }
   end
end

function request()
   counter = counter + 1
   local entry = entries[(counter - 1) % #entries + 1]
   local round = math.floor((counter - 1) / #entries)
   local prefix = string.format("%06x%02x-%04x", run_number, thread_number, round % 65536)
   local upload_id = string.format("%s-4000-8000-%012x", prefix, counter)
   local trip_id = string.format("%s-4000-9000-%012x", prefix, entry.trip)
   local parts = {entry.pieces[1]}
   for index, kind in ipairs(entry.kinds) do
      table.insert(parts, kind == "upload" and upload_id or trip_id)
      table.insert(parts, entry.pieces[index + 1])
   end
   return wrk.format("POST", nil, entry.headers, table.concat(parts))
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local merged = {}
   for _, thread in ipairs(threads) do
      for status, count in pairs(thread:get("statuses") or {}) do
         merged[status] = (merged[status] or 0) + count
      end
   end
   local parts = {}
   for status, count in pairs(merged) do
      table.insert(parts, string.format('"%d": %d', status, count))
   end
   local errors = summary.errors
   io.write(string.format(
      '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "socket_errors": %d, "statuses": {%s}}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      errors.connect + errors.read + errors.write + errors.timeout, table.concat(parts, ", ")))
end
