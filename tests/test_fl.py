"""pets_lite.fl: settings, local training, strategies, faults, the wire tap, deployment.

Strategy and ClientApp behaviour is exercised on the in-process Grid (seconds, no Ray); one test
runs the real deployment engine (a SuperLink and two SuperNodes on 127.0.0.1) end to end.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pets_lite import fl, net, train
from pets_lite.fl import deploy

TINY = dict(width=4, depth=1, batch_size=64, fast=True)


def tiny(**kw) -> fl.FLConfig:
    return fl.FLConfig(**{**TINY, **kw})


# -- settings ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    ({"strategy": "fedsgd"}, "strategy 'fedsgd' is not one of"),
    ({"strategy": "fedprox"}, "fedprox needs proximal_mu > 0"),
    ({"rounds": 0}, "rounds must be a positive int"),
    ({"n_hospitals": 0}, "n_hospitals must be a positive int"),
    ({"lr": -1.0}, "lr must be a positive number"),
    ({"alpha": 0.0, "scheme": "dirichlet"}, "alpha must be > 0"),
    ({"scheme": "pathological"}, "scheme 'pathological' is not one of"),
    ({"fail_hospital": 3, "n_hospitals": 3}, "fail_hospital must be -1"),
    ({"proximal_mu": -0.1}, "proximal_mu must be >= 0"),
])
def test_bad_settings_are_refused_with_a_reason(kwargs, match):
    with pytest.raises(fl.FLConfigError, match=match):
        fl.FLConfig(**kwargs)


def test_settings_are_a_recipe_with_the_full_mode_by_default():
    from pets_lite.recipes import Recipe

    cfg = fl.FLConfig()
    assert isinstance(cfg, Recipe) and cfg.fast is False
    assert cfg.variant(fast=True).fast is True and cfg.variant(fast=True).rounds == cfg.rounds
    with pytest.raises(fl.FLConfigError, match="rounds must be a int"):
        fl.FLConfig(rounds=2.5)
    with pytest.raises(fl.FLConfigError, match="has no settings"):
        cfg.replace(epochs=3)


def test_settings_travel_as_a_config_record_and_back():
    cfg = tiny(name="x", strategy="fedprox", proximal_mu=0.5, alpha=0.1, rounds=4)
    record = cfg.to_record()
    assert record["proximal-mu"] == 0.5 and record["n-hospitals"] == 3
    back = fl.FLConfig.from_record({**record, "server-round": 7, "results-path": ""})
    assert back == cfg
    assert fl.FLConfig.from_record({"alpha": 1, "fast": True}).alpha == 1.0


# -- the hospital side -------------------------------------------------------------------------

def test_hospital_data_is_a_seeded_partition(data_available):
    cfg = tiny()
    parts = [fl.config_data(cfg, k) for k in range(cfg.n_hospitals)]
    assert sum(len(p["train"]) for p in parts) == 1200
    assert sum(len(p["val"]) for p in parts) == 300
    assert fl.config_data(cfg, 0) is parts[0]  # cached per process
    with pytest.raises(fl.FLConfigError, match="outside 0..2"):
        fl.config_data(cfg, 3)


def test_proximal_term_keeps_the_local_model_near_the_global_one(data_available):
    """A FedProx hospital (large mu) moves less far from the global weights than a FedAvg one
    with the same data, seed and round (through the ClientApp's own local step)."""
    cfg = tiny(lr=1e-2, batch_size=32)
    start = fl.build_model(cfg).state_dict()

    def drift(c):
        state, _ = fl.client_update(c, 0, start, server_round=1)
        return sum(((v - start[n]) ** 2).sum().item() for n, v in state.items())

    assert drift(cfg.replace(strategy="fedprox", proximal_mu=50.0)) < 0.7 * drift(cfg)
    assert drift(cfg.replace(strategy="fedprox", proximal_mu=1e-6)) == pytest.approx(
        drift(cfg), rel=1e-3)


def test_client_update_returns_weights_and_counts(data_available):
    cfg = tiny()
    model = fl.build_model(cfg)
    state, metrics = fl.client_update(cfg, 1, model.state_dict(), server_round=1)
    assert state.keys() == model.state_dict().keys()
    assert metrics["num-examples"] == len(fl.config_data(cfg, 1)["train"])
    assert math.isfinite(metrics["train-loss"])
    assert any(not torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_array_bytes_counts_the_payload():
    from flwr.app import ArrayRecord

    model = fl.build_model(tiny())
    raw = sum(p.numel() * 4 for p in model.state_dict().values())
    assert fl.array_bytes(model.state_dict()) == raw
    record = ArrayRecord(model.state_dict())
    assert raw <= fl.array_bytes(record) <= raw + 200 * len(record)


# -- strategies on the in-process grid ------------------------------------------------------------

def test_a_crashing_hospital_does_not_stop_the_run(data_available):
    cfg = tiny(name="faulty", rounds=2, fail_hospital=1, fail_round=1)
    res = fl.run_in_process([cfg])["faulty"]
    first, second = res.rounds[1], res.rounds[2]
    assert (first["trained"], first["failed"]) == (2, 1)
    assert (second["trained"], second["failed"]) == (3, 0)
    assert "injected fault: hospital H2 crashed in round 1" in res.failures[0]
    assert all(math.isfinite(r["test_auc"]) for r in res.rounds)
    model_bytes = fl.array_bytes(fl.build_model(cfg).state_dict())
    assert second["bytes_up"] >= 3 * model_bytes
    assert second["bytes_down"] >= 6 * model_bytes  # train and evaluate messages
    table = fl.hospitals_table(res)
    assert list(table.index) == ["H1", "H2", "H3"] and "val-auc" in table


def test_fedavg_is_the_weighted_mean_of_what_the_hospitals_sent(data_available):
    """The global model after a round is the num-examples-weighted mean of every hospital's
    weights (train.weighted_average), not one hospital's, nor an unweighted mean."""
    cfg = tiny(name="mean", rounds=1, client_eval=False, alpha=0.3)
    res = fl.run_in_process([cfg], keep_updates=True)["mean"]
    sent = res.updates[1]
    sizes = {int(r["hospital"]): r["num-examples"] for r in res.hospitals if r["phase"] == "train"}
    assert sorted(sent) == [0, 1, 2] and len(set(sizes.values())) == 3
    names = list(res.state_dict)
    want = train.weighted_average([[sent[k][n] for n in names] for k in range(3)],
                                  [sizes[k] for k in range(3)])
    for n, w in zip(names, want):
        assert np.allclose(res.state_dict[n].numpy(), w, atol=1e-6), n
    plain = train.weighted_average([[sent[k][n] for n in names] for k in range(3)])
    assert max(float(np.abs(res.state_dict[n].numpy() - p).max())
               for n, p in zip(names, plain)) > 1e-4


def test_when_every_hospital_fails_the_global_model_stays(data_available):
    cfg = tiny(name="alone", n_hospitals=1, rounds=1, fail_hospital=0, client_eval=False)
    res = fl.run_in_process([cfg])["alone"]
    assert res.rounds[1]["trained"] == 0 and res.rounds[1]["failed"] == 1
    assert res.rounds[1]["test_auc"] == pytest.approx(res.rounds[0]["test_auc"])


def test_the_server_sees_every_hospital_update(data_available):
    seen = []
    cfg = tiny(name="hook", rounds=1, client_eval=False)
    res = fl.run_in_process(
        [cfg], keep_updates=True,
        on_client_updates=lambda name, rnd, ups, glob: seen.append((name, rnd, sorted(ups))))[
        "hook"]
    assert seen == [("hook", 1, [0, 1, 2])]
    assert sorted(res.updates[1]) == [0, 1, 2]
    first = next(iter(res.updates[1][0].values()))
    assert isinstance(first, np.ndarray)


def test_fedprox_and_fedadam_run_and_learn(data_available):
    res = fl.run_in_process([tiny(name="prox", strategy="fedprox", proximal_mu=0.1, rounds=1,
                                  client_eval=False),
                             tiny(name="adam", strategy="fedadam", rounds=1, client_eval=False)])
    for r in res.values():
        assert r.rounds[-1]["trained"] == 3
        assert 0.0 <= r.test_auc <= 1.0
    model = fl.model_from_result(res["prox"])
    assert isinstance(model, torch.nn.Module)


def test_a_supernode_started_for_other_partitions_is_reported(data_available):
    cfg = tiny(name="mismatch", rounds=1, client_eval=False)
    with fl.quiet_flower(), fl.InProcessGrid(3) as grid:
        for ctx in grid.contexts.values():
            ctx.node_config = {"partition-id": ctx.node_config["partition-id"],
                               "num-partitions": 5}
        res = fl.run_experiment(grid, cfg)
    assert res.rounds[1]["failed"] == 3
    assert "started for 5 partitions" in res.failures[0]


def test_simulate_refuses_bad_experiment_lists_before_starting_ray():
    with pytest.raises(fl.FLConfigError, match="at least one"):
        fl.simulate([])
    with pytest.raises(fl.FLConfigError, match="names must be unique"):
        fl.simulate([tiny(), tiny()])
    with pytest.raises(fl.FLConfigError, match="same n_hospitals"):
        fl.simulate([tiny(name="a"), tiny(name="b", n_hospitals=4)])
    with pytest.raises(fl.FLConfigError, match="cpus_per_client"):
        fl.simulate([tiny()], cpus_per_client=0)


def test_results_round_trip_through_json():
    res = fl.FLResult("x", {"a": 1}, [{"round": 1, "test_auc": float("nan")}], [], 1.0)
    blob = res.to_json()
    assert blob["rounds"][0]["test_auc"] is None
    assert fl.FLResult.from_json(blob).name == "x"


# -- the deployment engine ------------------------------------------------------------------------

def test_deployment_refuses_bad_input():
    with pytest.raises(deploy.DeploymentError, match="positive int"):
        deploy.LocalDeployment(0)
    dep = deploy.LocalDeployment(1)
    with pytest.raises(deploy.DeploymentError, match="unknown run-config keys"):
        dep.run(run_config={"epochs": 3})
    with pytest.raises(deploy.DeploymentError, match="start"):
        dep.run(run_config={"rounds": 1})
    dep.stop()
    port = net.free_port()
    assert 1024 < port < 65536


def test_deployment_engine_on_loopback(data_available):
    """1 SuperLink + 2 SuperNodes on 127.0.0.1, one round on fast-mode data; nothing left behind."""
    import psutil

    with deploy.LocalDeployment(n_supernodes=2) as fed:
        ports = list(fed.ports)
        run = fed.run(run_config={"rounds": 1, "width": 8, "depth": 2, "client-eval": False},
                      timeout=600)
        started = [p.args for p in fed.processes]
    assert run.status == "finished:completed", run.log[-3000:]
    assert run.result is not None, run.log[-3000:]
    assert run.result.config["n_hospitals"] == 2
    final = run.result.rounds[-1]
    assert final["round"] == 1 and final["trained"] == 2 and final["failed"] == 0
    assert 0.5 < final["test_auc"] <= 1.0
    assert final["bytes_up"] > 0 and final["bytes_down"] > 0
    assert sorted(r["hospital"] for r in run.result.hospitals if r["phase"] == "train") == [0, 1]
    # every process started here, and any it spawned, is gone
    assert all("--disable-runtime-dependency-installation" in a for a in started
               if "superlink" in a[0])
    assert fed.alive() == [], f"processes left behind: {fed.alive()}"
    needles = [f"127.0.0.1:{p}" for p in ports]
    leftover = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if any(n in cmd for n in needles):
            leftover.append((p.pid, cmd))
    assert not leftover, leftover
    assert not fed.workdir.exists()


# -- the engine: Ray's start-up failures, the fallback, the wire ---------------------------------

def test_a_failed_ray_start_is_recognised_through_the_exception_chain():
    try:
        try:
            raise TimeoutError("The raylet timed out during startup")
        except TimeoutError as inner:
            raise RuntimeError("simulation failed") from inner
    except RuntimeError as exc:
        assert fl.engine.ray_start_failed(exc)
    assert not fl.engine.ray_start_failed(RuntimeError("a ClientApp raised"))


def test_when_ray_cannot_start_the_same_apps_run_in_process(data_available, monkeypatch):
    def no_ray(*args, **kwargs):
        raise fl.RayStartError("simulated")

    monkeypatch.setattr(fl.engine, "run_on_ray", no_ray)
    with pytest.raises(fl.RayStartError):
        fl.simulate([tiny(name="x", rounds=1, client_eval=False)], progress=False)
    res = fl.simulate([tiny(name="x", rounds=1, client_eval=False)], progress=False,
                      fallback=True)["x"]
    assert res.engine == "in-process" and res.rounds[-1]["trained"] == 3
    with pytest.raises(fl.FLConfigError, match="engine must be one of"):
        fl.run_apps(None, None, 1, engine="gpu")


def test_the_wire_tap_counts_serialised_messages_both_ways(data_available):
    cfg = tiny(name="tap", rounds=1, client_eval=False)
    with fl.quiet_flower(), fl.InProcessGrid(3) as grid:
        tap = fl.WireTap(grid, keep=True)
        res = fl.run_experiment(tap, cfg)
    replies = [m for _, m in tap.replies]
    assert tap.exchanges == 2 and len(replies) == 3  # train (3 replies), evaluate (none asked)
    assert tap.bytes_received == sum(fl.wire.message_bytes(m) for m in replies)
    assert res.rounds[1]["bytes_up"] == tap.bytes_received
    assert res.rounds[1]["bytes_down"] == tap.bytes_sent
    size = sum(t.numel() for t in fl.build_model(cfg).state_dict().values())
    weights = [v for m in replies for v in fl.wire.sent_vectors(m)]
    assert len(weights) == 3 and all(v.size == size for v in weights)
