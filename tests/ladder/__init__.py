"""The correctness ladder (docs/architecture.md), rungs 2-4 and the text rung; rung 1 (closed-form dynamics
against theory) is each algorithm's own tests/algorithms/test_<name>.py:

2. test_losses.py           the practical loss with exact expectations reproduces the closed-form step
3. test_sampled_play.py     the same loss on sampled responses drives a tabular policy's exact gap down
4. test_token_game.py       the same loss on a real causal LM drives its exact gap on a token game down
   test_text_preference.py  on text, against a real reward model, the LM's win rate over its reference rises
"""
