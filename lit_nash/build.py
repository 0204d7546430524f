"""The build edge: the only module that calls ``instantiate``. Every command builds the parts of a run
from its config here (``fit``, ``eval``, ``bench``, ``train_preference``); everything below receives built
objects.

A run is: a game (or none, for a prompt dataset), the prompts' DataModule, the policy network (its
reference and snapshots inside), its generator, the preference model, the algorithm, the policy module
that trains the network, the rollout service that wires them, and the exact metrics on a game.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

TRAINING_KEYS = ("optimizer", "warmup_steps", "grad_clip", "micro_batches", "memory_budget_gb", "iteration_steps",
                 "lr_schedule", "lr_schedule_kwargs")  # the policy module's, not the network's


def build_game(cfg: DictConfig):
    return instantiate(cfg.game) if cfg.get("game") is not None else None


def build_data(cfg: DictConfig, game, choices: dict | None = None):
    """The DataModule; a run takes its prompts from exactly one source: a game or a dataset."""
    choices = choices or {}
    if (game is None) != ("path" in cfg.data):
        raise ValueError(
            "a run takes its prompts from a game (game=<name> with data=game) or from a dataset (~game with "
            f"data=prompts data.path=<file>, as task=text does); got game={choices.get('game')} data={choices.get('data')}"
        )
    return instantiate(cfg.data, **({} if game is None else {"num_prompts": game.num_prompts}))


def build_tiny_model(cfg: DictConfig, game) -> None:
    """An LM task on a game without a model path gets a random-init tiny LM for the game's words, built in the
    run folder; its path is written into ``cfg`` (the token game's oracle reads its tokenizer, checkpoints name it)."""
    if cfg.policy.get("model_path", "") is not None:
        return
    if game is None:
        raise ValueError("policy.model_path is required when the prompts come from a dataset (game=null)")
    if not hasattr(game, "vocabulary"):
        raise ValueError(f"a language-model policy plays a token game or a prompt dataset, and game={game.name} is a "
                         "matrix game: use task=token_game (a tiny LM on the token game), task=text with "
                         "policy.model_path=<model>, or policy=tabular for matrix games")
    from lit_nash.models import tiny_causal_lm

    with open_dict(cfg):
        cfg.policy.model_path = str(tiny_causal_lm(Path(cfg.output_dir) / "tiny_lm", game.vocabulary(), seed=cfg.seed))


def build_preference(node: DictConfig, game, choice: str | None = None):
    """The preference model of a ``preference`` config node; exact oracles read the game."""
    build = instantiate(node, _partial_=True)  # built objects go in through partials, not merged into the config
    if "game" in inspect.signature(build.func).parameters:
        if game is None:
            raise ValueError(
                f"preference={choice} is a game's exact oracle and there is no game; with a "
                "prompt dataset use a preference model: preference=pairwise, bradley_terry, gpm or judge"
            )
        return build(game=game)
    return build()


def build_network(cfg: DictConfig, game, data):
    """The policy network with its reference, playing the game's prompts or the dataset's."""
    resolved = OmegaConf.to_container(cfg.policy, resolve=True)
    node = OmegaConf.create({k: v for k, v in resolved.items() if k not in TRAINING_KEYS})
    sources = {"game": game} if game is not None else {"prompts": data.prompts}
    return instantiate(node, _partial_=True)(**sources)


def build_trained_network(checkpoint: dict[str, Any], command: str = "eval"):
    """The policy network a ``fit`` checkpoint holds, rebuilt from the config it carries and loaded with its
    weights (snapshots included): ``(network, config, game)``. ``eval`` and ``export`` read policies this way.
    A LoRA checkpoint's base model is checked (path, content hash) before anything is built."""
    from lit_nash.policy.base_model import check, recorded
    from lit_nash.tracking import CONFIG_KEY

    cfg = OmegaConf.create(checkpoint[CONFIG_KEY])
    check(recorded(checkpoint), cfg.policy.get("model_path"), command)
    game = build_game(cfg)
    network = build_network(cfg, game, build_data(cfg, game))
    state = {k[len("network."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("network.")}
    network.register_checkpoint(state)
    network.load_state_dict(state)
    return network, cfg, game


def build_generator(cfg: DictConfig, network):
    """The generator that samples from the network: the configured one for an LM, the tabular sampler for a
    tabular policy."""
    from lit_nash.generation import TabularSampler

    if not hasattr(network, "decode"):
        return TabularSampler(network)
    return instantiate(cfg.generator, _partial_=True)(network=network)


@dataclass
class Run:
    game: Any
    data: Any
    network: Any
    generator: Any
    preference: Any
    algorithm: Any
    policy: Any
    rollouts: Any
    metrics: Any
    evaluation: Any


def assemble(network, algorithm, preference, data=None, *, sampled: bool = True, optimizer=None, generator=None,
             game=None, metrics_tau: float = 0.1, evaluation=None, **training) -> Run:
    """Wire built parts into a run (what ``build_run`` does after building them from a config; the entry point
    for runs built in Python): the DataModule makes the algorithm's rollouts through the rollout service
    (sampled play) or its exact step (exact play); evaluation samples through the same service.

    ``data`` defaults to every prompt of the network each step; ``optimizer`` is a partial called with the
    trainable parameters (sampled play); ``training`` goes to ``PolicyModule`` (``warmup_steps``,
    ``grad_clip``, ``micro_batches``)."""
    from lit_nash.engine import PolicyModule, RolloutDataModule
    from lit_nash.generation import HFGenerator, TabularSampler
    from lit_nash.metrics import GameMetrics
    from lit_nash.rollout import Rollouts, reads_text

    if data is None:
        data = RolloutDataModule(network.num_prompts)
    if reads_text(preference) and not hasattr(network, "decode"):
        raise ValueError(f"the preference model ({type(preference).__name__}) judges text and the "
                         f"{type(network).__name__} policy writes none: use a language-model policy")
    if hasattr(preference, "check_context") and hasattr(network, "prompt_text"):  # every model that reads the text
        preference.check_context([network.prompt_text(i) for i in range(network.num_prompts)], network.max_new_tokens)
    if generator is None:
        generator = HFGenerator(network) if hasattr(network, "decode") else TabularSampler(network)
    if hasattr(generator, "check_algorithm"):  # what a generator cannot sample is refused now, not at step 1
        generator.check_algorithm(algorithm)
    policy = PolicyModule(network, algorithm, optimizer, sampled=sampled, **training)
    rollouts = Rollouts(network, generator, preference)
    if sampled:
        data.attach(algorithm, rollouts=rollouts)
    else:
        if not hasattr(preference, "win_rates") or not hasattr(network, "logits"):
            raise ValueError("rollout=exact plays a tabular policy against a game's exact oracle; "
                             "use rollout=sampled for a language model")
        data.attach(algorithm, rollouts=rollouts, exact=True)
    metrics = GameMetrics(game.P, tau=metrics_tau) if game is not None else None
    if evaluation is not None:
        evaluation.attach(rollouts)
    return Run(game, data, network, generator, preference, algorithm, policy, rollouts, metrics, evaluation)


def regularization_tau(algorithm) -> float:
    """τ of ``game/reg_duality_gap`` when ``metrics.tau`` is null: the algorithm's ``regularization`` (the τ its
    step and loss share), 0.1 for an unregularized algorithm."""
    tau = getattr(algorithm, "regularization", None)
    return 0.1 if tau is None else float(tau)


def build_run(cfg: DictConfig, choices: dict | None = None, evaluate: bool = True) -> Run:
    """Every part of a run, built from its config and wired (``assemble``)."""
    from lit_nash.engine import MODES
    from lit_nash.evaluation import PeriodicEval
    from lit_nash.validate import choice as check_choice

    choices = choices or {}
    check_choice("rollout.mode", cfg.rollout.mode, MODES)
    game = build_game(cfg)
    data = build_data(cfg, game, choices)
    build_tiny_model(cfg, game)
    preference = build_preference(cfg.preference, game, choices.get("preference"))
    algorithm = instantiate(cfg.algo)
    network = build_network(cfg, game, data)
    if hasattr(preference, "prob_text") and not hasattr(network, "decode"):
        raise ValueError(f"preference={choices.get('preference')} judges text and policy={choices.get('policy')} "
                         "writes none: use a language-model policy (task=token_game or task=text)")
    training = {k: cfg.policy[k] for k in TRAINING_KEYS if k in cfg.policy}
    optimizer = instantiate(training.pop("optimizer")) if "optimizer" in training else None
    evaluation = PeriodicEval(**cfg.eval, seed=cfg.seed) if evaluate and cfg.get("eval") and cfg.eval.every_n_steps else None
    if cfg.metrics.tau is None:  # the τ of the game the algorithm solves; written back, so the run's record has it
        cfg.metrics.tau = regularization_tau(algorithm)
    return assemble(network, algorithm, preference, data, sampled=cfg.rollout.mode == "sampled", optimizer=optimizer,
                    generator=build_generator(cfg, network), game=game, metrics_tau=cfg.metrics.tau,
                    evaluation=evaluation, **training)


def build_logger(cfg: DictConfig, **kwargs):
    return instantiate(cfg.logger, **kwargs)


def build_trainer(cfg: DictConfig, **kwargs):
    return instantiate(cfg.trainer, **kwargs)


def build_callbacks(node) -> list:
    """The user's own Lightning callbacks (``callbacks.<name>._target_=...``)."""
    return [instantiate(c) for c in (node or {}).values()]


def check_config(cfg: DictConfig) -> None:
    """What Hydra and Lightning would accept and then run wrongly, refused at start-up with one line: a
    top-level key fit does not know (``+algos=egpo`` trains the default algorithm), what ``lit_nash.preflight``
    checks (values nobody gave, model folders that do not exist, ``generator=vllm`` that cannot run), a step
    count that never ends or is not whole, a zero logging period, a seed numpy refuses, a prompt file that
    cannot be read or is not UTF-8 (``fit`` and ``bench``)."""
    from hydra.core.hydra_config import HydraConfig

    from lit_nash.preflight import check_start
    from lit_nash.tables import check_local_file
    from lit_nash.validate import integer

    command = cfg.get("command") or "fit"
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    name = HydraConfig.get().job.config_name if HydraConfig.initialized() else "fit"
    known = known_keys(name or "fit")
    for override in overrides:
        key, _, value = override.lstrip("+").partition("=")
        if override.startswith("+") and "." not in key and "/" not in key and key not in known:
            import difflib

            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]}={value}?" if close else ""
            raise SystemExit(f"lit_nash {command}: unknown top-level key {key!r} (from {override!r}); {command}'s keys "
                             f"and groups are {', '.join(sorted(known - {'hydra', 'command'}))}{hint}")  # command: the config's own
    check_start(cfg, command)  # values nobody gave, model folders that do not exist, a generator that cannot run
    try:
        integer("trainer.max_steps", cfg.trainer.get("max_steps"), 1, "optimizer steps; -1 would train forever")
        integer("trainer.log_every_n_steps", cfg.trainer.get("log_every_n_steps", 50), 1, "steps between logged metrics")
        integer("seed", cfg.get("seed"), 0, "numpy's range", maximum=2**32 - 1)
        if command == "fit":
            from lit_nash.run_summary import settings

            settings(cfg)  # summary.epsilon and summary.window_fraction
        if OmegaConf.select(cfg, "logger.system_metrics_every", default=None) is not None:
            from lit_nash.validate import positive

            positive("logger.system_metrics_every", cfg.logger.system_metrics_every)
        if OmegaConf.select(cfg, "data.path", default=None):  # a prompt file nobody can read, or not UTF-8
            check_local_file(str(cfg.data.path), "data.path")
    except (ValueError, PermissionError) as e:
        raise SystemExit(f"lit_nash {command}: {e}") from None


def known_keys(name: str) -> set[str]:
    """The top-level keys of the primary config ``conf/<name>.yaml``: its own keys, its groups (``algo``,
    ``task``, ...) and those of the primary configs it extends (bench extends fit)."""
    from importlib.resources import files

    with files("lit_nash.conf").joinpath(f"{name}.yaml").open() as f:
        node = OmegaConf.load(f)
    keys = {str(k) for k in node if k != "defaults"}
    for entry in node.get("defaults", []):
        if isinstance(entry, str):
            keys |= known_keys(entry) if entry != "_self_" else set()
        else:
            keys |= {str(k).removeprefix("override ").removeprefix("optional ").strip().lstrip("/") for k in entry}
    return keys
