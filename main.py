"""explaunch's entry point: Hydra composes conf/, explaunch.task.run does the job."""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from explaunch import task
from explaunch.config import register_configs

register_configs(Path(__file__).parent)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict[str, object]:
    return task.run(cfg)


if __name__ == "__main__":
    from explaunch.preflight import check_command_line

    check_command_line(Path(__file__).parent / "conf", "config")
    main()
