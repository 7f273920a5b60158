"""Steam and MovieLens-20M on small files written here: both formats of each, the paper's
preprocessing, errors naming file + line + what was expected, the official zip and the
``--download`` path (file:// URLs only). The paper's statistics on the real files are the
``realdata`` tests at the end (skipped when the files are absent)."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from recboard.benchmarks import cli
from recboard.datasets import ml20m, steam
from recboard.datasets.cache import DataFormatError, load_or_build
from recboard.datasets.download import DownloadError


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RECBOARD_CACHE", str(tmp_path / "home-cache"))
    for var in ("RECBOARD_ML20M_DIR", "RECBOARD_STEAM_DIR"):
        monkeypatch.delenv(var, raising=False)


def write(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def zip_bytes(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buf.getvalue()


# --------------------------------------------------------------------------- MovieLens-20M

RATINGS_HEADER = "userId,movieId,rating,timestamp\n"
MOVIES = ('movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n'
          '2,"American President, The (1995)",Comedy|Drama|Romance\n3,Jumanji (1995),(no genres listed)\n'
          '4,Heat (1995),Action\n')


def grouplens_rows() -> list:
    """(user, movie, timestamp): user 1 rates 3 then 1, then 2 and 4 at the same second (file
    order); movie 4 has one rating, which ML-20m keeps; user 9 has 4 ratings (dropped)."""
    rows = [(1, 1, 200), (1, 2, 300), (1, 3, 100), (1, 4, 300), (1, 1, 400)]
    rows += [(u, m, 1000 + m) for u in (2, 3) for m in (1, 2, 3, 1, 2)]
    return rows + [(9, m, 5) for m in (1, 2, 3, 1)]


def ratings_csv(rows=None) -> str:
    return RATINGS_HEADER + "".join(f"{u},{m},{r % 10 / 2 + 0.5},{t}\n"
                                    for r, (u, m, t) in enumerate(rows or grouplens_rows()))


def bert4rec_txt(rows=None, sep=" ") -> str:
    """The same interactions as BERT4Rec writes them: each user's lines in time order."""
    ordered = sorted(enumerate(rows or grouplens_rows()), key=lambda r: (r[1][0], r[1][2], r[0]))
    return "".join(f"{u}{sep}{m}\n" for _, (u, m, _) in ordered)


def test_ml20m_ratings_csv_time_order_user_filter_and_titles(tmp_path):
    d = tmp_path / "ml"
    write(d / "ratings.csv", ratings_csv() + "\n")                  # a blank last line is fine
    write(d / "movies.csv", MOVIES)
    data = ml20m.build("ml-20m", d, download=False)
    assert (data.n_users, data.n_items, data.stats["interactions"]) == (3, 4, 15)
    assert data.raw_item_ids == ["<pad>", 1, 2, 3, 4]               # no item filter: movie 4 (1 rating) stays
    assert [data.raw_item_ids[i] for i in data.sequence(0)] == [3, 1, 2, 4, 1]   # tie at 300 in file order
    assert data.item_text[2] == "American President, The (1995) | Comedy, Drama, Romance"
    assert data.item_text[3] == "Jumanji (1995)"                    # "(no genres listed)"
    assert data.stats["dropped_interactions"] == 4 and data.stats["source"] == "ratings.csv"


def test_ml20m_bert4rec_txt_gives_the_same_sequences_and_ratings_csv_wins(tmp_path):
    d = tmp_path / "ml"
    write(d / "ml-20m.txt", bert4rec_txt(sep="\t"))               # any whitespace separates
    from_txt = ml20m.build("ml-20m", d, download=False)
    write(d / "ratings.csv", ratings_csv())
    from_csv = ml20m.build("ml-20m", d, download=False)
    assert (from_txt.stats["source"], from_csv.stats["source"]) == ("ml-20m.txt", "ratings.csv")
    np.testing.assert_array_equal(from_txt.items, from_csv.items)
    np.testing.assert_array_equal(from_txt.offsets, from_csv.offsets)
    assert from_txt.identity() == from_csv.identity()


def test_ml20m_official_zip_in_the_data_dir_is_unpacked_and_read(tmp_path):
    official = {"ml-20m/ratings.csv": ratings_csv(), "ml-20m/movies.csv": MOVIES, "ml-20m/tags.csv": "x\n"}
    d = write(tmp_path / "data" / "ml-20m.zip", zip_bytes(official)).parent
    data = load_or_build("ml-20m", ml20m, d, tmp_path / "cache")
    assert data.n_users == 3 and data.item_text[1] == "Toy Story (1995) | Adventure, Animation"
    write(tmp_path / "other" / "ml-20m.zip", zip_bytes({"ml-20m/README.txt": "hi", "ml-20m/links.csv": "x"}))
    with pytest.raises(DataFormatError, match=r"ml-20m\.zip holds no ratings\.csv or ml-20m\.txt \(it has: "
                                              r"README\.txt, links\.csv\); expected the GroupLens ml-20m\.zip"):
        load_or_build("ml-20m", ml20m, tmp_path / "other", tmp_path / "cache")


def test_ml20m_download_path_and_pinned_checksums(tmp_path, monkeypatch):
    assert (ml20m.SIZE, ml20m.MD5) == (198_702_078, "cd245b17a1ae2cc31bb14903e1204af3")
    assert ml20m.SHA256 == "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3"
    archive = write(tmp_path / "mirror" / "ml-20m.zip", zip_bytes({"ml-20m/ratings.csv": ratings_csv()}))
    monkeypatch.setattr(ml20m, "URL", archive.as_uri())
    monkeypatch.setattr(ml20m, "SIZE", archive.stat().st_size)
    monkeypatch.setattr(ml20m, "MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    monkeypatch.setattr(ml20m, "SHA256", "0" * 64)
    with pytest.raises(DownloadError, match="sha256 .* does not match"):
        load_or_build("ml-20m", ml20m, None, tmp_path / "cache", download=True)
    monkeypatch.setattr(ml20m, "SHA256", hashlib.sha256(archive.read_bytes()).hexdigest())
    data = load_or_build("ml-20m", ml20m, None, tmp_path / "cache", download=True)
    assert data.n_users == 3
    assert (tmp_path / "home-cache" / "raw" / "ml-20m" / "ml-20m" / "ratings.csv").is_file()


# --------------------------------------------------------------------------- Steam

def review(user: str, item, date: str, text: str = "Fun.", quote: str = "'") -> str:
    """One line of the UCSD file: a Python 2 dict literal (key order as in the real file)."""
    return (f"{{u'username': u{quote}{user}{quote}, u'hours': 0.1, u'products': 41, u'product_id': u'{item}', "
            f"u'page_order': 0, u'date': u'{date}', u'text': u'{text}', u'early_access': False, u'page': 1}}")


USERS = {"Chaos Syren": "'", "O'Neil": '"', "Jos\\xe9": "'", "back\\\\slash": "'"}   # as Python 2 wrote them


def steam_lines() -> list:
    """Four users review games 10..14, each in the order 12, 10, then 11 and 13 on the same
    day (file order), then 14. User "few" has 5 reviews, one of game 99, which has no other:
    SASRec's filter drops that review, BERT4Rec's rule then "few" (4 left), and games 10..13
    keep their 4 remaining reviews (an iterative 5-core would drop them, and then everything).
    "once" reviews game 14 only."""
    lines = [review(user, item, f"2017-12-0{day}", quote=quote) for user, quote in USERS.items()
             for item, day in ((10, 2), (11, 3), (12, 1), (13, 3), (14, 4))]
    lines += [review("few", item, "2016-01-01") for item in (10, 11, 12, 13, 99)]
    return lines + [review("once", 14, "2015-01-01")]


def expected_sequences(data) -> dict:
    return {i: [data.raw_item_ids[j] for j in data.sequence(i)] for i in range(data.n_users)}


def test_steam_reviews_parse_python_literals_order_by_date_and_filter_like_the_papers(tmp_path):
    write(tmp_path / "steam_reviews.json.gz", gzip.compress(("\n".join(steam_lines()) + "\n").encode()))
    data = steam.build("steam", tmp_path, download=False)
    assert (data.n_users, data.n_items) == (4, 5) and data.raw_item_ids == ["<pad>", 10, 11, 12, 13, 14]
    assert all(seq == [12, 10, 11, 13, 14] for seq in expected_sequences(data).values())
    s = data.stats
    assert (s["raw_interactions"], s["interactions"], s["lines_read_by_literal_eval"]) == (26, 20, 0)
    df, _ = steam.read_reviews(tmp_path / "steam_reviews.json.gz")
    assert set(df["user"]) == {"Chaos Syren", "O'Neil", "José", "back\\slash", "few", "once"}


def test_steam_odd_lines_go_to_the_literal_parser(tmp_path):
    """A key inside a review's text, a JSON line and a line of another key order must give
    the same interactions as the plain lines."""
    lines = steam_lines()
    # Python 2 quotes a text holding ' with ", so the text can hold what looks like a key
    lines[0] = ("{u'username': u'Chaos Syren', u'text': u\"ok', u'date': u'1999-01-01\", u'product_id': u'10', "
                "u'date': u'2017-12-02'}")
    lines[1] = '{"username": "Chaos Syren", "product_id": "11", "date": "2017-12-03", "early_access": false}'
    lines[2] = "{u'date': u'2017-12-01', u'user_id': u'7656', u'product_id': u'12', u'username': u'Chaos Syren'}"
    write(tmp_path / "steam_reviews.json", "\n".join(lines) + "\n")
    data = steam.build("steam", tmp_path, download=False)
    assert data.stats["lines_read_by_literal_eval"] == 2     # the JSON line and the text with a key in it
    assert all(seq == [12, 10, 11, 13, 14] for seq in expected_sequences(data).values())


def test_steam_block_boundaries_do_not_change_the_result(tmp_path, monkeypatch):
    write(tmp_path / "steam_reviews.json.gz", gzip.compress(("\n".join(steam_lines())).encode()))  # no last \n
    whole = steam.build("steam", tmp_path, download=False)
    monkeypatch.setattr(steam, "BLOCK_BYTES", 97)          # shorter than a line: lines span blocks
    pieces = steam.build("steam", tmp_path, download=False)
    np.testing.assert_array_equal(whole.items, pieces.items)
    assert whole.identity() == pieces.identity()


def test_steam_bert4rec_txt_is_kept_as_released(tmp_path):
    write(tmp_path / "steam.txt", "1 5\n1 3\n2 3\n")
    write(tmp_path / "steam_reviews.json", review("a", 1, "2017-01-01") + "\n")   # steam.txt wins
    data = steam.build("steam", tmp_path, download=False)
    assert (data.n_users, data.n_items, data.stats["filtering"]) == (2, 2, "none (BERT4Rec release)")
    assert [data.raw_item_ids[i] for i in data.sequence(0)] == [5, 3]


def test_steam_download_path(tmp_path, monkeypatch):
    mirror = write(tmp_path / "mirror" / "steam_reviews.json.gz", gzip.compress("\n".join(steam_lines()).encode()))
    monkeypatch.setattr(steam, "URL", mirror.as_uri())
    data = load_or_build("steam", steam, None, tmp_path / "cache", download=True)
    assert data.n_users == 4 and (tmp_path / "home-cache" / "raw" / "steam" / "steam_reviews.json.gz").is_file()
    (tmp_path / "home-cache" / "raw" / "steam" / "steam_reviews.json.gz").unlink()
    monkeypatch.setattr(steam, "URL", (tmp_path / "gone.json.gz").as_uri())
    with pytest.raises(DownloadError, match=r"manually from .*gone\.json\.gz.*FeiSun/BERT4Rec.*RECBOARD_STEAM_DIR"):
        steam.build("steam", None, download=True)


# --------------------------------------------------------------------------- bad input

GOOD_CSV = RATINGS_HEADER + "1,10,4.0,978300760\n1,20,3.5,978302109\n"
GOOD_REVIEWS = "\n".join(steam_lines()[:2])


def gz(text: str) -> bytes:
    return gzip.compress(text.encode())


BAD = {   # case -> (file name, content, what the message must say after the file name)
    "ratings.csv without header": ("ratings.csv", "1,10,4.0,978300760\n",
                                   r", line 1: expected the header 'userId,movieId,rating,timestamp' "
                                   r"\(GroupLens ratings\.csv\), got '1,10,4\.0,978300760'$"),
    "ratings.csv rating not a number": ("ratings.csv", GOOD_CSV + "2,10,good,978300761\n",
                                        r", line 4: expected a number rating \(field 3\), got 'good'$"),
    "ratings.csv missing field": ("ratings.csv", GOOD_CSV + "2,10,978300761\n",
                                  r", line 4: expected 4 fields separated by ',' .* but found 3"),
    "ratings.csv movieId 0": ("ratings.csv", GOOD_CSV + "2,0,4.0,978300761\n",
                              r", line 4: expected a positive movieId \(field 2\) \(ids start at 1\), got '0'$"),
    "ratings.csv quoted id": ("ratings.csv", GOOD_CSV + '"2",10,4.0,978300761\n',
                              r", line 4: expected an integer userId \(field 1\), got '\"2\"'$"),
    "ratings.csv negative time": ("ratings.csv", GOOD_CSV + "2,10,4.0,-5\n",
                                  r", line 4: expected a timestamp \(field 4\) >= 0 \(seconds since 1970\)"),
    "ratings.csv blank line inside": ("ratings.csv", GOOD_CSV.replace("\n1,20", "\n\n1,20"),
                                      r", line 3: expected .*\(only trailing lines may be blank\), got an empty line"),
    "ratings.csv header only": ("ratings.csv", RATINGS_HEADER, r": file has no data lines after its header"),
    "ratings.csv empty": ("ratings.csv", "", r": file is empty; expected GroupLens ratings\.csv$"),
    "ml-20m.txt non-integer": ("ml-20m.txt", "1 10\n1 x\n", r", line 2: expected an integer item id"),
    "reviews not a dict": ("steam_reviews.json", GOOD_REVIEWS + "\n<html>Not Found</html>\n",
                           r", line 3: expected a Python dict literal with 'username', 'product_id' and 'date' "
                           r"\(a UCSD Steam review\), got '<html>Not Found</html>'$"),
    "review without product_id": ("steam_reviews.json", GOOD_REVIEWS + "\n{u'username': u'a', u'date': u'2017-01-01'}",
                                  r", line 3: expected a product_id of digits"),
    "review with a bad date": ("steam_reviews.json.gz", gz(review("a", 5, "2017-13-45") + "\n" + GOOD_REVIEWS),
                               r", line 1: expected a date like '2017-12-17' \(year-month-day\), got \"\{u'username'"),
    "reviews blank line inside": ("steam_reviews.json", GOOD_REVIEWS.replace("\n", "\n\n"),
                                  r", line 2: expected .* \(only trailing lines may be blank\), got an empty line"),
    "reviews not UTF-8": ("steam_reviews.json", GOOD_REVIEWS.encode() + b"\n{u'username': u'\xe9'}\n",
                          r", line 3: expected UTF-8 text .*found invalid byte\(s\) at column 17$"),
    "reviews gzip truncated": ("steam_reviews.json.gz", gz(GOOD_REVIEWS * 50)[:-40],
                               r": the gzip stream is truncated or corrupt .*; expected the UCSD "
                               r"steam_reviews\.json\.gz"),
    "reviews empty": ("steam_reviews.json", "", r": file is empty; expected lines of a Python dict literal"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_names_file_line_and_expectation_and_leaves_no_cache(tmp_path, case):
    filename, content, pattern = BAD[case]
    path = write(tmp_path / "data" / filename, content)
    dataset, adapter = ("steam", steam) if "steam" in filename else ("ml-20m", ml20m)
    cache_root = tmp_path / "cache"
    with pytest.raises(DataFormatError) as info:
        load_or_build(dataset, adapter, path.parent, cache_root)
    assert re.match(re.escape(str(path)) + pattern, str(info.value)), str(info.value)
    assert [p for p in cache_root.iterdir() if p.is_dir()] == []


def test_bad_movies_csv_line_is_named(tmp_path):
    d = tmp_path / "ml"
    write(d / "ratings.csv", ratings_csv())
    write(d / "movies.csv", MOVIES + "5;Casino (1995);Crime\n")
    with pytest.raises(DataFormatError, match=r"movies\.csv, line 6: expected movieId,title,genres .*: 3 fields, "
                                              r"a positive integer movieId first, got '5;Casino"):
        ml20m.build("ml-20m", d, download=False)


# --------------------------------------------------------------------------- the bench command

def test_bench_list_and_prepare_print_the_statistics_of_both_formats(tmp_path, capsys):
    assert cli.main(["list"]) == 0
    listed = capsys.readouterr().out
    assert re.search(r"^  ml-20m +\[sequence\]", listed, re.M) and re.search(r"^  steam +\[sequence\]", listed, re.M)
    sources = {"grouplens": {"ratings.csv": ratings_csv(), "movies.csv": MOVIES},
               "bert4rec": {"ml-20m.txt": bert4rec_txt()}}
    for folder, files in sources.items():
        for name, text in files.items():
            write(tmp_path / folder / name, text)
        assert cli.main(["prepare", "--dataset", "ml-20m", "--data-dir", str(tmp_path / folder)]) == 0
        out = capsys.readouterr().out
        assert re.search(r"users\s+3\b", out) and re.search(r"items\s+4\b", out), out
        assert re.search(r"interactions\s+15\b", out) and re.search(r"mean sequence length\s+5\.0", out)
    write(tmp_path / "steam" / "steam_reviews.json.gz", gz("\n".join(steam_lines())))
    assert cli.main(["prepare", "--dataset", "steam", "--data-dir", str(tmp_path / "steam")]) == 0
    assert re.search(r"users\s+4\b", capsys.readouterr().out)


# --------------------------------------------------------------------------- the real files

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def real_dir(env_var: str, folder: str) -> Path:
    d = Path(os.environ.get(env_var) or SHARED / folder)
    if not d.is_dir():
        pytest.skip(f"{d} not available (set {env_var})")
    return d


@pytest.mark.realdata
def test_ml20m_matches_bert4rec_counts(tmp_path):
    data = load_or_build("ml-20m", ml20m, real_dir("RECBOARD_ML20M_DIR", "ml-20m"), tmp_path)
    assert (data.n_users, data.n_items) == (138_493, 26_744)
    assert data.stats["mean_seq_len"] == pytest.approx(144.41, abs=0.005)    # BERT4Rec, Table 1
    if data.stats["source"] == "ratings.csv":
        assert data.stats["interactions"] == 20_000_263 and data.stats["dropped_interactions"] == 0
        assert data.item_text[data.raw_item_ids.index(1)].startswith("Toy Story (1995) | Adventure")


@pytest.mark.realdata
def test_steam_matches_bert4rec_counts(tmp_path):
    data = load_or_build("steam", steam, real_dir("RECBOARD_STEAM_DIR", "steam"), tmp_path)
    assert (data.n_users, data.n_items) == (281_428, 13_044)
    assert data.stats["mean_seq_len"] == pytest.approx(12.40, abs=0.005)      # BERT4Rec, Table 1: 3.5M actions
    assert data.lengths().min() >= 5
