"""The hospital's ``ClientApp`` (Flower 1.42 Message API).

On a ``train`` message it reads the experiment from the message's ``ConfigRecord``, trains the
received global model on its own images (:func:`pets_lite.fl.task.client_update`) and replies with
the new weights and its metrics; on ``evaluate`` it scores the global model on its local
validation images. Which hospital a node is comes from its node config (``partition-id``).
"""

from __future__ import annotations

from .settings import FLConfig, FLConfigError
from .task import client_evaluate, client_update


def hospital_of(context, cfg: FLConfig) -> int:
    """The partition this node holds (its ``partition-id``), checked against the experiment."""
    node = context.node_config
    if "partition-id" not in node:
        raise FLConfigError(
            "this SuperNode has no 'partition-id' in its node config; start it with "
            "--node-config 'partition-id=<k> num-partitions=<n>'"
        )
    k, n = int(node["partition-id"]), int(node.get("num-partitions", cfg.n_hospitals))
    if n != cfg.n_hospitals:
        raise FLConfigError(
            f"this SuperNode was started for {n} partitions but the experiment splits the data "
            f"over n-hospitals={cfg.n_hospitals}; start {cfg.n_hospitals} SuperNodes with "
            f"num-partitions={cfg.n_hospitals}, or change n-hospitals"
        )
    return k


def make_client_app():
    """A new hospital ``ClientApp`` (``pets_lite.fl.client_app`` is the one the Flower App uses)."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(msg, context):
        cfg = FLConfig.from_record(msg.content["config"])
        hospital = hospital_of(context, cfg)
        server_round = int(msg.content["config"].get("server-round", 1))
        if cfg.fail_hospital == hospital and cfg.fail_round in (0, server_round):
            raise RuntimeError(f"injected fault: hospital H{hospital + 1} crashed in round "
                               f"{server_round} (fail-hospital={cfg.fail_hospital})")
        state, metrics = client_update(cfg, hospital, msg.content["arrays"].to_torch_state_dict(),
                                       server_round)
        metrics["hospital"] = hospital
        return Message(content=RecordDict({"arrays": ArrayRecord(state),
                                           "metrics": MetricRecord(metrics)}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg, context):
        cfg = FLConfig.from_record(msg.content["config"])
        hospital = hospital_of(context, cfg)
        metrics = client_evaluate(cfg, hospital, msg.content["arrays"].to_torch_state_dict())
        metrics["hospital"] = hospital
        return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)

    return app
