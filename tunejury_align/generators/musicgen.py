"""MusicGen (Copet et al., 2023, arXiv 2306.05284) through transformers' own classes.

``facebook/musicgen-small|medium|large`` (``MusicgenForConditionalGeneration``) and
``facebook/musicgen-melody`` (``MusicgenMelodyForConditionalGeneration``, text-only conditioning
here), by hub id or local folder.

Per-candidate seeding: transformers samples with the global RNG, so a candidate would depend on
the rest of the batch. We run ``generate`` greedily over logits that :class:`SeededSampler` has
already turned into one chosen token per row: it applies classifier-free guidance's output,
temperature, top-k and top-p itself and draws each batch item's tokens from that item's own
``torch.Generator``. Candidate i is then a function of (prompt i, seed i) only. Temperature, top-k and top-p are
transformers' own ``TemperatureLogitsWarper`` / ``TopKLogitsWarper`` / ``TopPLogitsWarper``, in the
order ``generate`` applies them.

Fine-tuning (:class:`MusicGenTrainer`, expert iteration): the kept audio is encoded with the model's
own EnCodec (first ``num_codebooks`` residual codebooks); the loss is transformers'
``MusicgenForConditionalGeneration(labels=...)`` teacher-forced cross-entropy, averaged over
codebooks, on labels laid out in MusicGen's delay pattern (codebook k shifted by k steps, the other
positions ``pad_token_id``, which the loss ignores) -- the layout ``generate`` produces. A share of
items (``condition_dropout``) gets the all-zero encoder states and attention mask of ``generate``'s
null input, so the unconditional branch classifier-free guidance uses keeps being trained.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from ..hub import ModelNotFoundError
from ..tiny_tokenizers import tiny_t5_tokenizer, words_of
from .base import Family, Trainer, check_generated, check_request, item_generators, library_versions


@dataclass
class MusicGenOptions:
    """Sampling options (defaults: the published best-of-N settings)."""

    duration: float = 10.0  # seconds
    top_k: int = 250
    top_p: float = 0.0  # 0 disables nucleus sampling
    temperature: float = 1.0
    guidance_scale: float = 3.0
    max_batch_size: int = 8  # most candidates per model.generate() call

    def __post_init__(self):
        if self.duration <= 0:
            raise ValueError(f"duration must be > 0 seconds, got {self.duration}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.top_p <= 1.0:
            raise ValueError(f"top_p must be in [0, 1], got {self.top_p}")
        if self.top_k < 0 or self.max_batch_size < 1:
            raise ValueError("top_k must be >= 0 and max_batch_size >= 1")


def _logits_processor_classes():
    from transformers import (
        LogitsProcessor,
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    class SeededSampler(LogitsProcessor):
        """Samples one token per row with per-item generators and returns one-hot logits. The
        distribution is transformers' own: temperature, then top-k, then top-p, as ``generate``
        orders its warpers."""

        def __init__(self, generators: list[torch.Generator], num_codebooks: int, temperature: float,
                     top_k: int, top_p: float):
            self.generators, self.num_codebooks = generators, num_codebooks
            self.warpers = [TemperatureLogitsWarper(temperature)]
            if top_k:
                self.warpers.append(TopKLogitsWarper(top_k))
            if 0.0 < top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(top_p))

        def __call__(self, input_ids, scores):
            scores = scores.float()
            for warper in self.warpers:
                scores = warper(input_ids, scores)
            probs = scores.softmax(dim=-1)
            rows_per_item = probs.shape[0] // len(self.generators)
            chosen = torch.cat([
                torch.multinomial(probs[i * rows_per_item:(i + 1) * rows_per_item], 1, generator=g)
                for i, g in enumerate(self.generators)
            ])
            if input_ids is not None:  # the streams so far, (B K, steps + 1)
                self.tokens = torch.cat([input_ids, chosen.to(input_ids.dtype)], dim=-1)
            one_hot = torch.full_like(scores, float("-inf"))
            return one_hot.scatter(-1, chosen, 0.0)

    class SamplerLastList(LogitsProcessorList):
        """MusicGen's ``generate`` appends its CFG processor to the list it is given; keep our
        sampler after it (it must see the guided logits)."""

        def append(self, processor):
            self.insert(len(self) - 1, processor)

    return SeededSampler, SamplerLastList


#: transformers' generic config check (``PreTrainedConfig.validate_token_ids``, logger
#: ``transformers.configuration_utils``) on a composite ``MusicgenConfig``: special ids must lie in 0..vocab_size-1
SPECIAL_ID_WARNING = re.compile(r"Model config: (pad|bos|decoder_start)_token_id must be `None` or an integer within "
                                r"the vocabulary \(between 0 and (\d+)\), got (\d+)\.")


class _SpecialIdsAtVocabSize(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        match = SPECIAL_ID_WARNING.match(record.getMessage())
        return not (match and int(match[3]) == int(match[2]) + 1)  # only the id that equals vocab_size


@contextmanager
def special_ids_accepted():
    """While our MusicGen configs are built or loaded, drop transformers' warning that the decoder's pad, bos and
    decoder-start ids lie outside the vocabulary, for ids equal to ``vocab_size`` only. They do so by design, in
    the released configs too (musicgen-small: 2048 against 0-2047): the decoder's embeddings hold ``vocab_size +
    1`` rows, the last one for that id (``MusicgenDecoderConfig.validate_token_ids`` accepts it; the composite
    config's generic check does not). Any other message, and any other id, still shows."""
    logger, rule = logging.getLogger("transformers.configuration_utils"), _SpecialIdsAtVocabSize()
    logger.addFilter(rule)
    try:
        yield
    finally:
        logger.removeFilter(rule)


class MusicGenGenerator:
    """MusicGen adapter: ``generate(prompts, seeds, **options) -> (B, C, T)`` at ``sample_rate``."""

    family = "musicgen"
    options_class = MusicGenOptions

    def __init__(self, model, tokenizer, name: str, is_debug: bool = False, default_options: dict | None = None):
        self.model = model.eval().requires_grad_(False)
        self.default_options = dict(default_options or {})
        MusicGenOptions(**self.default_options)  # fail early on a bad default
        self.tokenizer = tokenizer
        self.name = name
        self.is_debug = is_debug
        self.sample_rate = int(model.config.audio_encoder.sampling_rate)
        self.frame_rate = int(model.config.audio_encoder.frame_rate)
        self.last_generation: tuple[torch.Tensor, torch.Tensor] | None = None  # (audio, its codes (B, K, L))
        self.num_codebooks = int(model.decoder.config.num_codebooks)

    @classmethod
    def from_pretrained(cls, name: str, device=None, dtype=None) -> MusicGenGenerator:
        from transformers import AutoConfig, AutoTokenizer

        try:
            with special_ids_accepted():
                config = AutoConfig.from_pretrained(name)
                model_class = _model_class(config.model_type)
                model = model_class.from_pretrained(name, torch_dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(name)
        except OSError as err:
            raise ModelNotFoundError(
                f"MusicGen '{name}' not found: {err}. On a machine with network run "
                f"`huggingface-cli download {name}`, or pass a local folder saved with save_pretrained."
            ) from err
        generator = cls(model, tokenizer, name)
        return generator.to(device) if device else generator

    @classmethod
    def from_model(cls, model, tokenizer, name: str = "musicgen") -> MusicGenGenerator:
        """Wrap a ``MusicgenForConditionalGeneration`` the caller already holds."""
        return cls(model, tokenizer, name)

    def to(self, device) -> MusicGenGenerator:
        self.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def info(self) -> dict:
        return {"generator": self.name, "family": self.family, "debug": self.is_debug,
                "default_options": dict(self.default_options), "versions": library_versions("transformers")}

    def options(self, **overrides) -> MusicGenOptions:
        """:class:`MusicGenOptions` from ``default_options`` updated with ``overrides``."""
        return MusicGenOptions(**{**self.default_options, **overrides})

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], seeds: Sequence[int], **options) -> torch.Tensor:
        """``prompts``/``seeds`` (B each) -> ``(B, C, T)`` float32 audio; options: :class:`MusicGenOptions`."""
        opts = self.options(**options)
        prompts, seeds = check_request(prompts, seeds)
        audios, codes = [], []
        for i in range(0, len(prompts), opts.max_batch_size):
            audios.append(self._generate_batch(prompts[i:i + opts.max_batch_size], seeds[i:i + opts.max_batch_size],
                                               opts))
            codes.append(self._batch_codes)
        audio = torch.cat(audios)
        self.last_generation = (audio, torch.cat(codes))  # the codes behind it, for fine-tuning (expert iteration)
        return audio

    def _generate_batch(self, prompts: list[str], seeds: list[int], opts: MusicGenOptions) -> torch.Tensor:
        seeded_sampler, sampler_last = _logits_processor_classes()
        device = self.device
        inputs = self.tokenizer(prompts, padding=True, return_tensors="pt").to(device)
        sampler = seeded_sampler(item_generators(seeds, device), self.num_codebooks, opts.temperature,
                                 opts.top_k, opts.top_p)
        audio = self.model.generate(
            **inputs, do_sample=False, guidance_scale=opts.guidance_scale if opts.guidance_scale > 1 else None,
            # the delay pattern costs num_codebooks - 1 steps: ask for them so the clip lasts `duration`
            max_new_tokens=max(1, int(round(opts.duration * self.frame_rate))) + self.num_codebooks - 1,
            logits_processor=sampler_last([sampler]),
        )
        self._batch_codes = self._codes_of(sampler.tokens, len(prompts))
        return check_generated(audio.clamp(-1.0, 1.0), len(prompts), self.name)

    def _codes_of(self, tokens: torch.Tensor, batch: int) -> torch.Tensor:
        """The decoder's token sequences ``(B K, 1 + steps)`` (start token, then the delay pattern) ->
        the codes ``generate`` decoded, ``(B, K, L)`` int32: codebook k sits k steps late (k // 2 for
        stereo models, whose codebooks alternate left / right)."""
        stereo = int(getattr(self.model.decoder.config, "audio_channels", 1)) == 2
        delays = [k // 2 if stereo else k for k in range(self.num_codebooks)]
        tokens = tokens.reshape(batch, self.num_codebooks, -1)
        length = tokens.shape[-1] - 1 - max(delays)
        return torch.stack([tokens[:, k, 1 + d:1 + d + length] for k, d in enumerate(delays)], dim=1).to(
            torch.int32).cpu()


def _model_class(model_type: str):
    from transformers import MusicgenForConditionalGeneration, MusicgenMelodyForConditionalGeneration

    classes = {"musicgen": MusicgenForConditionalGeneration, "musicgen_melody": MusicgenMelodyForConditionalGeneration}
    if model_type not in classes:
        raise ModelNotFoundError(f"not a MusicGen checkpoint (model_type '{model_type}'; expected {sorted(classes)})")
    return classes[model_type]


def tiny_musicgen(seed: int = 0, decoder_width: int = 32):
    """(model, tokenizer): a tiny random MusicGen of the real architecture (T5 encoder, EnCodec 32 kHz
    at 50 frames/s with 4 codebooks, MusicGen decoder of width ``decoder_width``), built in-process
    without the hub."""
    from transformers import EncodecConfig, MusicgenDecoderConfig, T5Config

    # musicgen's tokenizer is t5-base's (sentencepiece, 512 tokens); a Unigram one spells out words it lacks
    tokenizer = tiny_t5_tokenizer(words_of(_TINY_VOCAB_TEXT), space_score=-2.0, max_length=512)
    text = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
                    decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    audio = EncodecConfig(sampling_rate=32_000, audio_channels=1, hidden_size=32, num_filters=4,
                          num_residual_layers=1, upsampling_ratios=[8, 5, 4, 4], codebook_size=64,
                          target_bandwidths=[2.2], num_lstm_layers=1, compress=2, use_causal_conv=False,
                          norm_type="weight_norm")
    decoder = MusicgenDecoderConfig(vocab_size=64, max_position_embeddings=1024, num_hidden_layers=2,
                                    ffn_dim=64, num_attention_heads=4, hidden_size=decoder_width, num_codebooks=4,
                                    pad_token_id=64, bos_token_id=64, decoder_start_token_id=64,
                                    audio_channels=1, dropout=0.0)
    return build_musicgen(text, audio, decoder, seed), tokenizer


def build_musicgen(text, audio, decoder, seed: int):
    """A random ``MusicgenForConditionalGeneration`` from its three sub-configs (seeded, caller's RNG
    untouched); the decoder's pad/start token (= its vocabulary size) is set where generate reads it."""
    from transformers import MusicgenConfig, MusicgenForConditionalGeneration

    with special_ids_accepted():
        config = MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(), decoder=decoder.to_dict())
        special = decoder.pad_token_id
        config.decoder_start_token_id = special
        config.pad_token_id = special
    with torch.random.fork_rng(devices=[]), special_ids_accepted():
        torch.manual_seed(seed)
        model = MusicgenForConditionalGeneration(config).eval()
        for layer in model.audio_encoder.quantizer.layers:  # EnCodec codebooks start as zeros
            layer.codebook.embed.normal_()
    model.generation_config.decoder_start_token_id = special
    model.generation_config.pad_token_id = special
    return model


def musicgen_small_model(seed: int = 0):
    """(model, tokenizer): a random MusicGen of ``facebook/musicgen-small``'s shapes, built in-process
    without the hub, for benchmarks (compute does not depend on weight values): T5-base text encoder,
    EnCodec 32 kHz (50 frames/s, 4 codebooks of 2048), 24-layer 1024-d decoder (16 heads, FFN 4096).
    The tokenizer is the tiny word-level one of :func:`tiny_musicgen` (ids < 32128 are valid here)."""
    from transformers import (
        EncodecConfig,
        MusicgenDecoderConfig,
        T5Config,
    )

    _, tokenizer = tiny_musicgen(seed)
    text = T5Config(vocab_size=32_128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
                    feed_forward_proj="relu", decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    audio = EncodecConfig(sampling_rate=32_000, audio_channels=1, hidden_size=128, num_filters=64,
                          num_residual_layers=1, upsampling_ratios=[8, 5, 4, 4], codebook_size=2048,
                          target_bandwidths=[2.2], num_lstm_layers=2, compress=2, use_causal_conv=False,
                          normalize=False, use_conv_shortcut=False, norm_type="weight_norm")
    decoder = MusicgenDecoderConfig(vocab_size=2048, max_position_embeddings=2048, num_hidden_layers=24,
                                    ffn_dim=4096, num_attention_heads=16, hidden_size=1024, num_codebooks=4,
                                    pad_token_id=2048, bos_token_id=2048, decoder_start_token_id=2048,
                                    audio_channels=1, dropout=0.0, tie_word_embeddings=False)
    return build_musicgen(text, audio, decoder, seed), tokenizer


_TINY_VOCAB_TEXT = [
    "high quality instrumental music lofi hip hop beat with warm piano chords",
    "upbeat electronic dance track epic orchestral soundtrack with brass and drums",
    "a calm acoustic guitar melody with soft strings jazz trio double bass brushed",
    "ambient synth pad slow and spacious rock metal pop funk",
]


def debug_musicgen(seed: int = 0) -> MusicGenGenerator:
    """The debug world's MusicGen (:mod:`tunejury_align.debug`): :func:`tiny_musicgen` with a 64-wide
    decoder whose LM holds a code for about a second and whose EnCodec decoder plays each code as a
    different spectral envelope (:mod:`.voicing`), so a clip's timbre and level follow its seed
    (octave-band levels vary by 2-3 dB across seeds). 2 s clips by default."""
    from .voicing import sticky_musicgen_lm, voice_encodec_decoder

    model, tokenizer = tiny_musicgen(seed, decoder_width=64)
    sticky_musicgen_lm(model)
    voice_encodec_decoder(model.audio_encoder.decoder, frame_rate=model.config.audio_encoder.frame_rate, gain=0.15)
    return MusicGenGenerator(model, tokenizer, name="debug-musicgen", is_debug=True,
                             default_options={"duration": 2.0, "top_k": 8})


class MusicGenTrainer(Trainer):
    """Teacher-forced token loss of a transformers ``MusicgenForConditionalGeneration``."""

    family = "musicgen"
    default_trainable = (r"^decoder\.", r"^enc_to_dec_proj\.")
    untrainable = (r"^audio_encoder\.",)

    def __init__(self, generator, trainable: Sequence[str] | None = None, generation: dict | None = None):
        if type(generator.model).__name__ != "MusicgenForConditionalGeneration":
            raise TypeError(f"expert iteration trains MusicgenForConditionalGeneration, not "
                            f"{type(generator.model).__name__} (MusicGen-melody is not supported)")
        self.generator, self.model, self.root = generator, generator.model, generator.model
        decoder = self.model.config.decoder
        if decoder.decoder_start_token_id is None or decoder.pad_token_id is None:
            raise ValueError("the MusicGen decoder config needs decoder_start_token_id and pad_token_id for training")
        self.pad_token_id = int(decoder.pad_token_id)
        self.num_codebooks = int(decoder.num_codebooks)
        self.stereo = int(getattr(decoder, "audio_channels", 1)) == 2
        self._select(trainable)

    @torch.no_grad()
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """``(B, C, T)`` audio at the model's rate -> ``(B, K, L)`` int32 EnCodec codes (stereo
        models: left/right codebooks interleaved, as ``generate`` decodes them). Audio this generator has
        just generated gets the very codes it was decoded from (exact; re-encoding is lossy); other audio
        is encoded with the model's EnCodec."""
        last = self.generator.last_generation
        if last is not None and last[0] is audio:
            return last[1].clone()
        audio = audio.to(self.device, torch.float32)
        channels = [audio[:, :1], audio[:, 1:2]] if self.stereo else [audio[:, :1]]
        per_channel = self.num_codebooks // len(channels)
        codes = []
        for wave in channels:
            out = self.model.audio_encoder.encode(wave)
            if out.audio_codes.shape[0] != 1 or out.audio_codes.shape[2] < per_channel:
                raise ValueError(f"EnCodec gave codes of shape {tuple(out.audio_codes.shape)}; need 1 chunk and "
                                 f">= {per_channel} codebooks")
            codes.append(out.audio_codes[0, :, :per_channel])  # residual VQ: a prefix of the codebooks
        if self.stereo:
            return torch.stack(codes, dim=2).flatten(1, 2).to(torch.int32).cpu()  # (B, K/2, 2, L) -> (B, K, L)
        return codes[0].to(torch.int32).cpu()

    def delayed_labels(self, codes: torch.Tensor) -> torch.Tensor:
        """``(B, K, L)`` codes -> ``(B, L + D, K)`` labels in the delay pattern (``D`` = the largest
        delay, ``K - 1`` mono, ``K / 2 - 1`` stereo): ``labels[:, k + d_k + t, k]`` = code ``t`` of
        codebook ``k``, everything else ``pad_token_id``. The model shifts them right behind
        ``decoder_start_token_id``, so the decoder sees exactly what ``generate`` feeds it."""
        batch, num_codebooks, length = codes.shape
        delays = [k // 2 if self.stereo else k for k in range(num_codebooks)]
        labels = torch.full((batch, num_codebooks, length + max(delays)), self.pad_token_id, dtype=torch.long,
                            device=codes.device)
        for k, delay in enumerate(delays):
            labels[:, k, delay:delay + length] = codes[:, k]
        return labels.transpose(1, 2)

    def loss(self, targets: torch.Tensor, texts: Sequence[str], seeds: Sequence[int],
             condition_dropout: float = 0.0) -> torch.Tensor:
        """Mean cross-entropy over codebooks and frames of ``(B, K, L)`` codes given ``texts``."""
        device = self.device
        keep = torch.tensor([float(torch.rand(1, generator=g).item() >= condition_dropout)
                             for g in item_generators(seeds)], device=device)
        inputs = self.generator.tokenizer(list(texts), padding=True, return_tensors="pt").to(device)
        hidden = self.model.text_encoder(input_ids=inputs.input_ids, attention_mask=inputs.attention_mask)[0]
        attention_mask = inputs.attention_mask * keep[:, None].long()
        labels = self.delayed_labels(targets.to(device=device, dtype=torch.long))
        out = self.model(attention_mask=attention_mask, encoder_outputs=(hidden * keep[:, None, None],),
                         labels=labels, use_cache=False)
        return out.loss

    def save_pretrained(self, path: Path) -> None:
        self.model.save_pretrained(path)
        self.generator.tokenizer.save_pretrained(path)

    def load_pretrained(self, path: Path) -> None:
        with special_ids_accepted():
            loaded = type(self.model).from_pretrained(path, torch_dtype=next(self.model.parameters()).dtype)
        self.model.load_state_dict(loaded.state_dict())


FAMILY = Family(
    name="musicgen", summary="MusicGen (facebook/musicgen-small|medium|large|melody), transformers",
    adapter=MusicGenGenerator, debug=debug_musicgen, config_model_types=("musicgen", "musicgen_melody"),
    trainer=MusicGenTrainer)
