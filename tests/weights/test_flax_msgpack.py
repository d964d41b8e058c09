"""The msgpack reader against files written by real flax (fixtures), and on damaged files."""

from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np
import pytest
from flax_layout import to_bytes

from crayonbox.errors import CrayonboxError
from crayonbox.weights.flax_msgpack import flatten, read_flax_msgpack

FIXTURES = Path(__file__).parent / "fixtures"


def plain_tree() -> dict:
    """The tree fixtures/make_flax_fixture.py serialised with flax 0.12.8 (see that script)."""
    return {
        "model": {
            "dense": {
                "kernel": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
                "bias": np.arange(4, dtype=np.float16) - 1.5,
            },
            "big": np.arange(40, dtype=np.float32).reshape(5, 8) * 0.25,
        },
        "step": np.int32(7),
    }


def test_reads_what_flax_wrote():
    tree = read_flax_msgpack(FIXTURES / "flax_to_bytes.msgpack")
    expected = plain_tree()
    dense = tree["model"]["dense"]
    assert dense["kernel"].dtype == np.float32 and np.array_equal(
        dense["kernel"], expected["model"]["dense"]["kernel"]
    )
    assert dense["bias"].dtype == np.float16 and np.array_equal(
        dense["bias"], expected["model"]["dense"]["bias"]
    )
    # "big" was stored as 3 chunks (flax's MAX_CHUNK_SIZE lowered to 64 bytes): reassembled in shape.
    assert np.array_equal(tree["model"]["big"], expected["model"]["big"])
    # bfloat16 (no numpy dtype) comes back widened to float32, exactly.
    assert tree["model"]["half"].dtype == np.float32
    assert tree["model"]["half"].tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert tree["step"] == 7 and isinstance(tree["step"], np.int32)
    assert [path for path, _ in flatten(tree)] == [
        ("model", "dense", "kernel"),
        ("model", "dense", "bias"),
        ("model", "big"),
        ("model", "half"),
        ("step",),
    ]


def test_test_writer_is_byte_identical_to_flax():
    """The writer the other tests use produces exactly flax.serialization.to_bytes' bytes."""
    assert to_bytes(plain_tree(), max_chunk=64) == (FIXTURES / "flax_to_bytes_plain.msgpack").read_bytes()


def test_bfloat16_payload(tmp_path):
    bits = np.array([0x3F80, 0xC000, 0x3EAA], dtype=np.uint16)  # 1.0, -2.0, 0.33203125 in bfloat16
    payload = msgpack.packb(((3,), "bfloat16", bits.tobytes()), use_bin_type=True)
    path = tmp_path / "bf16.msgpack"
    path.write_bytes(msgpack.packb({"w": msgpack.ExtType(1, payload)}))
    assert read_flax_msgpack(path)["w"].tolist() == [1.0, -2.0, 0.33203125]


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: b[:1], "truncated"),
        (lambda b: b + b"\x00", "data after the parameter tree"),
        (lambda b: b"", "empty"),
        (lambda b: b"version https://git-lfs.github.com/spec/v1\noid sha256:0\n", "git-lfs pointer"),
        (lambda b: msgpack.packb([1, 2]), "not a Flax parameter tree"),
    ],
)
def test_damaged_files_give_one_clear_error(tmp_path, damage, message):
    path = tmp_path / "flax_model.msgpack"
    path.write_bytes(damage((FIXTURES / "flax_to_bytes.msgpack").read_bytes()))
    with pytest.raises(CrayonboxError, match=message) as err:
        read_flax_msgpack(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_array_payload_with_wrong_size_is_corrupt(tmp_path):
    payload = msgpack.packb(
        ((4, 4), "float32", b"\x00" * 12), use_bin_type=True
    )  # 16 floats promised, 3 given
    path = tmp_path / "bad.msgpack"
    path.write_bytes(msgpack.packb({"w": msgpack.ExtType(1, payload)}))
    with pytest.raises(CrayonboxError, match="corrupt"):
        read_flax_msgpack(path)


def test_missing_file(tmp_path):
    with pytest.raises(CrayonboxError, match="missing file"):
        read_flax_msgpack(tmp_path / "nope.msgpack")
