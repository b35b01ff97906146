"""Training of the world model: clips through the spatial memory, codec, teacher, distilled student, DDP.

Stages, each a resumable run under ``torchrun`` (``worldenv train <stage>``):

1. ``data``: render training clips (reference view, targets, memory warps) into a cache.
2. ``codec``: the RGB-D codec and the warp blend (:mod:`worldenv.train.codec`).
3. ``teacher``: a multi-step flow-matching DiT (:mod:`worldenv.train.teacher`).
4. ``student``: the few-step causal generator the environment runs, regression on teacher
   ODE trajectories then DMD with self-forcing rollouts (:mod:`worldenv.train.student`).
"""
