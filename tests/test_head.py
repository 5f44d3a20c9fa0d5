"""The released head layout, its sidecar variants, and refusal of bad checkpoints."""

import json

import pytest
import torch
from conftest import save_head

from tunejury_align.reward.head import CheckpointError, TuneJuryHead, load_head

VARIANTS = {  # name: exclude (input_ablation heads of the release)
    "A1_clap_audio_only": ["mert", "text"],
    "A2_mert_only": ["clap_audio", "text"],
    "A3_text_only": ["clap_audio", "mert"],
    "A4_clap_audio_mert": ["text"],
    "A5_clap_audio_text": ["mert"],
    "A6_mert_text": ["clap_audio"],
    "A7_full": [],
}
WIDTHS = {"clap_audio": 512, "mert": 1024, "text": 512}


def test_released_layout_keys_and_parameter_count():
    head = TuneJuryHead(2048)
    keys = set(head.state_dict())
    linear = {f"net.{i}.{p}" for i in (0, 4, 8, 12, 16) for p in ("weight", "bias")}
    norm = {f"net.{i}.{p}" for i in (1, 5, 9, 13)
            for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    assert keys == linear | norm
    assert sum(p.numel() for p in head.parameters()) == 2_791_169


@pytest.mark.parametrize("wrap", [False, True])
def test_primary_checkpoint_loads_plain_and_wrapped(tmp_path, wrap):
    torch.manual_seed(0)
    original = TuneJuryHead(2048).eval()
    path = save_head(original, tmp_path / "tunejury.pt", wrap=wrap)
    head, spec = load_head(path)
    assert spec.blocks == ("clap_audio", "mert", "text") and spec.input_dim == 2048
    features = torch.randn(5, 2048)
    assert torch.equal(head(features), original(features))
    assert not head.training and not any(p.requires_grad for p in head.parameters())


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_sidecar_variant_loads(tmp_path, name):
    exclude = VARIANTS[name]
    dim = sum(w for b, w in WIDTHS.items() if b not in exclude)
    path = save_head(TuneJuryHead(dim), tmp_path / f"{name}.pt", sidecar={"input_dim": dim, "exclude": exclude})
    head, spec = load_head(path)
    assert spec.input_dim == dim == head.input_dim
    assert set(spec.blocks) == set(WIDTHS) - set(exclude)
    assert list(spec.blocks) == [b for b in ("clap_audio", "mert", "text") if b in spec.blocks]  # released order


def test_stem_json_sidecar_is_read_too(tmp_path):
    path = tmp_path / "A1_clap_audio_only.pt"
    torch.save(TuneJuryHead(512).state_dict(), path)
    (tmp_path / "A1_clap_audio_only.json").write_text(json.dumps({"input_dim": 512, "exclude": ["mert", "text"]}))
    assert load_head(path)[1].blocks == ("clap_audio",)


class NotATensor:  # pickled by reference: needs code to load
    pass


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    state = TuneJuryHead(2048).state_dict()
    state["payload"] = NotATensor()
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="pickle code"):
        load_head(path)


def test_wrong_shapes_are_refused(tmp_path):
    state = TuneJuryHead(2048).state_dict()
    state["net.4.weight"] = torch.zeros(512, 999)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"wrong tensor shapes: net\.4\.weight"):
        load_head(tmp_path / "bad.pt")


def test_missing_keys_are_refused(tmp_path):
    state = TuneJuryHead(2048).state_dict()
    del state["net.13.running_var"]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"missing keys \['net\.13\.running_var'\]"):
        load_head(tmp_path / "bad.pt")


def test_not_a_head_and_not_a_state_dict(tmp_path):
    torch.save({"foo": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a TuneJury head"):
        load_head(tmp_path / "other.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="does not hold a state_dict"):
        load_head(tmp_path / "list.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_head(tmp_path / "garbage.pt")


def test_ambiguous_width_without_sidecar_is_refused(tmp_path):
    torch.save(TuneJuryHead(512).state_dict(), tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match="no sidecar"):
        load_head(tmp_path / "a.pt")


def test_sidecar_that_does_not_match_weights_is_refused(tmp_path):
    path = save_head(TuneJuryHead(512), tmp_path / "a.pt", sidecar={"input_dim": 1024, "exclude": ["mert"]})
    with pytest.raises(CheckpointError, match="does not belong"):
        load_head(path)
    path = save_head(TuneJuryHead(512), tmp_path / "b.pt", sidecar={"input_dim": 512, "exclude": ["lyrics"]})
    with pytest.raises(CheckpointError, match="unknown feature block"):
        load_head(path)


def test_nan_weights_are_refused(tmp_path):
    state = TuneJuryHead(2048).state_dict()
    state["net.0.bias"][3] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="non-finite"):
        load_head(tmp_path / "nan.pt")


# -- issue 12: checkpoints that got past the checks --------------------------------------------------
def test_files_that_are_not_checkpoints_are_named_clearly(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("effective lr schedule: 1e-4 then cosine\n")  # torch.load: KeyError: 101 ('e')
    with pytest.raises(CheckpointError, match=r"notes\.pt.*not a torch\.save file"):
        load_head(text)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt is empty \(0 bytes\)"):
        load_head(empty)
    corrupt = tmp_path / "head.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(CheckpointError, match=r"head\.safetensors.*not a valid safetensors file"):
        load_head(corrupt)


@pytest.mark.parametrize("input_dim", ["abc", 512.5, True, None])
def test_sidecar_input_dim_must_be_an_integer(tmp_path, input_dim):
    path = save_head(TuneJuryHead(512), tmp_path / "a.pt", sidecar={"input_dim": input_dim, "exclude": ["mert", "text"]})
    with pytest.raises(CheckpointError, match=r"'input_dim' must be an integer, got " + repr(input_dim).replace(".", r"\.")):
        load_head(path)


@pytest.mark.parametrize("value", [-1.0, 0.0])
def test_batchnorm_variance_must_be_positive(tmp_path, value):
    state = TuneJuryHead(2048).state_dict()
    state["net.5.running_var"][7] = value  # scores NaN (negative) or blow up (zero)
    torch.save(state, tmp_path / "var.pt")
    with pytest.raises(CheckpointError, match=r"net\.5\.running_var.*must be > 0"):
        load_head(tmp_path / "var.pt")


def test_a_mistyped_local_path_says_the_file_is_missing_too(hub_cache, tmp_path, monkeypatch):
    from tunejury_align.hub import ModelNotFoundError
    from tunejury_align.reward import TuneJuryReward

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    with pytest.raises(ModelNotFoundError, match=r"no local file 'sub/head\.pt'.*hub"):
        TuneJuryReward.from_pretrained("sub/head.pt")
