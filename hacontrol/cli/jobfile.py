"""Loading job spec files written in JSON, YAML or TOML."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

FORMATS: dict[str, str] = {
    ".json": "json",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".toml": "toml",
}

# tomllib (before 3.14) only reports the position inside the message text.
_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")
_TOML_KEY_LINE = re.compile(r"""^\s*(\[\[?\s*[\w"'.\- ]+\]\]?\s*(#.*)?|[\w"'.\-]+\s*=.*)$""")
_YAML_KEY_LINE = re.compile(r"""^\s*(-\s|---|[\w"'.\-]+\s*:(\s|$))""")


@dataclass(eq=False)
class JobFileError(Exception):
    """A job file that cannot be used, with enough position detail to fix it."""

    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.message}"


def load_job_file(path: str | Path) -> dict[str, Any]:
    """Read and parse a job spec; the format comes from the extension, else the content."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise JobFileError(str(p), "no such file") from None
    except IsADirectoryError:
        raise JobFileError(str(p), "is a directory, not a job file") from None
    except OSError as exc:
        raise JobFileError(str(p), f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise JobFileError(str(p), "not valid UTF-8 text", line=line) from None
    fmt = FORMATS.get(p.suffix.lower())
    return parse_job_text(text, str(p), fmt)


def parse_job_text(text: str, source: str = "<job>", fmt: str | None = None) -> dict[str, Any]:
    """Parse a job spec from text. ``fmt`` is "json", "yaml", "toml" or None to guess."""
    if not text.strip():
        raise JobFileError(source, "file is empty")
    if fmt is not None:
        data = _parse(text, source, fmt)
    else:
        data = _parse_guessing(text, source)
    return _check_document(data, source)


def sniff_format(text: str) -> str:
    """Best guess at the format of a job file whose name does not tell."""
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")) and not _looks_like_toml_table(stripped):
        return "json"
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if _YAML_KEY_LINE.match(line):
            return "yaml"
        if _TOML_KEY_LINE.match(line):
            return "toml"
        break
    return "yaml"


def _looks_like_toml_table(text: str) -> bool:
    first = text.splitlines()[0].strip()
    return bool(re.fullmatch(r"\[\[?\s*[\w\"'.\- ]+\]\]?(\s*#.*)?", first))


def _parse_guessing(text: str, source: str) -> Any:
    guess = sniff_format(text)
    try:
        return _parse(text, source, guess)
    except JobFileError as first_error:
        # A wrong guess should not hide a file that another format reads cleanly,
        # but the error reported is the one for the format the file resembles.
        for other in ("json", "toml", "yaml"):
            if other == guess:
                continue
            try:
                data = _parse(text, source, other)
            except JobFileError:
                continue
            if isinstance(data, dict):
                return data
        raise first_error from None


def _parse(text: str, source: str, fmt: str) -> Any:
    if fmt == "json":
        return _parse_json(text, source)
    if fmt == "yaml":
        return _parse_yaml(text, source)
    if fmt == "toml":
        return _parse_toml(text, source)
    raise ValueError(f"unknown job file format {fmt!r}")


def _parse_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise JobFileError(
            source, f"invalid JSON: {exc.msg}", line=exc.lineno, column=exc.colno
        ) from None


def _parse_yaml(text: str, source: str) -> Any:
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        if exc.context and exc.problem:
            problem = f"{exc.problem} ({exc.context})"
        raise JobFileError(
            source,
            f"invalid YAML: {problem}",
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
        ) from None
    except yaml.YAMLError as exc:
        raise JobFileError(source, f"invalid YAML: {exc}") from None
    docs = [d for d in docs if d is not None]
    if len(docs) > 1:
        raise JobFileError(source, "a job file must hold exactly one YAML document")
    return docs[0] if docs else None


def _parse_toml(text: str, source: str) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        line = getattr(exc, "lineno", None)
        column = getattr(exc, "colno", None)
        match = _TOML_POSITION.search(message)
        if match:
            line = line or int(match.group(1))
            column = column or int(match.group(2))
            message = _TOML_POSITION.sub("", message).strip()
        raise JobFileError(source, f"invalid TOML: {message}", line=line, column=column) from None


def _check_document(data: Any, source: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        kind = "nothing" if data is None else type(data).__name__
        raise JobFileError(source, f"a job file must contain a mapping of fields, found {kind}")
    _check_json_compatible(data, source, "")
    return data


def _check_json_compatible(value: Any, source: str, where: str) -> None:
    # YAML and TOML can express dates and non-string keys that the API cannot accept;
    # catching them here names the offending field instead of failing at send time.
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise JobFileError(
                    source, f"field names must be strings, found {key!r} under {where or 'the top level'}"
                )
            _check_json_compatible(item, source, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json_compatible(item, source, f"{where}[{i}]")
    elif value is None or isinstance(value, (str, bool, int, float)):
        if isinstance(value, float) and value != value:
            raise JobFileError(source, f"field {where} is not a number (NaN)")
    else:
        raise JobFileError(
            source, f"field {where} has a {type(value).__name__} value, which JSON cannot carry; quote it"
        )
