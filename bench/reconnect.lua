-- wrk: send "Connection: close" every 50th request, so connections (and gunicorn workers) are re-dealt
-- now and then instead of staying pinned to whichever worker accepted them first (DESIGN §7).
local n = 0
request = function()
  n = n + 1
  if n % 50 == 0 then
    local h = {}
    for k, v in pairs(wrk.headers) do h[k] = v end
    h["Connection"] = "close"
    return wrk.format(nil, nil, h)
  end
  return wrk.format()
end
