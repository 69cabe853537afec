-- HEAD a blob (the existence check clients make before pushing or mounting):
--   wrk -s bench/wrk/head.lua http://127.0.0.1:5000/v2/<repo>/blobs/sha256:<hex>
wrk.method = "HEAD"
