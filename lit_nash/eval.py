"""``python -m lit_nash eval``: trained policies against their references and against each other.

Each policy is rebuilt from a checkpoint of ``fit`` (checkpoints carry the run's resolved config, see
``lit_nash.checkpointing.RunRecord``), given by path or by MLflow run id (the run's ``checkpoint`` tag), or taken
from every finished run of an experiment. One preference model judges every match: the one chosen with
``preference=<option>``, else the first policy's own. One policy is in memory at a time: each is loaded
(its reference kept, its other snapshots freed), draws ``samples`` responses per prompt and its reference
draws as many, and it is dropped before the next loads; every match then labels those responses, so all
entries of a policy's row rest on the same samples (common random numbers). Printed and written to ``out``:

* per policy, the win rate against its own reference with a 95% interval (``lit_nash.evaluation``);
* the win-rate matrix P(row ≻ column) between the policies, each entry with its interval, the diagonal ½;
* on a game, the exact values of both and each policy's exact gaps (duality gap, regularized gap,
  exploitability, KL to the NE), from the policies' exact distributions;
* a Bradley–Terry ranking of the policies on the Elo scale with 95% intervals (``lit_nash.head_to_head``).

The same numbers go to MLflow (experiment ``log_experiment``): one run for the evaluation (tag
``command=eval``) with ``table.md`` and ``win_rate_matrix.{json,csv,png,pdf}`` as artifacts and the MLflow
tables ``head_to_head.json`` and ``ranking.json``, and under it one child run per policy (tag
``policy=<name>``) with that policy's metrics under fixed names (``policy_metrics``), its win rate against each
opponent among them, so the MLflow UI compares the policies in one chart per metric.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from lit_nash.head_to_head import log_tables, ranking_markdown, ranking_of
from lit_nash.head_to_head import policy_metrics as head_to_head_metrics
from lit_nash.heatmap import plot_win_rates, significant
from lit_nash.plots import sample_size

NO_STORE = ("lit_nash eval: no MLflow store at tracking_uri={uri}; give checkpoint paths, "
            "or point tracking_uri at the store the runs went to")


@hydra.main(version_base="1.3", config_path="pkg://lit_nash.conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


@dataclass
class Player:
    """One evaluated policy. Its network is loaded, sampled and dropped in turn (``play_out``): what the matches
    need afterwards is its responses, its reader and, on a game, its exact distributions."""

    name: str
    policy: Any  # the policy network, rebuilt from its checkpoint; None once it has played out
    config: DictConfig  # the run's resolved config, from the checkpoint
    game: Any  # None for a prompt dataset
    checkpoint: str
    prompts: Any = None  # the prompt list (LM) or the number of prompts (tabular): every player shares them
    reader: Any = None  # what turns its responses into text (an LM's PromptCodec), None for a tabular policy
    own: list = None  # its responses, one (B, n, ...) tensor per prompt batch
    ref: list = None  # its reference's responses, the same way
    log_probs: Any = None  # on a game: its exact log-distribution, and its reference's
    ref_log_probs: Any = None


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run every match, print the tables, write the files, log the MLflow run; returns the numbers."""
    from lit_nash.tracking import check_store, marks_run

    check_store(str(cfg.tracking_uri), "tracking_uri", "eval")  # before torch loads
    import torch

    from lit_nash.build import build_preference
    from lit_nash.rollout import reads_text
    source = None if cfg.policies else str(cfg.experiment)  # compare draws the latest evaluation of its experiment
    specs = [str(s) for s in cfg.policies] or runs_of(str(cfg.tracking_uri), str(cfg.experiment), cfg.filter)
    n = int(cfg.samples)
    if n < 1 or (cfg.prompts is not None and int(cfg.prompts) < 1):
        raise SystemExit(f"lit_nash eval: samples and prompts must be >= 1, got samples={n}, prompts={cfg.prompts}")
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(int(cfg.seed))
    # One policy in memory at a time: each is loaded, samples its responses and its reference's, and is dropped
    # before the next loads (three full fine-tuning runs of a 135M model: two model copies at a time, not six).
    players, preference, node, prompt = [], None, None, None
    for spec in specs:
        player = load_player(spec, str(cfg.tracking_uri))
        if not players:
            node = cfg.preference if cfg.get("preference") is not None else player.config.preference
            preference = build_preference(node, player.game, node.get("_target_"))
            if isinstance(preference, torch.nn.Module):
                preference.to(device)
        else:
            check_same_prompts(players[0], player)
            if not reads_text(preference) and hasattr(player.policy, "decode") != (players[0].reader is not None):
                raise SystemExit("lit_nash eval: an exact game oracle reads response ids; the policies must be all tabular or all LMs")
        if prompt is None:
            count = player.prompts if isinstance(player.prompts, int) else len(player.prompts)
            prompt = torch.arange(min(int(cfg.prompts or count), count), device=device)
        play_out(player, preference, device, prompt, n, int(cfg.batch_size))
        players.append(player)
    unique_names(players)
    N = prompt.shape[0]

    client = run = None
    if cfg.log_experiment:  # the run exists while the matches play; a signal or an error marks it (marks_run)
        from lit_nash.tracking import start_eval_run

        client, run = start_eval_run(str(cfg.tracking_uri), str(cfg.log_experiment), [p.name for p in players], source)
    with marks_run(lambda: (client, run), "eval"):
        return _evaluate(cfg, players, preference, node, n, N, prompt, source, client, run)


def play_out(player: Player, preference, device, prompt, n: int, batch_size: int) -> None:
    """Load ``player``'s network on ``device``, sample ``n`` responses per prompt from it and from its reference
    (``batch_size`` prompts at a time), keep them with its reader and exact distributions, drop the network."""
    import gc

    import torch

    from lit_nash.build import build_generator
    from lit_nash.generation import SamplingGroup
    from lit_nash.rollout import Rollouts

    policy = player.policy.to(device).eval()
    if hasattr(preference, "check_context") and hasattr(policy, "prompt_text"):  # the judge's positions, before sampling
        preference.check_context([policy.prompt_text(i) for i in prompt.tolist()], policy.max_new_tokens)
    rollouts = Rollouts(policy, build_generator(player.config, policy), preference)
    player.own, player.ref = [], []
    for i in range(0, prompt.shape[0], batch_size):
        own, ref = rollouts.sample(prompt[i : i + batch_size], [SamplingGroup(k=n), SamplingGroup(k=n, source="ref")])
        player.own.append(own)
        player.ref.append(ref)
    player.reader = getattr(policy, "codec", None)
    if player.game is not None:
        with torch.no_grad():
            player.log_probs = policy.log_probs().detach().double().cpu()
            player.ref_log_probs = policy.snapshot("ref").detach().double().cpu()
    player.policy = None
    del policy, rollouts
    gc.collect()


def _evaluate(cfg, players, preference, node, n, N, prompt, source, client, run) -> dict[str, Any]:
    k = len(players)
    vs_ref = [match(preference, prompt, int(cfg.batch_size), p, p, b_ref=True) for p in players]
    matrix = [[None] * k for _ in range(k)]
    for i in range(k):
        for j in range(i + 1, k):
            matrix[i][j] = match(preference, prompt, int(cfg.batch_size), players[i], players[j])
    result = {
        "policies": [p.name for p in players],
        "checkpoints": [p.checkpoint for p in players],
        "prompts": N,
        "samples": n,
        "preference": str(node.get("_target_")),
        "win_rate_vs_ref": [r.mean for r in vs_ref],
        "win_rate_vs_ref_ci95": [r.ci95 for r in vs_ref],
        "win_rate": [[0.5 if i == j else (matrix[i][j].mean if j > i else 1 - matrix[j][i].mean) for j in range(k)] for i in range(k)],
        "win_rate_ci95": [[0.0 if i == j else matrix[min(i, j)][max(i, j)].ci95 for j in range(k)] for i in range(k)],
        "pairs": n * N,
        "source_experiment": source,
    }
    result.update(exact_values(players, prompt))  # on a game
    result.update(ranking_of(result))  # Bradley–Terry/Elo with intervals
    out = Path(str(cfg.out))
    out.mkdir(parents=True, exist_ok=True)
    markdown = report(result)
    if run is not None:
        result["mlflow_run_id"] = run
    (out / "table.md").write_text(markdown + "\n")
    write_files(result, out)
    if run is not None:
        log_run(client, run, result, out, cfg)
    print(f"lit_nash eval: {k} policies on {N} prompts × {n} samples, judged by {result['preference']}\n")
    print(markdown)
    print(f"\nwrote {out}/table.md and win_rate_matrix.json/.csv/.png/.pdf"
          + (f"; MLflow run {result['mlflow_run_id']} in experiment {cfg.log_experiment!r}" if cfg.log_experiment else ""))
    return result


# -- policies from checkpoints and runs ----------------------------------------------------------------
def runs_of(tracking_uri: str, experiment: str, filter_string: str | None) -> list[str]:
    """Ids of the finished runs of an experiment (oldest first) that have a checkpoint."""
    from lit_nash.tracking import client, finished_runs

    runs = finished_runs(client(tracking_uri, missing=NO_STORE), experiment, filter_string, "eval")
    ids = [r.info.run_id for r in runs if "checkpoint" in r.data.tags]
    if not ids:
        raise SystemExit(f"lit_nash eval: no finished run with a checkpoint in experiment {experiment!r} "
                         f"with filter={filter_string!r}; give policies=[<checkpoint>, ...] instead")
    return ids


def load_player(spec: str, tracking_uri: str) -> Player:
    """A policy from a checkpoint path or an MLflow run id, rebuilt from the config its checkpoint carries."""
    from lit_nash.algorithms import registry
    from lit_nash.build import build_trained_network
    from lit_nash.checkpointing import load_checkpoint

    path, name = Path(spec), None
    if not path.exists():
        if "/" in spec or spec.endswith(".ckpt"):
            raise SystemExit(f"lit_nash eval: checkpoint {spec!r} does not exist")
        run = _run(spec, tracking_uri)
        name = run.info.run_name
        if "checkpoint" not in run.data.tags:
            raise SystemExit(f"lit_nash eval: MLflow run {spec} ({name}) has no checkpoint tag: it did not finish, "
                             "or ran with checkpointing off (trainer.enable_checkpointing=false)")
        path = Path(run.data.tags["checkpoint"])
        if not path.exists():
            raise SystemExit(f"lit_nash eval: the checkpoint of MLflow run {spec} ({name}), {str(path)!r}, no longer exists")
        name = None  # named from its config below, as a checkpoint file is (not by fit's unique run-name suffix)
    if path.is_dir():
        raise SystemExit(f"lit_nash eval: {str(path)!r} is a distributed (sharded) checkpoint folder; consolidate it into "
                         "one file first: python -m lightning.pytorch.utilities.consolidate_checkpoint <folder>")
    checkpoint = load_checkpoint(path, "eval")  # tensors and plain values only; anything else is refused
    policy, cfg, game = build_trained_network(checkpoint)
    if name is None:
        task = game.name if game is not None else Path(str(cfg.data.path)).stem
        algo = next((a.name for a in registry().values() if a.__name__ == str(cfg.algo._target_).rsplit(".", 1)[-1]), "policy")
        name = cfg.logger.get("run_name") or f"{algo}-{task}-seed{cfg.seed}"
    for snapshot in policy.snapshot_names():  # eval reads the policy and its reference only: the rest is freed
        if snapshot != "ref":
            policy.snapshots.drop(snapshot)
    prompts = list(policy.prompts) if hasattr(policy, "prompts") else policy.logits.shape[0]
    return Player(name, policy, cfg, game, str(path), prompts=prompts)


def unique_names(players: list[Player]) -> None:
    seen: dict[str, int] = {}
    for p in players:
        seen[p.name] = seen.get(p.name, 0) + 1
        if seen[p.name] > 1:
            p.name = f"{p.name}_{seen[p.name]}"


def check_same_prompts(first: Player, p: Player) -> None:
    """Every policy must play the same prompts (the same game, or the same prompt list)."""
    import torch

    same_game = (first.game is None) == (p.game is None) and (
        first.game is None or (first.game.P.shape == p.game.P.shape and torch.equal(first.game.P, p.game.P)))
    if not same_game or p.prompts != first.prompts:
        raise SystemExit(f"lit_nash eval: the policies must play the same prompts (the same game or prompt list); "
                         f"{p.name} differs from {first.name}")


def _run(run_id: str, tracking_uri: str):
    from lit_nash.tracking import client, get_run

    run = get_run(client(tracking_uri, missing=NO_STORE), run_id)
    if run is None:
        raise SystemExit(f"lit_nash eval: {run_id!r} is neither a checkpoint file nor a run id in {tracking_uri}")
    return run


# -- matches and exact values --------------------------------------------------------------------------
def match(preference, prompt, batch_size: int, a: Player, b: Player, b_ref: bool = False):
    """The win rate of ``a``'s responses against ``b``'s (``b_ref``: against ``b``'s reference's) over all
    prompts, labeled ``batch_size`` prompts at a time through ``lit_nash.rollout.label``, as in training. Every
    match reads the responses each player drew once (``play_out``): all its entries share those samples."""
    import torch

    from lit_nash.evaluation import WinRate
    from lit_nash.rollout import label

    parts = []
    for batch, (ra, rb) in enumerate(zip(a.own, b.ref if b_ref else b.own)):
        at = prompt[batch * batch_size : (batch + 1) * batch_size]
        parts.append(label(preference, at.to(ra.device), ra, rb.to(ra.device), a.reader, b.reader).detach().cpu())
    return WinRate.of(torch.cat(parts))


def exact_values(players: list[Player], prompt) -> dict[str, Any]:
    """On a game: the exact win rates (mean over the evaluated prompts of π_iᵀ P π_j) and exact gaps."""
    import torch

    from lit_nash.games import nash_equilibrium
    from lit_nash.metrics import game_metrics

    if players[0].game is None:
        return {}
    P = players[0].game.P.double()[prompt.cpu()]
    pis = [p.log_probs[prompt.cpu()] for p in players]
    refs = [p.ref_log_probs[prompt.cpu()] for p in players]

    def rate(log_a, log_b):
        return float(torch.einsum("na,nab,nb->n", log_a.exp(), P, log_b.exp()).mean())

    ne = nash_equilibrium(P)
    gaps = [{k: float(v) for k, v in game_metrics(P, ne, pi, ref, float(p.config.metrics.tau)).items()}
            for p, pi, ref in zip(players, pis, refs)]
    return {
        "exact_win_rate_vs_ref": [rate(pi, ref) for pi, ref in zip(pis, refs)],
        "exact_win_rate": [[rate(a, b) for b in pis] for a in pis],
        "exact_gaps": gaps,
    }


# -- output --------------------------------------------------------------------------------------------
def report(r: dict[str, Any]) -> str:
    """The per-policy table and the matrix (sampled, and exact on a game) as markdown."""
    names, exact = r["policies"], "exact_win_rate" in r
    gap_keys = list(r["exact_gaps"][0]) if exact else []
    head = ["policy", f"win rate vs ref (95% CI, {r['pairs']} pairs)"] + (["exact"] + [k.split("/")[-1] for k in gap_keys] if exact else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, name in enumerate(names):
        cells = [name, f"{r['win_rate_vs_ref'][i]:.3f} ± {r['win_rate_vs_ref_ci95'][i]:.3f}"]
        if exact:
            cells += [f"{r['exact_win_rate_vs_ref'][i]:.3f}"] + [f"{r['exact_gaps'][i][k]:.3g}" for k in gap_keys]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"P(row ≻ column), {r['pairs']} pairs per entry, ± the 95% half-width:", ""]
    lines += _matrix_md(names, lambda i, j: "½" if i == j else f"{r['win_rate'][i][j]:.3f} ± {r['win_rate_ci95'][i][j]:.3f}")
    if exact:
        lines += ["", "Exact P(row ≻ column) from the policies' distributions:", ""]
        lines += _matrix_md(names, lambda i, j: f"{r['exact_win_rate'][i][j]:.3f}")
    if "elo" in r:
        lines += ["", ranking_markdown(r)]
    return "\n".join(lines)


def _matrix_md(names: list[str], cell) -> list[str]:
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    return lines + ["| " + names[i] + " | " + " | ".join(cell(i, j) for j in range(len(names))) + " |" for i in range(len(names))]


def write_files(r: dict[str, Any], out: Path) -> None:
    (out / "win_rate_matrix.json").write_text(json.dumps(r, indent=1) + "\n")
    sig = significant(r["win_rate"], r["win_rate_ci95"])
    with open(out / "win_rate_matrix.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "column", "win_rate", "ci95", "significant"] + (["exact"] if "exact_win_rate" in r else []))
        for i, a in enumerate(r["policies"]):
            for j, b in enumerate(r["policies"]):
                row = [a, b, r["win_rate"][i][j], r["win_rate_ci95"][i][j], bool(sig[i][j])]
                w.writerow(row + ([r["exact_win_rate"][i][j]] if "exact_win_rate" in r else []))
    plot_win_rates(r["policies"], r["win_rate"], r["win_rate_ci95"], out / "win_rate_matrix.png",
                   f"{sample_size(r['prompts'], r['samples'])}, ± the 95% half-width", r.get("exact_win_rate"))


def policy_metrics(r: dict[str, Any], i: int) -> dict[str, float]:
    """Policy ``i``'s metrics under the names a training run's periodic evaluation and game metrics use:
    ``eval/win_rate_vs_ref``, its interval ``eval_ci95/win_rate_vs_ref`` with ``eval_ci95/pairs``, and on a
    game ``eval/exact_win_rate_vs_ref`` and the exact gaps ``game/duality_gap``, ...; and its head-to-head
    results (``lit_nash.head_to_head``: ``vs/<opponent>``, ``vs_ci95/<opponent>``, ``rank/elo``, ...)."""
    metrics = {"eval/win_rate_vs_ref": r["win_rate_vs_ref"][i], "eval_ci95/win_rate_vs_ref": r["win_rate_vs_ref_ci95"][i],
               "eval_ci95/pairs": r["pairs"]}
    if "exact_gaps" in r:
        metrics["eval/exact_win_rate_vs_ref"] = r["exact_win_rate_vs_ref"][i]
        metrics.update(r["exact_gaps"][i])
    if "elo" in r:
        metrics.update(head_to_head_metrics(r, i))
    return metrics


def log_run(client, rid: str, r: dict[str, Any], out: Path, cfg: DictConfig) -> None:
    """The evaluation's run: params and the files as artifacts; one child run per policy (tag ``policy``)
    with its metrics (``policy_metrics``); then they are finished."""
    from lit_nash.tracking import log_eval_run

    params = {"prompts": r["prompts"], "samples": r["samples"], "seed": cfg.seed, "preference": r["preference"]}
    per_policy = {name: policy_metrics(r, i) for i, name in enumerate(r["policies"])}
    tags = {name: {"policy_checkpoint": path} for name, path in zip(r["policies"], r["checkpoints"])}
    log_tables(client, rid, r)  # head_to_head.json and ranking.json, shown as tables
    r["mlflow_policy_runs"] = log_eval_run(client, rid, params, per_policy, out, tags)
