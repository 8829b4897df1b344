"""`make install` installs requirements.lock; pyproject.toml keeps the ranges a `pip install`
user gets. The two must agree, or the tested environment is one no user can resolve to."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def makefile_value(name: str) -> str:
    match = re.search(rf"^{name} := (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, f"Makefile defines no {name}"
    return match.group(1).strip()


def locked_versions() -> dict[str, Version]:
    locked = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            locked[canonicalize_name(name)] = Version(version)
    return locked


def installed_requirements() -> list[Requirement]:
    """pyproject's dependencies plus those of every extra `make install` asks for (the ones
    without an environment marker that excludes this machine)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = makefile_value("EXTRAS").split(",")
    requirements = [Requirement(text) for text in project["dependencies"]]
    for extra in extras:
        requirements += [Requirement(text) for text in project["optional-dependencies"][extra]]
    return [r for r in requirements if r.marker is None or r.marker.evaluate()]


def test_every_requirement_make_install_needs_is_locked_inside_its_range():
    locked = locked_versions()
    problems = []
    for requirement in installed_requirements():
        name = canonicalize_name(requirement.name)
        if name not in locked:
            problems.append(f"{requirement.name} is required but not in requirements.lock")
        elif not requirement.specifier.contains(locked[name], prereleases=True):
            problems.append(f"requirements.lock has {name}=={locked[name]}, outside pyproject's {requirement}")
    assert not problems, "; ".join(problems) + " (run `make lock`)"


def test_the_lock_pins_the_torch_and_no_deps_packages_make_install_uses():
    locked = locked_versions()
    torch = Requirement(makefile_value("TORCH"))
    assert torch.specifier.contains(locked["torch"]), (torch, locked["torch"])
    for package in makefile_value("NO_DEPS").split():
        assert canonicalize_name(package) in locked, package


def test_the_lock_pins_exact_versions_only():
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][A-Za-z0-9_.!+\-]*", line), line


def test_the_known_prefix_tuning_break_stays_capped():
    """transformers 5.24 breaks peft 0.21.2's prefix tuning on encoders (see pyproject.toml):
    the range must keep it out until a peft release accepts the renamed argument."""
    transformers = next(r for r in installed_requirements() if r.name == "transformers")
    peft = locked_versions()["peft"]
    if peft <= Version("0.21.2"):
        assert not transformers.specifier.contains("5.24.0")
