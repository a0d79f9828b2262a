"""Mutants of the federated family: federated learning (03), SecAgg+ (04), the hybrid (10).

Each is caught by unit tests on the in-process grid (seconds), not by a notebook.
"""

MUTANTS = [
    dict(name="secagg-masks-disabled", chapter="04", file="fl/secagg.py",
         old="    client_app = ClientApp(client_fn=client_fn, mods=[only_secagg_messages])\n",
         new="    client_app = ClientApp(client_fn=client_fn, mods=[only_secagg_messages])\n"
             "    import importlib\n"
             "    for _m in ('flwr.client.mod.secure_aggregation.secaggplus_mod',\n"
             "               'flwr.server.workflow.secure_aggregation.secaggplus_workflow'):\n"
             "        importlib.import_module(_m).pseudo_rand_gen = (\n"
             "            lambda seed, r, dims: [np.zeros(d, np.int64) for d in dims])\n",
         tests=("tests/test_secagg.py::test_only_masked_vectors_cross_the_wire",),
         why="SecAgg+ runs with zero masks: the sum and the strategy's view are unchanged, but "
             "every hospital's quantised update crosses the wire in the clear"),
    dict(name="secagg-not-run", chapter="04", file="fl/secagg.py",
         old="                max_weight=1.0) if exp.secure else None",
         new="                max_weight=1.0) if False else None",
         tests=("tests/test_secagg.py::test_the_strategy_is_handed_one_aggregate_instead_of_every"
                "_update",),
         why="an experiment marked secure runs plain FedAvg: the server sees every update"),
    dict(name="client-dp-noise-missing", chapter="04", file="fl/secagg.py",
         old="u * scale + noise_multiplier * clip * torch.randn(",
         new="u * scale + 0 * clip * torch.randn(",
         tests=("tests/test_secagg.py::test_clip_and_noise",),
         why="the client-side defence clips but adds no noise"),
    dict(name="fedavg-keeps-one-update", chapter="03", file="fl/server.py",
         old="        return super().aggregate_train(server_round, replies)",
         new="        return super().aggregate_train(server_round, replies[:1] * len(replies))",
         tests=("tests/test_fl.py::test_fedavg_is_the_weighted_mean_of_what_the_hospitals_sent",),
         why="the server keeps one hospital's update for all instead of averaging"),
    dict(name="fedprox-proximal-term-dropped", chapter="03", file="fl/task.py",
         old="    penalty = proximal_term(model, proximal_mu) if proximal_mu > 0 else None",
         new="    penalty = None",
         tests=("tests/test_fl.py::test_proximal_term_keeps_the_local_model_near_the_global_one",),
         why="FedProx trains like FedAvg: no proximal term in the hospitals' loss"),
    dict(name="fl-crash-not-reported", chapter="03", file="fl/server.py",
         old="                stats.failed += 1\n                stats.failures.append(",
         new="                continue\n                stats.failures.append(",
         tests=("tests/test_fl.py::test_a_crashing_hospital_does_not_stop_the_run",),
         why="a hospital that crashed is silently left out of the round"),
    dict(name="hybrid-dp-noise-missing", chapter="10", file="pipeline.py",
         old='noise_multiplier=plan["sigma"],',
         new="noise_multiplier=0.0,",
         tests=("tests/test_pipeline.py::test_every_hospital_adds_its_planned_noise",),
         why="the hospitals run DP-SGD without noise while the planned ε is still reported"),
    dict(name="hybrid-budget-overrun", chapter="10", file="pipeline.py",
         old='"sigma": dp.noise_multiplier_for(epsilon, delta, q, steps)})',
         new='"sigma": dp.noise_multiplier_for(1.5 * epsilon, delta, q, steps)})',
         tests=("tests/test_pipeline.py::test_each_hospital_spends_its_budget_and_no_more",),
         why="the noise is calibrated for a larger ε than the hospitals were promised"),
    dict(name="hybrid-without-secagg", chapter="10", file="pipeline.py",
         old="[secagg.Experiment(name, secure=secure, rounds=rounds)]",
         new="[secagg.Experiment(name, secure=False, rounds=rounds)]",
         tests=("tests/test_pipeline.py::test_the_hybrid_runs_under_secagg",),
         why="the hybrid's updates reach the server unmasked"),
    dict(name="book-table-missing-row-ignored", chapter="10", file="pipeline.py",
         old="    if problems:\n        raise results.BookRowError",
         new="    if False:\n        raise results.BookRowError",
         tests=("tests/test_pipeline.py::test_a_chapter_that_ran_without_its_rows_fails_by_name",),
         why="a chapter that ran without its rows leaves a silent hole in the book-wide table"),
]
