# Hydra finds the configs as the package lit_nash.conf (pyproject maps conf/ there).
