"""Searching a trained super-network: the multi-objective searchers and the Pareto set."""
