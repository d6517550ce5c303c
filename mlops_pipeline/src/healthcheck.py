"""The image's HEALTHCHECK: exit 0 when the API answers ``GET /livez`` on ``$PORT``.

The slim Python base has neither curl nor wget, so the check is this script, with the
standard library only:

    python mlops_pipeline/src/healthcheck.py      # HEALTHCHECK CMD in the Dockerfile
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/livez"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
