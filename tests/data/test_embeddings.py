"""Embedding precompute and validator on tiny hand-made shards."""

import io
import json
import tarfile

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from unclip.clip import FrozenCLIP
from unclip.data.embeddings import (
    CorruptShardError,
    ShardMismatchError,
    embedding_shard_path,
    image_embedding_stats,
    iter_embedding_shard,
    iter_tar_samples,
    precompute_embeddings,
    validate_embedding_shards,
)

MICRO_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "head_width": 16, "layers": 1},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 48, "heads": 2, "layers": 1},
}
COLORS = ["red", "green", "blue", "yellow", "purple"]


def _webp(rgb) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), rgb).save(buf, format="WEBP")
    return buf.getvalue()


def _png(rgb, size=32):
    buf = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buf, format="PNG")
    return buf.getvalue()


def _write_image_shard(path, start, n):
    rng = np.random.default_rng(start)
    samples = []
    with wds.TarWriter(str(path)) as sink:
        for i in range(start, start + n):
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            caption = f"a {'large ' * (i % 3)}{COLORS[i % 5]} square"
            sample = {"__key__": f"{i:06d}", "png": _png(color), "txt": caption,
                      "json": json.dumps({"color": COLORS[i % 5]}), "128.png": _png(color, 48)}
            sink.write(sample)
            samples.append(sample)
    return samples


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "micro.json"
    path.write_text(json.dumps(MICRO_CFG))
    torch.manual_seed(0)
    return FrozenCLIP.create(path)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    paths = [root / "shard-000000.tar", root / "shard-000001.tar"]
    samples = _write_image_shard(paths[0], 0, 5) + _write_image_shard(paths[1], 5, 4)
    return paths, samples


@pytest.fixture(scope="module")
def embedded(clip, shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("emb")
    summary = precompute_embeddings(clip, shards[0], out, batch_size=3, progress=False)
    return out, summary


def _rewrite(src, dst, transform):
    """Copy an embedding shard sample by sample through ``transform(samples) -> samples``."""
    samples = list(iter_tar_samples(src))
    with wds.TarWriter(str(dst)) as sink:
        for s in transform(samples):
            sink.write(s)


def _bad_copy(embedded, shards, tmp_path, transform):
    out, _ = embedded
    paths, _ = shards
    bad = tmp_path / "bad"
    bad.mkdir()
    dsts = [embedding_shard_path(p, bad) for p in paths]
    _rewrite(embedding_shard_path(paths[0], out), dsts[0], lambda s: s)
    _rewrite(embedding_shard_path(paths[1], out), dsts[1], transform)
    return paths, dsts


def test_precompute_aligned_and_equal_to_encoders(clip, shards, embedded):
    paths, samples = shards
    out, summary = embedded
    assert summary["samples"] == 9 and summary["counts"] == {"shard-000000.tar": 5, "shard-000001.tar": 4}
    emb_samples = [s for p in paths for s in iter_embedding_shard(embedding_shard_path(p, out))]
    assert [s["__key__"] for s in emb_samples] == [s["__key__"] for s in samples]
    captions = [s["txt"] for s in samples]
    assert [s["txt"] for s in emb_samples] == captions
    text_emb, tokens, mask = clip.encode_text(captions)
    image_emb = clip.encode_image([Image.open(io.BytesIO(s["png"])) for s in samples])
    stacked = {k: np.stack([s[k] for s in emb_samples]) for k in ("text_emb", "text_tokens", "text_mask", "image_emb")}
    assert stacked["text_emb"].dtype == np.float32 and stacked["text_emb"].shape == (9, 32)
    assert stacked["text_tokens"].dtype == np.float16 and stacked["text_tokens"].shape == (9, 16, 48)
    assert stacked["text_mask"].dtype == np.bool_ and stacked["text_mask"].shape == (9, 16)
    np.testing.assert_allclose(stacked["text_emb"], text_emb.numpy(), atol=1e-5)
    np.testing.assert_allclose(stacked["image_emb"], image_emb.numpy(), atol=1e-5)
    np.testing.assert_allclose(stacked["text_tokens"], tokens.numpy(), atol=1e-2, rtol=1e-2)  # float16
    np.testing.assert_array_equal(stacked["text_mask"], mask.numpy())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["clip"]["embed_dim"] == 32 and manifest["total"] == 9
    assert [s["count"] for s in manifest["shards"]] == [5, 4]
    assert not list(out.glob(".*"))  # no temp files left behind


def test_validator_passes(shards, embedded):
    paths, _ = shards
    out, _ = embedded
    embs = [embedding_shard_path(p, out) for p in paths]
    summary = validate_embedding_shards(paths, embs, embed_dim=32, token_width=48, context_length=16)
    assert summary["samples"] == 9 and summary["shards"] == 2
    inferred = validate_embedding_shards(paths, embs)
    assert (inferred["embed_dim"], inferred["token_width"], inferred["context_length"]) == (32, 48, 16)


def test_image_embedding_stats(clip, shards, embedded):
    paths, samples = shards
    out, _ = embedded
    mean, std = image_embedding_stats([embedding_shard_path(p, out) for p in paths])
    z = clip.encode_image([Image.open(io.BytesIO(s["png"])) for s in samples])
    np.testing.assert_allclose(mean, z.mean(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(std, z.std(0).numpy(), atol=1e-4)


def test_resume_keeps_good_shards(clip, shards, embedded, tmp_path):
    paths, _ = shards
    out, _ = embedded
    dst = tmp_path / "resumed"
    dst.mkdir()
    good = embedding_shard_path(paths[0], dst)
    good.write_bytes(embedding_shard_path(paths[0], out).read_bytes())
    mtime = good.stat().st_mtime_ns
    summary = precompute_embeddings(clip, paths, dst, progress=False, resume=True)
    assert summary["samples"] == 9 and good.stat().st_mtime_ns == mtime
    validate_embedding_shards(paths, [embedding_shard_path(p, dst) for p in paths])


def test_precompute_refuses_to_overwrite_inputs(clip, shards):
    paths, _ = shards
    with pytest.raises(ValueError, match="another folder"):
        precompute_embeddings(clip, paths, paths[0].parent, progress=False)


def test_validator_missing_sample(shards, embedded, tmp_path):
    paths, dsts = _bad_copy(embedded, shards, tmp_path, lambda s: s[:2] + s[3:])
    with pytest.raises(ShardMismatchError, match=rf"{dsts[1].name}: sample 2 has key '000008', expected '000007'"):
        validate_embedding_shards(paths, dsts)


def test_validator_truncated_count(shards, embedded, tmp_path):
    paths, dsts = _bad_copy(embedded, shards, tmp_path, lambda s: s[:-1])
    with pytest.raises(ShardMismatchError, match=rf"{dsts[1].name}: ends after 3 samples.*'000008'"):
        validate_embedding_shards(paths, dsts)


def test_validator_swapped_order(shards, embedded, tmp_path):
    paths, dsts = _bad_copy(embedded, shards, tmp_path, lambda s: [s[1], s[0]] + s[2:])
    with pytest.raises(ShardMismatchError, match=rf"{dsts[1].name}: sample 0 has key '000006', expected '000005'"):
        validate_embedding_shards(paths, dsts)


def test_validator_wrong_dim(shards, embedded, tmp_path):
    def shrink(samples):
        buf = io.BytesIO()
        np.save(buf, np.zeros(31, np.float32))
        samples[2] = dict(samples[2], **{"image_emb.npy": buf.getvalue()})
        return samples

    paths, dsts = _bad_copy(embedded, shards, tmp_path, shrink)
    with pytest.raises(ShardMismatchError, match=rf"{dsts[1].name}: sample '000007' field image_emb.npy .*\(31,\), "
                                                 r"expected float32 \(32,\)"):
        validate_embedding_shards(paths, dsts)
    paths, _ = shards
    good = [embedding_shard_path(p, embedded[0]) for p in paths]
    with pytest.raises(ShardMismatchError, match=r"text_emb.npy .* expected float32 \(64,\)"):
        validate_embedding_shards(paths, good, embed_dim=64)


def test_validator_missing_embedding_shard(shards, embedded):
    paths, _ = shards
    out, _ = embedded
    missing = out / "elsewhere" / paths[1].name
    with pytest.raises(ShardMismatchError, match=rf"embedding shard {missing} does not exist"):
        validate_embedding_shards(paths, [embedding_shard_path(paths[0], out), missing])
    with pytest.raises(ShardMismatchError, match="2 image shards but 1 embedding shards"):
        validate_embedding_shards(paths, [embedding_shard_path(paths[0], out)])


@pytest.mark.parametrize("cut", ["mid_member", "member_boundary", "no_end_marker"])
def test_validator_truncated_tar(shards, embedded, tmp_path, cut):
    paths, _ = shards
    out, _ = embedded
    src = embedding_shard_path(paths[1], out)
    data = src.read_bytes()
    with tarfile.open(src) as tf:
        members = tf.getmembers()
    if cut == "mid_member":
        size = members[7].offset_data + 100
    elif cut == "member_boundary":
        size = members[7].offset
    else:
        size = members[-1].offset_data + ((members[-1].size + 511) // 512) * 512
    bad = tmp_path / "cut"
    bad.mkdir()
    dst = embedding_shard_path(paths[1], bad)
    dst.write_bytes(data[:size])
    with pytest.raises(CorruptShardError, match=str(dst)):
        validate_embedding_shards([paths[1]], [dst])
    with pytest.raises(CorruptShardError, match=str(dst)):
        list(iter_embedding_shard(dst))


def test_validator_garbage_file(shards, tmp_path):
    paths, _ = shards
    dst = tmp_path / paths[0].name
    dst.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(CorruptShardError, match=str(dst)):
        validate_embedding_shards([paths[0]], [dst])


def test_precompute_crash_leaves_no_half_shard(clip, shards, tmp_path):
    """A truncated second shard aborts it: no output (and no temp file) under its name."""
    paths, _ = shards
    broken = tmp_path / "in" / "shard-000009.tar"
    broken.parent.mkdir()
    with wds.TarWriter(str(broken)) as sink:
        for i in range(4):
            sink.write({"__key__": f"00010{i}", "png": _png((1, 2, 3)), "txt": "a red square"})
    broken.write_bytes(broken.read_bytes()[:1500])  # cut inside the second sample
    out = tmp_path / "out"
    with pytest.raises(CorruptShardError, match=str(broken)):
        precompute_embeddings(clip, [paths[0], broken], out, batch_size=1, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", paths[0].name]
    assert json.loads((out / "manifest.json").read_text())["total"] == 5


def test_undecodable_samples_are_skipped_listed_and_accepted_by_validation(clip, tmp_path):
    """A caption-less sample and a corrupt image are logged and skipped; the manifest lists them; the
    validation accepts their absence, and a resume keeps the shard."""
    shard = tmp_path / "in" / "mixed-000000.tar"
    shard.parent.mkdir()
    with wds.TarWriter(str(shard)) as sink:
        sink.write({"__key__": "a", "png": _png((200, 0, 0)), "txt": "a red square"})
        sink.write({"__key__": "b", "png": _png((0, 200, 0))})  # no caption
        sink.write({"__key__": "c", "jpg": b"\xff\xd8 not a jpeg", "txt": "a broken image"})
        sink.write({"__key__": "d", "webp": _webp((0, 0, 200)), "txt": "a blue square"})
    out = tmp_path / "out"
    r = precompute_embeddings(clip, [shard], out, batch_size=2, progress=False)
    assert (r["samples"], r["skipped"]) == (2, 2)
    entry = json.loads((out / "manifest.json").read_text())["shards"][0]
    assert sorted(entry["skipped"]) == ["b", "c"] and "txt" in entry["skipped"]["b"]
    assert [s["__key__"] for s in iter_embedding_shard(out / shard.name)] == ["a", "d"]
    assert validate_embedding_shards([shard], [out / shard.name])["samples"] == 2
    with pytest.raises(ShardMismatchError, match="sample 1 has key 'd', expected 'b'"):
        validate_embedding_shards([shard], [out / shard.name], skipped={})
    before = (out / shard.name).stat().st_mtime_ns
    assert precompute_embeddings(clip, [shard], out, progress=False, resume=True)["samples"] == 2
    assert (out / shard.name).stat().st_mtime_ns == before  # validated and kept, not recomputed
