# Hydra finds this config group as the package lit_nash.conf.task_policy.
