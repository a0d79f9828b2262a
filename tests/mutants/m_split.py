"""Mutants of chapter 08 (split learning): the defences, the message boundary, the attacks."""

T = "tests/test_split.py::"

MUTANTS = [
    dict(name="split-nopeek-off", chapter="08", file="split/__init__.py",
         old="        if self.nopeek > 0:\n            surrogate = surrogate + self.nopeek",
         new="        if self.nopeek < 0:\n            surrogate = surrogate + self.nopeek",
         tests=(T + "test_nopeek_lowers_distance_correlation",),
         why="NoPeek switched off: the distance-correlation penalty is silently not applied"),
    dict(name="split-activation-noise-missing", chapter="08", file="split/__init__.py",
         old="        if self.noise_std > 0:\n            acts = acts + self.noise_std",
         new="        if self.noise_std < 0:\n            acts = acts + self.noise_std",
         tests=(T + "test_noise_reaches_the_wire_with_its_std",),
         why="the hospital sends its activations without the noise it was configured to add"),
    dict(name="split-activation-noise-repeats", chapter="08", file="split/__init__.py",
         old="torch.randn(acts.shape, generator=self.noise)",
         new="torch.randn(acts.shape, generator=torch.Generator().manual_seed(0))",
         tests=(T + "test_noise_is_fresh_for_every_message",),
         why="the activation noise is the same in every message (predictable, so removable)"),
    dict(name="split-ushaped-sends-labels", chapter="08", file="split/__init__.py",
         old='        features = channel.send("server", "features", server.forward(sent))\n',
         new='        channel.send("hospital", "labels", y)\n'
             '        features = channel.send("server", "features", server.forward(sent))\n',
         tests=(T + "test_split_learning_equals_centralized_training[ushaped-1]",),
         why="U-shaped split learning sends the labels to the server after all"),
    dict(name="split-channel-shares-tensors", chapter="08", file="split/__init__.py",
         old="        self.bytes[(sender, kind)] += len(blob)\n        return from_bytes(blob)",
         new="        self.bytes[(sender, kind)] += len(blob)\n        return tensor",
         tests=(T + "test_wire_round_trip_and_counting",),
         why="the receiver gets the sender's tensor itself (its autograd graph and memory), "
             "not the bytes that were counted"),
    dict(name="split-label-leak-random-scores", chapter="08", file="split/leakage.py",
         old="            scores, keep = norms, np.ones(len(labels), dtype=bool)",
         new="            scores = np.random.default_rng(0).random(len(labels))\n"
             "            keep = np.ones(len(labels), dtype=bool)",
         tests=(T + "test_label_leakage_scores_the_norm_and_the_direction",),
         why="Li et al.'s norm attack scores random numbers instead of the gradient norms"),
    dict(name="split-label-leak-wrong-reference", chapter="08", file="split/leakage.py",
         old="            ref = int(np.flatnonzero(is_target)[0])",
         new="            ref = int(np.flatnonzero(~is_target)[0]) if (~is_target).any() else 0",
         tests=(T + "test_label_leakage_scores_the_norm_and_the_direction",),
         why="the cosine attack's reference is an example of the other class than the one it "
             "claims to know"),
    dict(name="split-inversion-learns-nothing", chapter="08", file="split/leakage.py",
         old="    recons = decoder(query_activations(hospital, targets))",
         new="    recons = public.mean(0, keepdim=True).expand_as(targets).clone()",
         tests=(T + "test_inversion_attack_beats_guessing_and_noise_hurts_it",),
         why="the server's inversion attack ignores the activations (it would understate the "
             "leak)"),
]
