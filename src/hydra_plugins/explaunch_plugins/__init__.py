"""explaunch's Hydra plugins: the sweeper and the submitit launchers (found through the ``hydra_plugins``
namespace package, as Hydra requires)."""
