"""data_prep.prepare on tiny real data: records round-trip, manifest, reduced volume, the
whole-dataset split, determinism, refusals, interruption, verify, and the folder and tfds
sources."""
import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

from data_prep import atomic, manifest, records, sources, splits
from data_prep.errors import DataPrepError
from data_prep.prepare import prepare
from data_prep.sources import SyntheticSpec
from data_prep_helpers import (TINY_TFDS_CLASSES, build_tiny_tfds, class_image,
                               make_image_folder, tiny_tfds_image, tiny_tfds_label)

SPEC = SyntheticSpec(num_classes=6, image_size=10, channels=3, train_per_class=9,
                     validation_per_class=4, seed=3)


def _shards(half_dir, split):
    m = manifest.load_manifest(half_dir)
    return [half_dir / s["file"] for s in m["shards"][split]]


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(Path(root).rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def synthetic_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    return out, prepare("synthetic", "random:1", out, synthetic=SPEC, progress=False)


def test_synthetic_round_trips_pixels_and_labels(synthetic_out):
    out, halves = synthetic_out
    src = sources.synthetic(SPEC)
    split_halves = splits.random_halves(SPEC.num_classes, 1)
    assert halves == {"A": out / "synthetic" / "random_1" / "A",
                      "B": out / "synthetic" / "random_1" / "B"}
    for h, classes in (("A", split_halves.A), ("B", split_halves.B)):
        m = manifest.load_manifest(halves[h])
        assert [c["original_index"] for c in m["classes"]] == list(classes)
        for split, per_class in (("train", 9), ("validation", 4)):
            images, labels = src._arrays[split]
            want = [i for i in range(len(labels)) if labels[i] in classes]
            got = list(records.read_examples(_shards(halves[h], split)))
            assert len(got) == len(want) == per_class * len(classes)
            assert len(_shards(halves[h], split)) >= 2
            for ex, i in zip(got, want):
                np.testing.assert_array_equal(ex["image"], images[i])
                assert ex["original_label"] == labels[i]
                assert ex["label"] == list(classes).index(labels[i])
                assert ex["class_name"] == src.class_names[labels[i]]
                assert (ex["image/height"], ex["image/width"], ex["image/channels"]) == (10, 10, 3)
            assert m["counts"][split] == len(want)
            assert m["counts_per_class"][split] == {str(k): per_class
                                                    for k in range(len(classes))}


def test_manifest_and_mean(synthetic_out):
    out, halves = synthetic_out
    m = manifest.load_manifest(halves["A"])
    assert m["dataset"] == "synthetic" and m["half"] == "A" and m["encoding"] == "png"
    assert m["split"] == {"spec": "random:1", "rule": "random", "seed": 1, "dirname": "random_1"}
    assert m["image_shape"] == [10, 10, 3] and m["num_source_classes"] == 6
    assert {c["original_index"] for c in m["classes"] + m["other_half"]} == set(range(6))
    images = np.stack([ex["image"] for ex in records.read_examples(_shards(halves["A"], "train"))])
    mean = np.load(halves["A"] / "mean.npy")
    assert mean.dtype == np.float32 and mean.shape == (10, 10, 3)
    np.testing.assert_allclose(mean, images.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(m["mean"]["per_channel"], images.mean(axis=(0, 1, 2)), atol=1e-3)
    assert m["mean"]["sha256"] == manifest.sha256_file(halves["A"] / "mean.npy")


def test_output_is_byte_identical_across_runs_and_worker_counts(tmp_path, synthetic_out):
    out, _ = synthetic_out
    prepare("synthetic", "random:1", tmp_path, synthetic=SPEC, progress=False, num_workers=2)
    assert _files(tmp_path) == _files(out)


def test_reduced_volume_keeps_the_first_n_of_every_class(tmp_path):
    spec = SyntheticSpec(num_classes=4, image_size=8, train_per_class=10, validation_per_class=3)
    halves = prepare("synthetic", "random:0", tmp_path, examples_per_class=6, synthetic=spec,
                     progress=False)
    assert halves["A"].parent.name == "random_0_epc6"
    images, labels = sources.synthetic(spec)._arrays["train"]
    for h in "AB":
        m = manifest.load_manifest(halves[h])
        assert m["examples_per_class"] == 6
        assert m["counts_per_class"]["train"] == {"0": 6, "1": 6}
        assert m["counts"]["validation"] == 6  # validation untouched: 3 per class
        got = list(records.read_examples(_shards(halves[h], "train")))
        for c in m["classes"]:
            first = np.flatnonzero(labels == c["original_index"])[:6]
            mine = [ex["image"] for ex in got if ex["original_label"] == c["original_index"]]
            assert len(mine) == 6
            for image, i in zip(mine, first):
                np.testing.assert_array_equal(image[..., 0], images[i])  # 1 channel


def test_split_whole_prepares_only_half_a_with_every_class(tmp_path, capsys):
    halves = prepare("synthetic", "whole", tmp_path, synthetic=SPEC, examples_per_class=5,
                     progress=True)
    root = tmp_path / "synthetic" / "whole_epc5"
    assert halves == {"A": root / "A"}
    assert sorted(p.name for p in root.iterdir()) == ["A"]  # no half B, no temp folders
    m = manifest.load_manifest(halves["A"])
    assert [(c["label"], c["original_index"]) for c in m["classes"]] == [(i, i) for i in range(6)]
    assert m["other_half"] == [] and m["num_classes"] == m["num_source_classes"] == 6
    assert m["split"] == {"spec": "whole", "rule": "whole", "seed": None, "dirname": "whole_epc5"}
    assert m["counts"] == {"train": 6 * 5, "validation": 6 * 4}
    labels = [ex["label"] for ex in records.read_examples(_shards(halves["A"], "train"))]
    assert sorted(labels) == sorted(list(range(6)) * 5)
    assert manifest.verify(halves["A"]) == []
    assert "synthetic/whole_epc5: A 6 classes (every class; no half B); train 30" in \
        capsys.readouterr().err
    # The half that is not there is named as such, not as data still to prepare.
    with pytest.raises(DataPrepError, match="split whole has every class in half A and no half "
                                            "B; train its nets on half A"):
        manifest.load_manifest(root / "B")
    with pytest.raises(DataPrepError, match="--split=whole --out=.* --examples_per_class=7"):
        manifest.load_manifest(tmp_path / "synthetic" / "whole_epc7" / "A")


@pytest.mark.parametrize("n", [0, -1])
def test_non_positive_examples_per_class_is_refused(tmp_path, n):
    with pytest.raises(DataPrepError, match="examples_per_class"):
        prepare("synthetic", "random:0", tmp_path, examples_per_class=n, synthetic=SPEC)
    assert not any(tmp_path.iterdir())


def test_more_examples_per_class_than_exist_is_refused(tmp_path):
    with pytest.raises(DataPrepError, match="only 9 train images"):
        prepare("synthetic", "random:0", tmp_path, examples_per_class=10, synthetic=SPEC)
    assert not any(tmp_path.iterdir())


def test_bad_split_file_writes_nothing(tmp_path):
    split_file = tmp_path / "s.json"
    split_file.write_text(json.dumps({"A": [0, 1], "B": [1, 2]}))
    out = tmp_path / "out"
    with pytest.raises(DataPrepError, match="overlap"):
        prepare("synthetic", f"classes:{split_file}", out, synthetic=SPEC)
    assert not out.exists()


def test_class_file_split(tmp_path):
    split_file = tmp_path / "three.json"
    split_file.write_text(json.dumps({"A": ["class_5", 0], "B": [2, 3]}))
    halves = prepare("synthetic", f"classes:{split_file}", tmp_path / "out", synthetic=SPEC,
                     progress=False)
    assert halves["A"].parent.name == "classes_three"
    m = manifest.load_manifest(halves["A"])
    assert [(c["label"], c["original_index"]) for c in m["classes"]] == [(0, 0), (1, 5)]
    assert m["counts"] == {"train": 18, "validation": 8}
    assert [c["original_index"] for c in manifest.load_manifest(halves["B"])["classes"]] == [2, 3]


def test_existing_output_with_other_settings_is_refused_unless_overwrite(tmp_path):
    prepare("synthetic", "random:0", tmp_path, synthetic=SPEC, progress=False)
    before = _files(tmp_path)
    other = SyntheticSpec(**{**SPEC.__dict__, "seed": 4})
    with pytest.raises(DataPrepError, match="different settings.*--overwrite"):
        prepare("synthetic", "random:0", tmp_path, synthetic=other)
    assert _files(tmp_path) == before
    prepare("synthetic", "random:0", tmp_path, synthetic=SPEC, progress=False)  # same: fine
    assert _files(tmp_path) == before
    prepare("synthetic", "random:0", tmp_path, synthetic=other, overwrite=True, progress=False)
    m = manifest.load_manifest(tmp_path / "synthetic" / "random_0" / "A")
    assert m["source_options"]["synthetic"]["seed"] == 4
    # no temp or replaced directories are left behind
    assert sorted(p.name for p in (tmp_path / "synthetic" / "random_0").iterdir()) == ["A", "B"]


def test_foreign_files_in_a_half_directory_are_refused(tmp_path):
    half = tmp_path / "synthetic" / "random_0" / "A"
    half.mkdir(parents=True)
    (half / "notes.txt").write_text("mine")
    with pytest.raises(DataPrepError, match="no data_prep manifest"):
        prepare("synthetic", "random:0", tmp_path, synthetic=SPEC)


def test_a_failed_run_leaves_no_manifest_and_no_temp_files(tmp_path):
    root = make_image_folder(tmp_path / "pets", per_class=30)
    bad = root / "dog" / "img_20.png"
    bad.write_bytes(b"not a png")
    out = tmp_path / "out"
    with pytest.raises(DataPrepError, match="cannot decode .*img_20.png"):
        prepare(f"folder:{root}", "random:0", out, image_size=8, progress=False)
    assert list(out.rglob("manifest.json")) == []
    assert [p for p in out.rglob("*") if p.is_file()] == []
    bad.write_bytes((root / "dog" / "img_19.png").read_bytes())  # repaired: a re-run works
    halves = prepare(f"folder:{root}", "random:0", out, image_size=8, progress=False)
    assert manifest.verify(halves["A"]) == [] and manifest.verify(halves["B"]) == []


def test_verify_catches_a_flipped_byte_and_a_truncated_shard(tmp_path, synthetic_out):
    src, halves = synthetic_out
    half = tmp_path / "A"
    shutil.copytree(halves["A"], half)
    assert manifest.verify(half) == []
    shard = _shards(half, "train")[1]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    problems = manifest.verify(half)
    assert len(problems) == 1 and shard.name in problems[0] and "sha256" in problems[0]
    assert manifest.verify(half, full_hash=False) == []  # sizes only: a flip is invisible
    other = _shards(half, "validation")[0]
    other.write_bytes(other.read_bytes()[:-3])
    problems = manifest.verify(half, full_hash=False)
    assert len(problems) == 1 and other.name in problems[0] and "bytes" in problems[0]


def test_a_split_folder_given_for_a_half_names_its_halves(synthetic_out):
    split_dir = synthetic_out[1]["A"].parent
    with pytest.raises(DataPrepError, match=f"{split_dir} is a split's folder, not a half: give "
                                            f"one of its halves, {split_dir / 'A'} or "
                                            f"{split_dir / 'B'}"):
        manifest.load_manifest(split_dir)


def test_a_data_prep_hint_is_quoted_for_the_shell(tmp_path):
    half = tmp_path / "my data" / "fashion_mnist" / "random_2" / "B"
    with pytest.raises(DataPrepError) as e:
        manifest.load_manifest(half)
    command = str(e.value).split("`")[1]
    assert f"--out={tmp_path / 'my data'}" in shlex.split(command)


def test_load_manifest_names_the_file_and_the_command(tmp_path):
    half = tmp_path / "fashion_mnist" / "random_2_epc10" / "B"
    with pytest.raises(DataPrepError) as e:
        manifest.load_manifest(half)
    message = str(e.value)
    assert str(half / "manifest.json") in message
    assert (f"python -m data_prep --source=fashion_mnist --split=random:2 --out={tmp_path} "
            "--examples_per_class=10") in message
    half.mkdir(parents=True)
    (half / "manifest.json").write_text("{trunc")
    with pytest.raises(DataPrepError, match="unreadable"):
        manifest.load_manifest(half)
    assert "unreadable" in manifest.verify(half)[0]


def test_write_json_atomic_replaces_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "result.json"
    atomic.write_json_atomic(path, {"b": 1, "a": [1, 2]})
    atomic.write_json_atomic(path, {"b": 2, "a": "é"})
    assert json.loads(path.read_text(encoding="utf-8")) == {"b": 2, "a": "é"}
    assert path.read_text(encoding="utf-8").startswith('{\n  "b"')
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


@pytest.mark.parametrize("split_layout", [False, True])
def test_folder_source(tmp_path, split_layout):
    root = make_image_folder(tmp_path / "pets", per_class=20, split_layout=split_layout)
    halves = prepare(f"folder:{root}", "random:0", tmp_path / "out", progress=False,
                     image_size=8)
    assert halves["A"].parent.parent.name == "pets"
    a = manifest.load_manifest(halves["A"])
    b = manifest.load_manifest(halves["B"])
    assert a["encoding"] == "png" and a["image_shape"] == [8, 8, 3]
    assert a["num_classes"] + b["num_classes"] == 4
    # flat layout: every 10th image of a class is validation; split layout: 3 per class
    train, validation = (20, 3) if split_layout else (18, 2)
    assert a["counts"]["train"] + b["counts"]["train"] == 4 * train
    assert a["counts"]["validation"] + b["counts"]["validation"] == 4 * validation
    got = list(records.read_examples(_shards(halves["B"], "train")))
    classes = [c["name"] for c in b["classes"]]
    labels = [ex["label"] for ex in got]
    assert len(classes) == 2 and labels != sorted(labels)  # shuffled: shards mix classes
    for ex in got:
        assert ex["class_name"] == classes[ex["label"]]
        files = sorted((root / ("train" if split_layout else "") / ex["class_name"]).glob("*"))
        originals = [class_image(("cat", "dog", "owl", "fox").index(ex["class_name"]), i)
                     for i in range(len(files))]
        assert any(np.array_equal(ex["image"], o) for o in originals)


@pytest.mark.parametrize("again", ["pics/", "./pics", "pics//"])
def test_a_folder_spelled_another_way_is_the_same_source(tmp_path, monkeypatch, again):
    """folder:pics/ after folder:pics is the same data: accepted without --overwrite, and the
    manifest records one spelling."""
    monkeypatch.chdir(tmp_path)
    make_image_folder(tmp_path / "pics", per_class=2)
    prepare("folder:pics", "random:0", "out", progress=False)
    halves = prepare(f"folder:{again}", "random:0", "out", progress=False)
    assert manifest.load_manifest(halves["A"])["source"] == "folder:pics"


@pytest.mark.parametrize("height, width, size, encoding, why", [
    (20, 24, 24, "png", "every image is 20x24 (height x width), stretched to the larger side"),
    (12, 12, 12, "png", "the images' own size"),
    (72, 72, 72, "jpeg", "the images' own size"),  # photos above 64 px: JPEG
])
def test_folder_images_keep_their_own_size_and_say_so(tmp_path, capsys, height, width, size,
                                                      encoding, why):
    """Without --image_size, a folder of images of one size is stored at that size (squared to
    its larger side), and data_prep says which size it used and why."""
    root = make_image_folder(tmp_path / "pets", per_class=2, size=(height, width))
    halves = prepare(f"folder:{root}", "random:0", tmp_path / "out", progress=True)
    m = manifest.load_manifest(halves["A"])
    assert m["encoding"] == encoding and m["image_shape"] == [size, size, 3]
    ex = next(records.read_examples(_shards(halves["A"], "train")))
    assert ex["image"].shape == (size, size, 3)
    assert (f"data_prep: pets: images stored at {size}x{size}x3 {encoding.upper()}: {why}; "
            "--image_size=N for another") in capsys.readouterr().err


def test_imagenet_and_image_size_override_the_images_own_size(tmp_path, capsys):
    root = make_image_folder(tmp_path / "imagenet2012", per_class=2, size=(20, 24))
    halves = prepare(f"folder:{root}", "random:0", tmp_path / "out", progress=True)
    assert manifest.load_manifest(halves["A"])["image_shape"] == [256, 256, 3]
    assert "images stored at 256x256x3 JPEG: ImageNet, at the paper's 256 px" in \
        capsys.readouterr().err
    halves = prepare(f"folder:{root}", "random:0", tmp_path / "out16", progress=True,
                     image_size=16)
    assert manifest.load_manifest(halves["A"])["image_shape"] == [16, 16, 3]
    assert "images stored at 16x16x3 PNG: --image_size=16\n" in capsys.readouterr().err


@pytest.mark.slow
def test_tfds_source_reads_a_prepared_builder(tmp_path):
    name = build_tiny_tfds(tmp_path / "tfds")
    halves = prepare(f"tfds:{name}", "random:0", tmp_path / "out",
                     tfds_data_dir=tmp_path / "tfds", progress=False)
    split_halves = splits.random_halves(len(TINY_TFDS_CLASSES), 0)
    for h, classes in (("A", split_halves.A), ("B", split_halves.B)):
        m = manifest.load_manifest(halves[h])
        assert m["dataset"] == name and m["encoding"] == "png"
        assert [c["name"] for c in m["classes"]] == [TINY_TFDS_CLASSES[i] for i in classes]
        for split, tfds_split, n in (("train", "train", 24), ("validation", "test", 8)):
            want = [i for i in range(n) if tiny_tfds_label(i) in classes]
            got = list(records.read_examples(_shards(halves[h], split)))
            assert [ex["original_label"] for ex in got] == [tiny_tfds_label(i) for i in want]
            for ex, i in zip(got, want):
                np.testing.assert_array_equal(ex["image"], tiny_tfds_image(tfds_split, i))
        assert manifest.verify(halves[h]) == []


def test_unprepared_tfds_dataset_is_refused(tmp_path):
    with pytest.raises(DataPrepError, match="not prepared|not available"):
        prepare("tfds:mnist", "random:0", tmp_path / "out", tfds_data_dir=tmp_path / "empty")
    assert not (tmp_path / "out").exists()


def test_unknown_source_is_refused(tmp_path):
    with pytest.raises(DataPrepError, match="unknown --source"):
        prepare("imagenet", "random:0", tmp_path)


def _mixed(tmp_path):
    """Half A of one preparation beside half B of another (other images, same classes)."""
    mine = prepare("synthetic", "random:0", tmp_path / "mine", synthetic=SPEC, progress=False)
    other = SyntheticSpec(**{**SPEC.__dict__, "seed": 4})
    theirs = prepare("synthetic", "random:0", tmp_path / "theirs", synthetic=other,
                     progress=False)
    shutil.rmtree(mine["B"])
    shutil.copytree(theirs["B"], mine["B"])
    return mine


def _without_preparation_id(half_dir):
    """Rewrites a manifest as data_prep wrote it before manifests named their preparation."""
    body = manifest.load_manifest(half_dir)
    body.pop("preparation_id", None)
    atomic.write_json_atomic(half_dir / "manifest.json", body)


def test_the_halves_of_one_preparation_share_its_id(tmp_path, synthetic_out):
    _, halves = synthetic_out
    ids = {h: manifest.load_manifest(halves[h])["preparation_id"] for h in "AB"}
    assert ids["A"] == ids["B"] and len(ids["A"]) == 64
    # Made from the output, so an identical output has the same id; other data another.
    other = SyntheticSpec(**{**SPEC.__dict__, "seed": 4})
    theirs = prepare("synthetic", "random:1", tmp_path, synthetic=other, progress=False)
    assert manifest.load_manifest(theirs["A"])["preparation_id"] != ids["A"]


def test_halves_of_different_preparations_are_refused_by_verify(tmp_path):
    halves = _mixed(tmp_path)
    fix = (f"python -m data_prep --source=synthetic --split=random:0 --out={tmp_path / 'mine'} "
           "--overwrite")
    for h in "AB":
        problems = manifest.verify(halves[h], full_hash=False)
        assert len(problems) == 1, problems
        assert "half A and half B" in problems[0] and "were prepared by different runs" in \
            problems[0] and fix in problems[0], problems[0]


def test_halves_prepared_before_the_id_are_read_and_checked_by_their_settings(tmp_path):
    halves = prepare("synthetic", "random:0", tmp_path / "old", synthetic=SPEC, progress=False)
    for h in "AB":
        _without_preparation_id(halves[h])
    assert manifest.verify(halves["A"]) == [] and manifest.verify(halves["B"]) == []
    # Old halves of different settings are refused all the same, as is an old half beside a
    # new one.
    mixed = _mixed(tmp_path)
    _without_preparation_id(mixed["A"])
    assert "prepared by different runs" in manifest.verify(mixed["A"])[0]
    _without_preparation_id(mixed["B"])
    assert "prepared by different runs" in manifest.verify(mixed["B"])[0]


def test_a_split_folder_is_replaced_whole_so_foreign_files_in_it_are_refused(tmp_path):
    halves = prepare("synthetic", "random:0", tmp_path, synthetic=SPEC, progress=False)
    root = halves["A"].parent
    (root / "notes.txt").write_text("mine")
    before = _files(tmp_path)
    with pytest.raises(DataPrepError, match="holds notes.txt, which data_prep did not write.*"
                                            "move them elsewhere"):
        prepare("synthetic", "random:0", tmp_path, synthetic=SPEC, overwrite=True,
                progress=False)
    assert _files(tmp_path) == before
    # What a data_prep that published each half alone left when killed is its own: removed.
    (root / "notes.txt").unlink()
    (root / ".A.partial-999999999").mkdir()
    prepare("synthetic", "random:0", tmp_path, synthetic=SPEC, progress=False)
    assert sorted(p.name for p in root.iterdir()) == ["A", "B"]


def test_a_symlinked_split_folder_is_prepared_again_where_it_points(tmp_path):
    elsewhere = prepare("synthetic", "random:0", tmp_path / "disk", synthetic=SPEC,
                        progress=False)["A"].parent
    link = tmp_path / "out" / "synthetic" / "random_0"
    link.parent.mkdir(parents=True)
    link.symlink_to(elsewhere)
    other = SyntheticSpec(**{**SPEC.__dict__, "seed": 4})
    prepare("synthetic", "random:0", tmp_path / "out", synthetic=other, overwrite=True,
            progress=False)
    assert link.is_symlink() and link.resolve() == elsewhere
    assert manifest.load_manifest(elsewhere / "B")["source_options"]["synthetic"]["seed"] == 4
    assert sorted(p.name for p in elsewhere.parent.iterdir()) == ["random_0"]
    assert sorted(p.name for p in link.parent.iterdir()) == ["random_0"]
