"""The engine: the policy LightningModule that owns the training step, and the DataModule that samples on
the fly. One step of every run, whatever the policy network (tabular, causal LM) and the algorithm:

1. ``RolloutDataModule``: its DataLoader yields prompt indices; ``on_after_batch_transfer`` (after the
   loop's prefetch, right before the step) turns them into the step's batch with the *current* weights:
   a ``Rollout`` (sampled play: the algorithm's samples, labels and snapshot log-probs, through the
   ``Rollouts`` service) or an ``ExactTarget`` (exact play: the algorithm's closed-form iterate).
2. ``PolicyModule.training_step``: the algorithm's loss on the batch, in ``micro_batches`` slices of its
   prompts (gradient accumulation; ``auto``: as many as a memory budget needs), then one optimizer step
   (manual optimization).
3. The algorithm, a Callback, runs its schedule in Lightning's hooks (magnets, resets, history, the
   two-call step); metrics and evaluation are callbacks too.

Exact play and sampled play are the two kinds of batch, not a branch per policy.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from lit_nash.guards import check_finite, check_gradients, in_step
from lit_nash.metrics import is_logging_step
from lit_nash.rollout import ExactTarget, Rollout, Rollouts
from lit_nash.validate import choice, integer, is_integer, positive

# learning-rate schedules after warmup, by transformers' names (``transformers.get_scheduler``); each decays over
# trainer.max_steps. ``policy.lr_schedule_kwargs`` holds its own arguments (cosine_with_min_lr: min_lr_rate).
LR_SCHEDULES = ("constant", "linear", "cosine", "cosine_with_min_lr", "polynomial", "inverse_sqrt")

MODES = ("exact", "sampled")
COUNTS_EVERY_S = 5.0  # the counters reach the loggers at most this much later than their step (see log_counts)


class PolicyModule(L.LightningModule):
    """The trained policy: a ``PolicyNetwork`` (its reference and other snapshots inside), the algorithm
    whose loss it minimizes, and the optimizer that steps it."""

    def __init__(self, network, algorithm, optimizer: Callable | None = None, sampled: bool = True,
                 warmup_steps: int = 0, grad_clip: float | None = None, micro_batches: int | str = 1,
                 memory_budget_gb: float | None = None, iteration_steps: int = 1, lr_schedule: str = "constant",
                 lr_schedule_kwargs: dict | None = None):
        super().__init__()
        self.network = network
        self.__dict__["algorithm"] = algorithm  # a Callback of the trainer, not a submodule
        self.optimizer_factory = optimizer
        self.sampled = bool(sampled)
        self.warmup_steps = integer("policy.warmup_steps", warmup_steps, 0)
        self.lr_schedule = choice("policy.lr_schedule", lr_schedule, LR_SCHEDULES)
        self.lr_schedule_kwargs = dict(lr_schedule_kwargs or {})
        if grad_clip is not None and not grad_clip > 0:
            raise ValueError(f"policy.grad_clip must be > 0 or null, got {grad_clip}")
        self.grad_clip = grad_clip
        self.micro_batches, self.memory_budget = micro_batch_setting(micro_batches, memory_budget_gb)
        # sampled play: optimizer steps that make one iteration of an algorithm's schedule (exact play: one step)
        iteration_steps = integer("policy.iteration_steps", iteration_steps, 1, "optimizer steps per iteration")
        self.iteration_steps = iteration_steps if self.sampled else 1
        self.rollouts: Rollouts | None = None  # set by the DataModule: the optimizer step makes its samples stale
        self.counted: list[tuple[int, dict[str, float]]] = []  # the counters of each step not yet written
        self.counted_since = 0.0
        self.automatic_optimization = False

    # 2. the step -----------------------------------------------------------------------------------
    def training_step(self, batch: Rollout | ExactTarget, batch_idx: int) -> Tensor:
        with in_step(self):
            opt = self.optimizers()
            opt.zero_grad()
            loss = check_finite(self.backward_loss(batch), "loss")
            self.check_generator(batch)
            check_gradients(self.network.trainable_parameters())
            if self.grad_clip is not None:
                self.clip_gradients(opt, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
            opt.step()
            if self.lr_schedulers() is not None:  # manual optimization: Lightning does not step it
                self.lr_schedulers().step()
        if self.rollouts is not None:
            self.rollouts.stale = True
            # every step, whatever log_every_n_steps (the x-axis of cost); written in batches (log_counts)
            if not self.counted:
                self.counted_since = time.monotonic()
            self.counted.append((self.trainer.global_step - 1, {k: float(v) for k, v in self.rollouts.counts.items()}))
        if is_logging_step(self.trainer):
            if self.counted and time.monotonic() - self.counted_since > COUNTS_EVERY_S:
                self.log_counts()
            self.log("train/loss", loss, batch_size=1)
            if self.micro_batches == "auto":  # how the budget split this step
                self.log("train/micro_batches", float(self.used_micro_batches), batch_size=1)
            gap = generator_logprob_gap(batch)
            if gap is not None:
                self.log("train/generator_logprob_gap", gap, batch_size=1)
        return loss

    def log_counts(self) -> None:
        """Write the counters of the steps since the last write (``pref/queries``, ``gen/tokens``) to the loggers,
        in one request where the logger takes many steps (``MLFlowLogger.log_steps``). The step calls it on a
        logging step once its oldest unwritten step is ``COUNTS_EVERY_S`` old (a request per logging step cost
        a fast tabular run 50% more time: 2000 steps in 26 s instead of 17.5), and a checkpoint and the end
        of training always do."""
        counted, self.counted = self.counted, []
        for logger in self.loggers if counted else ():
            if hasattr(logger, "log_steps"):
                logger.log_steps(counted)
            else:
                for step, metrics in counted:
                    logger.log_metrics(metrics, step=step)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.log_counts()  # a resumed run starts after the checkpoint: what came before it is written

    def on_train_end(self) -> None:
        self.log_counts()

    def backward_loss(self, batch: Rollout | ExactTarget) -> Tensor:
        """Backward the batch's loss; returns it, detached."""
        if isinstance(batch, ExactTarget):  # one SGD step of lr 1 on ½‖θ − θ*‖² lands on θ*
            loss = 0.5 * (self.network.logits - batch.target).pow(2).sum()
            self.manual_backward(loss)
            return loss.detach()
        n, slices = len(batch), self.slices(batch)
        self.used_micro_batches = len(slices)
        if len(slices) == 1:
            loss = self.micro_batch_loss(batch)
            self.manual_backward(loss)
            return loss.detach()
        total, logps = 0.0, []
        for rows in slices:
            part = batch.select(rows)
            # its share of the prompts: every loss is a mean over prompt rows (weights scaled over the whole step,
            # Rollout.weight), so the accumulated gradient is the batch's
            loss = self.micro_batch_loss(part) * (len(rows) / n)
            self.manual_backward(loss)
            total = total + loss.detach()
            logps.append(part.policy_logp)
        if batch.policy_logp is None:
            batch.policy_logp = torch.cat(logps)
        return total

    def check_generator(self, batch) -> None:
        """A generator with its own copy of the weights (vLLM) checks, after it pushed them, that its samples'
        log-probs are the training model's (π_t, from this step's first forward), before the step is taken."""
        check = getattr(getattr(self.rollouts, "generator", None), "check_logprob_gap", None)
        if check is not None and getattr(self.rollouts.generator, "gap_due", False):
            tokens = self.network.response_mask(batch.responses).sum(-1) if isinstance(batch, Rollout) else None
            gap = generator_logprob_gap(batch, tokens)
            check(None if gap is None else float(gap), precision=str(self.trainer.precision),
                  step=self.trainer.global_step + 1)

    def slices(self, batch: Rollout) -> list[Tensor]:
        """The prompt rows of each micro-batch: ``micro_batches`` equal slices, or with ``auto`` consecutive rows
        packed into ``memory_budget`` bytes by the network's estimate (``scoring_bytes``), one row at least."""
        n = len(batch)
        if self.micro_batches != "auto":
            if n < self.micro_batches:
                raise ValueError(f"policy.micro_batches={self.micro_batches} exceeds the {n} prompts of a step (per process)")
            return list(torch.arange(n).tensor_split(self.micro_batches))
        cost = self.network.scoring_bytes(batch.prompt, batch.responses).tolist()
        if max(cost) > self.memory_budget and not self._warned_budget:
            self._warned_budget = True
            rank_zero_warn(f"policy.memory_budget_gb={self.memory_budget / 1e9:g}: one prompt's {batch.responses.shape[1]} "
                           f"responses need an estimated {max(cost) / 1e9:.3g} GB to score, and a step splits by prompts; "
                           "such a prompt gets a micro-batch of its own")
        slices, start, used = [], 0, 0.0
        for i, c in enumerate(cost):
            if i > start and used + c > self.memory_budget:
                slices.append(torch.arange(start, i))
                start, used = i, 0.0
            used += c
        return slices + [torch.arange(start, n)]

    _warned_budget = False

    def micro_batch_loss(self, rollout: Rollout) -> Tensor:
        logp = self.network.response_log_probs(rollout.prompt, rollout.responses, reduction=rollout.reduction)
        if rollout.policy_logp is None:  # the first forward on a rollout is at π_t: keep it for the round
            rollout.policy_logp = logp.detach()
        return self.algorithm.loss(rollout, logp)

    # Lightning --------------------------------------------------------------------------------------
    def configure_optimizers(self):
        params = self.network.trainable_parameters()
        if not self.sampled:
            return torch.optim.SGD(params, lr=1.0)  # lands exactly on the closed-form iterate
        optimizer = self.optimizer_factory(params)
        if self.lr_schedule != "constant":  # transformers' schedules, over the run's optimizer steps
            from transformers import get_scheduler

            schedule = get_scheduler(self.lr_schedule, optimizer, num_warmup_steps=self.warmup_steps,
                                     num_training_steps=self.trainer.max_steps,
                                     scheduler_specific_kwargs=self.lr_schedule_kwargs)
        elif self.warmup_steps:  # linear warmup over the first warmup_steps optimizer steps, then constant
            n = self.warmup_steps
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / n))
        else:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def configure_model(self) -> None:
        """Under ``ModelParallelStrategy`` (conf/trainer/fsdp.yaml) the network shards itself (FSDP2)."""
        if self.device_mesh is not None:
            if not hasattr(self.network, "shard"):
                raise ValueError(f"trainer=fsdp shards a causal LM; {type(self.network).__name__} cannot be sharded")
            self.network.shard(self.device_mesh)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Create the snapshots a checkpoint holds so ``load_state_dict`` fills them. A sharded checkpoint's
        weights are loaded by the strategy, before this hook (``lit_nash.sharding``): no ``state_dict`` here."""
        if "state_dict" in checkpoint:
            self.network.register_checkpoint(checkpoint["state_dict"], prefix="network.")


def micro_batch_setting(micro_batches: int | str, memory_budget_gb: float | None) -> tuple[int | str, float | None]:
    """(``micro_batches``, the budget in bytes): a count >= 1, or "auto" with a budget in GB (10⁹ bytes)."""
    if micro_batches == "auto":
        if memory_budget_gb is None:
            raise ValueError("policy.micro_batches=auto splits each step to fit policy.memory_budget_gb, which is null: "
                             "set it, e.g. policy.memory_budget_gb=4")
        return "auto", positive("policy.memory_budget_gb", memory_budget_gb) * 1e9
    if memory_budget_gb is not None:
        raise ValueError(f"policy.memory_budget_gb={memory_budget_gb} is read only with policy.micro_batches=auto, and "
                         f"policy.micro_batches={micro_batches}: set micro_batches=auto, or memory_budget_gb=null")
    if isinstance(micro_batches, str):
        raise ValueError(f"policy.micro_batches must be an integer >= 1 or auto, got {micro_batches!r}")
    return integer("policy.micro_batches", micro_batches, 1, "or auto"), None


def generator_logprob_gap(batch, tokens: Tensor | None = None) -> Tensor | None:
    """Mean |log π_gen − log π_t| over the responses the generator sampled from the policy: how far the
    generator's log-probs (vLLM's kernels, its dtype) are from the training model's, which the losses use.
    With ``tokens`` (N, m), the responses' token counts, per token (summed log-probs divided by them)."""
    if not isinstance(batch, Rollout) or batch.generator_logp is None or batch.policy_logp is None:
        return None
    diff = (batch.generator_logp - batch.policy_logp.to(batch.generator_logp)).abs()
    if tokens is not None and batch.reduction == "sum":
        diff = diff / tokens.to(diff).clamp(min=1)
    diff = diff[torch.isfinite(diff)]
    return diff.mean() if diff.numel() else None


# 1. the data ----------------------------------------------------------------------------------------------
class _Prompts(IterableDataset):
    """All prompts every step, or ``per_step`` of them drawn without replacement, each played ``plays`` times
    (rows with independent samples); the same prompts for ``repeat`` consecutive steps (EGPO's and Nash-MP's
    calls of one iteration) and, in iterative mode, for ``epochs_per_round`` of those, the first step of a
    round flagged ``new_round``.

    Round r draws from its own generator seeded with (seed, r), not from torch's global RNG: Lightning
    fetches a batch ahead, so global draws here would interleave with the step's sampling differently
    after a resume. Keyed by r, a resumed stream (``start`` = batches already trained) is the same stream.
    """

    def __init__(self, num_prompts: int, per_step: int | None, epochs_per_round: int, seed: int, start: int,
                 rank: int = 0, world_size: int = 1, repeat: int = 1, plays: int = 1):
        self.num_prompts, self.per_step, self.epochs = num_prompts, per_step, epochs_per_round
        self.seed, self.start, self.rank, self.world, self.repeat = seed, start, rank, world_size, repeat
        self.plays = plays
        if per_step is not None and per_step < num_prompts and per_step * world_size > num_prompts:
            raise ValueError(
                f"rollout.prompts_per_step={per_step} per process × {world_size} processes exceeds the "
                f"{num_prompts} prompts; lower prompts_per_step"
            )

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        i = self.start
        while True:
            batch = i // self.repeat
            r = batch // self.epochs
            if self.per_step is None or self.per_step >= self.num_prompts:
                prompt = torch.arange(self.num_prompts)
                if self.num_prompts >= self.world:  # else (a one-prompt matrix game) every rank plays them all
                    prompt = prompt[self.rank :: self.world]
            else:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + r)
                share = torch.randperm(self.num_prompts, generator=g)[self.rank * self.per_step :]
                prompt = share[: self.per_step].sort().values
            yield {"prompt": prompt.repeat_interleave(self.plays), "new_round": torch.tensor(batch % self.epochs == 0)}
            i += 1


class RolloutDataModule(L.LightningDataModule):
    """Prompt indices from a DataLoader, rollouts made on the fly (see the module docstring). ``prompts`` is
    the prompt list of a dataset (None for a game, whose prompts the policy network has)."""

    def __init__(self, num_prompts: int, prompts_per_step: int | None = None, epochs_per_round: int = 1,
                 seed: int = 0, prompts: list | None = None, plays_per_prompt: int = 1):
        super().__init__()
        if prompts_per_step is not None and (not is_integer(prompts_per_step) or prompts_per_step < 1):
            raise ValueError(f"rollout.prompts_per_step must be an integer >= 1 or null (all prompts), got {prompts_per_step}")
        self.epochs_per_round = integer("rollout.epochs_per_round", epochs_per_round, 1)
        # sampled play: every prompt of a step is played this many times, each with its own samples. A game has one
        # or a few prompts where a paper's batch has hundreds: this gives a step on a game the papers' batch shape
        self.plays_per_prompt = integer("rollout.plays_per_prompt", plays_per_prompt, 1, "plays of each prompt per step")
        self.num_prompts, self.seed, self.prompts = num_prompts, seed, prompts
        self.prompts_per_step = None if prompts_per_step is None else int(prompts_per_step)
        self.algorithm = self.rollouts = None
        self.exact = False  # exact play: the algorithm's closed-form step through the rollout service's exact win rates
        self.round: Rollout | None = None  # the current round's rollout (iterative mode)
        self._placed = False

    def attach(self, algorithm, rollouts: Rollouts | None = None, exact: bool = False) -> None:
        """What makes a batch: the ``Rollouts`` service, which samples and labels (sampled play) or, with
        ``exact``, answers the exact win rates the algorithm's closed-form step reads (``Rollouts.win_rates``);
        both count their preference queries."""
        self.algorithm, self.rollouts, self.exact = algorithm, rollouts, bool(exact)

    @property
    def sampled(self) -> bool:
        return self.rollouts is not None and not self.exact

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        # batches already trained: `processed` counts a batch once its training step ran, so it is exact both for
        # a checkpoint written at the end of fit and for one written in on_train_batch_end (before `completed` moves)
        done = trainer.fit_loop.epoch_loop.batch_progress.total.processed if trainer else 0
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        repeat = self.algorithm.prompt_repeat(self.sampled) if self.algorithm is not None else 1
        prompts = _Prompts(self.num_prompts, self.prompts_per_step if self.sampled else None, self.epochs_per_round,
                           self.seed, done, rank, world, repeat, self.plays_per_prompt if self.sampled else 1)
        # its own generator: a DataLoader iterator otherwise draws its base seed from torch's global RNG,
        # and a resumed run creates one more iterator than an uninterrupted one
        return DataLoader(prompts, batch_size=None, generator=torch.Generator().manual_seed(self.seed))

    def on_after_batch_transfer(self, batch: dict[str, Tensor], dataloader_idx: int) -> Rollout | ExactTarget:
        """The step's batch, made now, with the weights the step starts from."""
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return batch
        module = trainer.lightning_module
        with in_step(module), trainer.profiler.profile("rollout"):
            if self.exact:  # every process takes the same whole step: its queries are counted once, not summed
                module.rollouts = self.rollouts
                with self.rollouts.counting() as new:
                    target = self.algorithm.exact_step(module.network, self.rollouts.win_rates)
                self.rollouts.count(new)
                return ExactTarget(check_finite(target, "policy update"))
            if not self._placed:  # the preference model runs where the policy runs, unless pinned elsewhere
                if isinstance(self.rollouts.preference, torch.nn.Module):
                    self.rollouts.preference.to(module.device)
                module.rollouts, self._placed = self.rollouts, True
            new_round = bool(batch["new_round"]) or not self.algorithm.uses_rounds or self.epochs_per_round == 1
            new = {}
            if new_round or self.round is None:
                with self.rollouts.recording() as generated, self.rollouts.counting() as new:
                    self.round = self.algorithm.rollout(self.rollouts, batch["prompt"])
                if self.round.generator_logp is None:
                    self.round.generator_logp = self.rollouts.generator_log_probs(self.round, generated)
            # every step, so that every process reduces in step (a round's later epochs add nothing)
            self.rollouts.count(new, lambda t: trainer.strategy.reduce(t.to(module.device), reduce_op="sum").cpu())
            return self.round

    def state_dict(self) -> dict[str, Any]:
        """The run's counters (``pref/queries``, ``gen/tokens``) and the current round's rollout, so that a
        resume mid-round trains on it and the counters go on from where they were."""
        state = {"counts": dict(self.rollouts.counts)} if self.rollouts is not None else {}
        if self.round is not None and self.epochs_per_round > 1:
            state["round"] = self.round.to_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "round" in state_dict:
            self.round = Rollout.from_state(state_dict["round"])
        if "counts" in state_dict and self.rollouts is not None:
            self.rollouts.counts.update(state_dict["counts"])


def prompt_dataset(path: str, column: str = "prompt", split: str = "train", subset: str | None = None,
                   max_prompts: int | None = None, prompts_per_step: int | None = 8, epochs_per_round: int = 1,
                   seed: int = 0, plays_per_prompt: int = 1) -> RolloutDataModule:
    """A ``RolloutDataModule`` over a prompt dataset (``lit_nash.data.load_prompts``); the policy network reads
    the prompts from its ``.prompts``, batches are indices."""
    from lit_nash.data import load_prompts

    prompts = load_prompts(path, column=column, split=split, subset=subset, max_prompts=max_prompts)
    return RolloutDataModule(len(prompts), prompts_per_step, epochs_per_round, seed, prompts=prompts,
                             plays_per_prompt=plays_per_prompt)
