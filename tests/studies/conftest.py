"""Fixtures: tiny sample directories in the sampling jobs' format (<name>.png + <name>.json)."""
from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

PROMPTS = ["a small red star at the top left", "a large blue circle", "a green square below a yellow triangle"]
COLORS = {"sysA": (200, 40, 40), "sysB": (40, 90, 200), "sysC": (40, 160, 60)}


def write_samples(root: Path, system: str, prompts=PROMPTS, seeds=range(2), size: int = 64,
                  contact_sheet: bool = True) -> Path:
    """One image per (prompt, seed): a disc whose position depends on the seed, plus extra sidecar fields."""
    root.mkdir(parents=True, exist_ok=True)
    color = COLORS.get(system, (120, 120, 120))
    for i, p in enumerate(prompts):
        for s in seeds:
            rng = np.random.default_rng(1000 * i + s)
            im = Image.new("RGB", (size, size), (235, 235, 230))
            x, y = rng.integers(8, size - 24, 2)
            ImageDraw.Draw(im).ellipse([x, y, x + 16 + i * 3, y + 16 + i * 3], fill=color)
            name = f"p{i:03d}_s{s:04d}"
            im.save(root / f"{name}.png")
            (root / f"{name}.json").write_text(json.dumps(
                {"prompt": p, "seed": int(s), "guidance": 3.0, "steps": 8, "system": system}))
    if contact_sheet:
        Image.new("RGB", (size * 2, size * 2), "white").save(root / "contact_sheet.png")
    return root


@pytest.fixture
def two_systems(tmp_path):
    return [("sysA", write_samples(tmp_path / "a", "sysA")), ("sysB", write_samples(tmp_path / "b", "sysB"))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """A real uvicorn server in a thread (the browser and concurrent clients talk HTTP to it)."""

    def __init__(self, app):
        import uvicorn

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
