"""Power-cut tests need a FUSE mount; without /dev/fuse (and only then) they are skipped."""

from __future__ import annotations

import pytest

from .forgetful_fs import fuse_unavailable_reason

_REASON = fuse_unavailable_reason()

requires_fuse = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
