-- The web UI's JSON calls in a loop, as pages being browsed: wrk -s bench/wrk/ui.lua \
--   http://127.0.0.1:5000 -- /ui/api/repositories /ui/api/tags?repo=a/b ...
-- Each connection walks the paths given after `--` in turn, from its own starting point.
-- UI_DELAY_MS (environment) paces each connection: that many ms before each request, so
-- about connections * 1000 / UI_DELAY_MS requests per second (0: as fast as answered).
local paths = {}
local i = 0
local pace = tonumber(os.getenv("UI_DELAY_MS") or "0") or 0

function init(args)
  for _, p in ipairs(args) do
    paths[#paths + 1] = p
  end
  i = math.random(#paths)
end

function delay()
  return pace
end

function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
