"""proxima_actor: run any gymnasium environment as an actor of a proxima learner.

``proxima-actor --learner URL --env ID`` from the command line, or :func:`run` with an env factory for envs that
are not registered with gymnasium. Inference is numpy on the learner's flat weights (:class:`Policy`), with the
same numbers as the Rust actor.
"""

from .client import ActorOptions, Refused, run
from .policy import Policy, PolicyError

__all__ = ["ActorOptions", "Policy", "PolicyError", "Refused", "run"]
__version__ = "0.1.0"
