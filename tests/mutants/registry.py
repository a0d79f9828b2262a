"""The registry of mutants: each breaks one protection while the code still runs.

A mutant is a textual patch of one library file (``old`` must occur exactly once, so a mutant
that no longer applies is reported, never silently skipped) and the fast tests that must fail
on the patched library. ``python tests/mutants/run.py`` (``make mutants``) applies each to a copy
of ``pets_lite`` and runs its tests against the copy (``PYTHONPATH``, so notebook kernels, Ray
workers and CrypTen parties run the mutant too).

Keep each mutant's tests the fastest that catch it; a mutant runs a notebook test only when
nothing faster catches it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    """One sabotage: ``file`` (relative to ``pets_lite/``), the exact ``old`` text, its ``new``
    replacement, the ``tests`` (pytest node ids) that must catch it, and the ``chapter`` (two
    digits, or "lib" for the lower layer) whose protection it breaks."""

    name: str
    chapter: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    why: str


MUTANTS: list[Mutant] = [
    Mutant("data-checksum-skipped", "00", "data.py",
           "            return verify(path, flag)\n    if not download:",
           "            return path\n    if not download:",
           ("tests/test_data.py::test_corrupted_copy_is_refused",),
           "a data file on disk is read without checking its MD5"),
    Mutant("cache-key-drops-a-field", "lib", "recipes.py",
           '"recipe": recipe.to_dict(),',
           '"recipe": {k: v for k, v in recipe.to_dict().items() if k != "lr"},',
           ("tests/test_recipes.py::test_every_field_of_every_recipe_enters_the_cache_key",),
           "a setting left out of the cache key silently reuses a wrong model"),
    Mutant("seed-streams-collide", "lib", "config.py",
           "    words = np.random.SeedSequence(entropy).generate_state(2, np.uint32)",
           "    return int(seed) + sum(k for k in keys if isinstance(k, int))  # seed + round + k",
           ("tests/test_config.py::test_derive_seed_streams_do_not_collide",),
           "two hospitals, rounds or runs draw the same random stream"),
]
