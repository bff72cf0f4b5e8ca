"""The framework every analysis runs in: the registry of analyses and their parameters, the runner that
saves results and figures, the subject (a model and its data) and the helpers the analyses share."""
