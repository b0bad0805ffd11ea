"""Container healthcheck: exit 0 when this host's worker answers 200 on ``/health/ready``,
else 1 with the reason on stderr (docker keeps it: ``docker inspect --format
'{{json .State.Health}}' CONTAINER``).

``python -m leadstream.ops.healthcheck [--url URL] [--timeout S]``; without ``--url`` it asks
``http://HOST:LEADSTREAM_WEB_PORT/health/ready``, HOST being 127.0.0.1 when the worker
binds every interface (``LEADSTREAM_WEB_BIND=0.0.0.0``, as in the image) or, having no
``LEADSTREAM_API_TOKEN``, binds loopback only; else the address it binds. The settings
are read like the worker reads them (:class:`Settings`). ``/health/ready`` needs no token.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request

READY_PATH = "/health/ready"


def ready_url(settings) -> str:
    """Where this host's worker answers.

    >>> from leadstream.contract.settings import Settings as S
    >>> ready_url(S(web_bind="0.0.0.0", web_host="worker-1", web_port=6066, api_token="t"))
    'http://127.0.0.1:6066/health/ready'
    >>> ready_url(S(web_bind=None, web_host="10.0.0.5", web_port=6067, api_token="t"))
    'http://10.0.0.5:6067/health/ready'
    >>> ready_url(S(web_bind=None, web_host="10.0.0.5", web_port=6067))  # no token: loopback
    'http://127.0.0.1:6067/health/ready'
    """
    host = settings.web_bind_address()
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.web_port}{READY_PATH}"


def check(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    """(ready, what the worker said)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200, r.read(2000).decode(errors="replace")
    except urllib.error.HTTPError as err:
        return False, f"{err.code}: {err.read(2000).decode(errors='replace')}"
    except OSError as err:
        return False, f"{url}: {err}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m leadstream.ops.healthcheck", description=__doc__)
    ap.add_argument("--url", help=f"default: this worker's {READY_PATH}")
    ap.add_argument("--timeout", type=float, default=3.0)
    args = ap.parse_args(argv)
    if args.url is None:
        from leadstream.contract.settings import Settings

        args.url = ready_url(Settings())
    ok, said = check(args.url, args.timeout)
    if not ok:
        print(f"not ready: {said}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
