-- POST of a 4 KiB JSON body; prints a JSON summary line at the end.
local items = {}
local i = 0
local body = '{"order":{"id":"ord-42","customer":"user-00042","items":['
while #body < 4000 do
  i = i + 1
  local item = string.format('{"sku":"SKU-%05d","qty":%d,"price":%d.99,"note":"standard"}', i, i % 7 + 1, i % 90 + 10)
  if i > 1 then body = body .. "," end
  body = body .. item
end
body = body .. ']}}'
body = body .. string.rep(" ", 4096 - #body)
wrk.method = "POST"
wrk.path = "/api/v1/orders"
wrk.body = body
wrk.headers["content-type"] = "application/json"
wrk.headers["user-agent"] = "okhttp/4.12.0"
wrk.headers["tenantId"] = "acme"
wrk.headers["actionLogUserId"] = "user-00042"

dofile(os.getenv("BENCH_WRK_DONE"))
