-- GET a (small) blob: wrk -s bench/wrk/blob.lua http://127.0.0.1:5000/v2/<repo>/blobs/sha256:<hex>
-- Plain GET; the script exists so every phase is one wrk -s invocation.
wrk.method = "GET"
