-- POST the JSON body stored in the file named by $BODY to the URL wrk was given.
local f = assert(io.open(os.getenv("BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*all")
wrk.headers["Content-Type"] = "application/json"
f:close()
