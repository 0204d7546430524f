"""The progress bars of ``lit_nash.progress`` on a max-steps run (issue 17.2): optimizer steps out of
max_steps and no epoch, both the rich bar and the tqdm one; round-off below 0 of a gap shows as 0."""

from functools import partial

import lightning as L
import pytest
import torch

from lit_nash.algorithms import MPO
from lit_nash.build import assemble
from lit_nash.games import comal_cycle
from lit_nash.metrics import GameMetrics
from lit_nash.policy import TabularPolicy
from lit_nash.preference import GameOracle
from lit_nash.progress import STEPS, RichGapBar, TQDMGapBar
from lit_nash.tracking import shown, summary_line


@pytest.mark.parametrize("bar_type", [RichGapBar, TQDMGapBar])
def test_the_bar_counts_optimizer_steps_out_of_max_steps(bar_type, tmp_path):
    game = comal_cycle()
    run = assemble(TabularPolicy(game=game), MPO(), GameOracle(game), sampled=False, game=game)
    bar = bar_type()
    trainer = L.Trainer(max_steps=7, logger=False, enable_checkpointing=False, enable_model_summary=False,
                        default_root_dir=tmp_path, log_every_n_steps=1, callbacks=[run.algorithm, run.metrics, bar])
    trainer.fit(run.policy, datamodule=run.data)
    if bar_type is RichGapBar:
        (task,) = bar.progress.tasks
        assert (task.description, task.completed, task.total) == (STEPS, 7, 7)
    else:
        assert (bar.train_progress_bar.desc, bar.train_progress_bar.n, bar.train_progress_bar.total) == (f"{STEPS}: ", 7, 7)
    assert "Epoch" not in str(bar.get_metrics(trainer, run.policy))


def test_round_off_below_zero_of_a_non_negative_metric_shows_as_zero():
    assert shown("game/kl_to_ne", -5.55e-17) == 0.0 and shown("duality_gap", -1e-9) == 0.0
    assert shown("game/exploitability", -0.3) == -0.3  # not round-off: shown as it is
    assert shown("train/loss", -5.55e-17) == -5.55e-17  # a loss may be negative
    line = summary_line({"algo": "mpo", "game": "g", "seed": "0"}, 10, 1.0,
                        {"game/kl_to_ne": -5.55e-17, "train/loss": -0.5}, None, None)
    assert "game/kl_to_ne=0 " in line and "train/loss=-0.5" in line


def test_the_summary_line_gives_the_pairs_beside_the_evaluation_interval():
    """16 pairs that all win read 1.000 ± 0.000: the line says how many pairs that rests on."""
    import torch

    from lit_nash.evaluation import WinRate

    rates = {"ref": WinRate.of(torch.ones(4, 4)), "snapshot": WinRate.of(torch.tensor([0.0, 1.0] * 8))}
    line = summary_line({"algo": "egpo", "data": "prompts", "seed": "0"}, 6, 1.0, {"train/loss": 0.5}, None, None, rates)
    assert line.endswith("| train/loss=0.5 | eval/win_rate_vs_ref=1.000 ± 0.000 (16 pairs) "
                         "eval/win_rate_vs_snapshot=0.500 ± 0.253 (16 pairs)")
