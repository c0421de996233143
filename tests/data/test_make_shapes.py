"""tools/make_shapes.py: run the real command small and read its shards back."""

import importlib.util
import json
from pathlib import Path

from unclip.data.wds import shard_pipeline

_TOOL = Path(__file__).resolve().parents[2] / "tools" / "make_shapes.py"


def _make_shapes():
    spec = importlib.util.spec_from_file_location("make_shapes", _TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_shapes_cli_writes_readable_shards(tmp_path, capsys):
    main = _make_shapes().main
    argv = ["--out", str(tmp_path), "--split", "val", "--n", "7", "--resolution", "32",
            "--extra-resolutions", "64", "--seed", "2", "--shard-size", "3", "--heldout", "star:red"]
    assert main(argv) == 0
    assert str(tmp_path) in capsys.readouterr().out
    manifest = json.loads((tmp_path / "shapes-val.json").read_text())
    assert manifest["counts"] == [3, 3, 1] and manifest["heldout"] == [{"shape": "star", "color": "red"}]
    samples = list(shard_pipeline(tmp_path, split="val", shuffle_shards=False, resolutions=[64]))
    assert [s["key"] for s in samples] == [f"val-2-{i:08d}" for i in range(7)]
    assert samples[0]["image"].shape == (3, 32, 32) and samples[0]["image_64"].shape == (3, 64, 64)

    assert main(argv) == 0  # same config: nothing to do
    assert "nothing to do" in capsys.readouterr().out
    assert main([*argv[:5], "8", *argv[6:]]) == 2  # another config: refused, named
    assert "another config" in capsys.readouterr().err
    assert main([*argv[:5], "8", *argv[6:], "--overwrite"]) == 0
    assert json.loads((tmp_path / "shapes-val.json").read_text())["counts"] == [3, 3, 2]
