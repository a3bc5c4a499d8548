"""Hydra's composition once per worker for the overrides the suite repeats.

Most in-process ``flame`` calls compose one of a few configs again for another ``sweep_dir``
(about half of the suite's ~550 compositions repeat one already made in the same worker, at
~0.3 s of CPU each: Hydra's defaults tree and OmegaConf's merges, not flame's code). The
composed DictConfig does not depend on ``sweep_dir``'s value (nothing in conf/ reads it at
composition; interpolations resolve later), so a repeat is the first composition, copied, with
``sweep_dir`` set: what Hydra would have given (``FLAME_TEST_CHECK_COMPOSE=1`` composes both
and fails on any difference). The typed config is built again from the copy each time, so a
check that depends on the values (``study_config``) still runs on every call; a composition
that raised is never remembered. Overrides of ``hydra.*`` (search paths to files a test may
change) are never remembered either.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from collections.abc import Callable, Sequence

from omegaconf import OmegaConf

# An absolute path Hydra's override grammar reads as that string (not null, a number, a bool,
# a quoted string or a list).
_PATH = re.compile(r"/[\w./\-]*")


def memoised(compose_typed: Callable, study_config: Callable,
             trainers: Callable[[], tuple]) -> Callable:
    """``compose_typed`` remembering its DictConfig per overrides (less ``sweep_dir``) and the
    trainers registered then (``trainers()``: a plugin's trainer changes the schema)."""
    seen: dict[tuple, object] = {}
    check = os.environ.get("FLAME_TEST_CHECK_COMPOSE") == "1"

    def compose(overrides: Sequence[str]):
        key, sweep_dir = _key(overrides)
        if key is None:
            return compose_typed(overrides)
        key = (key, sweep_dir is None, trainers())  # the default sweep_dir is another config
        if key not in seen:
            cfg, study = compose_typed(overrides)
            seen[key] = copy.deepcopy(cfg)
            return cfg, study
        cfg = copy.deepcopy(seen[key])
        if sweep_dir is not None:
            cfg.sweep_dir = sweep_dir
        if check:
            real, made = OmegaConf.to_yaml(compose_typed(overrides)[0]), OmegaConf.to_yaml(cfg)
            assert real == made, "\n".join(difflib.unified_diff(
                real.splitlines(), made.splitlines(), "composed", "remembered", lineterm=""))
        return cfg, study_config(cfg)

    return compose


def _key(overrides: Sequence[str]) -> tuple[tuple | None, str | None]:
    """The overrides less ``sweep_dir=...``, and that value; (None, None) when not
    remembered."""
    rest, sweep_dir = [], None
    for text in overrides:
        name, _, value = text.partition("=")
        if name.lstrip("+~").startswith("hydra."):
            return None, None
        if name == "sweep_dir":
            if not _PATH.fullmatch(value):
                return None, None
            sweep_dir = value
        else:
            rest.append(text)
    return tuple(rest), sweep_dir
