"""The LAION-CLAP music checkpoint is a training checkpoint (model + Adam state, numpy float64
learning rates): it loads with weights_only=True plus only the numpy scalar types it needs, for that
one load, keeping only the model weights; anything else a pickle would run or build is refused."""

import builtins
import hashlib
import logging
import mmap
import os
import pickle

import numpy as np
import pytest
import torch
from conftest import hub_snapshot

from tunejury_align.reward.clap import CLAP_MUSIC_CHECKPOINT, ClapEncoder, laion_training_checkpoint
from tunejury_align.reward.head import CheckpointError, load_head, load_state_dict_safely, numpy_float64_globals


@pytest.fixture(scope="module")
def laion_file(hub_cache):
    return hub_snapshot("lukewys/laion_clap") / CLAP_MUSIC_CHECKPOINT


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fixture_has_the_training_layout_and_plain_weights_only_refuses_it(laion_file):
    # what the fixture must exercise: without the allowance torch refuses it (as the old loader did)
    with pytest.raises(pickle.UnpicklingError, match=r"numpy\.core\.multiarray\.scalar"):
        torch.load(laion_file, weights_only=True)
    with torch.serialization.safe_globals(numpy_float64_globals()):
        checkpoint = torch.load(laion_file, weights_only=True)
    assert set(checkpoint) == {"epoch", "name", "state_dict", "optimizer"}
    assert all(k.startswith("module.") for k in checkpoint["state_dict"])
    groups = checkpoint["optimizer"]["param_groups"]
    assert len(groups) == 2 and all(type(g["lr"]) is np.float64 for g in groups)
    assert {"step", "exp_avg", "exp_avg_sq"} <= set(checkpoint["optimizer"]["state"][0])


def test_loads_through_the_hub_id_with_only_the_model_weights(laion_file, components):
    clap = components[1]
    state = load_state_dict_safely(laion_file, numpy_scalars=True, mmap=True)
    # the optimizer state and the bookkeeping are not kept; keys lose "module."
    assert set(state) == set(clap.state_dict()) | {"text_branch.embeddings.position_ids"}
    encoder = ClapEncoder.from_pretrained("lukewys/laion_clap")
    mine, ref = encoder.state_dict(), clap.state_dict()
    assert mine.keys() == ref.keys() and all(torch.equal(mine[k], ref[k]) for k in mine)
    assert all(mine[k].dtype == ref[k].dtype for k in mine)
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())


def test_the_allowance_does_not_outlive_the_load(laion_file, tmp_path):
    before = set(torch.serialization.get_safe_globals())
    load_state_dict_safely(laion_file, numpy_scalars=True, mmap=True)
    assert set(torch.serialization.get_safe_globals()) == before
    with pytest.raises(pickle.UnpicklingError):
        torch.load(laion_file, weights_only=True)
    # nor a failed load
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "x": np.zeros(2)}, evil)
    with pytest.raises(CheckpointError):
        load_state_dict_safely(evil, numpy_scalars=True, mmap=True)
    assert set(torch.serialization.get_safe_globals()) == before


def test_a_callers_own_allowance_survives(laion_file):
    # torch's context manager removes on exit what it was given: we must not remove what the
    # caller had allowed before us
    ours = numpy_float64_globals()
    with torch.serialization.safe_globals(ours):
        load_state_dict_safely(laion_file, numpy_scalars=True, mmap=True)
        assert set(ours) <= set(torch.serialization.get_safe_globals())
        torch.load(laion_file, weights_only=True)


class SystemCall:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class PrintCall:
    def __reduce__(self):
        return builtins.print, ("PAYLOAD RAN",)


@pytest.mark.parametrize("payload, refused", [
    ("os.system", r"GLOBAL \S*system whose module \S+ is blocked"),
    ("builtins.print", r"GLOBAL print was not an allowed global"),
    ("ndarray", r"GLOBAL numpy\.core\.multiarray\._reconstruct was not an allowed"),
    ("int64 scalar", r"Int64DType"),
])
def test_other_globals_are_still_refused(components, tmp_path, capsys, payload, refused):
    marker = tmp_path / "payload-ran"
    value = {"os.system": SystemCall(marker), "builtins.print": PrintCall(), "ndarray": np.arange(3.0),
             "int64 scalar": np.int64(7)}[payload]
    checkpoint = laion_training_checkpoint(components[1])
    checkpoint["optimizer"]["param_groups"][0]["initial_lr"] = value  # where a scheduler would put it
    path = tmp_path / CLAP_MUSIC_CHECKPOINT
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=r"refusing to load .*pickle code") as info:
        ClapEncoder.from_pretrained(str(path))
    assert info.match(refused)
    assert "weights_only=False" not in str(info.value)  # no advice to turn the check off
    assert not marker.exists() and "PAYLOAD RAN" not in capsys.readouterr().out


def test_head_loader_does_not_get_the_allowance(tmp_path):
    # heads are plain state dicts: a numpy scalar in a head file is as unexpected as any other global
    from tunejury_align.reward.head import TuneJuryHead

    path = tmp_path / "head.pt"
    torch.save({"state_dict": TuneJuryHead(2048).state_dict(), "lr": np.float64(1e-4)}, path)
    with pytest.raises(CheckpointError, match=r"numpy\.core\.multiarray\.scalar"):
        load_head(path)


def test_legacy_format_falls_back_to_a_full_read(components, tmp_path, caplog):
    path = tmp_path / CLAP_MUSIC_CHECKPOINT
    torch.save(laion_training_checkpoint(components[1]), path, _use_new_zipfile_serialization=False)
    with caplog.at_level(logging.INFO, logger="tunejury_align.reward.head"):
        state = load_state_dict_safely(path, numpy_scalars=True, mmap=True)
    assert "legacy" in caplog.text
    assert set(state) == set(components[1].state_dict()) | {"text_branch.embeddings.position_ids"}


@pytest.mark.parametrize("flags", ["private", "shared"])
def test_writing_the_loaded_weights_never_writes_the_file(components, tmp_path, flags):
    path = tmp_path / CLAP_MUSIC_CHECKPOINT
    torch.save(laion_training_checkpoint(components[1]), path)
    digest = sha256(path)
    mode = mmap.MAP_PRIVATE if flags == "private" else mmap.MAP_SHARED
    with torch.serialization.set_default_mmap_options(mode):  # a caller's process-wide choice
        encoder = ClapEncoder.from_pretrained(str(path))
    with torch.no_grad():
        for tensor in encoder.state_dict().values():
            tensor.add_(1)
    del encoder
    assert sha256(path) == digest
