"""The dashboard laid out as it is uploaded to an OBS static website (or served by any static file server).

    python scripts/dashboard_site.py OUT_DIR [--api-base URL]   # write the layout into OUT_DIR
    python scripts/dashboard_site.py --manifest                 # print key, source, type, cache (JSON)

The object keys mirror the dashboard function's routes, so the same files work in both places:

    index.html      the overview (the website's index document, served for "/")
    device.html     the device page, opened as /device.html?id=<device id>
    alerts.html     the alert rules and closed alerts
    static/<name>   every other file of functions/dashboard/static/ (the pages load /static/<name>)

With --api-base, the copy of config.js points at that API (e.g. the APIG group's URL), and the pages'
Content-Security-Policy meta lets them call its origin (connect-src 'self' <origin>); without it,
config.js and the pages are copied unchanged (apiBase "" = the page's own origin). A static website
cannot send headers, so that meta is the policy there (docs/dashboard.md, "Security headers").
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python scripts/dashboard_site.py`: common/ is beside scripts/
    sys.path.insert(0, str(ROOT))

from common.static_site import InvalidApiBase, api_origin, with_api_origin  # noqa: E402

STATIC = ROOT / "functions" / "dashboard" / "static"
PAGES = ("index.html", "device.html", "alerts.html")
CONFIG = "config.js"
_API_BASE = re.compile(r'(^\s*apiBase\s*:\s*)"[^"\n]*"', re.MULTILINE)


def object_key(name: str) -> str:
    """The OBS object key (and URL path without the leading slash) of a file of the static folder."""
    return name if name in PAGES else f"static/{name}"


def cache_control(name: str) -> str:
    """Pages and config.js are re-read on every load; the rest may be cached briefly."""
    return "no-cache" if name in (*PAGES, CONFIG) else "public, max-age=300"


def content_type(name: str) -> str:
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return (
        f"{kind}; charset=utf-8"
        if kind.startswith(("text/", "application/javascript", "image/svg"))
        else kind
    )


def source_files() -> list[Path]:
    return sorted(path for path in STATIC.iterdir() if path.is_file() and not path.name.startswith("."))


def with_api_base(config_text: str, api_base: str) -> str:
    """config.js with its ``apiBase`` set to ``api_base`` (a URL, no trailing slash needed)."""
    if not re.fullmatch(r"https?://[^\s\"'\\]+", api_base):
        raise ValueError(f"apiBase must be an http(s) URL, not {api_base!r}")
    text, count = _API_BASE.subn(
        lambda m: m.group(1) + json.dumps(api_base.rstrip("/")), config_text, count=1
    )
    if count != 1:
        raise ValueError('config.js has no `apiBase: "..."` line to set')
    return text


def build(out_dir: Path, api_base: str | None = None) -> list[str]:
    """Write the layout into ``out_dir`` (created; files already there are replaced). Returns the keys."""
    origin = None
    if api_base:
        try:
            origin = api_origin(api_base)
        except InvalidApiBase as error:
            raise ValueError(str(error)) from None
    keys = []
    for path in source_files():
        key = object_key(path.name)
        target = out_dir / key
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.name == CONFIG and api_base:
            target.write_text(with_api_base(path.read_text(encoding="utf-8"), api_base), encoding="utf-8")
        elif path.name in PAGES and origin:
            target.write_text(with_api_origin(path.read_text(encoding="utf-8"), origin), encoding="utf-8")
        else:
            shutil.copyfile(path, target)
        keys.append(key)
    return keys


def manifest() -> list[dict[str, str]]:
    return [
        {
            "key": object_key(path.name),
            "source": str(path.relative_to(ROOT)),
            "content_type": content_type(path.name),
            "cache_control": cache_control(path.name),
        }
        for path in source_files()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", nargs="?", type=Path, help="where to write the layout")
    parser.add_argument(
        "--api-base", help="the API's URL for config.js, e.g. https://<group>.apic.<region>..."
    )
    parser.add_argument("--manifest", action="store_true", help="print the objects as JSON instead")
    args = parser.parse_args(argv)
    if args.manifest:
        print(json.dumps(manifest(), indent=2))
        return 0
    if args.out_dir is None:
        parser.error("give OUT_DIR, or --manifest")
    try:
        keys = build(args.out_dir, args.api_base)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{len(keys)} files in {args.out_dir} (upload them with these keys):")
    for key in keys:
        print(f"  {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
