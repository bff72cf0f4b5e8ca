"""Statistics the analyses use, each tested against a ground truth of its own: two-sample tests, Pareto tail
fits, the codes' subspace and PCA, Fisher-Rao geodesics, and synthetic models whose answers are known."""
