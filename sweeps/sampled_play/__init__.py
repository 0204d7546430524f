# Hydra finds this config group as the package lit_nash.conf.sweep.sampled_play (sweep/sampled_play).
