"""The three recipes as library calls, about five lines each (the README's snippets), on the offline
debug models; swap in the real ones where marked.

    python examples/library_quickstart.py
"""

from tunejury_align import (
    BestOfNConfig,
    DittoConfig,
    ExpertIterConfig,
    TuneJuryReward,
    best_of_n,
    ditto,
    expert_iteration,
    load_generator,
)


def main() -> None:
    reward = TuneJuryReward.from_pretrained("debug")  # or "TuneJury/tunejury"

    # Best-of-N: the winner's audio comes back with the scores.
    generator = load_generator("debug-musicgen")  # or "facebook/musicgen-small"
    result = best_of_n(generator, reward, ["calm solo piano"], config=BestOfNConfig(n=4))
    print(f"best-of-4: winner {result.winners[0]}, reward {result.winner_scores[0]:.4f}, "
          f"audio {tuple(result.winner_audio[0].shape)} at {result.sample_rate} Hz")

    # DITTO: optimise the initial noise of a diffusion generator (or a diffusers pipeline you hold).
    pipe = load_generator("debug-stable-audio")  # or StableAudioPipeline.from_pretrained(...)
    optimised = ditto(pipe, reward, "calm solo piano", config=DittoConfig(preset="fast", iterations=2, sampler_steps=2))
    print(f"DITTO: reward {optimised.baseline_reward:.4f} -> {optimised.optimised_reward:.4f}")

    # Expert iteration: fine-tune the generator in place on its own best samples.
    config = ExpertIterConfig(samples_per_prompt=4, train_steps=4, train_batch_size=2, generation={"duration": 1.0})
    rounds = expert_iteration(generator, reward, ["calm solo piano", "fast techno drums"], config=config)
    print("expert iteration: held-out reward per round", [round(r["eval_reward_mean"], 4) for r in rounds])


if __name__ == "__main__":
    main()
