"""genaiops release tooling: experiments, evaluation, gates, images, deployments, traffic."""

__version__ = "0.1.0"
