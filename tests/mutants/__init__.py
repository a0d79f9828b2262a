"""The mutation harness: named sabotages of the library and the fast tests that must catch them."""
