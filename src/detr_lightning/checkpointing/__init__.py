"""Fault tolerance for checkpoints: atomic writes, an always-fresh ``last.ckpt``, ``ckpt_path=last``
and load errors that name the file.

Modules (imported one by one, so that the import-light ones stay light):
  atomic_io  AtomicCheckpointIO: temp file + fsync + os.replace (torch, Lightning)
  callback   BestAndLastCheckpoint: best-by-metric files plus a last.ckpt independent of it
  locate     ckpt_path=last/auto -> the newest last.ckpt of the experiment (stdlib only)
  validate   read a checkpoint safely and name the file, the reason and the fix (torch)
  pretrained model.pretrained=: an official release loaded once, with the same named errors
  init_detector     model.init_detector=: a detector's weights from a Lightning checkpoint (stage 2)
  optimizer_groups  resuming: the checkpoint's optimizer groups must be the ones the config builds
  recipe_record     resuming: overrides of what the checkpoint restores (optimiser, lr schedule) are refused
  net_record        the model.net a checkpoint was trained with; loading warns where it differs
"""
