"""Runner, config resolution and MLflow recording on tiny in-memory data."""
import numpy as np
import pytest

from recboard.benchmarks import config as C
from recboard.benchmarks.training.runner import run
from recboard.benchmarks.training.routes import (ClickSequenceRoute, ImpressionRoute, IncompatibleModelError, SequenceRoute,
                                       route_for)
from recboard.datasets.batches import Impressions, NewsData, SequenceData, to_ragged


def popular_target_data(n_users=40, n_items=30) -> SequenceData:
    """Every user's sequence ends with item 1, the most popular item of the training part,
    so popularity ranks the test target first (its training count is the highest)."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(n_users):
        body = rng.choice(np.arange(3, n_items + 1), size=5, replace=False).tolist()
        rows.append([1, 2] + body + [2, 1])
    offsets, items = to_ragged(rows)
    return SequenceData("popular", n_items, offsets, items)


def tiny_news() -> NewsData:
    """Two impressions per split; news 2 is clicked often in training."""
    def block(rows):
        h_off, h = to_ragged([r[0] for r in rows])
        c_off, c = to_ragged([r[1] for r in rows])
        _, lab = to_ragged([r[2] for r in rows])
        return Impressions(np.arange(len(rows), dtype=np.int32), np.arange(len(rows), dtype=np.int64),
                           h_off, h, c_off, c, lab.astype(np.int8))
    train = block([([3], [2, 4], [1, 0]), ([4], [2, 5], [1, 0]), ([], [2, 3], [1, 0])])
    test = block([([3], [5, 2, 4], [0, 1, 0]), ([2], [3, 2], [0, 1])])
    ids = ["<pad>", "<unknown>", "N2", "N3", "N4", "N5"]
    return NewsData("tinynews", ids, [""] * 6, [""] * 6, train, test, test, n_users=3)


def test_config_layers_and_errors():
    cfg = C.resolve("pop", "synthetic_seq", ["epochs=3", "lr=0.01", "amp=false"])
    assert cfg.train.epochs == 3 and cfg.train.lr == 0.01 and cfg.train.amp is False
    assert cfg.sources["epochs"] == "--set"
    with pytest.raises(C.ConfigError, match="unknown config key 'epohcs'.*did you mean 'epochs'"):
        C.resolve("pop", "synthetic_seq", ["epohcs=3"])
    with pytest.raises(C.ConfigError, match="'epochs' expects int, got 'three'"):
        C.resolve("pop", "synthetic_seq", ["epochs=three"])
    with pytest.raises(C.ConfigError, match="protocol must be one of"):
        C.resolve("pop", "synthetic_seq", ["protocol=sampled"])
    with pytest.raises(C.ConfigError, match="key=value"):
        C.resolve("pop", "synthetic_seq", ["epochs"])
    assert C.resolve("pop", "synthetic_mind").train.metric == "AUC"


def test_an_optional_key_takes_a_number_or_none_from_the_command_line():
    """``attention_dropout: float | None``: "0.2" is a float, "none" is None (a string
    reached the model's range check and crashed it)."""
    assert C.resolve("bert4rec", "synthetic_seq", ["attention_dropout=0.2"]).model.attention_dropout == 0.2
    assert C.resolve("bert4rec", "synthetic_seq", ["attention_dropout=none"]).model.attention_dropout is None
    with pytest.raises(C.ConfigError, match="'attention_dropout' expects float"):
        C.resolve("bert4rec", "synthetic_seq", ["attention_dropout=high"])


def test_unknown_names_list_valid_ones_with_a_hint():
    with pytest.raises(ValueError, match=r"unknown model 'bert4recc' \(did you mean 'bert4rec'\?\).*sasrec"):
        C.resolve("bert4recc", "ml-1m")
    with pytest.raises(ValueError, match=r"unknown dataset 'ml1m' \(did you mean 'ml-1m'\?\)"):
        C.resolve("pop", "ml1m")


def test_pop_ranks_the_popular_target_first_and_random_is_near_chance():
    data = popular_target_data()
    pop = run(C.resolve("pop", "synthetic_seq"), data=data, tracking=False)
    assert pop.test_metrics["HR@1"] == 1.0 and pop.test_metrics["MRR"] == 1.0
    # the validation target (item 2) ties item 1 in popularity, but item 1 is in the input: masked
    assert pop.valid_metrics["HR@1"] == 1.0
    rand = run(C.resolve("random", "synthetic_seq"), data=data, tracking=False)
    # 40 users, ~23 unmasked candidates each: HR@10 about 10/23, far from pop's 1.0
    assert 0.15 < rand.test_metrics["HR@10"] < 0.75
    assert rand.test_metrics["HR@1"] < 0.3


def test_sampled_protocol_uses_101_candidates():
    rng = np.random.default_rng(1)
    rows = [rng.choice(np.arange(1, 301), size=6, replace=False).tolist() for _ in range(200)]
    data = SequenceData("wide", 300, *to_ragged(rows))
    res = run(C.resolve("random", "synthetic_seq", ["protocol=sampled-uni100"]), data=data, tracking=False)
    # chance level with 101 candidates: HR@10 ~ 10/101 (full ranking would be ~10/300)
    assert 0.04 < res.test_metrics["HR@10"] < 0.2
    full = run(C.resolve("random", "synthetic_seq"), data=data, tracking=False)
    assert full.test_metrics["HR@10"] < res.test_metrics["HR@10"]


def test_impressions_pop_and_sequence_route():
    data = tiny_news()
    res = run(C.resolve("pop", "synthetic_mind"), data=data, tracking=False)
    assert res.test_metrics["AUC"] == pytest.approx(1.0)
    assert res.test_metrics["MRR"] == pytest.approx(1.0)
    assert isinstance(route_for("pop", data), ImpressionRoute)
    assert isinstance(route_for("sasrec", data), ClickSequenceRoute)
    assert isinstance(route_for("nrms_glove", popular_target_data()), SequenceRoute)


def test_a_model_without_a_route_is_a_clear_error(monkeypatch):
    from recboard.models import registry
    spec = registry.MODELS["pop"]
    monkeypatch.setitem(registry.MODELS, "pop", type(spec)(spec.module, spec.cls, spec.description,
                                                           tasks=("impression",)))
    with pytest.raises(IncompatibleModelError, match=r"model 'pop' \(tasks: impression\) cannot serve dataset "
                                                     r"'popular'"):
        route_for("pop", popular_target_data())


def test_each_route_builds_the_catalog_its_model_trains_on():
    data = tiny_news()
    # impression models: clicks in the training impressions (news 2 three times)
    assert list(route_for("pop", data).catalog().train_counts) == [0, 0, 3, 0, 0, 0]
    # sequence models on news: histories count too, so news 3 and 4 get rows of their own
    assert list(route_for("sasrec", data).catalog().train_counts) == [0, 0, 3, 1, 1, 0]
    seq = popular_target_data()
    assert np.array_equal(route_for("bert4rec", seq).catalog().train_counts, seq.train_item_counts())


def test_random_seed_is_the_training_seed():
    """``--set seed=7`` used to reach only the random model's own config (training stayed 42)."""
    cfg = C.resolve("random", "synthetic_seq", ["seed=7"])
    assert cfg.train.seed == 7 and cfg.sources["seed"] == "--set"
    data = popular_target_data()
    first, again = (run(C.resolve("random", "synthetic_seq", ["seed=7"]), data=data, tracking=False)
                    for _ in range(2))
    other = run(C.resolve("random", "synthetic_seq", ["seed=8"]), data=data, tracking=False)
    assert first.test_metrics == again.test_metrics and first.config["seed"] == 7
    assert other.test_metrics != first.test_metrics


def test_named_preset_layers_on_the_paper_preset():
    default = C.resolve("bert4rec", "ml-1m")
    strong = C.resolve("bert4rec", "ml-1m", preset="strong")
    assert default.model.hidden_size == 64 and strong.model.hidden_size == 256
    assert strong.sources["hidden_size"] == "preset bert4rec/ml-1m (strong)"
    assert strong.model.ffn_size == default.model.ffn_size   # not named by the recipe: the default stays
    assert C.resolve("bert4rec", "ml-1m", ["hidden_size=32"], preset="strong").model.hidden_size == 32
    with pytest.raises(C.ConfigError, match="model 'sasrec' has no preset 'strong'; its presets: default"):
        C.resolve("sasrec", "ml-1m", preset="strong")


def test_mind_family_presets_apply_to_every_mind_size():
    for name in ("mind_small", "mind_large", "mind_demo"):
        cfg = C.resolve("bert4rec", name)
        assert cfg.model.mask_ratio == 0.4 and cfg.sources["mask_ratio"] == "preset bert4rec/mind"


def test_run_is_recorded_in_mlflow(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    res = run(C.resolve("pop", "synthetic_seq"), data=popular_target_data())
    import mlflow
    mlflow.set_tracking_uri(uri)
    r = mlflow.get_run(res.mlflow_run_id)
    assert r.info.status == "FINISHED"
    assert r.data.metrics["test/HR_at_1"] == 1.0
    assert "best_valid/NDCG_at_10" in r.data.metrics and "wall_time_s" in r.data.metrics
    assert r.data.tags["recboard.model"] == "pop" and r.data.tags["recboard.protocol"] == "full"
    assert r.data.tags["recboard.git_commit"]
    assert r.data.params["metric"] == "NDCG@10"


def test_nan_loss_stops_the_run_and_marks_it_failed(tmp_path, monkeypatch):
    from recboard.benchmarks.training.trainer import NonFiniteLossError
    from recboard.models.sasrec import SASRec
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    real_loss = SASRec.loss
    monkeypatch.setattr(SASRec, "loss", lambda self, batch: real_loss(self, batch) * float("nan"))
    cfg = C.resolve("sasrec", "synthetic_seq", ["epochs=2", "hidden_size=8", "max_len=8"])
    with pytest.raises(NonFiniteLossError, match="training loss became nan in epoch 1"):
        run(cfg, data=popular_target_data())
    import mlflow
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["recboard"])
    assert list(runs["status"]) == ["FAILED"]
    assert "NonFiniteLossError" in runs["tags.recboard.error"][0]
