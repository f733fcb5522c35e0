"""The restricted unpickler reads array data in every protocol and runs nothing else."""
import pickle

import numpy as np
import pytest

from handlib import safe_pickle


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_plain_array_data_loads(tmp_path, protocol):
    data = {0: {"xyz": np.arange(126, dtype=np.float32).reshape(42, 3), "K": np.eye(3),
                "uv_vis": np.ones((42, 3)), "name": "a", "ids": [1, 2, (3, 4)], "on": {1, 2}}}
    path = tmp_path / "anno.pickle"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    out = safe_pickle.load(path, what="RHD annotations")
    assert np.array_equal(out[0]["xyz"], data[0]["xyz"]) and out[0]["xyz"].dtype == np.float32
    assert out[0]["name"] == "a" and out[0]["ids"] == [1, 2, (3, 4)] and out[0]["on"] == {1, 2}


@pytest.mark.parametrize("payload", [
    b"cos\nsystem\n(Vtouch MARKER\ntR.",
    b"csubprocess\ncheck_call\n((Vtouch\nVMARKER\nltR.",
    b"cbuiltins\ngetattr\n(cbuiltins\nobject\nV__subclasses__\ntR.",
])
def test_code_is_refused(tmp_path, payload):
    path = tmp_path / "x.pickle"
    path.write_bytes(payload.replace(b"MARKER", str(tmp_path / "ran").encode()))
    with pytest.raises(safe_pickle.UnsafePickleError, match=r"x\.pickle.*refusing"):
        safe_pickle.load(path)
    assert not (tmp_path / "ran").exists()


def test_reconstructor_only_builds_placeholders(tmp_path):
    # copy_reg._reconstructor(os._wrap_close?) style: an allowed callable with a disallowed class
    path = tmp_path / "y.pickle"
    path.write_bytes(b"ccopy_reg\n_reconstructor\n(c__builtin__\nobject\nc__builtin__\nobject\nNtR.")
    with pytest.raises(safe_pickle.UnsafePickleError, match=r"y\.pickle.*_reconstructor"):
        safe_pickle.load(path)
