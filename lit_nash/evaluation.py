"""Win rates between policies under a preference model: the estimate behind ``python -m lit_nash eval``
and the periodic evaluation of a training run.

One *match* of player A against player B on prompts x_1..x_N: each player samples n responses per prompt,
the i-th response of A meets the i-th of B, and the preference model labels each pair with P(a ≻ b | x).
The win rate is the mean over the N·n pairs. Its 95% interval is mean ± 1.96·s/√(N·n), s the sample
standard deviation of the pair probabilities: the pairs are independent given the prompts (fresh samples
for every pair), and pooling the prompts' variances over-states the variance of the mean, so the interval
is conservative. Preference models here are constant-sum (P(a ≻ b) + P(b ≻ a) = 1: games by construction,
text models by averaging both orders), so B's win rate against A is one minus A's.

Sampling runs under a forked torch RNG seeded from (seed, step): evaluating never changes the samples the
training run draws next, and every rank draws the same evaluation samples.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import lightning as L
import torch
from torch import Tensor

from lit_nash.generation.base import SamplingGroup
from lit_nash.rollout import label

Z95 = 1.959964  # two-sided 95% normal quantile
SNAPSHOT = "eval_prev"  # the policy as of the previous evaluation (win_rate_vs_snapshot's opponent)


@dataclass
class WinRate:
    """P̂(A ≻ B) over ``pairs`` labeled pairs, with the half-width of its 95% interval."""

    mean: float
    ci95: float
    pairs: int

    @classmethod
    def of(cls, p: Tensor) -> "WinRate":
        p = p.detach().double().flatten()
        n = p.numel()
        sd = float(p.std()) if n > 1 else 0.0
        return cls(float(p.mean()), Z95 * sd / math.sqrt(n) if n > 1 else float("nan"), n)

    def __str__(self) -> str:
        """``0.750 ± 0.112 (16 pairs)``: the sample size beside the interval (16 pairs that all tie or all win
        read 0.500 ± 0.000 or 1.000 ± 0.000; the pairs say how little that rests on)."""
        return f"{self.mean:.3f} ± {self.ci95:.3f} ({self.pairs} pairs)"


@dataclass
class Match:
    """The pairs of one match: responses of both players (N, n, ...) and P(a ≻ b) for each pair (N, n)."""

    a: Tensor
    b: Tensor
    p: Tensor

    @property
    def win_rate(self) -> WinRate:
        return WinRate.of(self.p)


def texts(player, responses: Tensor) -> list[str]:
    """Responses as text: an LM decodes its ids; a tabular policy's responses are action indices."""
    if player.reader is not None:
        return player.reader.decode(responses)
    return [str(int(a)) for a in responses.flatten().tolist()]


def prompt_texts(player, prompt: Tensor) -> list[str]:
    return [player.reader.prompt_text(i) if player.reader is not None else f"prompt {i}" for i in prompt.tolist()]


@torch.no_grad()
def play_match(preference, prompt: Tensor, a, b, n: int, a_source: str = "policy", b_source: str = "policy") -> Match:
    """Player ``a`` (a ``Rollouts``: a policy network and its generator, sampling as ``a_source``, the policy
    itself or one of its snapshots) against player ``b`` on ``prompt`` (N,), n pairs per prompt, labeled
    through ``lit_nash.rollout.label`` as in training: a text preference model reads each player's responses
    through that player's own tokenizer; an exact oracle reads ids (the players share the game)."""
    (ra,) = a.sample(prompt, [SamplingGroup(k=n, source=a_source)])
    (rb,) = b.sample(prompt, [SamplingGroup(k=n, source=b_source)])
    with a.profiler.profile("preference"):  # the judge's phase, as the rollout service times its own labels
        p = label(preference, prompt.to(ra.device), ra, rb.to(ra.device), a.reader, b.reader)
    return Match(ra, rb, p.detach().cpu())


def validity(preference, player, responses: Tensor) -> list[bool]:
    """Per response (flattened), whether it is a valid one: on a token game, one of the game's responses (the
    oracle maps anything else to the invalid action, which loses to every response and ties with itself);
    for a language model otherwise, one that ended with EOS within ``policy.max_new_tokens``; a tabular
    policy's actions are all valid."""
    game = getattr(preference, "game", None)
    if hasattr(preference, "action_indices") and hasattr(game, "invalid_index"):
        return (preference.action_indices(responses) != game.invalid_index).flatten().tolist()
    eos = getattr(player.reader, "eos_id", None)
    if responses.ndim == 3 and eos is not None:
        return (responses == eos).any(-1).flatten().tolist()
    return [True] * responses.shape[:2].numel()


COMPLETION_COLUMNS = ["step", "prompt", "opponent", "policy_response", "valid", "opponent_response", "opponent_valid",
                      "p_policy_wins", "chosen"]


def completion_rows(step: int, opponent: str, match: Match, a, b, prompt: Tensor, rows: int,
                    preference=None) -> list[dict]:
    """The first ``rows`` pairs of a match as table rows (``COMPLETION_COLUMNS``): what the policy said and
    whether it is valid (``validity``), what it met, P(policy ≻ opponent) and who won."""
    n = match.p.shape[1]
    said, met = texts(a, match.a), texts(b, match.b)
    valid, met_valid = validity(preference, a, match.a), validity(preference, b, match.b)
    prompts = prompt_texts(a, prompt)
    out = []
    for k in range(min(rows, match.p.numel())):
        i, j = divmod(k, n)
        p = float(match.p[i, j])
        out.append({"step": step, "prompt": prompts[i], "opponent": opponent, "policy_response": said[k],
                    "valid": bool(valid[k]), "opponent_response": met[k], "opponent_valid": bool(met_valid[k]),
                    "p_policy_wins": p, "chosen": "tie" if p == 0.5 else "policy" if p > 0.5 else opponent})
    return out


class PeriodicEval(L.Callback):
    """Every ``every_n_steps`` optimizer steps and at the last step: the policy against its reference
    (``eval/win_rate_vs_ref``) and against itself at the previous evaluation (``eval/win_rate_vs_snapshot``;
    the snapshot ``eval_prev``, saved in checkpoints; at the first evaluation it is the starting policy),
    under the run's preference model, on the run's first ``prompts`` prompts. The 95% half-widths are a
    metric family of their own, ``eval_ci95/win_rate_vs_ref`` and ``eval_ci95/win_rate_vs_snapshot``, with
    ``eval_ci95/pairs``, the number of pairs each win rate rests on (so the MLflow UI keeps the ``eval/``
    charts in one section and the sample size beside the intervals). ``table_rows`` pairs of each match go
    to the MLflow table ``completions.json``, newest evaluation first (``tracking.log_table_newest_first``).
    ``last`` holds the latest win rates, which the run's summary line prints with their pairs."""

    def __init__(self, every_n_steps: int, prompts: int = 8, samples: int = 4, table_rows: int = 8, seed: int = 0):
        if every_n_steps < 1 or prompts < 1 or samples < 1 or table_rows < 0:
            raise ValueError(f"eval: need every_n_steps >= 1, prompts >= 1, samples >= 1, table_rows >= 0; got "
                             f"every_n_steps={every_n_steps}, prompts={prompts}, samples={samples}, table_rows={table_rows}")
        self.every, self.prompts, self.samples, self.rows, self.seed = every_n_steps, prompts, samples, table_rows, seed
        self._before = 0
        self.last: dict[str, WinRate] = {}  # opponent → the latest evaluation's win rate

    def attach(self, rollouts) -> None:
        """The run's sampling and labeling (``lit_nash.rollout.Rollouts``)."""
        self.rollouts = rollouts

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not pl_module.network.has_snapshot(SNAPSHOT):  # a resumed run brings its own from the checkpoint
            pl_module.network.refresh_snapshot(SNAPSHOT)

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        self._before = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        step = trainer.global_step
        last = trainer.max_steps is not None and step >= trainer.max_steps
        if step // self.every > self._before // self.every or last:
            self.evaluate(trainer, pl_module, step)

    @torch.no_grad()
    def evaluate(self, trainer: L.Trainer, module: L.LightningModule, step: int) -> dict[str, float]:
        player, network = self.rollouts, module.network
        prompt = torch.arange(min(self.prompts, network.num_prompts), device=module.device)
        devices = [module.device] if module.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed((self.seed * 1_000_003 + step) % 2**63)
            matches = {
                "ref": play_match(player.preference, prompt, player, player, self.samples, b_source="ref"),
                "snapshot": play_match(player.preference, prompt, player, player, self.samples, b_source=SNAPSHOT),
            }
        metrics = {}
        for opponent, match in matches.items():
            rate = self.last[opponent] = match.win_rate
            metrics[f"eval/win_rate_vs_{opponent}"] = rate.mean
            metrics[f"eval_ci95/win_rate_vs_{opponent}"] = rate.ci95
            metrics["eval_ci95/pairs"] = rate.pairs
        network.refresh_snapshot(SNAPSHOT)
        logger = trainer.logger
        if logger is not None:
            logger.log_metrics(metrics, step=step - 1)  # the step axis of train/* and game/*: update s+1 → s
            if self.rows and trainer.is_global_zero and getattr(logger, "run_id", None):
                from lit_nash.tracking import log_table_newest_first

                table = [row for name, m in matches.items()
                         for row in completion_rows(step, name, m, player, player, prompt, self.rows, player.preference)]
                os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the table is read back to prepend
                log_table_newest_first(logger.experiment, logger.run_id, COMPLETION_COLUMNS, table, "completions.json")
        return metrics
