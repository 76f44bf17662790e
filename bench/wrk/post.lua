-- POST the body stored in the file named by $BODY to the URL wrk was given ($CTYPE: its content type).
local f = assert(io.open(os.getenv("BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*all")
wrk.headers["Content-Type"] = os.getenv("CTYPE") or "application/json"
f:close()
