"""A run's configuration: the schema (schema.py), the named profiles (profiles.py), and how the CLI's options
resolve to one (resolve.py). Everything a caller needs is importable from here."""

from fashion_ensemble.config.profiles import PROFILES, profile
from fashion_ensemble.config.resolve import (
                                             map_members,
                                             override,
                                             parse_duration,
                                             read_config_file,
                                             resolve,
                                             with_augment,
                                             with_precision,
                                             with_time_limit,
                                             with_train,
                                             without_flips,
)
from fashion_ensemble.config.schema import (
                                             ENGINES,
                                             FASHION_MNIST,
                                             MAX_SHIFT,
                                             NAME,
                                             PIPELINES,
                                             PRECISIONS,
                                             PROTOCOLS,
                                             WEIGHTINGS,
                                             AugmentConfig,
                                             BudgetConfig,
                                             DataConfig,
                                             EnsembleConfig,
                                             InitConfig,
                                             MemberConfig,
                                             MemberPlan,
                                             RunConfig,
                                             TrainConfig,
)
from fashion_ensemble.members import GREY, ANNConfig, CNNConfig

__all__ = [
    "PROFILES", "profile",
    "map_members", "override", "parse_duration", "read_config_file", "resolve", "with_augment", "with_precision",
    "with_time_limit", "with_train", "without_flips",
    "ENGINES", "FASHION_MNIST", "MAX_SHIFT", "NAME", "PIPELINES", "PRECISIONS", "PROTOCOLS", "WEIGHTINGS",
    "AugmentConfig", "BudgetConfig", "InitConfig", "DataConfig", "EnsembleConfig", "MemberConfig", "MemberPlan",
    "RunConfig", "TrainConfig", "GREY", "ANNConfig", "CNNConfig",
]
