"""The deployable image installs exactly what requirements.lock pins, each file checked
against its hash; the lock agrees with pyproject's ranges; the image runs as non-root."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _locked() -> dict[str, tuple[str, list[str]]]:
    text = (ROOT / "requirements.lock").read_text()
    entries = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        found = re.match(r"([A-Za-z0-9_.\-]+)==(\S+)", block)
        if found:
            hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
            entries[canonicalize_name(found.group(1))] = (found.group(2), hashes)
    return entries


def test_every_runtime_dependency_is_pinned_with_hashes_inside_pyproject_ranges() -> None:
    locked = _locked()
    assert locked
    assert all(hashes for _, hashes in locked.values()), "a pin without --hash"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in requirements.lock"
        version, _ = locked[name]
        assert requirement.specifier.contains(version), f"{name}=={version} vs {line}"


def test_the_image_installs_the_lock_with_hashes_and_runs_as_non_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --require-hashes --no-deps -r requirements.lock" in dockerfile
    assert "pip install --no-deps ." in dockerfile  # nothing resolved outside the lock
    runtime = dockerfile.rsplit("\nFROM ", 1)[1]
    users = re.findall(r"^USER (\S+)", runtime, re.MULTILINE)
    assert users == ["conveyor"]
    assert "--uid 10001" in runtime
