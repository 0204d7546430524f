# Hydra finds this config group as the package lit_nash.conf.sweep (pyproject maps sweeps/ there): sweep=<name>.
