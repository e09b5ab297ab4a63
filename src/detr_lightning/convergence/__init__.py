"""Convergence levers: extensions that make DETR learn in minutes from random initialisation
(denoising queries, query groups, proposal queries, box refinement, the compact trunk ...).
Each is a component that plugs into the paper's model (:mod:`detr_lightning.detr`) through
small explicit extension points; the paper's package never imports this one."""
