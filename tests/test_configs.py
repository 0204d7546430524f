"""Every shipped config composes and instantiates, names are predictable, and every key is documented."""

import inspect
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_object, instantiate
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationKeyError

from lit_nash.algorithms import ALGORITHMS, Algorithm
from lit_nash.build import TRAINING_KEYS, assemble, build_data, build_game, build_network, build_preference, build_run
from lit_nash.games import MatrixGame, TokenGame

from .cli import REPO

CONF = REPO / "conf"
SWEEPS = REPO / "sweeps"  # installed as the config group `sweep` (conf/sweep links here for an editable install)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_config(name: str = "fit", overrides=()) -> DictConfig:
    """Compose a primary config of conf/ with overrides, with Hydra's runtime config set (for ${hydra:...})."""
    with initialize_config_module(config_module="lit_nash.conf", version_base="1.3"):
        cfg = compose(name, overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return cfg


@pytest.fixture
def composed():
    """Compose conf/fit.yaml with overrides, with Hydra's runtime config set (for ${hydra:...} keys)."""

    def _compose(*overrides: str):
        return compose_config("fit", overrides)

    return _compose


def target_nodes(node, path: str = ""):
    """(dotted path, node) of every mapping with a ``_target_``, outside the ``hydra`` block."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key in node:
            if not (path == "" and key == "hydra"):
                yield from target_nodes(node._get_node(key), f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            yield from target_nodes(item, f"{path}[{i}]")


def check_targets(cfg: DictConfig) -> list[str]:
    """Every ``_target_`` imports, and accepts the node's keys (bound against its signature, nothing built);
    every interpolation resolves. Returns the checked paths. The policy node's training keys (optimizer,
    warmup, clipping, micro-batches) are the policy module's, not the network's (``lit_nash.build``)."""
    body = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])  # ${hydra:...} still resolves
    OmegaConf.to_container(body, resolve=True)  # a broken interpolation raises here (??? stays ???)
    checked = []
    for path, node in target_nodes(cfg):
        target = get_object(node._target_)
        skip = TRAINING_KEYS if path == "policy" else ()
        kwargs = {k: None for k in node if not str(k).startswith("_") and k not in skip}
        try:
            inspect.signature(target).bind_partial(**kwargs)
        except TypeError as err:
            raise AssertionError(f"{path}: {node._target_} does not take {sorted(kwargs)}: {err}") from None
        checked.append(path)
    return checked


def build_fit(cfg: DictConfig, tracking_uri: str) -> dict:
    """Build the parts of a fit config that need no model files or network, with the arguments fit passes:
    the game, the algorithm, the data, an exact oracle, a tabular policy, a CPU trainer and the logger."""
    built = {"algo": instantiate(cfg.algo)}
    game = built["game"] = build_game(cfg)
    if game is not None and not OmegaConf.missing_keys(cfg.data):
        built["data"] = build_data(cfg, game)
    preference = instantiate(cfg.preference, _partial_=True) if not OmegaConf.missing_keys(cfg.preference) else None
    if game is not None and preference is not None and set(inspect.signature(preference.func).parameters) == {"game"}:
        built["preference"] = build_preference(cfg.preference, game)  # an exact oracle; a model-based one needs its files
        if cfg.policy._target_.endswith(".TabularPolicy") and "data" in built:
            network = build_network(cfg, game, built["data"])
            built["policy"] = assemble(network, built["algo"], built["preference"], built["data"],
                                       sampled=cfg.rollout.mode == "sampled",
                                       optimizer=instantiate(cfg.policy.optimizer)).policy
    if cfg.trainer.get("accelerator") == "cpu" and isinstance(cfg.trainer.get("strategy"), str):
        built["trainer"] = instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False)
    built["logger"] = instantiate(cfg.logger, tracking_uri=tracking_uri, tags={"algo": "x"})
    return built


def test_config_groups_mirror_the_code():
    """Given nash_mp you find lit_nash/algorithms/nash_mp.py, conf/algo/nash_mp.yaml and its test."""
    assert options("algo") == sorted(ALGORITHMS)
    for name in ALGORITHMS:
        assert (REPO / "lit_nash" / "algorithms" / f"{name}.py").exists()
        assert (REPO / "tests" / "algorithms" / f"test_{name}.py").exists()


@pytest.mark.parametrize("name", options("algo"))
def test_every_algo_config_instantiates_its_algorithm(composed, name):
    cfg = composed(f"algo={name}")
    algo = instantiate(cfg.algo)
    assert isinstance(algo, Algorithm) and algo.name == name
    assert set(cfg.algo) - {"_target_"} == set(algo.hparams())


@pytest.mark.parametrize("name", options("game"))
def test_every_game_config_builds_a_valid_game(composed, name):
    game = instantiate(composed(f"game={name}").game)
    assert isinstance(game, (MatrixGame, TokenGame)) and game.num_actions >= 2


@pytest.mark.parametrize("group", ["policy", "preference", "data", "trainer", "logger"])
def test_every_other_option_composes(composed, group, tmp_path):
    for option in options(group):
        cfg = composed(f"{group}={option}")
        assert cfg[group]._target_


@pytest.mark.parametrize("option", options("rollout"))
def test_rollout_options_set_the_mode_of_policy_and_data(composed, option):
    cfg = composed(f"rollout={option}")
    assert cfg.rollout.mode == option
    assert build_run(cfg).policy.sampled == (option == "sampled")  # the policy module's mode follows rollout.mode
    assert cfg.data.prompts_per_step == cfg.rollout.prompts_per_step


def test_token_game_task_selects_the_lm_groups(composed):
    cfg = composed("task=token_game")
    assert cfg.game._target_ == "lit_nash.games.token_game"
    assert cfg.policy._target_ == "lit_nash.policy.causal_lm.CausalLMPolicy" and cfg.policy.model_path is None
    assert cfg.preference.tokenizer_path is None  # follows policy.model_path, filled in by fit
    assert cfg.rollout.mode == "sampled"


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory) -> str:
    """One MLflow store for every logger the config tests build (MLFlowLogger creates it: ~1 s each)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlruns.db"


def tasks_selecting(group: str, option: str) -> list[str]:
    """The presets of conf/task/ whose defaults select group=option (``override /group: option``)."""
    return [p.stem for p in sorted((CONF / "task").glob("*.yaml"))
            if {f"override /{group}": option} in (yaml.safe_load(p.read_text()).get("defaults") or [])]


def conf_files() -> list[Path]:
    """Every YAML under conf/, found by walking it (conf/sweep, a link to sweeps/, is not followed)."""
    return sorted(CONF.rglob("*.yaml"))


@pytest.mark.parametrize("path", conf_files(), ids=lambda p: p.relative_to(CONF).as_posix())
def test_every_conf_file_composes_and_instantiates(path: Path, tracking_uri):
    """A primary config (conf/<name>.yaml, known or new) composes by its name; a group option composes on
    fit as group=option (with the task that selects it, if it reads another group's keys). Every _target_
    imports and takes its keys, every interpolation resolves, and fit's cheap parts are really built."""
    rel = path.relative_to(CONF)
    if len(rel.parts) == 1:
        cfg = compose_config(path.stem)
        checked = check_targets(cfg)
    else:
        group = rel.parent.as_posix()
        cfg = compose_config("fit", [f"{group}={path.stem}"])
        assert cfg.hydra.runtime.choices[group] == path.stem
        try:
            checked = check_targets(cfg)
        except InterpolationKeyError:  # e.g. preference=token_game reads policy.model_path: a task pairs them
            tasks = tasks_selecting(group, path.stem)
            if not tasks:
                raise
            cfg = compose_config("fit", [f"task={tasks[0]}", f"{group}={path.stem}"])
            checked = check_targets(cfg)
    if cfg.get("command") == "fit" or len(rel.parts) > 1:
        assert {"algo", "policy", "trainer", "logger"} <= set(checked)
        built = build_fit(cfg, tracking_uri)
        assert isinstance(built["algo"], Algorithm)
        if len(rel.parts) > 1 and rel.parts[0] in built:  # the option itself was built
            assert built[rel.parts[0]] is not None


def yaml_files_to_comment() -> list[Path]:
    return conf_files() + sorted(SWEEPS.rglob("*.yaml"))


@pytest.mark.parametrize("path", yaml_files_to_comment(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_config_key_is_commented(path: Path):
    """Each hyperparameter says what it means (and the paper's default) on its own line. In sweeps/ every
    key is, at any depth (the swept values under hydra.sweeper.params included)."""
    in_sweeps = SWEEPS in path.parents
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-", "_target_", "defaults")):
            continue
        if line.startswith(" " * 4) and not in_sweeps:
            continue
        if stripped.endswith(":"):  # a mapping header (trainer:), its keys are commented
            continue
        if path.name == "fit.yaml" and not line.startswith(("command", "seed", "  tau")):
            continue  # the hydra: block and group headers
        assert "#" in line, f"{path.relative_to(REPO)}: no comment on {stripped!r}"
