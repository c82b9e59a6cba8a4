"""Configuration: one strict pydantic model per stage, loaded from YAML.

Each stage's model lives beside the others in this package
(``pipeline.config.<stage>``); :func:`load_config` validates a YAML file against
one of them and reports unknown keys and wrong types with the file name.
"""

from pipeline.config.base import (
    StrictModel,
    config_to_dict,
    deep_merge,
    format_validation_error,
    load_config,
    read_yaml,
    save_config,
)

__all__ = [
    "StrictModel",
    "config_to_dict",
    "deep_merge",
    "format_validation_error",
    "load_config",
    "read_yaml",
    "save_config",
]
