"""DITTO memory and time per iteration vs sampler steps, with and without per-step checkpointing.

Generator: a Stable Audio Open DiT of the real width with random weights (1536 = 24 heads x 64, 12
key/value heads, cross-attention 768, 64 latent channels, CFG 7 so every step runs a batch of two),
fewer layers than the real 24 (``--layers``), a short window (``--seconds``) so it fits a CPU, an
Oobleck VAE of the real layout (2048x, channel multiples 1-2-4-8-16) at ``--vae-channels`` (real: 128),
the real cosine DPM-Solver SDE scheduler (noise seeded per run). Reward: the tiny ``debug`` TuneJury
reward by default, or ``--reward fullsize`` (HTSAT-base CLAP + MERT-330M shapes, random weights).
Compute and memory do not depend on weight values.

For each step count and checkpointing mode it runs ``ditto`` with ``--iterations`` Adam steps (after one
warm-up run) and times each iterate from ``on_iteration`` to ``on_iteration``: ``iteration`` = forward +
backward (the fastest stepped iterate), ``sampling`` = the final, forward-only iterate (one plain no-grad
sampling pass + VAE decode + one reward forward: the denominator of the 4x target). On the CPU, times
are process CPU seconds (user + system; one thread by default), so other jobs on a shared machine do not
inflate them; wall seconds are shown beside them. On CUDA, wall seconds.

Memory. CUDA: ``torch.cuda.max_memory_allocated`` per iteration. CPU: peak RSS of the process during
the iteration (Linux VmHWM, reset through /proc/self/clear_refs before each iteration). The script
re-executes itself with ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc maps every large tensor
separately and returns it to the OS on free: RSS then follows live tensor memory instead of malloc's
cache. ``growth`` = iteration peak minus the RSS of the idle process with the models loaded (after a
warm-up), i.e. what one iteration needs on top of the weights. Ends with one ``RESULT`` line:
``mem_ratio_50_vs_8`` = growth at 50 steps / growth at 8 steps, with checkpointing;
``iter_vs_sampling`` = the largest iteration / (sampling pass + reward forward) over the step counts,
with checkpointing.

    python benchmarks/ditto_memory.py                      # CPU, 2 layers, 1.4 s, tiny reward
    python benchmarks/ditto_memory.py --device cuda --layers 24 --seconds 10 --vae-channels 128 --reward fullsize
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

MMAP_ENV = "MALLOC_MMAP_THRESHOLD_"


def build_generator(layers: int, seconds: float, vae_channels: int, device: str):
    """Random Stable Audio Open of the real width; ``sample_size`` latent frames just above ``seconds``."""
    import math

    import torch
    from diffusers import AutoencoderOobleck, StableAudioDiTModel, StableAudioPipeline, StableAudioProjectionModel
    from transformers import T5Config, T5EncoderModel

    from tunejury_align.generators.stable_audio import StableAudioGenerator, tiny_stable_audio

    tiny = tiny_stable_audio()  # its tokenizer and the real scheduler configuration
    sample_size = math.ceil(seconds * 44_100 / 2048)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        # T5 runs once per prompt under no_grad: one layer of T5-base width is enough
        text_encoder = T5EncoderModel(T5Config(vocab_size=len(tiny.tokenizer), d_model=768, d_kv=64, d_ff=2048,
                                               num_layers=1, num_heads=12, pad_token_id=0, eos_token_id=1,
                                               decoder_start_token_id=0)).eval()
        projection_model = StableAudioProjectionModel(text_encoder_dim=768, conditioning_dim=768, min_value=0,
                                                      max_value=512)
        transformer = StableAudioDiTModel(
            sample_size=sample_size, in_channels=64, num_layers=layers, attention_head_dim=64, num_attention_heads=24,
            num_key_value_attention_heads=12, out_channels=64, cross_attention_dim=768, time_proj_dim=256,
            global_states_input_dim=1536, cross_attention_input_dim=768)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            vae = AutoencoderOobleck(encoder_hidden_size=vae_channels, downsampling_ratios=[2, 4, 4, 8, 8],
                                     channel_multiples=[1, 2, 4, 8, 16], decoder_channels=vae_channels,
                                     decoder_input_channels=64, audio_channels=2, sampling_rate=44_100)
    pipe = StableAudioPipeline(vae=vae, text_encoder=text_encoder, projection_model=projection_model,
                               tokenizer=tiny.tokenizer, transformer=transformer, scheduler=tiny.scheduler)
    generator = StableAudioGenerator(pipe, name="random-stable-audio-open", default_options={"duration": seconds})
    return generator.to(device)


def idle_memory(device: str) -> int:
    import torch

    from tunejury_align.recipes.measure import PeakMemory

    return PeakMemory(torch.device(device)).start()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--layers", type=int, default=2, help="DiT blocks (Stable Audio Open: 24)")
    parser.add_argument("--seconds", type=float, default=1.4, help="clip length (the window is just above it)")
    parser.add_argument("--vae-channels", type=int, default=32, help="Oobleck base width (Stable Audio Open: 128)")
    parser.add_argument("--reward", choices=("debug", "fullsize"), default="debug")
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 20, 50])
    parser.add_argument("--iterations", type=int, default=1, help="Adam steps per row (>= 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on the CPU")
    args = parser.parse_args()
    if args.device == "cpu" and MMAP_ENV not in os.environ:  # see the docstring: RSS that follows live tensors
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, MMAP_ENV: "65536"})

    import torch

    from tunejury_align.recipes.ditto import DittoConfig, ditto
    from tunejury_align.reward import debug_reward
    from tunejury_align.reward.fullsize import fullsize_reward

    warnings.filterwarnings("ignore", message="Should have t")
    warnings.filterwarnings("ignore", message=r"torch\.meshgrid")
    torch.set_num_threads(args.threads)
    generator = build_generator(args.layers, args.seconds, args.vae_channels, args.device)
    reward = (debug_reward if args.reward == "debug" else fullsize_reward)(device=args.device)
    params = sum(p.numel() for p in generator.pipe.transformer.parameters())
    vae_params = sum(p.numel() for p in generator.pipe.vae.parameters())
    print(f"# device {args.device} ({torch.get_num_threads()} threads), torch {torch.__version__}; DiT width 1536, "
          f"{args.layers} layers, {params / 1e6:.0f}M params, {generator.pipe.transformer.config.sample_size} latent "
          f"frames ({args.seconds} s clip, CFG 7 -> batch 2); VAE {vae_params / 1e6:.1f}M params; "
          f"reward {args.reward}; {args.iterations} Adam steps per row")
    prompt = "lofi hip hop beat with warm piano chords"
    warm = DittoConfig(preset="fast", sampler_steps=2, iterations=1, generation={"duration": args.seconds})
    ditto(generator, reward, prompt, config=warm)  # warm-up: kernels, text cache
    idle = idle_memory(args.device)
    print(f"# idle memory with the models loaded: {idle / 2**20:.0f} MiB")
    clock = time.perf_counter if args.device.startswith("cuda") else time.process_time
    unit = "wall s" if args.device.startswith("cuda") else "CPU s"
    print(f"# times in {unit}; memory in MiB")
    print(f"{'steps':>5} {'ckpt':>5} {'iter':>7} {'sample+reward':>13} {'ratio':>6} {'iter_wall':>9} "
          f"{'peak':>6} {'growth':>6} {'reward0':>8} {'reward_end':>10}")
    rows = {}
    for checkpoint_steps in (True, False):
        for steps in args.steps:
            config = DittoConfig(preset="fast", sampler_steps=steps, iterations=args.iterations,
                                 checkpoint_steps=checkpoint_steps, generation={"duration": args.seconds})
            times, last = [], [clock()]

            def on_iteration(record, times=times, last=last):
                now = clock()
                times.append(now - last[0])
                last[0] = now

            result = ditto(generator, reward, prompt, config=config, on_iteration=on_iteration)
            history = result.history
            iteration = min(t for t, r in zip(times, history) if r.backward)
            iteration_wall = min(r.seconds for r in history if r.backward)
            sampling = times[-1]
            peak = max(r.peak_memory for r in history if r.backward)
            rows[steps, checkpoint_steps] = (iteration, sampling, peak - idle)
            print(f"{steps:>5} {str(checkpoint_steps):>5} {iteration:>7.2f} {sampling:>13.2f} "
                  f"{iteration / sampling:>6.2f} {iteration_wall:>9.2f} {peak / 2**20:>6.0f} "
                  f"{(peak - idle) / 2**20:>6.0f} {result.baseline_reward:>8.4f} {history[-1].reward:>10.4f}",
                  flush=True)
    low, high = min(args.steps), max(args.steps)
    mem_ratio = rows[high, True][2] / rows[low, True][2]
    iter_ratio = max(rows[s, True][0] / rows[s, True][1] for s in args.steps)
    print(f"# with checkpointing: growth at {high} steps / at {low} steps = {mem_ratio:.3f}; without: "
          f"{rows[high, False][2] / rows[low, False][2]:.3f}")
    print(f"RESULT mem_ratio_{high}_vs_{low}={mem_ratio:.3f} iter_vs_sampling={iter_ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
