"""Mutants of differential privacy (02), the attacks and audits (00, 07) and the TEE protocol
(09)."""

_NOISE = ("        noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,\n"
          "        noise_generator=noise,")
_NOISE_TEST = ("tests/test_dp_checks.py::"
               "test_noise_reaching_the_optimiser_has_the_accountants_std",)

MUTANTS = [
    # ---------------------------------------------------------------- 02: DP-SGD
    dict(name="dp-noise-missing", chapter="02", file="dp/training.py", old=_NOISE,
         new=_NOISE.replace("noise_multiplier=noise_multiplier", "noise_multiplier=0.0"),
         tests=_NOISE_TEST,
         why="the optimiser adds no noise while the accountant still reports the epsilon of sigma"),
    dict(name="dp-noise-too-small", chapter="02", file="dp/training.py", old=_NOISE,
         new=_NOISE.replace("noise_multiplier=noise_multiplier",
                            "noise_multiplier=noise_multiplier / 2"),
         tests=_NOISE_TEST, why="the noise is half what the accountant assumes"),
    dict(name="dp-clipping-skipped", chapter="02", file="clipping.py",
         old="        coef = (self.max_grad_norm / (norms + EPS)).clamp(max=1.0)",
         new="        coef = torch.ones_like(norms)",
         tests=("tests/test_clipping.py::test_each_example_contributes_at_most_the_clipping_norm",),
         why="book-keeping sums the per-sample gradients without clipping them"),
    dict(name="dp-sampling-not-poisson", chapter="02", file="dp/training.py",
         old="noise_generator=noise, poisson_sampling=True)",
         new="noise_generator=noise, poisson_sampling=False)",
         tests=("tests/test_dp_checks.py::test_batches_are_poisson_samples",),
         why="batches are shuffled fixed-size slices, not the Poisson samples the accountant "
             "assumes"),
]

MUTANTS += [
    # ---------------------------------------------------------------- 09: attestation
    dict(name="tee-bad-signature-accepted", chapter="09", file="tee.py",
         old=("            cert.public_key().verify(evidence.signature, evidence.quote, "
              "ec.ECDSA(hashes.SHA256()))"),
         new="            cert.public_key()  # the signature is never checked",
         tests=("tests/test_tee.py::"
                "test_a_forged_quote_claiming_the_audited_measurement_is_refused",),
         why="a quote whose signature does not verify is accepted (a forged measurement passes)"),
    dict(name="tee-stale-nonce-accepted", chapter="09", file="tee.py",
         old='        if fields["nonce"] != nonce or nonce not in self._pending:',
         new='        if fields["nonce"] != nonce:',
         tests=("tests/test_tee.py::test_a_nonce_the_hospital_never_issued_is_refused",),
         why="a quote answering a nonce that was never issued, or already used, is accepted"),
    dict(name="tee-wrong-measurement-accepted", chapter="09", file="tee.py",
         old='        if fields["measurement"] != self.expected:',
         new='        if not fields["measurement"]:',
         tests=("tests/test_tee.py::test_changed_weights_or_code_fail_measurement",),
         why="an enclave running other code or another model gets the key"),
]

MUTANTS += [
    # ---------------------------------------------------------------- 00, 07: attacks and audits
    dict(name="loss-attack-sign-flipped", chapter="00", file="attacks.py",
         old="    score = -np.r_[member_loss, nonmember_loss]",
         new="    score = np.r_[member_loss, nonmember_loss]",
         tests=("tests/test_attacks.py::test_loss_threshold_attack_known_answers",),
         why="the loss-threshold attack scores high loss as membership: it reports leakage "
             "backwards"),
    dict(name="lira-shuffled-scores", chapter="07", file="attacks.py",
         old="    target_conf = np.asarray(target_conf, float)",
         new=("    target_conf = np.random.default_rng(0).permutation("
              "np.asarray(target_conf, float))"),
         tests=("tests/test_attacks.py::test_lira_catches_memorised_examples",),
         why="LiRA compares each example's shadows with another example's confidence"),
    dict(name="lira-unbalanced-shadows", chapter="07", file="attacks.py",
         old="                                  use=use))",
         new="                                  use=None))",
         tests=("tests/test_attacks.py::test_lira_is_at_chance_on_models_that_leak_nothing",),
         why="leave-one-out LiRA fits members on one IN shadow fewer than OUT: it scores "
             "members below chance"),
    dict(name="audit-counts-wrongly", chapter="07", file="audit.py",
         old="        + int((~included[order[:k_neg]]).sum())",
         new="        + int(k_neg)",
         tests=("tests/test_audit.py::test_audit_of_randomized_response_is_calibrated",),
         why="every 'out' guess is counted correct: the audit certifies more than the run leaks"),
]
