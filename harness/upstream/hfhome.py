"""A private Hugging Face cache for a run, so that every model name upstream's tests ask for resolves
to one local model (the built-in tiny Llama) without a model hub.

vLLM, ``HfRunner`` and ``AutoTokenizer`` all resolve a hub name through the same cache layout
(``$HF_HOME/hub/models--ORG--NAME/snapshots/<rev>/`` plus ``refs/main``), and with
``HF_HUB_OFFLINE=1`` they read it without asking the network; so seeding that layout works across
vLLM versions, where a redirect setting would not (vLLM resolves the hub path before applying it).

Every snapshot is a folder of symlinks into one seed copy of the model. The seed's ``config.json``
may raise ``max_position_embeddings`` (the tiny Llama uses rotary positions, so its weights do not
depend on it): upstream's ``VllmRunner`` asks for ``max_model_len=1024``.

Standard library only: this runs inside the variant's interpreter.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

#: What a hub model id looks like: ``name`` or ``org/name``.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(?:/[\w.-]+)?$")
_TEXT_FILES = ("config.json", "tokenizer_config.json")


def looks_like_hub_id(value: object) -> bool:
    """A string that names a hub repository (``org/name``) rather than a local path."""
    return (isinstance(value, str) and "/" in value and bool(HUB_ID.match(value))
            and not value.startswith((".", "/")) and not os.path.exists(value))


def config_changes(source: str | os.PathLike, min_positions: int) -> list[tuple[str, str, str]]:
    """(key, before, after) for every config value a seed of ``source`` changes."""
    config = json.loads((Path(source) / "config.json").read_text(encoding="utf-8"))
    before = int(config.get("max_position_embeddings", 0))
    return [] if before >= min_positions else [("max_position_embeddings", str(before), str(min_positions))]


class HubCache:
    """``root`` is the run's HF_HOME; ``source`` the model every name resolves to."""

    def __init__(self, root: str | os.PathLike, source: str | os.PathLike, min_positions: int = 2048):
        self.root = Path(root)
        self.source = Path(source)
        self.min_positions = min_positions
        self.seed = self.root / "seed" / self.source.name
        self.revision = hashlib.sha1(self.source.name.encode()).hexdigest()
        self.seeded: set[str] = set()

    def _make_seed(self) -> None:
        if self.seed.is_dir():
            return
        tmp = self.seed.with_name(f".{self.seed.name}.{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        for f in self.source.iterdir():
            if f.name not in _TEXT_FILES:
                os.symlink(f.resolve(), tmp / f.name)
        config = json.loads((self.source / "config.json").read_text(encoding="utf-8"))
        tok = json.loads((self.source / "tokenizer_config.json").read_text(encoding="utf-8"))
        positions = max(int(config.get("max_position_embeddings", 0)), self.min_positions)
        config["max_position_embeddings"] = positions
        tok["model_max_length"] = max(int(tok.get("model_max_length", 0)), positions)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (tmp / "tokenizer_config.json").write_text(json.dumps(tok, indent=2) + "\n", encoding="utf-8")
        try:
            os.rename(tmp, self.seed)
        except OSError:  # another worker of the run made it first
            if not self.seed.is_dir():
                raise

    def seed_name(self, name: str) -> bool:
        """Make ``name`` resolve to the seed; False when it is not a hub id (a local path, say)."""
        if not looks_like_hub_id(name):
            return False
        if name in self.seeded:
            return True
        self._make_seed()
        repo = self.root / "hub" / ("models--" + name.replace("/", "--"))
        snapshot = repo / "snapshots" / self.revision
        if not snapshot.is_dir():
            tmp = snapshot.with_name(f".{self.revision}.{os.getpid()}")
            tmp.mkdir(parents=True, exist_ok=True)
            for f in self.seed.iterdir():
                if not (tmp / f.name).exists():
                    os.symlink(f.resolve(), tmp / f.name)
            try:
                os.rename(tmp, snapshot)
            except OSError:
                if not snapshot.is_dir():
                    raise
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(self.revision, encoding="utf-8")
        self.seeded.add(name)
        return True
