"""The three test tiers: their directories, their markers, and which tier is running.

``tests/conftest.py`` marks every test by its directory and sets :data:`current` before each
test's fixtures; ``support.servers`` calls :func:`require_system` before it starts a server
process, so a test in the wrong tier fails with a message that says where it belongs.
"""

from __future__ import annotations

PURE = "pure"
ENGINE = "engine"
SYSTEM = "system"

MARKERS = (ENGINE, SYSTEM)  # the pure tier is what has neither
TIER_OF_DIRECTORY = {"unit": PURE, "engine": ENGINE, "system": SYSTEM}
DIRECTORY_OF_TIER = {tier: directory for directory, tier in TIER_OF_DIRECTORY.items()}
PURE_SELECTION = "not engine and not system"

# The tier of the test being set up or run (None outside a pytest run, e.g. in bench/).
current: str | None = None


class NetworkInPureTier(RuntimeError):
    """A test of the pure tier opened an IP socket."""


class ProcessOutsideSystemTier(RuntimeError):
    """A test outside the system tier started a server process."""


def require_system(what: str) -> None:
    """Refuse to start ``what`` (a server process) unless a system-tier test asks for it."""
    if current is not None and current != SYSTEM:
        raise ProcessOutsideSystemTier(
            f"{what} is a separate process: a test that starts it belongs in tests/system "
            f"(this one runs in the {current} tier)"
        )
