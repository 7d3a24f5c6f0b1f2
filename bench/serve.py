"""The relay double in its own process, answering with the benchmark's pictures.

    python -m bench.serve --picture 4096x4096=/tmp/photo.png ... -> prints "READY <url>"

The double builds its own "huge" pictures from uniform noise, which compresses like no photo
does; here our payloads are placed in its picture cache under the same key first, so a
``Behaviour("image", huge=True, width=W, height=H)`` answers with them. Everything else
(routes, auth, JSON rendering, the wire) is the double's own code.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tests.doubles import _images, relay_double


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve")
    parser.add_argument("--picture", action="append", default=[], help="WxH=path of a PNG to serve at that size")
    parser.add_argument("--api-key", default="bench-key")
    args = parser.parse_args(argv)
    for spec in args.picture:
        dims, path = spec.split("=", 1)
        width, height = (int(v) for v in dims.lower().split("x"))
        picture = _images.Picture(Path(path).read_bytes(), "image/png", width, height)
        picture.b64  # noqa: B018 - encode once, before the first request
        _images._cache[(width, height, "image/png", "huge")] = picture
        # The streamed client's two draft pictures (thoughts): as big as the picture itself, the
        # worst case for what a streamed answer carries.
        for i in range(2):
            _images._cache[(width, height, "image/png", f"draft-{i}")] = picture
    return relay_double.main(["--port", "0", "--no-record-bodies", "--api-key", args.api_key])


if __name__ == "__main__":
    raise SystemExit(main())
