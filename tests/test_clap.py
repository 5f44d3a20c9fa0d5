"""ClapEncoder against laion-clap's own ``CLAP`` model.

conftest writes the ``lukewys/laion_clap`` checkpoint from our own ClapEncoder, so loading it back proves
nothing about the real file's layout: a key we name wrongly is named wrongly on both sides. Here the
checkpoint comes from laion-clap's ``clap_module.model.CLAP``, built the way its ``create_model`` builds
``CLAP_Module(enable_fusion=False, amodel="HTSAT-tiny", tmodel="roberta")``, saved in the LAION
training-checkpoint layout, and loaded into ours strictly; both must then give the same embeddings.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from tunejury_align.reward.clap import CLAP_TEXT_MAX_LENGTH, CLAP_WINDOW, ClapEncoder, clap_module
from tunejury_align.reward.tiny import TINY_HTSAT, seeded, tiny_roberta_config, tiny_roberta_tokenizer

PROMPTS = ["lofi hip hop beat with warm piano chords", "jazz trio with double bass, brushed drums and piano"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def laion_clap_model(workdir: Path):
    """laion-clap's ``CLAP`` from its own ``HTSAT-tiny.json`` with a RoBERTa text branch, as its
    ``create_model("HTSAT-tiny", "roberta", enable_fusion=False)`` builds it. Only sizes shrink: HTSAT's
    widths and depths to ``TINY_HTSAT`` (every other argument is the one laion-clap's ``create_htsat_model``
    passes), and RoBERTa to 1 layer and a small vocabulary; its width stays 768, which CLAP's
    ``text_projection = nn.Linear(768, 512)`` hard-codes. CLAP calls ``RobertaModel.from_pretrained(
    'roberta-base')``: a local folder of that name in the working directory answers it offline."""
    clap_module()
    import clap_module.htsat as laion_htsat
    import clap_module.model as clap_model
    from clap_module.model import CLAP

    tokenizer = tiny_roberta_tokenizer()
    text_config = tiny_roberta_config(len(tokenizer))
    text_config.hidden_size, text_config.layer_norm_eps = 768, 1e-5  # roberta-base's width and epsilon
    from transformers import RobertaModel

    with seeded(0):
        RobertaModel(text_config).save_pretrained(workdir / "roberta-base")
    tokenizer.save_pretrained(workdir / "roberta-base")

    model_cfg = json.loads((Path(laion_htsat.__file__).parent / "model_configs" / "HTSAT-tiny.json").read_text())
    model_cfg["text_cfg"]["model_type"] = "roberta"
    model_cfg["enable_fusion"], model_cfg["fusion_type"] = False, "None"
    model_cfg["embed_dim"] = TINY_HTSAT["embed_dim"] * 2 ** (len(TINY_HTSAT["depths"]) - 1)  # HTSAT's output width
    htsat_class = laion_htsat.HTSAT_Swin_Transformer

    def tiny_create_htsat_model(audio_cfg, enable_fusion=False, fusion_type="None"):
        """laion-clap's create_htsat_model with TINY_HTSAT's widths and depths (its other arguments kept)."""
        with pytest.MonkeyPatch.context() as record:  # the class's own __init__ names it: build it unpatched
            record.setattr(laion_htsat, "HTSAT_Swin_Transformer", lambda **kwargs: kwargs)
            kwargs = laion_htsat.create_htsat_model(audio_cfg, enable_fusion, fusion_type)
        return htsat_class(**{**kwargs, **{k: TINY_HTSAT[k] for k in ("embed_dim", "depths", "num_heads")}})

    with pytest.MonkeyPatch.context() as patch, seeded(1):
        patch.chdir(workdir)
        patch.setattr(clap_model, "create_htsat_model", tiny_create_htsat_model)
        model = CLAP(**copy.deepcopy(model_cfg))
    assert model.text_branch.config.hidden_size == 768 and len(model.audio_branch.layers) == 4
    # random weights everywhere, also where init leaves constants (biases, norms, BatchNorm statistics)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                if name.endswith("running_var"):
                    tensor.uniform_(0.5, 2.0, generator=generator)
                else:
                    tensor.add_(0.05 * torch.randn(tensor.shape, generator=generator))
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def laion_and_ours(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("laion-clap")
    laion, tokenizer = laion_clap_model(workdir)
    # the LAION training-checkpoint layout of music_audioset_epoch_15_esc_90.14.pt
    path = workdir / "music_audioset_epoch_15_esc_90.14.pt"
    torch.save({"epoch": 15, "state_dict": {f"module.{k}": v for k, v in laion.state_dict().items()}}, path)
    ours = ClapEncoder.from_pretrained(str(path), text_model=str(workdir / "roberta-base"))
    return laion, ours, tokenizer


def test_checkpoint_from_laion_clap_loads_strictly_with_every_weight(laion_and_ours):
    laion, ours, _ = laion_and_ours
    theirs, mine = laion.state_dict(), ours.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert ours.htsat_sizes == TINY_HTSAT and not ours.training


def test_embeddings_equal_laion_clap(laion_and_ours):
    laion, ours, tokenizer = laion_and_ours
    waves = 0.1 * torch.randn(2, CLAP_WINDOW, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        # what laion-clap's get_audio_features hands get_audio_embedding for a 10 s (480,000-sample) clip
        theirs_audio = laion.get_audio_embedding([{"waveform": w, "longer": torch.tensor([False])} for w in waves])
        # laion-clap's CLAP_Module.tokenizer: padding to 77 tokens, truncation
        tokens = tokenizer(PROMPTS, padding="max_length", truncation=True, max_length=CLAP_TEXT_MAX_LENGTH,
                           return_tensors="pt")
        theirs_text = laion.get_text_embedding(dict(tokens))
        ours_audio, ours_text = ours.embed_audio(waves), ours.embed_text(PROMPTS)
    assert ours_audio.shape == theirs_audio.shape == (2, 512) and ours_text.shape == theirs_text.shape == (2, 512)
    torch.testing.assert_close(ours_audio, theirs_audio, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours_text, theirs_text, atol=1e-6, rtol=0)
    # not a vacuous match: other inputs give other embeddings
    assert (ours_audio[0] - ours_audio[1]).abs().max() > 1e-3 and (ours_text[0] - ours_text[1]).abs().max() > 1e-3
