"""Functions for the ``python`` step examples of docs/language.md (``hooks:sign``).

A python step calls ``module:function(session)``: ``session`` is a dict of the session's
variables (strings) plus ``session_id`` and ``iteration``; a dict the function returns sets
variables (``None`` as a value unsets one). ``chaperon run`` finds this module because it sits
beside the load-test files of this folder.
"""

from __future__ import annotations

import hashlib


def sign(session: dict[str, str]) -> dict[str, str]:
    """Set ``signature``: a digest of the session's ``user`` and ``session_id``."""
    text = f"{session['user']}:{session['session_id']}".encode()
    return {"signature": hashlib.sha256(text).hexdigest()[:16]}
