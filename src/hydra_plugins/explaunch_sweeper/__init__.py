"""explaunch's Hydra sweeper plugin (found by Hydra through the ``hydra_plugins`` namespace package)."""
