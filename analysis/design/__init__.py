"""``flame design``: simulated studies of candidate designs under a prior law and noise, the
optimiser over designs, and a design written as a plan."""

from analysis.design.command import DESIGN_JSON, design, design_arguments
from analysis.design.plan import design_config, write_design_plan
from analysis.design.search import candidate_runs, candidates, optimise
from analysis.design.simulate import Design, PriorLaw, load_prior, simulate

__all__ = ["design", "design_arguments", "DESIGN_JSON", "design_config", "write_design_plan",
           "candidate_runs", "candidates", "optimise", "Design", "PriorLaw", "load_prior",
           "simulate"]
