"""hdit-edu: the Hourglass Diffusion Transformer (Crowson et al., ICML 2024), to read and run.

Modules mirror the paper (see docs/ARCHITECTURE.md): ``diffusion`` (§3.1, App. B),
``sampling`` (§5.1), ``layers`` / ``rope`` / ``attention`` (§4.2–4.3, App. C), ``hourglass``
(§4.1), ``dit`` (the DiT-B/4 baseline), ``models`` (building either), ``configs`` (the config
schema), ``presets`` (the named models of §5.2 and Table 6: ``get_config("E")``), ``flops``
(App. A), ``data`` and ``toy``, ``training`` and ``checkpoints``, ``ablation`` (Tables 1, 2,
5), ``resolution`` (sampling at another size), ``evaluation`` (§5.1).
"""

from .configs import Config, DiffusionConfig, LevelConfig, MappingConfig, ModelConfig
from .models import build_model

__version__ = "0.1.0"

__all__ = [
    "Config",
    "DiffusionConfig",
    "LevelConfig",
    "MappingConfig",
    "ModelConfig",
    "build_model",
    "__version__",
]
