# moto_server with its S3 writes applied one at a time. moto checks If-Match / If-None-Match
# and then writes, in two steps, on a thread per connection: two racing conditional PUTs can
# both pass the check (a lost update; the storage suite's counter saw 19 of 20 increments).
# S3 applies a conditional write atomically, and the S3 backend's tests rely on that, so the
# tests run moto through this shim. Usage: python3 moto_serial.py -H HOST -p PORT
# (or python3 -c "$(cat moto_serial.py)" -H HOST -p PORT). Handlers missing from a moto
# version are skipped.
import sys
import threading

from moto.s3.responses import S3Response

_lock = threading.RLock()


def _serial(handler):
    def serialised(*args, **kwargs):
        with _lock:
            return handler(*args, **kwargs)

    return serialised


for _name in (
    "put_object",
    "copy_object",
    "upload_part",
    "complete_multipart_upload",
    "abort_multipart_upload",
    "delete_object",
    "_key_response_put",
    "_key_response_post",
    "_key_response_delete",
    "_bucket_response_delete_keys",
):
    if hasattr(S3Response, _name):
        setattr(S3Response, _name, _serial(getattr(S3Response, _name)))

from moto.server import main  # noqa: E402

main(sys.argv[1:])
