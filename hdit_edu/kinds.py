"""The allowed values of every "kind" field of a config, named once (§4–5, Tables 1, 2, 6).

A leaf module: the configs validate against these tuples, and the modules that implement the
kinds (``diffusion``, ``layers``, ``attention``, ``hourglass``) name their choices from them,
without importing the configs.
"""

ARCHS = ("hdit", "dit")  # the hourglass (§4) or the DiT-B/4 baseline (R1/R2, §5.2)
# A level's attention (§4.3; Table 1 B1/B2); "none": its layers are feed-forward only.
ATTENTION_KINDS = ("global", "neighborhood", "shifted-window", "none")
FFN_KINDS = ("geglu", "gelu")  # the feed-forward kind (Fig. 5; Table 1 step C)
# Axial RoPE (§4.2, step D), a learned additive table (A–C), or both (issue 29's test arm).
POS_EMB_KINDS = ("rope", "additive", "rope+additive")
ROPE_POS_EMBS = ("rope", "rope+additive")  # the kinds with RoPE in the attention
ADDITIVE_POS_EMBS = ("additive", "rope+additive")  # the kinds with a table added after patching
# RoPE's frequency range (rope.rope_freq_scale): "image" = π … 10π per unit of the [-1, 1]
# image (the paper's and k-diffusion's), "grid" = scaled to each level's training token grid so
# that no frequency turns by more than π per token.
ROPE_FREQS = ("image", "grid")
SKIP_KINDS = ("lerp", "add", "concat")  # how a level merges its skip (eq. 6, Table 2)
LOSS_WEIGHTINGS = ("snr", "min-snr", "soft-min-snr", "karras")  # App. B, eq. 7–9
SIGMA_DENSITIES = ("lognormal", "cosine-interpolated")  # Table 6 "Sigma Sampling Density"
# The diffusion process: EDM's continuous σ (§3.1, the paper's trainer) or DiT's discrete-time
# DDPM with learned variance (baseline R1, §5.2; hdit_edu.ddpm).
DIFFUSION_PROCESSES = ("edm", "ddpm")
PRECISIONS = ("bf16", "fp32")
# Activation checkpointing of training (torch.utils.checkpoint): none, one per level (only each
# level's input is kept; the level is recomputed in the backward), or one per transformer layer.
CHECKPOINTING_KINDS = ("none", "level", "layer")
