"""Every shipped config composes and instantiates, names are predictable, and every key is documented."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate

from lit_nash.algorithms import ALGORITHMS, Algorithm
from lit_nash.games import MatrixGame, TokenGame

from .cli import REPO

CONF = REPO / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture
def composed():
    """Compose conf/fit.yaml with overrides, with Hydra's runtime config set (for ${hydra:...} keys)."""

    def _compose(*overrides: str):
        with initialize_config_module(config_module="lit_nash.conf", version_base="1.3"):
            cfg = compose("fit", overrides=list(overrides), return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            return cfg

    return _compose


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
    assert cfg.policy.mode == cfg.rollout.mode == option
    assert cfg.data.prompts_per_step == cfg.rollout.prompts_per_step


def test_token_game_task_selects_the_lm_groups(composed):
    cfg = composed("task=token_game")
    assert cfg.game._target_ == "lit_nash.games.token_game"
    assert cfg.policy._target_ == "lit_nash.policy.CausalLMPolicy" and cfg.policy.model_path is None
    assert cfg.preference.tokenizer_path is None  # follows policy.model_path, filled in by fit
    assert cfg.rollout.mode == "sampled"


@pytest.mark.parametrize("path", sorted(CONF.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONF)))
def test_every_config_key_is_commented(path: Path):
    """Each hyperparameter says what it means (and the paper's default) on its own line."""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-", "_target_", "defaults")) or line.startswith(" " * 4):
            continue
        if stripped.endswith(":"):  # a mapping header (trainer:), its keys are commented
            continue
        if path.name == "fit.yaml" and not line.startswith(("command", "seed", "  tau")):
            continue  # the hydra: block and group headers
        assert "#" in line, f"{path.relative_to(CONF)}: no comment on {stripped!r}"
