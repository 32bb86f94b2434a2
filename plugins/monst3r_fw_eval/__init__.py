"""monst3r_fw_eval: evaluation and synthetic scenes, outside the core.

* :mod:`.synth`: synthetic dynamic scenes with exact ground truth (docs/synthetic.md);
* :mod:`.metrics`: depth and camera-pose metrics (docs/evaluation.md); :mod:`.datasets`: dataset
  readers; :mod:`.evaluate`: a run's outputs against a dataset's ground truth;
* :mod:`.cli`: the ``synth``, ``eval``, ``eval-suite``, ``demo`` and ``ablate`` verbs, added to
  ``monst3r-fw`` through the ``monst3r_fw_cli`` entry-point group.

It imports the core (``monst3r_framework``); the core never imports it. Importing this package
is free: submodules load numpy and friends only when imported themselves.
"""
