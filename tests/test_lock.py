"""The lock (constraints.txt) that make, CI and the Docker image install from agrees with pyproject.toml's ranges:
every dependency of the extras CI installs is pinned to exactly one version, and that version is one the range
allows. A range widened or narrowed without re-locking (scripts/lock.sh) fails here, not on a new machine."""

from __future__ import annotations

import tomllib

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO

# the Makefile's EXTRAS; `gpu` is not locked
LOCKED_EXTRAS = ("train", "export", "serve", "otel", "cpu", "report", "interop", "dev")


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            assert canonicalize_name(name) not in pins, f"constraints.txt pins {name} twice"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_every_dependency_is_pinned_inside_its_range():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for extra in LOCKED_EXTRAS for r in project["optional-dependencies"][extra]]
    pins, env = _pins(), default_environment()
    for req in reqs:
        if req.marker and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} ({req}) has no pin in constraints.txt: run scripts/lock.sh"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject's {req}: run scripts/lock.sh"


def test_the_lock_pins_no_local_build_label():
    """`torch==2.13.0+cpu` would refuse the same release from another index; `==2.13.0` accepts any build of it."""
    assert not [str(v) for v in _pins().values() if v.local]
