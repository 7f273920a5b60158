"""Bad input, driven the way a user meets it: ``bench prepare`` / ``bench run`` / ``bench tune``
on files written here. Every case must exit with status 2 and one line
``bench <cmd>: error: <message>`` naming the file and line (or the key) and what was
expected, and must leave nothing behind: no prepared-cache directory (an empty ``raw/``
tree and lock files at most), no ``--json`` result, no MLflow store or RUNNING run, and no
other new file anywhere under the test's folder."""
from __future__ import annotations

import io
import re
import sqlite3
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from recboard.benchmarks import cli

# --------------------------------------------------------------------------- small valid files

ML_GOOD = "1::10::5::978300760\n1::20::3::978302109\n2::10::4::978301968\n"
NEWS = ("N1\tsports\tfootball\tBig game tonight\tAbstract one\thttp://u/1\t[]\t[]\n"
        "N2\tfinance\tmarkets\tStocks rally\tAbstract two\thttp://u/2\t[]\t[]\n"
        "N3\tnews\tpolitics\tSenate votes\t\thttp://u/3\t[]\t[]\n")
TRAIN_ROWS = ("1\tU1\t11/11/2019 9:05:58 AM\tN1\tN2-1 N3-0\n"
              "2\tU2\t11/11/2019 9:06:00 AM\t\tN1-0 N3-1\n")
DEV_ROWS = "1\tU1\t11/15/2019 9:00:00 AM\tN1\tN3-1 N2-0\n"
T3 = "3\tU3\t11/11/2019 9:07:00 AM\t"            # line 3 of train behaviors, up to the history


def mind_files(train_rows: str = TRAIN_ROWS, train_news: str | bytes = NEWS) -> dict:
    return {"MINDsmall_train/behaviors.tsv": train_rows, "MINDsmall_train/news.tsv": train_news,
            "MINDsmall_dev/behaviors.tsv": DEV_ROWS, "MINDsmall_dev/news.tsv": NEWS}


def zip_bytes(members: dict, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buf.getvalue()


def crc_broken_zip(members: dict) -> bytes:
    """A zip whose directory is intact but whose stored member bytes were flipped in transit."""
    data = bytearray(zip_bytes(members, zipfile.ZIP_STORED))
    first = next(iter(members.values()))
    at = bytes(data).index(first.encode())
    data[at] ^= 0x01
    return bytes(data)


ML_ZIP = zip_bytes({"ml-1m/ratings.dat": ML_GOOD, "ml-1m/movies.dat": "10::Heat (1995)::Action\n"})


# --------------------------------------------------------------------------- the table

@dataclass(frozen=True)
class Case:
    id: str
    files: dict    # path under the data dir -> text or bytes
    argv: tuple    # "{data}" and "{json}" are filled in
    error: str     # regex the message must match; "{data}" becomes the escaped data dir
    leaves_cache_of: str = ""   # a dataset whose *complete* prepared cache may remain
    exit_code: int = 1          # 1: the work failed (bad data, no GPU); 2: bad usage (unknown name or key)


def prepare(dataset: str) -> tuple:
    return ("prepare", "--dataset", dataset, "--data-dir", "{data}")


def run_on(dataset: str, *extra: str, model: str = "pop") -> tuple:
    """``bench run`` with MLflow tracking on and ``--json``: neither may leave anything."""
    return ("run", "--model", model, "--dataset", dataset, "--data-dir", "{data}", "--json", "{json}",
            "--quiet", *extra)


def synthetic_run(*sets: str, model: str = "pop", dataset: str = "synthetic_seq") -> tuple:
    return ("run", "--model", model, "--dataset", dataset, "--json", "{json}", "--quiet",
            *[a for s in sets for a in ("--set", s)])


ZIP_ADVICE = r"download it again, or unzip it yourself and pass the folder holding its files as --data-dir$"
CASES = [
    # 1: official zips placed in --data-dir are unpacked into the cache's raw/ ... unless broken
    Case("ml-1m.zip truncated", {"ml-1m.zip": ML_ZIP[: len(ML_ZIP) // 2]}, prepare("ml-1m"),
         r"^{data}/ml-1m\.zip is not a valid zip file \(File is not a zip file\): truncated or corrupt; "
         r"expected the GroupLens ml-1m\.zip \(https://files\.grouplens\.org/.*\) holding ratings\.dat; " + ZIP_ADVICE),
    Case("ml-1m.zip without ratings", {"ml-1m.zip": zip_bytes({"ml-1m/README": "hi", "ml-1m/users.dat": "1::F"})},
         prepare("ml-1m"), r"^{data}/ml-1m\.zip holds no ratings\.dat or ml-1m\.txt \(it has: README, users\.dat\)"),
    Case("MINDsmall_train.zip corrupt",
         {"MINDsmall_train.zip": b"PK\x03\x04 not really a zip",
          "MINDsmall_dev.zip": zip_bytes({"behaviors.tsv": DEV_ROWS, "news.tsv": NEWS})},
         prepare("mind_small"),
         r"^{data}/MINDsmall_train\.zip is not a valid zip file .*: truncated or corrupt; expected the official "
         r"MINDsmall_train\.zip \(https://msnews\.github\.io\) with behaviors\.tsv and news\.tsv; " + ZIP_ADVICE),
    Case("MINDsmall_dev.zip truncated beside a good train zip",     # neither zip is unpacked
         {"MINDsmall_train.zip": zip_bytes({"behaviors.tsv": TRAIN_ROWS, "news.tsv": NEWS}),
          "MINDsmall_dev.zip": zip_bytes({"behaviors.tsv": DEV_ROWS, "news.tsv": NEWS})[:-30]},
         run_on("mind_small"), r"^{data}/MINDsmall_dev\.zip is not a valid zip file .*: truncated or corrupt; "),
    Case("beauty.zip member fails CRC", {"beauty.zip": crc_broken_zip({"beauty.txt": "1 1\n1 2\n2 1\n"})},
         prepare("beauty"),
         r"^{data}/beauty\.zip: member 'beauty\.txt' fails its CRC check \(corrupt archive\); expected a zip of "
         r"BERT4Rec's beauty\.txt or the Amazon ratings CSV ratings_Beauty\.csv; " + ZIP_ADVICE),
    # 2-14, 25: the text formats
    Case("ratings.dat with commas", {"ratings.dat": "1,10,5,978300760\n"}, run_on("ml-1m"),
         r"^{data}/ratings\.dat, line 1: expected 4 fields separated by '::' \(UserID::MovieID::Rating::Timestamp\) "
         r"but found 1 \(the line looks separated by ','\), got '1,10,5,978300760'$"),
    Case("behaviors.tsv with 3 fields", mind_files(TRAIN_ROWS + T3.rstrip("\t") + "\n"), prepare("mind_small"),
         r"^{data}/MINDsmall_train/behaviors\.tsv, line 3: expected 5 fields separated by '\\t' "
         r"\(ImpressionID<tab>UserID<tab>Time<tab>History<tab>Impressions\) but found 3, got "),
    Case("news.tsv not UTF-8", mind_files(train_news=NEWS.encode() + b"N4\tx\ty\tCaf\xe9 opens\tA\tu\t[]\t[]\n"),
         prepare("mind_small"),
         r"^{data}/MINDsmall_train/news\.tsv, line 4: expected UTF-8 text \(NewsID<tab>.*\), "
         r"found invalid byte\(s\) at column 11$"),
    Case("empty beauty.txt", {"beauty.txt": ""}, prepare("beauty"),
         r"^{data}/beauty\.txt: file is empty; expected lines of 'user item' \(two integer ids\)$"),
    Case("news id with two titles", mind_files(train_news=NEWS + "N2\tfinance\tmarkets\tStocks crash\tB\tu\t[]\t[]\n"),
         run_on("mind_small"),
         r"^news id N2 appears with different titles: {data}/MINDsmall_train/news\.tsv, line 2: 'Stocks rally' vs "
         r"{data}/MINDsmall_train/news\.tsv, line 4: 'Stocks crash'; expected one title per news id"),
    Case("impression without a click", mind_files(TRAIN_ROWS + T3 + "N1\tN2-0 N3-0\n"), prepare("mind_small"),
         r"^{data}/MINDsmall_train/behaviors\.tsv, line 3: expected at least one clicked candidate \(label 1\) "
         r"in field 5, got 'N2-0 N3-0'$"),
    Case("item id 0 in beauty.txt", {"beauty.txt": "1 1\n1 0\n"}, prepare("beauty"),
         r"^{data}/beauty\.txt, line 2: expected a positive item id \(field 2\) \(ids start at 1\), got '0'$"),
    Case("negative user id in ml-1m.txt", {"ml-1m.txt": "1 10\n-3 10\n"}, run_on("ml-1m"),
         r"^{data}/ml-1m\.txt, line 2: expected a positive user id \(field 1\) \(ids start at 1\), got '-3'$"),
    Case("MovieID 0 in ratings.dat", {"ratings.dat": ML_GOOD + "3::0::4::978300000\n"}, prepare("ml-1m"),
         r"^{data}/ratings\.dat, line 4: expected a positive MovieID \(field 2\) \(ids start at 1\), got '0'$"),
    Case("negative timestamp in ratings.dat", {"ratings.dat": "1::10::5::-978300760\n"}, prepare("ml-1m"),
         r"^{data}/ratings\.dat, line 1: expected a Timestamp \(field 4\) >= 0 \(seconds since 1970\), "
         r"got '-978300760'$"),
    Case("negative timestamp in the Amazon CSV", {"ratings_Beauty.csv": "A1,B1,5.0,1365811200\nA2,B1,4.0,-1\n"},
         prepare("beauty"),
         r"^{data}/ratings_Beauty\.csv, line 2: expected a unix timestamp \(field 4\) >= 0 \(seconds since 1970\), "
         r"got '-1'$"),
    Case("non-numeric timestamp", {"ratings_Beauty.csv": "A1,B1,5.0,2013-04-13\n"}, run_on("beauty"),
         r"^{data}/ratings_Beauty\.csv, line 1: expected an integer unix timestamp \(field 4\), got '2013-04-13'$"),
    Case("label not 0/1", mind_files(TRAIN_ROWS + T3 + "N1\tN2-1 N3-2\n"), prepare("mind_small"),
         r"^{data}/MINDsmall_train/behaviors\.tsv, line 3: expected candidates like 'N1234-1' \(clicked\) or "
         r"'N1234-0' in field 5, label 0 or 1, got 'N3-2'$"),
    Case("unparsable MIND time", mind_files(TRAIN_ROWS + "3\tU3\t2019-11-11T09:07\tN1\tN2-1\n"),
         prepare("mind_small"),
         r"^{data}/MINDsmall_train/behaviors\.tsv, line 3: expected a time like '11/11/2019 9:05:58 AM' "
         r"in field 3, got '2019-11-11T09:07'$"),
    Case("blank line in the middle", {"ml-1m.txt": "1 10\n\n2 10\n"}, prepare("ml-1m"),
         r"^{data}/ml-1m\.txt, line 2: expected 'user item' \(two integer ids\) \(only trailing lines may be "
         r"blank\), got an empty line$"),
    Case("news.tsv with too few fields", mind_files(train_news=NEWS + "N4\thealth\tEat well\n"),
         prepare("mind_small"),
         r"^{data}/MINDsmall_train/news\.tsv, line 4: expected at least 8 tab-separated fields \(NewsID<tab>.*\) "
         r"but found 3, got 'N4\\thealth\\tEat well'$"),
    Case("candidate N1-x", mind_files(TRAIN_ROWS + T3 + "N1\tN2-1 N1-x\n"), prepare("mind_small"),
         r"^{data}/MINDsmall_train/behaviors\.tsv, line 3: expected candidates like 'N1234-1' .*, got 'N1-x'$"),
    # 15-24: configuration
    Case("--set unknown key", {}, synthetic_run("epoch=3"),
         r"^unknown config key 'epoch' \(from --set\); did you mean 'epochs'\?; valid keys: amp, batch_size, ", exit_code=2),
    Case("--set wrong type", {}, synthetic_run("lr=fast"), r"^config key 'lr' expects float, got 'fast'$", exit_code=2),
    Case("--set without =", {}, synthetic_run("epochs"), r"^--set expects key=value, got 'epochs'$", exit_code=2),
    Case("unknown model", {}, ("run", "--model", "sasrek", "--dataset", "ml-1m", "--json", "{json}"),
         r"^unknown model 'sasrek' \(did you mean 'sasrec'\?\); valid models: bert4rec, .*pop, random, sasrec$", exit_code=2),
    Case("unknown dataset", {}, ("prepare", "--dataset", "movielens"),
         r"^unknown dataset 'movielens'; valid datasets: beauty, mind_demo, mind_large, mind_small, .*ml-1m, ", exit_code=2),
    # the model is built after the (valid, synthetic) data is prepared, so that cache may remain
    Case("encoder not available offline", {},
         ("run", "--model", "nrms_bert", "--dataset", "synthetic_mind", "--set", "encoder=no-such-org/no-such-model",
          "--no-track", "--json", "{json}", "--quiet"),
         r"^cannot load the text encoder 'no-such-org/no-such-model': not in the Hugging Face cache \(OSError\); "
         r"HF_HUB_OFFLINE is set, so the Hub was not asked\. Provide it in one of these ways: .*"
         r"`--set encoder=/path/to/dir` .*`hf download no-such-org/no-such-model`",
         leaves_cache_of="synthetic_mind"),
    Case("cuda without a GPU", {}, synthetic_run("device=cuda"),
         r"^device 'cuda' requested but no CUDA GPU is available \(use --set device=cpu or device=auto\)$"),
    Case("--resume without --checkpoint-dir", {}, synthetic_run() + ("--resume",),
         r"^--resume needs --checkpoint-dir \(where the interrupted run wrote its checkpoints\)$", exit_code=2),
    Case("protocol=sampled", {}, synthetic_run("protocol=sampled", model="sasrec"),
         r"^protocol must be one of full, sampled-uni100, sampled-pop100, got 'sampled'$", exit_code=2),
    Case("metric=AUC on sequences", {}, synthetic_run("metric=AUC"),
         r"^metric for sequence data must be one of HR@1, HR@5, HR@10, NDCG@5, NDCG@10, MRR, got 'AUC'$", exit_code=2),
    Case("tune --space unknown key", {},
         ("tune", "--model", "sasrec", "--dataset", "synthetic_seq", "--trials", "1", "--space", "nosuchkey=1:2"),
         r"^--space 'nosuchkey=1:2': unknown config key 'nosuchkey'; valid keys: .*hidden_size.*", exit_code=2),
]


# --------------------------------------------------------------------------- checks

def snapshot(root: Path) -> set:
    return {p.relative_to(root).as_posix() + ("/" if p.is_dir() else "") for p in root.rglob("*")}


def allowed_leftover(rel: str, case: Case) -> bool:
    """Lock files and the empty ``raw/<name>/`` folders an unpack attempt may create are fine;
    so is a complete prepared cache of a dataset that was valid (``leaves_cache_of``)."""
    parts = rel.rstrip("/").split("/")
    if parts[0] != "cache":
        return False
    if len(parts) == 1 or (parts[1] == "raw" and rel.endswith("/")) or (len(parts) == 2 and rel.endswith(".lock")):
        return True
    if case.leaves_cache_of and re.fullmatch(rf"{re.escape(case.leaves_cache_of)}-[0-9a-f]{{12}}", parts[1]):
        return len(parts) == 2 or parts[2] in ("meta.json", "arrays.npz")
    return False


def running_mlflow_runs(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        return con.execute("SELECT COUNT(*) FROM runs WHERE status = 'RUNNING'").fetchone()[0]


@pytest.fixture
def user_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RECBOARD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RECBOARD_HOME", str(tmp_path / "home"))           # default MLflow store + studies
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for var in ("RECBOARD_ML1M_DIR", "RECBOARD_BEAUTY_DIR", "RECBOARD_MIND_DIR", "RECBOARD_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_bad_input_gives_a_clear_error_and_writes_nothing(case, user_env, capsys):
    if case.id == "cuda without a GPU":
        import torch
        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    data, json_path = user_env / "data", user_env / "out" / "result.json"
    for rel, content in case.files.items():
        path = data / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = snapshot(user_env)
    argv = [a.replace("{data}", str(data)).replace("{json}", str(json_path)) for a in case.argv]

    assert cli.main(argv) == case.exit_code
    err = capsys.readouterr().err
    prefix = f"bench {argv[0]}: error: "
    lines = [line[len(prefix):] for line in err.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, err
    assert re.search(case.error.replace("{data}", re.escape(str(data))), lines[0]), lines[0]

    assert not json_path.exists()
    assert running_mlflow_runs(user_env / "mlflow.db") == 0
    new = sorted(p for p in snapshot(user_env) - before if not allowed_leftover(p, case))
    assert new == [], f"left behind: {new}"
    raw = user_env / "cache" / "raw"
    assert not raw.exists() or not [p for p in raw.rglob("*") if p.is_file()]


def test_the_table_covers_every_kind_of_bad_input():
    assert len(CASES) >= 22 and len({c.id for c in CASES}) == len(CASES)
    data_cases = [c for c in CASES if c.files]
    assert len(data_cases) >= 18 and any(c.argv[0] == "run" for c in data_cases)


# --------------------------------------------------------------------------- valid zips are accepted

def test_official_zips_in_the_data_dir_are_unpacked_once_and_parsed(user_env, capsys):
    ratings = "".join(f"{u}::{i}::4::{1000 * u + i}\n" for u in range(1, 7) for i in (10, 20, 30, 40, 50))
    data = user_env / "data"
    data.mkdir()
    (data / "ml-1m.zip").write_bytes(zip_bytes({"ml-1m/ratings.dat": ratings,
                                                "ml-1m/movies.dat": "10::Heat (1995)::Action|Crime\n"}))
    (data / "MINDsmall_train.zip").write_bytes(zip_bytes({"behaviors.tsv": TRAIN_ROWS, "news.tsv": NEWS}))
    (data / "MINDsmall_dev.zip").write_bytes(zip_bytes({"behaviors.tsv": DEV_ROWS, "news.tsv": NEWS}))
    (data / "beauty").mkdir()
    (data / "beauty" / "beauty.zip").write_bytes(zip_bytes({"beauty.txt": "1 1\n1 2\n2 2\n2 1\n"}))

    for dataset, folder, expect in (("ml-1m", data, r"users\s+6\b"), ("mind_small", data, r"test_impressions\s+1\b"),
                                    ("beauty", data / "beauty", r"items\s+2\b")):
        assert cli.main(["prepare", "--dataset", dataset, "--data-dir", str(folder)]) == 0, capsys.readouterr().err
        assert re.search(expect, capsys.readouterr().out)
    raw = user_env / "cache" / "raw"
    unpacked = sorted(p.relative_to(raw).as_posix() for p in raw.glob("*/*"))
    assert [re.sub(r"-[0-9a-f]{12}$", "-<sha>", p) for p in unpacked] == [
        "beauty/beauty-<sha>", "mind_small/MINDsmall_dev-<sha>", "mind_small/MINDsmall_train-<sha>",
        "ml-1m/ml-1m-<sha>"]
    assert (raw / unpacked[-1] / "movies.dat").is_file()            # the zip's ml-1m/ folder is flattened

    # a second prepare reuses the unpacked files (and the cache); a replaced zip is unpacked afresh
    stamp = (raw / unpacked[-1] / "ratings.dat").stat().st_mtime_ns
    assert cli.main(["prepare", "--dataset", "ml-1m", "--data-dir", str(data)]) == 0
    assert (raw / unpacked[-1] / "ratings.dat").stat().st_mtime_ns == stamp
    (data / "ml-1m.zip").write_bytes(zip_bytes({"ratings.dat": ratings + "7::10::4::1\n"}))
    assert cli.main(["prepare", "--dataset", "ml-1m", "--data-dir", str(data)]) == 0
    assert len(list((raw / "ml-1m").iterdir())) == 2
    assert len(list((user_env / "cache").glob("ml-1m-*"))) == 2         # new content, new fingerprint
