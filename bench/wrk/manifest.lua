-- GET a manifest by tag, the way a client pulls: wrk -s bench/wrk/manifest.lua \
--   http://127.0.0.1:5000/v2/<repo>/manifests/<tag>
-- Accept lists the OCI and Docker manifest types (distribution needs it to answer OCI).
wrk.method = "GET"
wrk.headers["Accept"] = "application/vnd.oci.image.manifest.v1+json, "
  .. "application/vnd.oci.image.index.v1+json, "
  .. "application/vnd.docker.distribution.manifest.v2+json, "
  .. "application/vnd.docker.distribution.manifest.list.v2+json"
