"""Mutants of chapter 01, de-identification: each lets an identity through while the code runs."""

MUTANTS = [
    dict(name="deid-patient-name-kept", chapter="01", file="deid/table.py",
         old='"PatientName": "Z",', new='"PatientName": "K",',
         tests=("tests/test_leakcheck.py::"
                "test_the_deidentifiers_profile_is_not_broader_than_the_standard_allows",),
         why="the patient's name survives de-identification"),
    dict(name="deid-dates-not-shifted", chapter="01", file="deid/actions.py",
         old="    new = [shift_date(v, ctx.days) for v in element_values(elem)]",
         new="    new = [v for v in element_values(elem)]",
         tests=("tests/test_leakcheck.py::test_no_value_that_had_to_go_survives_in_the_examples",),
         why="with the modified-dates option, the real dates survive"),
    dict(name="deid-uid-kept", chapter="01", file="deid/actions.py",
         old="    new = [keyed_uid(v, ctx.key) if v and not is_standard_uid(v) else v",
         new="    new = [v if v and not is_standard_uid(v) else v",
         tests=("tests/test_leakcheck.py::test_no_value_that_had_to_go_survives_in_the_examples",),
         why="study, series and instance UIDs survive (they link back to the hospital's PACS)"),
    dict(name="deid-private-tags-kept", chapter="01", file="deid/profile.py",
         old='    if tag.is_private:\n        return "X"',
         new='    if tag.is_private:\n        return "K"',
         tests=("tests/test_leakcheck.py::test_no_value_that_had_to_go_survives_in_the_examples",),
         why="private tags (vendor headers with names and IDs in them) survive"),
    dict(name="deid-forgets-an-attribute", chapter="01", file="deid/table.py",
         old='"AdditionalPatientHistory": "X",', new="",
         tests=("tests/test_leakcheck.py::"
                "test_the_deidentifiers_profile_is_not_broader_than_the_standard_allows",),
         why="the de-identifier's table forgets a free-text attribute (its own scanner would too)"),
    dict(name="deid-burned-in-text-unmasked", chapter="01", file="deid/pixels.py",
         old="= np.median(border, axis=0).astype(f.dtype)",
         new="= f[b.top:b.bottom, b.left:b.right]",
         tests=("tests/test_deid_measures.py::test_masking_summary_and_display_image",),
         why="text burned into the pixels is found but left unmasked"),
    dict(name="leakcheck-blind", chapter="01", file="leakcheck.py",
         old="        i = haystack.find(needle)\n        return None if i < 0 else i",
         new="        return None",
         tests=("tests/test_leakcheck.py::test_it_catches_every_attribute_the_deidentifier_forgets",),
         why="the independent checker stops finding text values (a check that cannot fail)"),
]
MUTANTS += [
    dict(name="deid-allowlist-keeps-free-text", chapter="01", file="deid/profile.py",
         old='''    "LO", "SH", "LT", "ST", "UT", "UC", "UR", "TM", "AE")}}''',
         new='''    "XX",)}}''',
         tests=("tests/test_leakcheck.py::"
                "test_the_allowlist_profile_passes_the_strict_check_the_basic_profile_does_not",),
         why="the allow-list profile keeps free text it never named safe"),
    dict(name="deid-big-endian-pixels-not-swapped", chapter="01", file="deid/syntax.py",
         old="            elem.value = _swapped(elem.value, width)",
         new="            elem.value = elem.value",
         tests=("tests/test_deid_syntax.py::"
                "test_big_endian_is_written_as_explicit_little_endian_with_consistent_meta",),
         why="a big-endian file is relabelled little endian without swapping its pixel bytes"),
]
MUTANTS += [
    dict(name="deid-open-key-file-accepted", chapter="01", file="deid/keys.py",
         old="    if mode & 0o077:", new="    if False:",
         tests=("tests/test_deid_cli.py::test_refusals_change_nothing",),
         why="a key file other users can read is used (they could re-link every pseudonym)"),
]
