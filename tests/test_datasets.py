"""Dataset adapters on small files written here: formats, preprocessing choices, error
messages (file + line + what was expected) and the synthetic generators (the downloader:
test_downloads.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recboard.datasets import beauty, mind, movielens, synthetic
from recboard.datasets.batches import UNKNOWN_NEWS
from recboard.datasets.cache import DataFormatError, load_or_build


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # --download and the "no data dir" path look under $RECBOARD_CACHE/raw; never the real home.
    monkeypatch.setenv("RECBOARD_CACHE", str(tmp_path / "home-cache"))


def write(path: Path, text, encoding="utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode(encoding))
    return path


# --------------------------------------------------------------------------- MovieLens

def grouplens_ratings() -> str:
    """6 users; items 10..50 have >= 5 ratings, item 99 has one (dropped). User 1 rates
    items in timestamp order 30, 10, then 20 and 40 with the same timestamp (file order)."""
    rows = [(1, 10, 200), (1, 99, 50), (1, 30, 100), (1, 40, 300), (1, 20, 300), (1, 50, 400)]
    for u in range(2, 7):
        rows += [(u, item, 1000 + item) for item in (10, 20, 30, 40, 50)]
    return "".join(f"{u}::{i}::4::{t}\n" for u, i, t in rows) + "\n"      # blank trailing line is fine


def test_grouplens_time_order_filtering_and_titles(tmp_path):
    d = tmp_path / "ml"
    write(d / "ratings.dat", grouplens_ratings())
    write(d / "movies.dat", "10::Amélie (2001)::Comedy|Romance\n20::Heat (1995)::Action|Crime|Thriller\n"
                            "30::X (1990)::Drama\n40::Y (1991)::Drama\n50::Z (1992)::Drama\n99::W (1993)::Drama\n",
          encoding="latin-1")
    data = movielens.build("ml-1m", d, download=False)
    assert data.n_users == 6 and data.n_items == 5
    assert data.raw_item_ids == ["<pad>", 10, 20, 30, 40, 50]
    # user 1: ts 100 -> 30, 200 -> 10, then the tie at 300 in file order (40 before 20), then 50
    assert [data.raw_item_ids[i] for i in data.sequence(0)] == [30, 10, 40, 20, 50]
    assert data.item_text[1] == "Amélie (2001) | Comedy, Romance"
    assert data.item_text[2] == "Heat (1995) | Action, Crime, Thriller"
    assert data.stats["dropped_items"] == 1 and data.stats["interactions"] == 30
    assert data.stats["source"] == "ratings.dat"


def test_bert4rec_txt_matches_and_ratings_dat_is_preferred(tmp_path):
    d = tmp_path / "ml"
    lines = ["1 30", "1 10", "1 40", "1 20", "1 50"] + [f"{u} {i}" for u in range(2, 7) for i in (10, 20, 30, 40, 50)]
    write(d / "ml-1m.txt", "\n".join(lines) + "\n")
    from_txt = movielens.build("ml-1m", d, download=False)
    assert from_txt.stats["source"] == "ml-1m.txt"
    write(d / "ratings.dat", grouplens_ratings())
    from_dat = movielens.build("ml-1m", d, download=False)
    assert from_dat.stats["source"] == "ratings.dat"
    np.testing.assert_array_equal(from_txt.items, from_dat.items)
    np.testing.assert_array_equal(from_txt.offsets, from_dat.offsets)


def test_leave_one_out_on_known_input(tmp_path):
    # beauty.txt is kept as released, so the sequences are exactly these.
    write(tmp_path / "beauty.txt", "1 1\n1 2\n1 3\n1 4\n2 2\n2 3\n3 4\n3 1\n3 2\n")
    data = beauty.build("beauty", tmp_path, download=False)
    inputs, targets, users = data.eval_examples("valid")
    assert [list(x) for x in inputs] == [[1, 2], [4]] and list(targets) == [3, 1] and list(users) == [0, 2]
    inputs, targets, users = data.eval_examples("test")
    assert [list(x) for x in inputs] == [[1, 2, 3], [4, 1]] and list(targets) == [4, 2]
    assert [list(s) for s in data.train_sequences()] == [[1, 2], [], [4]]
    offsets, items = data.train_part()
    assert list(offsets) == [0, 2, 2, 3] and list(items) == [1, 2, 4]
    assert [list(part) for part in data.catalog().train_history] == [[0, 2, 2, 3], [1, 2, 4]]
    assert list(data.train_item_counts()) == [0, 1, 1, 0, 1]


def test_amazon_csv_iterative_five_core_and_time_sort(tmp_path):
    rows = []
    # users a..e each rate items i1..i5 (a 5x5 core); user f rates i1..i4 + i6 (4 core items);
    # item i6 is rated by f and four users g..j who have one rating each. First pass drops
    # g..j (1 rating), which drops i6 (1 rating left), which drops f (4 ratings): needs 3 passes.
    for u in "abcde":
        rows += [(u, f"i{k}", 10 * k if u != "a" else 100 - k) for k in range(1, 6)]
    rows += [("f", f"i{k}", k) for k in (1, 2, 3, 4, 6)] + [(u, "i6", 1) for u in "ghij"]
    write(tmp_path / "ratings_Beauty.csv", "".join(f"{u},{i},5.0,{t}\n" for u, i, t in rows))
    data = beauty.build("beauty", tmp_path, download=False)
    assert data.n_users == 5 and data.n_items == 5 and data.stats["interactions"] == 25
    assert [data.raw_item_ids[i] for i in data.sequence(0)] == ["i5", "i4", "i3", "i2", "i1"]  # user a, by time


# --------------------------------------------------------------------------- MIND

NEWS_TRAIN = (
    "N1\tsports\tfootball\tBig \"game\ttonight\tAbstract one\thttp://u/1\t[]\t[]\n"   # tab in title, stray quote
    "N2\tfinance\tmarkets\tStocks rally\tAbstract two\thttp://u/2\t[]\t[]\n"
    "N3\tnews\tpolitics\tSenate votes\t\thttp://u/3\t[]\t[]\n")
NEWS_DEV = (
    "N2\tfinance\tmarkets\tStocks rally\tAbstract two\thttp://u/2\t[]\t[]\n"           # same content: fine
    "N4\thealth\tdiet\tEat \"well\tA\thttp://u/4\t[]\t[]\n")


def mind_dir(tmp_path, train_rows=None, dev_rows=None, news_dev=NEWS_DEV) -> Path:
    d = tmp_path / "mind"
    train_rows = train_rows or [
        "1\tU1\t11/11/2019 9:05:58 AM\tN1 N2\tN3-1 N2-0 N99-0",
        "2\tU2\t11/11/2019 10:00:00 AM\t\tN1-0 N3-1",                      # empty history
        "3\tU1\t11/12/2019 8:00:00 PM\tN1 N2\tN1-1 N77-0",
        "4\tU3\t11/11/2019 7:00:00 AM\tN88\tN2-1 N3-0",
    ] + [f"{i}\tU2\t11/11/2019 {i}:30:00 PM\tN1\tN2-1 N3-0" for i in range(5, 11)]
    dev_rows = dev_rows or ["1\tU4\t11/15/2019 9:00:00 AM\tN4\tN4-1 N2-0",
                            "2\tU1\t11/15/2019 8:00:00 AM\tN1\tN1-0 N4-1"]
    write(d / "MINDsmall_train" / "behaviors.tsv", "\n".join(train_rows) + "\n")
    write(d / "MINDsmall_train" / "news.tsv", NEWS_TRAIN)
    write(d / "MINDsmall_dev" / "behaviors.tsv", "\n".join(dev_rows) + "\n")
    write(d / "MINDsmall_dev" / "news.tsv", news_dev)
    return d


def test_mind_parses_news_splits_and_missing_news(tmp_path):
    data = mind.build("mind_small", mind_dir(tmp_path), download=False)
    assert data.news_ids == ["<pad>", "<unknown>", "N1", "N2", "N3", "N4"]
    assert data.titles[2] == 'Big "game tonight' and data.titles[5] == 'Eat "well'
    assert data.categories[3] == "finance" and data.stats["news_rows_with_extra_tabs"] == 1
    assert [data.stats[f"{split}_impressions"] for split in ("train", "valid", "test")] == [9, 1, 2]
    assert data.n_users == 4
    # valid is the time-last train impression: line 3 (U1, 11/12 8 PM)
    assert data.valid.time.min() >= data.train.time.max()
    assert list(data.valid.candidates(0)) == [2, UNKNOWN_NEWS] and list(data.valid.labels(0)) == [1, 0]
    # N99, N77 (candidates) and N88 (history) are missing: three ids, three references
    assert data.stats["missing_news_ids"] == 3 and data.stats["missing_news_refs"] == 3
    assert data.stats["empty_histories"] == 1
    # users share one index across splits: U1 appears in train and test
    u1 = int(data.valid.user[0])
    assert u1 in set(data.test.user.tolist()) and u1 in set(data.train.user.tolist())
    assert np.all(np.diff(data.test.time) >= 0)          # each split in time order
    first = int(np.argmin(data.train.time))              # line 4 (7 AM): history N88 -> unknown
    assert list(data.train.history(first)) == [UNKNOWN_NEWS]


def test_mind_reads_behaviors_in_blocks_as_one(tmp_path, monkeypatch):
    whole = mind.build("mind_small", mind_dir(tmp_path), download=False)
    monkeypatch.setattr(mind, "BLOCK_LINES", 3)                        # 10 train lines: 4 blocks
    blocks = mind.build("mind_small", mind_dir(tmp_path), download=False)
    assert blocks.stats == whole.stats and blocks.n_users == whole.n_users
    for split in ("train", "valid", "test"):
        a, b = getattr(whole, split), getattr(blocks, split)
        for field in ("user", "time", "hist_offsets", "hist", "cand_offsets", "cand", "label"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), (split, field)
    # a bad line in a later block is still named by its line in the file
    rows = [f"{i}\tU2\t11/11/2019 {i}:30:00 PM\tN1\tN2-1 N3-0" for i in range(1, 11)]
    rows[7] = "8\tU2\t11/11/2019 8:30:00 PM\tN1\tN2-1 N3-2"
    with pytest.raises(DataFormatError, match=r"behaviors.tsv, line 8: .*label 0 or 1"):
        mind.build("mind_small", mind_dir(tmp_path / "bad", train_rows=rows), download=False)


def test_mind_accepts_train_dev_layout_and_nested_zip_folder(tmp_path):
    d = mind_dir(tmp_path)
    (d / "MINDsmall_train").rename(d / "train")
    (d / "dev").mkdir()
    (d / "MINDsmall_dev").rename(d / "dev" / "MINDsmall_dev")        # zip packed one level deeper
    files = mind.source_files("mind_small", d)
    assert files[2] == d / "dev" / "MINDsmall_dev" / "behaviors.tsv"
    assert mind.build("mind_small", d, download=False).stats["test_impressions"] == 2


def test_mind_conflicting_titles_is_a_clear_error(tmp_path):
    d = mind_dir(tmp_path, news_dev="N2\tfinance\tmarkets\tStocks crash\tA\thttp://u/2\t[]\t[]\n")
    with pytest.raises(DataFormatError, match=r"N2 appears with different titles.*'Stocks rally'.*'Stocks crash'"):
        mind.build("mind_small", d, download=False)


# --------------------------------------------------------------------------- error quality

def _grouplens(text):
    def make(tmp_path):
        write(tmp_path / "ml" / "ratings.dat", text)
        return "ml-1m", movielens, tmp_path / "ml", "ratings.dat"
    return make


def _beauty(filename, text):
    def make(tmp_path):
        return "beauty", beauty, write(tmp_path / "b" / filename, text).parent, filename
    return make


def _mind_news(news_dev):
    def make(tmp_path):
        return "mind_small", mind, mind_dir(tmp_path, news_dev=news_dev), "news.tsv"
    return make


def _mind_behaviors(bad_row):
    def make(tmp_path):
        rows = ["1\tU1\t11/11/2019 9:05:58 AM\tN1\tN2-1 N3-0", "2\tU2\t11/11/2019 9:06:00 AM\tN1\tN2-1", bad_row]
        return "mind_small", mind, mind_dir(tmp_path, train_rows=rows), "behaviors.tsv"
    return make


GOOD = "1::10::5::100\n1::20::5::101\n"
T = "3\tU3\t11/11/2019 9:07:00 AM\t"
ERROR_CASES = {   # case -> (writes the files, what the message must say)
    "wrong field count": (_grouplens(GOOD + "1::30::5\n"), r"line 3: expected 4 fields separated by '::'"),
    "non-integer id": (_grouplens(GOOD + "1::abc::5::102\n"), r"line 3: expected an integer MovieID.*'abc'"),
    "non-utf8 bytes": (_grouplens(GOOD.encode() + b"1::3\xff0::5::102\n"), r"line 3: expected UTF-8"),
    "empty file": (_grouplens(""), r"ratings.dat: file is empty"),
    "blank line inside": (_grouplens("1::10::5::100\n\n1::20::5::101\n"), r"line 2: expected .*empty line"),
    "csv missing column": (_beauty("ratings_Beauty.csv", "A,B,5.0,1\nA,C,4.0\n"),
                           r"line 2: expected 4 fields separated by ','.*found 3"),
    "txt non-integer": (_beauty("beauty.txt", "1 1\n1 x2\n"), r"line 2: expected an integer item id"),
    "news too few fields": (_mind_news("N9\tx\ty\n"), r"line 1: expected at least 8 tab-separated fields"),
    "no positive label": (_mind_behaviors(T + "N1\tN2-0 N3-0"), r"line 3: expected at least one clicked"),
    "label not 0/1": (_mind_behaviors(T + "N1\tN2-2 N3-1"), r"line 3: expected candidates like.*'N2-2'"),
    "unparsable time": (_mind_behaviors("3\tU3\t2019-11-11 09:07\tN1\tN2-1"),
                        r"line 3: expected a time like.*'2019-11-11 09:07'"),
    "missing behaviors column": (_mind_behaviors(T + "N2-1"), r"line 3: expected 5 fields"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_input_names_file_line_and_expectation_and_leaves_no_cache(tmp_path, case):
    make, pattern = ERROR_CASES[case]
    name, adapter, data_dir, filename = make(tmp_path)
    cache_root = tmp_path / "cache"
    with pytest.raises(DataFormatError, match=pattern) as info:
        load_or_build(name, adapter, data_dir, cache_root, download=False)
    assert filename in str(info.value)
    assert [p for p in cache_root.iterdir() if p.is_dir()] == []


def test_missing_files_message_says_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        movielens.build("ml-1m", tmp_path / "nowhere", download=False)
    msg = str(info.value)
    assert "ratings.dat" in msg and "RECBOARD_ML1M_DIR" in msg and "--data-dir" in msg
    assert "bench prepare --dataset ml-1m --download" in msg and str(tmp_path / "nowhere") in msg
    with pytest.raises(FileNotFoundError, match="RECBOARD_MIND_DIR"):
        mind.source_files("mind_demo", None)


# --------------------------------------------------------------------------- synthetic

def test_synthetic_sequences_are_seeded_and_carry_transition_signal():
    a, b, c = (synthetic.generate_sequences(seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.items, b.items)
    assert not np.array_equal(a.offsets, c.offsets) or not np.array_equal(a.items, c.items)
    assert a.n_users == 600 and a.n_items == 300 and a.lengths().min() >= 12 and a.lengths().max() <= 40
    assert all(len(set(a.sequence(u).tolist())) == len(a.sequence(u)) for u in range(a.n_users))  # no repeats
    assert len(a.item_text) == 301 and a.item_text[0] == "" and all(a.item_text[1:])
    # first-order transition counts from the training part beat popularity by far on test
    trans = np.zeros((a.n_items + 1, a.n_items + 1))
    for s in a.train_sequences():
        np.add.at(trans, (s[:-1], s[1:]), 1)
    pop = a.train_item_counts().astype(float)
    inputs, targets, _ = a.eval_examples("test")

    def hr10(score):
        hits = 0
        for seq, y in zip(inputs, targets):
            s = score(seq).astype(float)
            s[0], keep = -np.inf, s[y]
            s[seq] = -np.inf
            s[y] = keep
            hits += (s > s[y]).sum() < 10
        return hits / len(targets)

    markov, popular = hr10(lambda s: trans[s[-1]] + 1e-3 * pop), hr10(lambda s: pop.copy())
    assert markov > 0.45 and popular < 0.15 and markov > 4 * popular


def test_synthetic_news_has_text_signal():
    data = synthetic.generate_news(seed=0)
    again = synthetic.generate_news(seed=0)
    np.testing.assert_array_equal(data.test.cand, again.test.cand)
    assert data.titles == again.titles and len(data.titles) == 1502 and data.n_users == 400
    assert (len(data.train), len(data.valid), len(data.test)) == (2700, 300, 800)
    assert data.valid.time.min() >= data.train.time.max() and data.test.time.min() > data.valid.time.max()
    lengths = [len(t.split()) for t in data.titles[2:]]
    assert min(lengths) >= 6 and max(lengths) <= 14
    for block in (data.train, data.valid, data.test):
        assert all(block.labels(i).sum() >= 1 for i in range(len(block)))
        assert 5 <= np.diff(block.cand_offsets).min() and np.diff(block.cand_offsets).max() <= 20
    # a title-only scorer (topic-word overlap with the history) gets ~0.92 AUC; random is 0.5
    common = set(synthetic.COMMON_WORDS)
    words = [set(t.lower().split()) - common for t in data.titles]
    rng = np.random.default_rng(0)
    aucs, rand = [], []
    for i in range(len(data.test)):
        hist_words = {}
        for h in data.test.history(i):
            for w in words[h]:
                hist_words[w] = hist_words.get(w, 0) + 1
        lab = data.test.labels(i)
        if lab.all():
            continue
        for scores, out in (([sum(hist_words.get(w, 0) for w in words[c]) for c in data.test.candidates(i)], aucs),
                            (rng.random(len(lab)), rand)):
            s = np.asarray(scores, dtype=float)
            pos, neg = s[lab == 1][:, None], s[lab == 0][None, :]
            out.append((pos > neg).mean() + 0.5 * (pos == neg).mean())
    assert np.mean(aucs) >= 0.85 and abs(np.mean(rand) - 0.5) < 0.05


def test_synthetic_build_ignores_data_dir(tmp_path):
    assert synthetic.source_files("synthetic_seq", tmp_path) == []
    data = synthetic.build("synthetic_mind", tmp_path / "whatever", download=False)
    assert data.task == "impression" and data.stats["missing_news_refs"] == 0
    with pytest.raises(ValueError, match="synthetic_seq"):
        synthetic.build("synthetic_x", None, False)


def test_line_reader_without_scan_lines(tmp_path, monkeypatch):
    """Older polars has no scan_lines; the read_csv fallback must keep line numbers right."""
    import polars as pl

    from recboard.datasets import parsing
    monkeypatch.delattr(pl, "scan_lines", raising=False)
    f = write(tmp_path / "x.txt", b'1 "2\r\n3 4\n\n')
    df = parsing.read_lines(f, "u i")
    assert df["line"].to_list() == ['1 "2', "3 4"] and df["line_no"].to_list() == [1, 2]
    write(f, b"1 2\n\n3 4\n")
    with pytest.raises(DataFormatError, match="line 2"):
        parsing.read_lines(f, "u i")
    write(f, b"1 2\n3 \xff4\n")
    with pytest.raises(DataFormatError, match="line 2: expected UTF-8"):
        parsing.read_lines(f, "u i")
