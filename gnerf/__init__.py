"""gnerf: curvature-aware (ESGD-Max) training of neural fields.

Implements "Preconditioners for the Stochastic Training of Neural Fields"
(Chng, Saratchandran, Lucey).
"""

__version__ = "0.1.0"
