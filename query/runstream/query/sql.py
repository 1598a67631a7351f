"""Building blocks of the query SQL: the one way a variant is assembled.

A query with variants is a template whose ``$name`` slots :func:`fill` replaces with
constant fragments chosen by code. Input never goes into a slot: it travels only as a
bound parameter (``{name:Type}`` placeholders, which the template leaves alone, so no
brace is ever doubled). Pure and thread-safe.

The packed sort keys the queries use live in :mod:`runstream.proto.sortkeys` (the
materialized views need the same ones).
"""

from __future__ import annotations

from string import Template


def fill(template: str, **fragments: str) -> str:
    """``template`` with each ``$name`` replaced by ``fragments[name]``; KeyError when a
    slot has no fragment, ValueError for a stray ``$``."""
    return Template(template).substitute(fragments)
