"""Prediction heads by registry name: construction with checked hyper-parameters.

Every head follows the protocol of :class:`dor_iqa.DORHead`: ``__init__(in_features, **hparams)``,
``forward(features)``, ``loss(outputs, u)`` with ``u`` in [0, 1], ``predict(outputs)`` a continuous score
on the ``u`` scale (never clamped: ranking metrics use it as is), and ``init_prior(u_train)`` that starts
the output layer at the training targets' location. The registry (:mod:`baselines.registry`) declares every
head's hyper-parameters (type, default, bounds) without torch, so the names and checks here need none;
only :func:`get_head` imports the classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from baselines.registry import HPARAMS, check_hparams, hparam_problems, load_heads

if TYPE_CHECKING:
    from torch import nn

__all__ = ["HeadHparamError", "UnknownHeadError", "get_head", "head_hparams", "hparam_problems", "list_heads"]


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
    return sorted(HPARAMS)


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
    if name not in HPARAMS:
        raise UnknownHeadError(
            f"unknown head {name!r}; registered heads: {', '.join(list_heads())}. "
            "Fix the name in the grid config, or add a head: a class with @register_head() in baselines/ and "
            "its hyper-parameters in baselines/registry.py."
        )
    return {key: spec.default for key, spec in HPARAMS[name].items()}


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
        If ``in_features`` is not a positive integer, or a hyper-parameter's value is outside its declaration.
    """
    accepted = head_hparams(name)
    unexpected = sorted(set(hparams) - set(accepted))
    if unexpected:
        raise HeadHparamError(
            f"head {name!r} does not accept hyper-parameter(s) {', '.join(map(repr, unexpected))}; "
            f"accepted: {', '.join(accepted) or '(none)'}."
        )
    check_hparams(name, hparams)
    if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features <= 0:
        raise ValueError(f"head {name!r}: in_features must be a positive integer, got {in_features!r}.")
    return load_heads()[name](in_features, **hparams)
