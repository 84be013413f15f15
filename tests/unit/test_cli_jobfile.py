from __future__ import annotations

from pathlib import Path

import pytest

from hacontrol.cli.jobfile import JobFileError, load_job_file, parse_job_text, sniff_format

EXPECTED = {
    "name": "web",
    "namespace": "team-a",
    "command": ["python3", "-m", "http.server", "8080"],
    "count": 2,
    "env": {"MODE": "prod"},
    "resources": {"cpu": 0.5, "memory_mb": 128},
    "restart": {"policy": "on-failure", "max_restarts": 3},
}

JSON_TEXT = """{
  "name": "web",
  "namespace": "team-a",
  "command": ["python3", "-m", "http.server", "8080"],
  "count": 2,
  "env": {"MODE": "prod"},
  "resources": {"cpu": 0.5, "memory_mb": 128},
  "restart": {"policy": "on-failure", "max_restarts": 3}
}
"""

YAML_TEXT = """# a web server
name: web
namespace: team-a
command: [python3, -m, http.server, "8080"]
count: 2
env:
  MODE: prod
resources:
  cpu: 0.5
  memory_mb: 128
restart:
  policy: on-failure
  max_restarts: 3
"""

TOML_TEXT = """# a web server
name = "web"
namespace = "team-a"
command = ["python3", "-m", "http.server", "8080"]
count = 2

[env]
MODE = "prod"

[resources]
cpu = 0.5
memory_mb = 128

[restart]
policy = "on-failure"
max_restarts = 3
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("job.json", JSON_TEXT),
        ("job.yaml", YAML_TEXT),
        ("job.yml", YAML_TEXT),
        ("job.toml", TOML_TEXT),
        ("JOB.TOML", TOML_TEXT),
    ],
)
def test_loads_each_format_by_extension(tmp_path: Path, name: str, text: str) -> None:
    assert load_job_file(write(tmp_path, name, text)) == EXPECTED


@pytest.mark.parametrize(
    ("text", "fmt"), [(JSON_TEXT, "json"), (YAML_TEXT, "yaml"), (TOML_TEXT, "toml")]
)
def test_unknown_extension_is_detected_from_content(tmp_path: Path, text: str, fmt: str) -> None:
    assert sniff_format(text) == fmt
    for name in ("job", "job.spec", "job.txt"):
        assert load_job_file(write(tmp_path, name, text)) == EXPECTED


def test_toml_starting_with_a_table_is_not_mistaken_for_json() -> None:
    text = '[resources]\ncpu = 1\n'
    assert sniff_format(text) == "toml"
    assert parse_job_text(text) == {"resources": {"cpu": 1}}


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_bytes(b"\xef\xbb\xbf" + JSON_TEXT.encode())
    assert load_job_file(path) == EXPECTED


def test_bad_json_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "job.json", '{\n  "name": "web",\n  "count": 2,\n}\n')
    with pytest.raises(JobFileError) as info:
        load_job_file(path)
    err = info.value
    assert err.line == 4
    assert str(err).startswith(f"{path}:4:")
    assert "invalid JSON" in str(err)


def test_bad_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "job.yaml", "name: web\ncommand: [sleep, 1\ncount: 2\n")
    with pytest.raises(JobFileError) as info:
        load_job_file(path)
    err = info.value
    assert err.line is not None and err.line >= 2
    assert str(err).startswith(f"{path}:{err.line}")
    assert "invalid YAML" in str(err)


def test_bad_yaml_indentation(tmp_path: Path) -> None:
    path = write(tmp_path, "job.yml", "name: web\nresources:\n  cpu: 1\n memory_mb: 2\n")
    with pytest.raises(JobFileError) as info:
        load_job_file(path)
    assert info.value.line == 4


def test_bad_toml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "job.toml", 'name = "web"\ncount = 2\ncommand = [sleep\n')
    with pytest.raises(JobFileError) as info:
        load_job_file(path)
    err = info.value
    assert err.line == 3
    assert str(err).startswith(f"{path}:3:")
    assert "invalid TOML" in str(err)
    assert "(at line" not in str(err)


def test_unknown_extension_reports_error_for_the_likely_format(tmp_path: Path) -> None:
    path = write(tmp_path, "job", 'name = "web"\ncount = = 2\n')
    with pytest.raises(JobFileError) as info:
        load_job_file(path)
    assert "invalid TOML" in str(info.value)
    assert info.value.line == 2


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("job.json", "[1, 2]", "mapping"),
        ("job.yaml", "- a\n- b\n", "mapping"),
        ("job.yaml", "just a string\n", "mapping"),
        ("job.yaml", "# only a comment\n", "mapping"),
        ("job.json", "", "empty"),
        ("job.yaml", "   \n\n", "empty"),
        ("job.yaml", "a: 1\n---\nb: 2\n", "one YAML document"),
        ("job.yaml", "name: web\nwhen: 2024-01-01\n", "when"),
        ("job.toml", 'name = "web"\nwhen = 2024-01-01\n', "when"),
        ("job.yaml", "name: web\nenv:\n  1: one\n", "strings"),
    ],
)
def test_unusable_documents_are_rejected(tmp_path: Path, name: str, text: str, needle: str) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(JobFileError) as info:
        load_job_file(path)
    assert str(path) in str(info.value)
    assert needle in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(JobFileError) as info:
        load_job_file(tmp_path / "nope.yaml")
    assert "no such file" in str(info.value)
    assert "nope.yaml" in str(info.value)


def test_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match="directory"):
        load_job_file(tmp_path)


def test_invalid_utf8_names_line(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_bytes(b"name: web\ncommand: [\xff]\n")
    with pytest.raises(JobFileError) as info:
        load_job_file(path)
    assert info.value.line == 2
    assert "UTF-8" in str(info.value)
