"""Registry of prediction heads: short name -> head class, and construction with checked hyper-parameters.

Every head follows the protocol of :class:`dor_iqa.DORHead`: ``__init__(in_features, **hparams)``,
``forward(features)``, ``loss(outputs, u)`` with ``u`` in [0, 1], ``predict(outputs)`` a continuous score
on the ``u`` scale (never clamped: ranking metrics use it as is), and ``init_prior(u_train)`` that starts
the output layer at the training targets' location. Baseline heads register themselves with
``@register_head`` (:mod:`baselines.registry`), which also declares their hyper-parameters (type, default,
bounds); the method's own heads, which depend on torch only, are registered here.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from baselines import HEADS
from baselines.registry import HPARAMS, NUM_BINS, HParam, register_head
from dor_iqa.ordinal import DORHead
from dor_iqa.seed_compat import SeedDORHead

__all__ = ["HeadHparamError", "UnknownHeadError", "get_head", "head_hparams", "hparam_problems", "list_heads"]

register_head(num_bins=NUM_BINS, soft_targets=HParam(bool, False))(DORHead)
register_head(num_bins=NUM_BINS, min_score=HParam(float, 0.0), max_score=HParam(float, 1.0),
              ignore_index=HParam(int, 0, optional=True))(SeedDORHead)


class UnknownHeadError(KeyError, ValueError):
    """A head name that is not registered; the message lists the registered names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class HeadHparamError(TypeError, ValueError):
    """A hyper-parameter a head does not accept; the message names the head, the key and the accepted keys."""


def list_heads() -> list[str]:
    """Registered head names, sorted.

    Returns
    -------
    list of str
        E.g. ``['coral', 'corn', 'dor', 'dor-seed', 'emd', 'l1', 'mse', 'sord']``.
    """
    return sorted(HEADS)


def _head_class(name: str) -> type[nn.Module]:
    try:
        return HEADS[name]
    except KeyError:
        raise UnknownHeadError(
            f"unknown head {name!r}; registered heads: {', '.join(list_heads())}. "
            "Fix the name in the grid config, or add a head: a class with @register_head in baselines/."
        ) from None


def head_hparams(name: str) -> dict[str, Any]:
    """Hyper-parameters a head accepts, with their declared defaults (for logging and config validation).

    Parameters
    ----------
    name : str
        Registered head name.

    Returns
    -------
    dict
        ``{hparam: default}`` for every declared hyper-parameter.

    Raises
    ------
    UnknownHeadError
        If ``name`` is not registered.
    """
    _head_class(name)
    return {key: spec.default for key, spec in HPARAMS[name].items()}


def hparam_problems(name: str, hparams: dict[str, Any]) -> dict[str, str]:
    """Why each given hyper-parameter does not fit head ``name``'s declarations: ``{key: reason}`` (empty: fine).

    Examples
    --------
    >>> hparam_problems("sord", {"alpha": 0.0, "sigma": 1.0})
    {'sigma': 'is not declared (declared: num_bins, alpha)', 'alpha': 'must be > 0.0, got 0.0'}
    >>> hparam_problems("dor", {"num_bins": 8})
    {}
    """
    _head_class(name)
    declared = HPARAMS[name]
    problems = {key: f"is not declared (declared: {', '.join(declared) or 'none'})"
                for key in sorted(set(hparams) - set(declared))}
    for key, spec in declared.items():
        problem = spec.problem(hparams[key]) if key in hparams else None
        if problem:
            problems[key] = problem
    return problems


def get_head(name: str, in_features: int, **hparams: Any) -> nn.Module:
    """Build the head registered as ``name``.

    Parameters
    ----------
    name : str
        Registered head name (see :func:`list_heads`).
    in_features : int
        Width of the feature vector the head receives (> 0).
    **hparams
        Head hyper-parameters (see :func:`head_hparams`); defaults fill the rest.

    Returns
    -------
    nn.Module
        The head.

    Raises
    ------
    UnknownHeadError
        If ``name`` is not registered.
    HeadHparamError
        If a hyper-parameter is not accepted by that head.
    ValueError
        If ``in_features`` is not a positive integer, or a head rejects a hyper-parameter's value.
    """
    accepted = head_hparams(name)
    unexpected = sorted(set(hparams) - set(accepted))
    if unexpected:
        raise HeadHparamError(
            f"head {name!r} does not accept hyper-parameter(s) {', '.join(map(repr, unexpected))}; "
            f"accepted: {', '.join(accepted) or '(none)'}."
        )
    problems = hparam_problems(name, hparams)
    if problems:
        raise ValueError(f"head {name!r}: " + "; ".join(f"hyper-parameter {k!r} {v}" for k, v in problems.items()) + ".")
    if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features <= 0:
        raise ValueError(f"head {name!r}: in_features must be a positive integer, got {in_features!r}.")
    return HEADS[name](in_features, **hparams)
