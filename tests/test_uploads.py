"""The upload rules without Streamlit (verification.uploads): zip expansion, labels from folders, the zip-bomb
guards, which files of an upload are a reference bundle, and a checkpoint series in training order."""

from __future__ import annotations

import io
import zipfile

import pytest

from verification.errors import BundleError, ImageLoadError, InputTooLargeError, ModelLoadError
from verification.uploads import (
    MAX_CHECKPOINTS,
    MAX_ZIP_RATIO,
    Blob,
    bundle_files,
    expand_uploads,
    expand_zip,
    natural_key,
    pair_checkpoints,
    unnamed_outputs,
)


def _zip(entries: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_single_files_pass_through_unlabelled() -> None:
    out = expand_uploads([("a.png", b"\x89PNG..."), ("b.dcm", b"DICM")])
    assert [(b.name, b.label) for b in out.blobs] == [("a.png", None), ("b.dcm", None)]
    assert out.blobs[1].data == b"DICM"


def test_zip_labels_come_from_folders_and_non_images_are_skipped() -> None:
    data = _zip(
        {
            "set/normal/1.png": b"one",
            "set/nodule/2.dcm": b"two",
            "set/nodule/3": b"three",  # DICOM without a suffix is kept
            "set/README.txt": b"hello",
            "__MACOSX/set/._1.png": b"junk",
            "set/.hidden.png": b"junk",
        }
    )
    out = expand_uploads([("set.zip", data)])
    assert sorted((b.name, b.label, b.data) for b in out.blobs) == [
        ("set/nodule/2.dcm", "nodule", b"two"),
        ("set/nodule/3", "nodule", b"three"),
        ("set/normal/1.png", "normal", b"one"),
    ]
    assert out.skipped == ("set/README.txt",)


def test_too_many_entries_is_refused() -> None:
    data = _zip({f"x/{i}.png": b"a" for i in range(11)})
    with pytest.raises(InputTooLargeError, match="holds 11 files"):
        expand_zip("many.zip", data, max_entries=10)


def test_declared_total_over_limit_is_refused() -> None:
    data = _zip({"a.png": b"\0" * 5000, "b.png": b"\0" * 5000})
    with pytest.raises(InputTooLargeError, match="decompress to 10,000 bytes"):
        expand_zip("big.zip", data, max_total_bytes=9000)


def test_high_ratio_entry_is_treated_as_a_bomb() -> None:
    # 4 MB of zeros deflates to a few KB: a ratio far above MAX_ZIP_RATIO.
    payload = b"\0" * (4 << 20)
    data = _zip({"bomb.png": payload})
    info = zipfile.ZipFile(io.BytesIO(data)).infolist()[0]
    assert info.file_size / info.compress_size > MAX_ZIP_RATIO
    with pytest.raises(InputTooLargeError, match="decompresses to more than"):
        expand_zip("bomb.zip", data)


def test_lying_declared_size_is_caught_while_decompressing() -> None:
    # Forge the central directory and local header to declare a tiny size for a large entry.
    payload = bytes(range(256)) * 400  # 102,400 bytes, barely compressible
    data = bytearray(_zip({"liar.png": payload}, compression=zipfile.ZIP_STORED))
    real = len(payload).to_bytes(4, "little")
    fake = (1000).to_bytes(4, "little")
    count = 0
    start = 0
    while (pos := data.find(real, start)) != -1:
        data[pos : pos + 4] = fake
        count += 1
        start = pos + 4
    assert count >= 2  # compressed and uncompressed sizes (stored) in at least one header
    with pytest.raises((InputTooLargeError, ImageLoadError)):
        expand_zip("liar.zip", bytes(data))


def test_not_a_zip_is_a_clear_error() -> None:
    with pytest.raises(ImageLoadError, match="not a readable zip archive"):
        expand_zip("fake.zip", b"PK\x03\x04 but not really")


def test_a_bundle_is_the_first_npz_and_json_of_the_upload_loose_or_zipped() -> None:
    loose = bundle_files([("b.json", b"{}"), ("a.npz", b"A"), ("c.npz", b"C"), ("notes.txt", b"x")])
    assert (loose.arrays_name, loose.arrays, loose.manifest_name, loose.manifest) == (
        "a.npz",
        b"A",
        "b.json",
        b"{}",
    )
    zipped = bundle_files(
        [("bundle.zip", _zip({"ref/m.json": b"{1}", "ref/m.npz": b"N", "ref/x.png": b"p"}))]
    )
    assert (zipped.arrays_name, zipped.arrays, zipped.manifest_name) == ("m.npz", b"N", "m.json")
    with pytest.raises(BundleError, match=r"\.json manifest and its \.npz"):
        bundle_files([("m.npz", b"N")])


def test_checkpoints_pair_in_natural_order_with_their_own_or_the_one_shared_sidecar() -> None:
    assert sorted(["e10", "e2", "E1"], key=natural_key) == ["E1", "e2", "e10"]
    own = pair_checkpoints(
        [
            Blob("run/e10.pt", b"10"),
            Blob("run/e2.pt", b"2"),
            Blob("run/e2.json", b"{}"),
            Blob("run/other.json", b"{}"),
            Blob("r.txt", b""),
        ]
    )
    assert [(c.name, c.weights.data, c.sidecar and c.sidecar.name) for c in own] == [
        ("e2", b"2", "run/e2.json"),
        ("e10", b"10", None),  # two JSONs and none of its stem: no sidecar rather than a guess
    ]
    shared = pair_checkpoints(
        [Blob("b_10.safetensors", b""), Blob("b_9.safetensors", b""), Blob("m.json", b"")]
    )
    assert [(c.name, c.sidecar and c.sidecar.name) for c in shared] == [("b_9", "m.json"), ("b_10", "m.json")]


def test_a_series_needs_two_to_the_most_checkpoints() -> None:
    with pytest.raises(ModelLoadError, match="at least two"):
        pair_checkpoints([Blob("only.safetensors", b"x")])
    with pytest.raises(ModelLoadError, match="No checkpoint weights"):
        pair_checkpoints([Blob("notes.txt", b"x")])
    with pytest.raises(ModelLoadError, match=f"at most {MAX_CHECKPOINTS}"):
        pair_checkpoints([Blob(f"e{i}.pt", b"") for i in range(MAX_CHECKPOINTS + 1)])


def test_outputs_are_unnamed_only_when_they_carry_the_loaders_placeholders() -> None:
    assert unnamed_outputs(["class_0", "class_1", "class_2"])
    assert not unnamed_outputs(["class_0", "nodule"])
    assert not unnamed_outputs(["class_0b"])  # the whole name, not a prefix
    assert not unnamed_outputs(["class_1", "class_0"])  # names someone chose, not the loader's


def test_small_entry_with_a_high_ratio_is_read() -> None:
    # A blank image under 1 MiB deflates ~1000x: the declared check lets it through (the ratio applies above
    # 1 MiB), and reading it must not refuse it on the ratio again.
    data = _zip({"a/blank.dcm": b"\0" * 900_000})
    info = zipfile.ZipFile(io.BytesIO(data)).infolist()[0]
    assert info.file_size / info.compress_size > MAX_ZIP_RATIO
    assert [b.data for b in expand_zip("blank.zip", data).blobs] == [b"\0" * 900_000]
