"""Mutants of the cryptography chapters: 05 (CKKS with TenSEAL) and 06 (MPC with CrypTen, and the
from-scratch sharing beside it)."""

MUTANTS = [
    # ---- chapter 05: homomorphic encryption
    dict(name="he-server-accepts-secret-key", chapter="05", file="he/server.py",
         old="        if self._ctx.is_private() or self._ctx.has_secret_key():",
         new="        if False:  # mutant: nothing refuses a context that holds the secret key",
         tests=("tests/test_he.py::test_private_context_is_refused_by_the_server",),
         why="the model owner's server accepts a context with the hospital's secret key"),
    dict(name="he-client-ships-secret-key", chapter="05", file="he/client.py",
         old="        public.make_context_public()  # drops the secret key\n"
             "        self._public_bytes = public.serialize(save_public_key=True, "
             "save_secret_key=False,",
         new="        self._public_bytes = public.serialize(save_public_key=True, "
             "save_secret_key=True,",
         tests=("tests/test_he.py::test_key_separation",),
         why="the hospital sends its secret key inside the 'public' context"),
    dict(name="he-wrong-ckks-scale", chapter="05", file="he/client.py",
         old="        self._ctx.global_scale = self.params.scale",
         new="        self._ctx.global_scale = self.params.scale / 8",
         tests=("tests/test_he.py::test_batched_matches_plaintext",),
         why="the encoding scale differs from the primes each rescale divides by"),
    dict(name="he-rescale-ratio-ignored", chapter="05", file="he/server.py",
         old="        return self._primes[primes - 1] / self.params.scale",
         new="        return 1.0  # mutant: as if each rescale divided by exactly 2^s",
         tests=("tests/test_he.py::test_rescale_ratios_are_folded_into_the_weights",),
         why="the server treats every rescale as a division by 2^s (logits off by ~1 %)"),
    dict(name="he-depth-check-skipped", chapter="05", file="he/model.py",
         old="    if params.depth < need:",
         new="    if False:  # mutant: any parameters pass",
         tests=("tests/test_he.py::test_depth_the_parameters_cannot_support",),
         why="parameters with too few levels are accepted (the result decrypts to noise)"),
    # ---- chapter 06: secure MPC
    dict(name="mpc-output-opened-to-both", chapter="06", file="smpc/inference.py",
         old="get_plain_text(dst=HOSPITAL))  # only the hospital decrypts",
         new="get_plain_text())  # mutant: both parties decrypt",
         tests=("tests/test_smpc.py::"
                "test_private_inference_matches_plaintext_and_only_the_hospital_sees_it",),
         why="the model owner learns the hospital's diagnoses"),
    dict(name="mpc-dealer-inherits-caller-seed", chapter="06", file="smpc/parties.py",
         old="        fresh_generator_state()\n",
         new="        pass  # mutant: the forked dealer keeps the caller's generator state\n",
         tests=("tests/test_smpc.py::test_dealer_seeds_are_fresh_and_not_the_callers",),
         why="the dealer's triple seeds are replayable by every party and repeat across runs"),
    dict(name="mpc-share-carries-secret", chapter="06", file="smpc/scratch.py",
         old="        return mask, secret - mask",
         new="        return secret, secret - secret  # mutant: share 0 is the secret itself",
         tests=("tests/test_smpc_scratch.py::"
                "test_each_share_is_uniform_and_independent_of_the_secret",),
         why="one party's share equals the plaintext (the sum still reconstructs)"),
    dict(name="mpc-mask-not-rerandomised", chapter="06", file="smpc/scratch.py",
         old="    mask = source.ring(secret.shape)",
         new="    mask = RingRandom(seed=0).ring(secret.shape)  # mutant: the same mask every time",
         tests=("tests/test_smpc_scratch.py::test_every_sharing_draws_a_fresh_mask",),
         why="every sharing reuses one mask: share differences are secret differences"),
    dict(name="mpc-triple-reused", chapter="06", file="smpc/scratch.py",
         old="        source = self.source\n",
         new="        source = RingRandom(seed=0)  # mutant: every triple is the same triple\n",
         tests=("tests/test_smpc_scratch.py::test_each_multiplication_uses_a_fresh_triple",),
         why="two products opened with one Beaver triple reveal x - x'"),
]
