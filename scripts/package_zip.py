#!/usr/bin/env python3
"""Writes dist/bootstrap.zip for Function Compute: the binary `bootstrap` at the root, mode 0755.

Reproducible: the same binary always gives the same bytes. zip(1) would store the file's mtime
(in local time), its owner ids and extra timestamp fields; here every header field is fixed, the
timestamp is the commit's (SOURCE_DATE_EPOCH when set), and the Unix mode is stored explicitly
so FC can execute /code/bootstrap whatever the umask of the machine that packed it.

Usage: package_zip.py BINARY OUTPUT.zip
"""

import os
import sys
import time
import zipfile

# ZIP's DOS timestamps cannot go before 1980.
ZIP_EPOCH = 315532800


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    binary, output = sys.argv[1], sys.argv[2]
    stamp = max(int(os.environ.get("SOURCE_DATE_EPOCH", ZIP_EPOCH)), ZIP_EPOCH)
    with open(binary, "rb") as f:
        data = f.read()

    info = zipfile.ZipInfo("bootstrap", date_time=time.gmtime(stamp)[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    # 3 = Unix: unzip and FC read the high 16 bits of external_attr as st_mode.
    info.create_system = 3
    info.external_attr = (0o100755 & 0xFFFF) << 16

    os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
    tmp = output + ".tmp"
    with zipfile.ZipFile(tmp, "w") as zf:
        zf.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    os.replace(tmp, output)
    print(f"{output}: bootstrap ({len(data)} bytes), {os.path.getsize(output)} bytes zipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
