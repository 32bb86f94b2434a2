"""Environment variables naming the pair-predictor weights (import-light: read by the stage at registration)."""

#: MonST3R weights (.pth, .safetensors or a folder) when the recipe's ``checkpoint`` is null.
CHECKPOINT_ENV = "MONST3R_CHECKPOINT"
#: DUSt3R weights for the ``dust3r`` pair predictor.
DUST3R_CHECKPOINT_ENV = "DUST3R_CHECKPOINT"
