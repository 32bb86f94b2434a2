"""Mask builders, one module each: ``flow_static`` (MonST3R's flow-residual motion mask,
:mod:`.flow_static`), ``user_masks`` (a PNG folder, :mod:`.user_masks`) and ``sam2_refine`` (the flow
mask refined by the SAM2 video predictor, optional extra, :mod:`.sam2_refine`)."""
