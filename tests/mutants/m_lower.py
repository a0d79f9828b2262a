"""Mutants of the lower layer: the data checksum, the model cache, seed streams."""

MUTANTS = [
    dict(name="data-checksum-skipped", chapter="00", file="data.py",
         old="            return verify(path, flag)\n    if not download:",
         new="            return path\n    if not download:",
         tests=("tests/test_data.py::test_corrupted_copy_is_refused",),
         why="a data file on disk is read without checking its MD5"),
    dict(name="cache-key-drops-a-field", chapter="lib", file="recipes.py",
         old='"recipe": recipe.to_dict(),',
         new='"recipe": {k: v for k, v in recipe.to_dict().items() if k != "lr"},',
         tests=("tests/test_recipes.py::test_every_field_of_every_recipe_enters_the_cache_key",),
         why="a setting left out of the cache key silently reuses a wrong model"),
    dict(name="seed-streams-collide", chapter="lib", file="config.py",
         old="    words = np.random.SeedSequence(entropy).generate_state(2, np.uint32)",
         new="    return int(seed) + sum(k for k in keys if isinstance(k, int))  # seed + r + k",
         tests=("tests/test_config.py::test_derive_seed_streams_do_not_collide",),
         why="two hospitals, rounds or runs draw the same random stream"),
]
