"""Files a client sends in a bundle (a promotion's source, a container's source, a sync's changed files): each path
relative and inside the workspace, each content decoded from its encoding, sizes capped. Checked here, in core,
because a path is what decides where Shepherd writes on its own disk."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from core.errors import ShepherdError, ValidationFailed

MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_BUNDLE_BYTES = 50 * 1024 * 1024
MAX_FILES = 10_000
MAX_PATH_CHARS = 1024
MAX_NAME_BYTES = 255  # one folder or file name (NAME_MAX)
# a request carrying a whole bundle: its files base64'd in JSON are a third bigger, with room for the rest
MAX_REQUEST_BYTES = MAX_BUNDLE_BYTES * 4 // 3 + 4 * 1024 * 1024
ENCODINGS = ("utf-8", "base64")


class TooLarge(ShepherdError):
    code = "PAYLOAD_TOO_LARGE"
    status = 413


@dataclass(frozen=True)
class BundleFile:
    path: str  # relative, POSIX, normalised ("src/a.ts")
    data: bytes


def clean_path(raw: Any, where: str) -> str:
    """A path inside the workspace, or a 400 that names the field: no absolute path, no `..`, no `.git` component
    (at any depth), no empty or odd component, no backslash or control character."""
    if not isinstance(raw, str) or not raw.strip():
        raise ValidationFailed(f"{where}: a path is a non-empty string", code="INVALID_PATH")
    if len(raw) > MAX_PATH_CHARS or any(ord(c) < 32 or c == "\x7f" for c in raw) or "\\" in raw:
        raise ValidationFailed(f"{where}: {raw[:80]!r} is not a usable path (control characters, backslashes or "
                               f"over {MAX_PATH_CHARS} characters)", code="INVALID_PATH")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise ValidationFailed(f"{where}: {raw[:80]!r} is absolute: paths are relative to the workspace",
                               code="INVALID_PATH")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ValidationFailed(f"{where}: {raw[:80]!r} leaves the workspace", code="INVALID_PATH")
    if any(len(p.encode("utf-8", errors="surrogatepass")) > MAX_NAME_BYTES for p in parts):
        raise ValidationFailed(f"{where}: {raw[:80]!r} has a name longer than {MAX_NAME_BYTES} bytes, which no "
                               "filesystem stores", code="INVALID_PATH")
    if any(_is_dot_git(p) for p in parts):
        raise ValidationFailed(f"{where}: {raw[:80]!r} names a .git folder, which only git may write",
                               code="INVALID_PATH")
    return str(PurePosixPath(*parts))


def _is_dot_git(part: str) -> bool:
    """A component git itself refuses to write anywhere in a tree (verify_path, with core.protectNTFS, git's
    default): `.git` in any case, also with trailing dots or spaces or an NTFS stream (`.git::$DATA`), and its
    short name `git~1`. Taken, such a path would be dropped by git without a word (the bundle's first commit, a
    sync's index) or fail the workspace's checkout: a fake success either way."""
    name = part.split(":", 1)[0].rstrip(". ").lower()
    return name in (".git", "git~1")


def decode(contents: Any, encoding: Any, where: str) -> bytes:
    if encoding is None:
        encoding = "utf-8"
    if encoding not in ENCODINGS:
        raise ValidationFailed(f"{where}.encoding: {str(encoding)[:40]!r} is not one of {', '.join(ENCODINGS)}",
                               code="INVALID_ENCODING")
    if not isinstance(contents, str):
        raise ValidationFailed(f"{where}.contents: a string", code="INVALID_CONTENTS")
    if encoding == "utf-8":
        return contents.encode("utf-8", errors="surrogatepass")
    try:
        return base64.b64decode(contents, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed(f"{where}.contents: not valid base64", code="INVALID_CONTENTS") from None


def bundle(files: Iterable[Mapping[str, Any]], where: str) -> list[BundleFile]:
    """The files of `where` (e.g. "source.files"), checked and decoded; 413 past the per-file or per-bundle limit."""
    out: list[BundleFile] = []
    seen: dict[str, int] = {}
    total = 0
    for i, item in enumerate(files):
        at = f"{where}[{i}]"
        if i >= MAX_FILES:
            raise TooLarge(f"{where}: more than {MAX_FILES} files in one bundle")
        path = clean_path(item.get("path"), f"{at}.path")
        data = decode(item.get("contents"), item.get("encoding"), at)
        if len(data) > MAX_FILE_BYTES:
            raise TooLarge(f"{at}: {path} is {len(data)} bytes; a file may be at most {MAX_FILE_BYTES} bytes")
        total += len(data)
        if total > MAX_BUNDLE_BYTES:
            raise TooLarge(f"{where}: the bundle passes {MAX_BUNDLE_BYTES} bytes, the most one request may carry")
        if path in seen:
            raise ValidationFailed(f"{at}.path: {path} is also {where}[{seen[path]}]", code="DUPLICATE_PATH")
        seen[path] = i
        out.append(BundleFile(path, data))
    names = set(seen)
    for path in names:  # "a" a file and "a/b" a file too: one of them cannot be written
        parent = PurePosixPath(path).parent
        while str(parent) != ".":
            if str(parent) in names:
                raise ValidationFailed(f"{where}: {parent} is a file and the directory of {path}",
                                       code="INVALID_PATH")
            parent = parent.parent
    return out
