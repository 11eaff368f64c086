"""Installs the Kibana saved objects (ops/kibana/misuse.ndjson) through the import API.

Request building is pure, so it is tested without Kibana; `import_saved_objects` does the one
HTTP call. urllib is enough for one multipart POST and keeps this free of a new dependency.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from streams.settings import REPO_ROOT

PACK_FILE = REPO_ROOT / "ops" / "kibana" / "misuse.ndjson"
# The index prefix the pack's data views are written with (Settings.index_prefix's default).
PACK_INDEX_PREFIX = "misuse-"
IMPORT_PATH = "/api/saved_objects/_import?overwrite=true"


class KibanaImportError(RuntimeError):
    """Kibana could not be reached, or refused the request as a whole."""


@dataclass(frozen=True, slots=True)
class ImportResult:
    success: bool
    success_count: int
    errors: list[str] = field(default_factory=list)


def read_pack(path: Path = PACK_FILE) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def with_index_prefix(objects: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """The objects with their data views pointed at indices named with `prefix`, so a
    deployment with MISUSE_INDEX_PREFIX set sees its own indices. Ids stay as they are:
    references between the objects do not change."""
    if prefix == PACK_INDEX_PREFIX:
        return objects
    rewritten = []
    for obj in objects:
        title = obj.get("attributes", {}).get("title", "")
        if obj.get("type") == "index-pattern" and title.startswith(PACK_INDEX_PREFIX):
            attributes = {**obj["attributes"],
                          "title": prefix + title.removeprefix(PACK_INDEX_PREFIX)}
            obj = {**obj, "attributes": attributes}
        rewritten.append(obj)
    return rewritten


def to_ndjson(objects: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(obj, separators=(",", ":")) + "\n" for obj in objects).encode()


def auth_headers(api_key: str | None = None, user: str | None = None,
                 password: str | None = None) -> dict[str, str]:
    """An API key wins over user and password, as in the Elasticsearch client options."""
    if api_key:
        return {"Authorization": f"ApiKey {api_key}"}
    if user:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}
    return {}


def import_url(base_url: str, space: str | None = None) -> str:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise KibanaImportError(f"not an http(s) URL: {printable_url(base_url)}")
    if parts.username is not None or parts.password is not None:
        # Keeps secrets off the command line history and out of every message printed.
        raise KibanaImportError("give the Kibana user with --user and --password (or an "
                                "--api-key), not in the URL")
    space_path = f"/s/{quote(space, safe='')}" if space else ""
    return base_url.rstrip("/") + space_path + IMPORT_PATH


def printable_url(url: str) -> str:
    """The URL without any user or password it carries."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def import_request(url: str, ndjson: bytes, headers: dict[str, str],
                   filename: str = "misuse.ndjson") -> urllib.request.Request:
    """The multipart/form-data POST the import API expects: one part named `file`."""
    boundary = f"misuse-{uuid.uuid4().hex}"
    body = b"".join([
        f"--{boundary}\r\n".encode(),
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'.encode(),
        b"Content-Type: application/ndjson\r\n\r\n",
        ndjson,
        f"\r\n--{boundary}--\r\n".encode(),
    ])
    return urllib.request.Request(url, data=body, method="POST", headers={
        **headers,
        # Kibana refuses state-changing API calls without it (cross-site request forgery).
        "kbn-xsrf": "misuse-detector",
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Accept": "application/json",
    })


def import_result(answer: dict[str, Any]) -> ImportResult:
    errors = [describe_error(error) for error in answer.get("errors") or []]
    return ImportResult(success=bool(answer.get("success")) and not errors,
                        success_count=int(answer.get("successCount", 0)), errors=errors)


def describe_error(error: dict[str, Any]) -> str:
    """One line for one object Kibana did not import, e.g. a reference it could not find."""
    title = error.get("meta", {}).get("title") or error.get("title") or ""
    what = f"{error.get('type', '?')} {error.get('id', '?')}" + (f" ({title})" if title else "")
    detail = error.get("error", {})
    reason = detail.get("type", "error")
    if detail.get("references"):
        reason += ": " + ", ".join(f"{ref.get('type')} {ref.get('id')}"
                                   for ref in detail["references"])
    elif detail.get("message"):
        reason += f": {detail['message']}"
    return f"{what}: {reason}"


def import_saved_objects(request: urllib.request.Request, timeout: float) -> ImportResult:
    parts = urlsplit(request.full_url)
    address = printable_url(f"{parts.scheme}://{parts.netloc}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise KibanaImportError(f"Kibana at {address} answered {exc.code}: "
                                f"{error_message(exc)}") from None
    except urllib.error.URLError as exc:
        raise KibanaImportError(f"cannot reach Kibana at {address}: {exc.reason}") from None
    except TimeoutError:
        raise KibanaImportError(f"Kibana at {address} did not answer within {timeout:g} s") \
            from None
    except json.JSONDecodeError:
        raise KibanaImportError(f"Kibana at {address} answered with something not JSON") \
            from None
    return import_result(answer)


def error_message(exc: urllib.error.HTTPError) -> str:
    """Kibana's own message when the body has one ({"statusCode", "error", "message"})."""
    try:
        body = json.loads(exc.read() or b"{}")
    except (json.JSONDecodeError, OSError):
        return str(exc.reason)
    return str(body.get("message") or body.get("error") or exc.reason)


def install(base_url: str, *, index_prefix: str, pack: Path = PACK_FILE,
            space: str | None = None, api_key: str | None = None, user: str | None = None,
            password: str | None = None, timeout: float = 30.0) -> ImportResult:
    objects = with_index_prefix(read_pack(pack), index_prefix)
    request = import_request(import_url(base_url, space), to_ndjson(objects),
                             auth_headers(api_key, user, password), filename=pack.name)
    return import_saved_objects(request, timeout)
